fn not_a_literal() -> &'static str {
    "x"
}

#[dq::actor(
    queue_name = "bad queue",
    actor_name = "",
    priority = "high",
    max_retries = -1,
    time_limit = 1.5,
    min_backoff = -3,
    store_results = 1,
    priority = 1,
    throws = [1],
    retry_when = "never",
    rate_limit = not_a_literal(),
)]
fn badly_configured() {}

fn main() {}
