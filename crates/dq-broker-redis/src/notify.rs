//! Wake-ups for idle consumers.
//!
//! Dramatiq's consumers poll an empty queue with a backoff that grows to a second, so a message
//! sent to an idle worker waits up to that long. dq's dispatch script also PUBLISHes on
//! `ns:__dq_notify__.<queue>` whenever it adds ids to a queue (enqueue, requeue, recovery), and
//! one subscriber connection per broker wakes the consumers of that queue at once. Python
//! producers do not publish, so consumers keep Dramatiq's backoff polling as a fallback; the
//! channel only ever shortens a wait, and losing it (Redis restarting) costs latency, never
//! messages.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::{mpsc, Notify};

/// The channels subscribed so far and the consumers watching each. Every consumer has its own
/// `Notify`, woken with `notify_one`: a wake-up that arrives while the consumer is busy is kept
/// as a permit, so its next wait ends at once instead of sleeping through the message.
pub(crate) struct Notifier {
    channels: Mutex<HashMap<String, Vec<Weak<Notify>>>>,
    subscribe: mpsc::UnboundedSender<String>,
}

impl Notifier {
    /// A notifier and the task that keeps its subscriber connection alive. The task holds no
    /// reference to the broker; the broker aborts it when dropped.
    pub(crate) fn start(client: redis::Client) -> (Arc<Notifier>, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let notifier = Arc::new(Notifier {
            channels: Mutex::new(HashMap::new()),
            subscribe: tx,
        });
        let task = tokio::spawn(listen(client, notifier.clone(), rx));
        (notifier, task)
    }

    /// A new wake-up for one consumer of `channel`, subscribing to the channel on first use.
    /// Dropping the returned `Notify` unregisters it.
    pub(crate) fn watch(&self, channel: String) -> Arc<Notify> {
        let n = Arc::new(Notify::new());
        let mut channels = self.channels.lock().expect("notifier lock");
        match channels.get_mut(&channel) {
            Some(watchers) => {
                watchers.retain(|w| w.strong_count() > 0);
                watchers.push(Arc::downgrade(&n));
            }
            None => {
                channels.insert(channel.clone(), vec![Arc::downgrade(&n)]);
                // The listener only stops when the broker is dropped, and then nobody watches.
                let _ = self.subscribe.send(channel);
            }
        }
        n
    }

    fn wake(&self, channel: &str) {
        if let Some(watchers) = self.channels.lock().expect("notifier lock").get(channel) {
            for n in watchers.iter().filter_map(Weak::upgrade) {
                n.notify_one();
            }
        }
    }

    fn wake_all(&self) {
        for watchers in self.channels.lock().expect("notifier lock").values() {
            for n in watchers.iter().filter_map(Weak::upgrade) {
                n.notify_one();
            }
        }
    }

    fn known(&self) -> Vec<String> {
        self.channels
            .lock()
            .expect("notifier lock")
            .keys()
            .cloned()
            .collect()
    }
}

const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(5);

async fn listen(
    client: redis::Client,
    notifier: Arc<Notifier>,
    mut requests: mpsc::UnboundedReceiver<String>,
) {
    let mut failures: u32 = 0;
    loop {
        if failures > 0 {
            let pause = (100u64 << failures.min(6)).min(5_000);
            tokio::time::sleep(Duration::from_millis(pause)).await;
        }
        failures = failures.saturating_add(1);
        let pubsub = match tokio::time::timeout(SUBSCRIBE_TIMEOUT, client.get_async_pubsub()).await
        {
            Ok(Ok(p)) => p,
            Ok(Err(e)) => {
                tracing::debug!(error = %dq_core::ErrorChain(&e), "redis notification channel: cannot connect");
                continue;
            }
            Err(_) => continue,
        };
        let (mut sink, mut stream) = pubsub.split();
        let known = notifier.known();
        if !known.is_empty() {
            match tokio::time::timeout(SUBSCRIBE_TIMEOUT, sink.subscribe(&known)).await {
                Ok(Ok(())) => {}
                _ => continue,
            }
        }
        failures = 0;
        // Anything published while we were not listening was missed: let every consumer look.
        notifier.wake_all();
        loop {
            tokio::select! {
                request = requests.recv() => match request {
                    Some(channel) => {
                        match tokio::time::timeout(SUBSCRIBE_TIMEOUT, sink.subscribe(&channel)).await {
                            Ok(Ok(())) => {}
                            _ => break,
                        }
                    }
                    None => return,
                },
                message = stream.next() => match message {
                    Some(m) => notifier.wake(m.get_channel_name()),
                    None => break,
                },
            }
        }
        tracing::debug!("redis notification channel lost; reconnecting");
    }
}
