//! Cancel checks that arrive together go to Redis together.
//!
//! Every abortable message asks, just before it runs, whether a cancel event waits for it
//! (dramatiq-abort's `LPOP`). Asked one by one, that is one command and one round trip per
//! message. Here the first caller becomes the *leader*: it takes every check queued so far,
//! sends them in one request and hands each caller its answer; checks that arrive while that
//! request is out wait for the next one, which the leader hands to one of them to lead. So a
//! caller waits for at most the request in flight plus its own, and under load one request
//! serves many messages.
//!
//! No runtime is involved (no background task): a leader is simply a caller, so the batcher
//! works from any runtime and stops with its callers.

use std::mem;
use std::sync::Mutex;

use tokio::sync::oneshot;

/// What a waiting caller is told.
enum Reply<T> {
    /// Its check's answer.
    Done(T),
    /// Nobody is sending: it leads the next request.
    Lead,
}

/// A check waiting for a request, and where its answer goes.
struct Waiting<K, T> {
    key: K,
    reply: oneshot::Sender<Reply<T>>,
}

struct State<K, T> {
    waiting: Vec<Waiting<K, T>>,
    /// A caller is sending a request (or has been told to).
    leading: bool,
}

/// Batches concurrent checks: keys in, one answer per key out.
pub(crate) struct Batcher<K, T> {
    state: Mutex<State<K, T>>,
}

impl<K, T> Default for Batcher<K, T> {
    fn default() -> Self {
        Batcher {
            state: Mutex::new(State {
                waiting: Vec::new(),
                leading: false,
            }),
        }
    }
}

impl<K: Clone, T> Batcher<K, T> {
    fn state(&self) -> std::sync::MutexGuard<'_, State<K, T>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The answer for `key`, found by `send` together with the keys of the callers queued
    /// beside it. `send` gets the keys of one request and returns their answers, in order and
    /// as many (or one answer for all of them when the request failed: `fail`).
    pub(crate) async fn run<F, Fut>(&self, key: K, send: F, fail: impl Fn() -> T) -> T
    where
        F: Fn(Vec<K>) -> Fut,
        Fut: std::future::Future<Output = Vec<T>>,
    {
        // Told to lead by the last leader, which left the lead taken for this caller.
        let mut handed = false;
        loop {
            let (tx, rx) = oneshot::channel();
            let lead = {
                let mut state = self.state();
                state.waiting.push(Waiting {
                    key: key.clone(),
                    reply: tx,
                });
                handed || !mem::replace(&mut state.leading, true)
            };
            let mut rx = rx;
            if lead {
                let handoff = Handoff(self);
                let batch = mem::take(&mut self.state().waiting);
                let keys = batch.iter().map(|w| w.key.clone()).collect();
                let mut answers = send(keys).await.into_iter();
                for w in batch {
                    let answer = answers.next().unwrap_or_else(&fail);
                    // A caller that went away does not want its answer.
                    let _ = w.reply.send(Reply::Done(answer));
                }
                drop(handoff);
            }
            match (&mut rx).await {
                Ok(Reply::Done(answer)) => return answer,
                // Queue again, and send the next request.
                Ok(Reply::Lead) => handed = true,
                // The leader holding this check went away before answering (its caller was
                // dropped): ask again.
                Err(_) => handed = false,
            }
        }
    }
}

/// Passes the lead on when a leader is done (or dropped): to the first caller still waiting,
/// else to whoever comes next.
struct Handoff<'a, K: Clone, T>(&'a Batcher<K, T>);

impl<K: Clone, T> Drop for Handoff<'_, K, T> {
    fn drop(&mut self) {
        let mut state = self.0.state();
        while !state.waiting.is_empty() {
            let w = state.waiting.remove(0);
            // The new leader queues itself again, so the lead stays taken meanwhile.
            if w.reply.send(Reply::Lead).is_ok() {
                return;
            }
        }
        state.leading = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    /// A request that takes 20 ms and answers each key with itself doubled, counting requests.
    async fn slow_double(requests: &AtomicUsize, keys: Vec<u32>) -> Vec<u32> {
        requests.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(20)).await;
        keys.into_iter().map(|k| k * 2).collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_checks_share_requests_and_each_gets_its_own_answer() {
        let batcher = Arc::new(Batcher::<u32, u32>::default());
        let requests = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..50u32)
            .map(|k| {
                let (batcher, requests) = (batcher.clone(), requests.clone());
                tokio::spawn(async move {
                    batcher
                        .run(k, |keys| slow_double(&requests, keys), || u32::MAX)
                        .await
                })
            })
            .collect();
        for (k, task) in tasks.into_iter().enumerate() {
            assert_eq!(task.await.unwrap(), k as u32 * 2);
        }
        let n = requests.load(Ordering::SeqCst);
        assert!(n < 50, "50 concurrent checks took {n} requests");
        assert!(!batcher.state().leading, "the lead is released at the end");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_leader_that_goes_away_does_not_strand_the_others() {
        let batcher = Arc::new(Batcher::<u32, u32>::default());
        let requests = Arc::new(AtomicUsize::new(0));
        // The first caller leads and is dropped while its request is out.
        let leader = {
            let (batcher, requests) = (batcher.clone(), requests.clone());
            tokio::spawn(async move {
                batcher
                    .run(1, |keys| slow_double(&requests, keys), || u32::MAX)
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(5)).await;
        let followers: Vec<_> = (2..6u32)
            .map(|k| {
                let (batcher, requests) = (batcher.clone(), requests.clone());
                tokio::spawn(async move {
                    batcher
                        .run(k, |keys| slow_double(&requests, keys), || u32::MAX)
                        .await
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(5)).await;
        leader.abort();
        for (i, f) in followers.into_iter().enumerate() {
            let answer = tokio::time::timeout(Duration::from_secs(2), f)
                .await
                .expect("a follower was stranded")
                .unwrap();
            assert_eq!(answer, (i as u32 + 2) * 2);
        }
        assert!(!batcher.state().leading);
    }
}
