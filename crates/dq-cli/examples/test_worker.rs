//! A worker binary for dq-cli's own tests (`cargo test -p dq-cli` builds and runs it). It shows
//! the shape of a real one: actors linked in, `main` handing over to dq-cli. Needs Redis.
//!
//! `cargo run -p dq-cli --example test_worker -- --processes 1`

#[path = "support/test_actors.rs"]
mod actors;

fn main() {
    actors::main("v1")
}
