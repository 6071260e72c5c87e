//! Integration tests of the Redis broker, against the Redis at `DQ_REDIS_URL` (default
//! `redis://127.0.0.1:6379`). Each test works in a namespace of its own and deletes it after.

mod util;

mod redis_admin;
mod redis_connect;
mod redis_priority;
mod redis_recovery;
mod redis_restart;
mod redis_settle;
mod redis_tls;
mod redis_wire;
mod redis_workers;
