//! Hook tests of dq-middleware: each middleware's hooks run against the in-memory stub broker,
//! and what they enqueued is read back from its queues.

mod middleware_callbacks;
mod middleware_limits;
mod middleware_pipelines;
mod middleware_retries;
mod middleware_stack;
mod util;
