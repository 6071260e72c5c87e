//! The interop and reliability tests, one binary (STYLE.md): each module one area. Run by
//! `cargo xtask interop`, which sets `DQ_PYTHON` to the Dramatiq 2.2.1 virtualenv's python.

mod interop_abort;
mod interop_dashboard;
mod interop_deadletters;
mod interop_groups;
mod interop_handoff;
mod interop_kill;
mod interop_mixed;
mod interop_periodiq;
mod interop_priority;
mod interop_prometheus;
mod interop_results;
mod interop_roundtrip;
mod interop_tracing;
mod interop_unique;
mod reliability_amqp;
mod reliability_backlog;
mod reliability_chaos;
mod reliability_periodic;
mod reliability_redis;
mod reliability_tls;
mod reliability_util;

#[test]
fn python_is_dramatiq_2_2_1() {
    let out = std::process::Command::new(dq_interop::python())
        .args(["-c", "import dramatiq; print(dramatiq.__version__)"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "2.2.1");
}
