//! dq-abort's integration tests, one binary (see STYLE.md, section 5).

mod abort;
