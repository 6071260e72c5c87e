//! dq-metrics' integration tests: one binary (see STYLE.md, section 5).

mod metrics_dashboard;
mod middleware_worker;
