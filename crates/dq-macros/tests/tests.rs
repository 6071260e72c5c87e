//! Tests of `#[dq::actor]`, through the `dq` facade as users write it. One test binary with a
//! module per area, so the crate links once.

mod actors;
mod compiletest;
mod macro_calls;
mod macro_handler;
mod macro_messages;
mod macro_options;
mod macro_registry;
mod macro_send;
mod macro_typed;
