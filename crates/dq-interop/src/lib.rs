//! # dq-interop
//!
//! dq against the real Python Dramatiq 2.2.1, on the real Redis and RabbitMQ: the scenarios of
//! `cargo xtask interop` (Python producer → dq worker, dq producer → Python worker, mixed workers
//! on one queue, a SIGKILLed worker's messages finished by the other side, results read across
//! languages) and the reliability runs (workers killed and restarted mid-run, brokers restarted
//! mid-run, a large backlog against a bounded prefetch).
//!
//! **Key design decision:** nothing here imitates the other side. The Python side is Dramatiq
//! itself, from the virtualenv `cargo xtask interop-venv` builds under `target/py` (its python is
//! passed in `DQ_PYTHON`); the dq side is a real worker binary of this package, run as a separate
//! process so it can be killed like any deployed worker. The tests are not part of the plain
//! `cargo nextest run`: `cargo xtask interop` runs them once the virtualenv is ready.

/// The python of the Dramatiq 2.2.1 virtualenv: env `DQ_PYTHON`, set by `cargo xtask interop`.
///
/// # Panics
/// When `DQ_PYTHON` is unset or names no file: these tests must run through `cargo xtask
/// interop` (or with `DQ_PYTHON=$(cargo xtask interop-venv)`), never silently skip.
pub fn python() -> std::path::PathBuf {
    let p = std::env::var_os("DQ_PYTHON")
        .map(std::path::PathBuf::from)
        .expect("DQ_PYTHON is not set: run these tests with `cargo xtask interop`");
    assert!(p.is_file(), "DQ_PYTHON={} is not a file", p.display());
    p
}
