//! Integration tests of the stub broker, one binary (see STYLE.md, section 5).

mod stub_admin;
mod stub_delivery;
mod stub_join;
mod stub_priority;
mod stub_workers;

use std::time::Duration;

use dq_broker_stub::{JoinError, StubBroker};
use dq_core::{Delivery, Message, Token};

/// Long enough never to fire in a passing test: a fetch or join that should return at once waits
/// this long only if the broker fails to wake it, and the test then fails on what it got.
const PATIENCE: Duration = Duration::from_secs(30);

/// Short: for fetches and joins that are expected to come back empty-handed.
const BRIEF: Duration = Duration::from_millis(20);

/// A message for actor `work` on physical queue `queue` carrying `n`.
fn msg(queue: &str, n: i64) -> Message {
    Message::new(queue, "work", &(n,), &()).unwrap()
}

/// The number a delivery made by [`msg`] carries.
fn num(d: &Delivery) -> i64 {
    let m = Message::decode(&d.body).unwrap();
    m.args_value().unwrap()[0].as_i64().unwrap()
}

fn nums(ds: &[Delivery]) -> Vec<i64> {
    ds.iter().map(num).collect()
}

fn tokens(ds: &[Delivery]) -> Vec<Token> {
    ds.iter().map(|d| d.token.clone()).collect()
}

/// Joins `queue` with no join timeout, under a guard: a join that misses a wake-up hangs until
/// the guard fires and fails the test, where a join timeout would pass on its last look.
async fn joined(broker: &StubBroker, queue: &str) -> Result<(), JoinError> {
    tokio::time::timeout(PATIENCE, broker.join(queue, None))
        .await
        .expect("join missed a wake-up")
}

/// [`joined`] in a task of its own.
fn spawn_join(
    broker: &StubBroker,
    queue: &'static str,
) -> tokio::task::JoinHandle<Result<(), JoinError>> {
    let broker = broker.clone();
    tokio::spawn(async move { joined(&broker, queue).await })
}
