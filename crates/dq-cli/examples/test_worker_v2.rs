//! `test_worker` with a changed actor: the watch-reload test makes it the "rebuilt" binary.
//!
//! `cargo run -p dq-cli --example test_worker_v2 -- --processes 1`

#[path = "support/test_actors.rs"]
mod actors;

fn main() {
    actors::main("v2")
}
