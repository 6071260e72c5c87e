//! Integration tests of dq-core, in one binary so the workspace links one test executable per
//! crate instead of one per file.

mod golden;
