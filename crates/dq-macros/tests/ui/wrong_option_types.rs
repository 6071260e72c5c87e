const LIMIT: &str = "60s";

fn retry_when(_attempts: u64) -> bool {
    true
}

#[dq::actor(time_limit = LIMIT, retry_when = retry_when)]
fn mistyped() {}

fn main() {}
