//! dq-metrics' integration tests: one binary (see STYLE.md, section 5).

mod middleware_worker;
