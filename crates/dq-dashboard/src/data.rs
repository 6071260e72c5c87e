//! What the pages and the JSON API show, read from the broker once for both.

use std::collections::BTreeSet;

use dq_core::{
    base_queue_name, is_valid_queue_name, now_ms, BrokerError, BrokerErrorKind, BrowsedMessage,
    Message, MessageState, ScheduleState, WorkerInfo,
};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::management::QueueRates;
use crate::sampler::{Rates, Sample};
use crate::Shared;

/// The most messages one page lists.
pub(crate) const MAX_PAGE: usize = 500;
/// How far into a queue looking a message up by id goes.
const MAX_LOOKUP: usize = 20_000;

/// One row of the overview.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct QueueRow {
    pub(crate) name: String,
    pub(crate) ready: u64,
    /// Of `ready`, those waiting with a broker priority.
    pub(crate) prioritized: u64,
    pub(crate) delayed: u64,
    pub(crate) in_flight: u64,
    pub(crate) dead: u64,
    /// Running worker processes that consume it (`None`: the broker keeps no registry).
    pub(crate) workers: Option<usize>,
    pub(crate) rates: Rates,
    pub(crate) history: Vec<Sample>,
    /// From the RabbitMQ management API, when its URL is given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) management: Option<QueueRates>,
}

/// The overview: every queue found, and what the broker cannot tell.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Overview {
    pub(crate) broker: &'static str,
    pub(crate) queues: Vec<QueueRow>,
    /// What this broker cannot show, in words for the page.
    pub(crate) limits: Vec<String>,
    pub(crate) sampled_at: i64,
}

/// The running workers, or `None` when the broker keeps no registry.
pub(crate) async fn workers(shared: &Shared) -> Result<Option<Vec<WorkerInfo>>, BrokerError> {
    match shared.broker.workers().await {
        Ok(w) => Ok(Some(w)),
        Err(e) if e.kind() == BrokerErrorKind::Unsupported => Ok(None),
        Err(e) => Err(e),
    }
}

/// Every queue to show: the broker's listing (Redis scans its namespace), the queues running
/// workers consume, the management API's listing, and the ones the user named.
pub(crate) async fn queue_names(
    shared: &Shared,
    workers: Option<&[WorkerInfo]>,
    limits: &mut Vec<String>,
) -> Result<Vec<String>, BrokerError> {
    let mut all: BTreeSet<String> = shared.queues.iter().cloned().collect();
    match shared.broker.list_queues().await {
        Ok(qs) => all.extend(qs),
        Err(e) if e.kind() == BrokerErrorKind::Unsupported => {
            let listed = match &shared.management {
                Some(m) => match m.queue_names().await {
                    Ok(names) => {
                        all.extend(names);
                        true
                    }
                    Err(e) => {
                        limits.push(format!("The management API did not answer: {e}."));
                        false
                    }
                },
                None => false,
            };
            if !listed {
                limits.push(format!(
                    "The {} broker cannot list its queues: these are the queues running workers \
                     consume and the ones named with --queue.",
                    shared.broker.kind()
                ));
            }
        }
        Err(e) => return Err(e),
    }
    for w in workers.into_iter().flatten() {
        all.extend(w.queues.iter().map(|q| base_queue_name(q).to_owned()));
    }
    Ok(all.into_iter().filter(|q| is_valid_queue_name(q)).collect())
}

