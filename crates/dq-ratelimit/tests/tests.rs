//! Integration tests of dq-ratelimit, in one binary. Redis tests use the server at `DQ_REDIS_URL`
//! (default 127.0.0.1:6379), each on keys of its own that it deletes afterwards.

#[macro_use]
extern crate dq_test;

mod support;

mod ratelimit_actors;
mod ratelimit_group_callbacks;
mod ratelimit_limits;
mod ratelimit_lockdown;
mod ratelimit_processes;
