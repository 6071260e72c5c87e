//! Runnable examples of dq: see the files beside this crate's Cargo.toml.