/// Counts every queue and records the counts for the throughput.
pub(crate) async fn sample(shared: &Shared) -> Result<Overview, BrokerError> {
    let workers = workers(shared).await?;
    let mut limits = Vec::new();
    let names = queue_names(shared, workers.as_deref(), &mut limits).await?;
    let at = now_ms();
    let mut counted = Vec::with_capacity(names.len());
    for q in names {
        let stats = shared.broker.stats(&q).await?;
        counted.push((q, stats));
    }
    {
        let mut history = shared.history.lock().unwrap_or_else(|e| e.into_inner());
        for (q, stats) in &counted {
            history.record(q, at, *stats);
        }
    }
    let mut queues = Vec::with_capacity(counted.len());
    for (name, s) in counted {
        let (rates, history) = {
            let h = shared.history.lock().unwrap_or_else(|e| e.into_inner());
            (h.rates(&name), h.samples(&name))
        };
        let management = match &shared.management {
            Some(m) => m.rates(&name).await.ok(),
            None => None,
        };
        queues.push(QueueRow {
            workers: workers.as_ref().map(|ws| {
                ws.iter()
                    .filter(|w| w.queues.iter().any(|q| q == &name))
                    .count()
            }),
            name,
            ready: s.ready,
            prioritized: s.prioritized,
            delayed: s.delayed,
            in_flight: s.in_flight,
            dead: s.dead,
            rates,
            history,
            management,
        });
    }
    if workers.is_none() {
        limits.push(format!(
            "The {} broker keeps no worker registry: no workers are shown.",
            shared.broker.kind()
        ));
    }
    if shared.broker.kind() == "amqp" {
        limits.push(
            "RabbitMQ cannot show a queue's ready or delayed messages without taking them (AMQP \
             has no browse): their counts are shown, and dead letters are listed as `dq \
             dead-letters` lists them. Nor does it report messages in flight (unacked) over \
             AMQP: that column shows 0."
                .to_owned(),
        );
        if shared.management.is_none() {
            limits.push(
                "Give the management API URL (--management-url or DQ_RABBITMQ_MANAGEMENT_URL) \
                 for RabbitMQ's own rates and consumer counts."
                    .to_owned(),
            );
        }
    }
    Ok(Overview {
        broker: shared.broker.kind(),
        queues,
        limits,
        sampled_at: at,
    })
}

/// A message as the pages and the API show it.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct MessageView {
    /// The broker's id: what the actions take.
    pub(crate) id: String,
    pub(crate) state: &'static str,
    pub(crate) queue: String,
    pub(crate) message_id: Option<String>,
    pub(crate) actor: Option<String>,
    pub(crate) call: String,
    pub(crate) args: Option<Value>,
    pub(crate) kwargs: Option<Value>,
    pub(crate) options: Option<Map<String, Value>>,
    /// `message_timestamp`: when the message was built (ms).
    pub(crate) enqueued_at: Option<i64>,
    pub(crate) eta: Option<i64>,
    pub(crate) retries: u32,
    /// How old the message is now (ms).
    pub(crate) age_ms: Option<i64>,
    pub(crate) dead_lettered_at: Option<i64>,
    /// Why it was dead-lettered, where the broker records it.
    pub(crate) reason: Option<String>,
    /// The last failure's traceback (`options.traceback`, written by Retries in Python and dq).
    pub(crate) traceback: Option<String>,
    /// Why the body is not a message, when it is not.
    pub(crate) decode_error: Option<String>,
    /// The body as text.
    pub(crate) body: String,
}

impl MessageView {
    pub(crate) fn new(queue: &str, m: &BrowsedMessage) -> MessageView {
        let body = String::from_utf8_lossy(&m.body).into_owned();
        let mut view = MessageView {
            id: m.id.clone(),
            state: m.state.as_str(),
            queue: queue.to_owned(),
            message_id: None,
            actor: None,
            call: String::new(),
            args: None,
            kwargs: None,
            options: None,
            enqueued_at: None,
            eta: None,
            retries: 0,
            age_ms: None,
            dead_lettered_at: m.dead_lettered_at,
            reason: m.reason.clone(),
            traceback: None,
            decode_error: None,
            body,
        };
        match Message::decode(&m.body) {
            Ok(msg) => {
                view.message_id = Some(msg.message_id.clone());
                view.actor = Some(msg.actor_name.clone());
                view.call = msg.display_call();
                view.args = msg.args_value().ok();
                view.kwargs = msg.kwargs_value().ok();
                view.enqueued_at = Some(msg.message_timestamp);
                view.eta = msg.options.eta();
                view.retries = msg.options.retries();
                view.age_ms = Some(now_ms().saturating_sub(msg.message_timestamp));
                view.traceback = msg.options.get_str("traceback").map(str::to_owned);
                view.options = Some(msg.options.0.clone());
            }
            Err(e) => {
                view.call = "<not a message>".to_owned();
                view.decode_error = Some(e.to_string());
            }
        }
        view
    }

    /// The text the error filter looks in: the reason and the traceback.
    pub(crate) fn error_text(&self) -> String {
        let mut t = self.reason.clone().unwrap_or_default();
        if let Some(tb) = &self.traceback {
            t.push('\n');
            t.push_str(tb);
        }
        t
    }

    /// Whether it passes the filters: its actor is `actor`, its error mentions `error`.
    pub(crate) fn matches(&self, actor: Option<&str>, error: Option<&str>) -> bool {
        actor.is_none_or(|a| self.actor.as_deref() == Some(a))
            && error.is_none_or(|e| self.error_text().to_lowercase().contains(&e.to_lowercase()))
    }
}

