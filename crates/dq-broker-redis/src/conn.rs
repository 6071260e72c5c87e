//! Connections: a few long-lived multiplexed connections drawn from a `deadpool-redis` pool.
//!
//! deadpool pings a connection every time it is checked out, which would double the round
//! trips of every fetch, ack and enqueue. Redis connections multiplex, so instead each *lane*
//! checks one connection out and keeps it, and any number of tasks send on it concurrently
//! (pipelined). A lane gives its connection up only when it breaks; the next use draws a fresh
//! one from the pool, which is how the broker reconnects after Redis was lost. The pool's size
//! is the number of lanes, so a checkout never waits for another lane.

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use deadpool_redis::{Connection, Pool, PoolError};
use dq_core::BrokerErrorKind;
use redis::aio::MultiplexedConnection;
use redis::{Cmd, FromRedisValue, Pipeline, RedisError, RedisResult};

use crate::error::classify;

pub(crate) struct Lanes {
    pool: Pool,
    lanes: Box<[Lane]>,
    next: AtomicUsize,
    op_timeout: Duration,
}

struct Lane {
    slot: Mutex<Slot>,
    /// Held while a connection is being drawn, so a broken lane reconnects once, not once per
    /// waiting task.
    refill: tokio::sync::Mutex<()>,
}

struct Slot {
    generation: u64,
    conn: Option<Connection>,
}

/// A connection of one lane, as it was when checked out.
struct Leased {
    lane: usize,
    generation: u64,
    conn: MultiplexedConnection,
}

impl Lanes {
    pub(crate) fn new(pool: Pool, count: usize, op_timeout: Duration) -> Lanes {
        let lanes = (0..count.max(1))
            .map(|_| Lane {
                slot: Mutex::new(Slot {
                    generation: 0,
                    conn: None,
                }),
                refill: tokio::sync::Mutex::new(()),
            })
            .collect();
        Lanes {
            pool,
            lanes,
            next: AtomicUsize::new(0),
            op_timeout,
        }
    }

    /// A lane to use, round robin: consumers keep theirs, producers pick one per call.
    pub(crate) fn pick(&self) -> usize {
        self.next.fetch_add(1, Ordering::Relaxed) % self.lanes.len()
    }

    /// Sends one command on `lane`.
    pub(crate) async fn query<T: FromRedisValue>(&self, lane: usize, cmd: &Cmd) -> RedisResult<T> {
        let mut leased = self.lease(lane).await?;
        let result = tokio::time::timeout(self.op_timeout, cmd.query_async(&mut leased.conn)).await;
        self.finish(&leased, result)
    }

    /// Sends a pipeline on `lane` (one round trip).
    pub(crate) async fn query_pipe<T: FromRedisValue>(
        &self,
        lane: usize,
        pipe: &Pipeline,
    ) -> RedisResult<T> {
        let mut leased = self.lease(lane).await?;
        let result =
            tokio::time::timeout(self.op_timeout, pipe.query_async(&mut leased.conn)).await;
        self.finish(&leased, result)
    }

    fn finish<T>(
        &self,
        leased: &Leased,
        result: Result<RedisResult<T>, tokio::time::error::Elapsed>,
    ) -> RedisResult<T> {
        let result = match result {
            Ok(r) => r,
            Err(_) => Err(timed_out("no reply from redis in time")),
        };
        if let Err(e) = &result {
            match classify(e) {
                // The connection may be dead or out of step with its replies: never reuse it.
                BrokerErrorKind::Connection | BrokerErrorKind::Timeout => {
                    self.discard(leased.lane, leased.generation)
                }
                _ => {}
            }
        }
        result
    }

    async fn lease(&self, lane: usize) -> RedisResult<Leased> {
        let l = &self.lanes[lane];
        if let Some(leased) = self.current(lane) {
            return Ok(leased);
        }
        let _refilling = l.refill.lock().await;
        if let Some(leased) = self.current(lane) {
            return Ok(leased);
        }
        let conn = match tokio::time::timeout(self.op_timeout, self.pool.get()).await {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => return Err(pool_error(e)),
            Err(_) => return Err(timed_out("connecting to redis timed out")),
        };
        let mux = (*conn).clone();
        let mut slot = l.slot.lock().expect("lane lock");
        slot.generation += 1;
        slot.conn = Some(conn);
        Ok(Leased {
            lane,
            generation: slot.generation,
            conn: mux,
        })
    }

    fn current(&self, lane: usize) -> Option<Leased> {
        let slot = self.lanes[lane].slot.lock().expect("lane lock");
        slot.conn.as_ref().map(|c| Leased {
            lane,
            generation: slot.generation,
            conn: (**c).clone(),
        })
    }

    /// Drops the lane's connection if it is still the one that failed.
    fn discard(&self, lane: usize, generation: u64) {
        let broken = {
            let mut slot = self.lanes[lane].slot.lock().expect("lane lock");
            if slot.generation == generation {
                slot.conn.take()
            } else {
                None
            }
        };
        if let Some(conn) = broken {
            // Detach it from the pool so the pool neither reuses it nor counts it.
            drop(Connection::take(conn));
        }
    }
}

fn timed_out(what: &'static str) -> RedisError {
    RedisError::from(io::Error::new(io::ErrorKind::TimedOut, what))
}

fn pool_error(e: PoolError) -> RedisError {
    match e {
        PoolError::Backend(e) => e,
        PoolError::Timeout(_) => timed_out("connecting to redis timed out"),
        other => RedisError::from(io::Error::new(
            io::ErrorKind::NotConnected,
            other.to_string(),
        )),
    }
}
