//! Integration tests of dq-results, in one binary. Redis tests use the server at `DQ_REDIS_URL`
//! (default 127.0.0.1:6379), each in a namespace of its own that it deletes afterwards.

#[macro_use]
extern crate dq_test;

mod support;

mod composition_groups;
mod composition_pipelines;
mod results_backends;
mod results_lockdown;
mod results_middleware;