/// One page of a queue's messages.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct MessagePage {
    pub(crate) queue: String,
    pub(crate) state: &'static str,
    pub(crate) offset: usize,
    pub(crate) limit: usize,
    /// Whether the broker can list messages in this state (RabbitMQ: dead letters only).
    pub(crate) supported: bool,
    /// Why not, when it cannot.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) unsupported: Option<String>,
    pub(crate) messages: Vec<MessageView>,
}

pub(crate) async fn page(
    shared: &Shared,
    queue: &str,
    state: MessageState,
    offset: usize,
    limit: usize,
) -> Result<MessagePage, BrokerError> {
    let limit = limit.clamp(1, MAX_PAGE);
    // Far past any queue's end: a broker adds the limit to it.
    let offset = offset.min(1 << 40);
    let mut page = MessagePage {
        queue: queue.to_owned(),
        state: state.as_str(),
        offset,
        limit,
        supported: true,
        unsupported: None,
        messages: Vec::new(),
    };
    match shared.broker.browse(queue, state, offset, limit).await {
        Ok(ms) => page.messages = ms.iter().map(|m| MessageView::new(queue, m)).collect(),
        Err(e) if e.kind() == BrokerErrorKind::Unsupported => {
            page.supported = false;
            page.unsupported = Some(format!(
                "The {} broker cannot list {} messages without taking them ({}).",
                shared.broker.kind(),
                state.as_str(),
                e
            ));
        }
        Err(e) => return Err(e),
    }
    Ok(page)
}

/// Finds the message `id` names (its broker id or its `message_id`) in `state`.
pub(crate) async fn find(
    shared: &Shared,
    queue: &str,
    state: MessageState,
    id: &str,
) -> Result<Option<MessageView>, BrokerError> {
    let mut offset = 0;
    while offset < MAX_LOOKUP {
        let batch = shared.broker.browse(queue, state, offset, MAX_PAGE).await?;
        if let Some(m) = batch.iter().find(|m| m.id == id) {
            return Ok(Some(MessageView::new(queue, m)));
        }
        for m in &batch {
            let view = MessageView::new(queue, m);
            if view.message_id.as_deref() == Some(id) {
                return Ok(Some(view));
            }
        }
        if batch.len() < MAX_PAGE {
            break;
        }
        offset += MAX_PAGE;
    }
    Ok(None)
}

/// Every dead letter of `queue` that passes the filters.
pub(crate) async fn filtered_dead(
    shared: &Shared,
    queue: &str,
    actor: Option<&str>,
    error: Option<&str>,
) -> Result<Vec<MessageView>, BrokerError> {
    let total = shared.broker.stats(queue).await?.dead;
    let letters = shared
        .broker
        .dead_letters(queue, usize::try_from(total).unwrap_or(usize::MAX))
        .await?;
    Ok(letters
        .into_iter()
        .map(BrowsedMessage::from)
        .map(|m| MessageView::new(queue, &m))
        .filter(|v| v.matches(actor, error))
        .collect())
}

/// The recorded schedules, or why there are none to show.
/// Unique locks held, per queue that holds any: `Err` (the words for the page) when the broker
/// keeps no unique locks.
pub(crate) async fn unique_locks(
    shared: &Shared,
) -> Result<Result<Vec<(String, u64)>, String>, BrokerError> {
    let workers = workers(shared).await?;
    let mut limits = Vec::new();
    let names = queue_names(shared, workers.as_deref(), &mut limits).await?;
    let mut held = Vec::new();
    for q in names {
        match shared.broker.unique_locks(&q).await {
            Ok(0) => {}
            Ok(n) => held.push((q, n)),
            Err(e) if e.kind() == BrokerErrorKind::Unsupported => {
                return Ok(Err(format!(
                    "The {} broker keeps no unique locks: unique, debounced and throttled sends \
                     need Redis (or the in-memory broker).",
                    shared.broker.kind()
                )))
            }
            Err(e) => return Err(e),
        }
    }
    Ok(Ok(held))
}

pub(crate) async fn schedules(
    shared: &Shared,
) -> Result<Result<Vec<ScheduleState>, String>, BrokerError> {
    match shared.broker.schedules().await {
        Ok(s) => Ok(Ok(s)),
        Err(e) if e.kind() == BrokerErrorKind::Unsupported => Ok(Err(format!(
            "The {} broker records no schedules: its workers claim ticks in the Redis of \
             DQ_PERIODIC_REDIS_URL (`dq schedules` reads them there).",
            shared.broker.kind()
        ))),
        Err(e) => Err(e),
    }
}
