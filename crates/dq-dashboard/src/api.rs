//! The JSON API behind the pages, and the actions both share.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use dq_core::{
    is_valid_queue_name, BrokerError, BrokerErrorKind, ErrorChain, Message, MessageState,
    RetryCount,
};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::data;
use crate::Shared;

/// A failed request: its status and what to say.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) status: StatusCode,
    pub(crate) message: String,
}

impl Failure {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> Failure {
        Failure {
            status,
            message: message.into(),
        }
    }

    pub(crate) fn bad(message: impl Into<String>) -> Failure {
        Failure::new(StatusCode::BAD_REQUEST, message)
    }
}

impl From<BrokerError> for Failure {
    fn from(e: BrokerError) -> Failure {
        let status = match e.kind() {
            BrokerErrorKind::Unsupported => StatusCode::NOT_IMPLEMENTED,
            BrokerErrorKind::Rejected => StatusCode::BAD_REQUEST,
            _ if e.is_transient() => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::BAD_GATEWAY,
        };
        Failure::new(status, ErrorChain(&e).to_string())
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        (self.status, Json(json!({ "error": self.message }))).into_response()
    }
}

pub(crate) type ApiResult<T> = Result<Json<T>, Failure>;

pub(crate) fn check_queue(queue: &str) -> Result<(), Failure> {
    if is_valid_queue_name(queue) {
        Ok(())
    } else {
        Err(Failure::bad(format!(
            "invalid queue name {queue:?}: queue names match [a-zA-Z_][a-zA-Z0-9._-]*"
        )))
    }
}

pub(crate) fn parse_state(state: Option<&str>) -> Result<MessageState, Failure> {
    state
        .unwrap_or("ready")
        .parse()
        .map_err(|e: dq_core::UnknownMessageState| Failure::bad(e.to_string()))
}

pub(crate) async fn queues(State(shared): State<Arc<Shared>>) -> ApiResult<data::Overview> {
    Ok(Json(data::sample(&shared).await?))
}

#[derive(Deserialize)]
pub(crate) struct PageQuery {
    state: Option<String>,
    offset: Option<usize>,
    limit: Option<usize>,
}

pub(crate) async fn messages(
    State(shared): State<Arc<Shared>>,
    Path(queue): Path<String>,
    Query(q): Query<PageQuery>,
) -> ApiResult<data::MessagePage> {
    check_queue(&queue)?;
    let state = parse_state(q.state.as_deref())?;
    Ok(Json(
        data::page(
            &shared,
            &queue,
            state,
            q.offset.unwrap_or(0),
            q.limit.unwrap_or(50),
        )
        .await?,
    ))
}

/// A message with its stored result.
#[derive(Serialize)]
pub(crate) struct MessageDetail {
    #[serde(flatten)]
    pub(crate) message: data::MessageView,
    /// The stored result: `{"value": ..}`, `{"error": ..}`, or `null` without a result store.
    pub(crate) result: Option<Value>,
}

pub(crate) async fn detail(
    shared: &Shared,
    queue: &str,
    state: MessageState,
    id: &str,
) -> Result<MessageDetail, Failure> {
    check_queue(queue)?;
    let Some(message) = data::find(shared, queue, state, id).await? else {
        return Err(Failure::new(
            StatusCode::NOT_FOUND,
            format!(
                "no {state} message {id} in {queue} (it may have run, or been requeued or deleted)"
            ),
        ));
    };
    let result = match (&shared.results, Message::decode(message.body.as_bytes())) {
        (Some(results), Ok(m)) => Some(match results.fetch_result(&m, None).await {
            Ok(value) => json!({ "value": value }),
            Err(e) => json!({ "error": ErrorChain(&e).to_string() }),
        }),
        _ => None,
    };
    Ok(MessageDetail { message, result })
}

pub(crate) async fn message(
    State(shared): State<Arc<Shared>>,
    Path((queue, id)): Path<(String, String)>,
    Query(q): Query<PageQuery>,
) -> ApiResult<MessageDetail> {
    let state = parse_state(q.state.as_deref())?;
    Ok(Json(detail(&shared, &queue, state, &id).await?))
}

/// Which dead letters an action takes.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct Selection {
    /// These (dead-letter ids or message ids).
    #[serde(default)]
    pub(crate) ids: Vec<String>,
    /// Those of this actor.
    pub(crate) actor: Option<String>,
    /// Those whose reason or traceback contains this text (ignoring case).
    pub(crate) error: Option<String>,
    /// Every one.
    #[serde(default)]
    pub(crate) all: bool,
    /// Keep each message's retry count (requeue only; default: reset to 0 as Python's
    /// dashboard does).
    #[serde(default)]
    pub(crate) keep_retries: bool,
}

impl Selection {
    fn actor(&self) -> Option<&str> {
        self.actor.as_deref().filter(|a| !a.trim().is_empty())
    }

    fn error(&self) -> Option<&str> {
        self.error.as_deref().filter(|e| !e.trim().is_empty())
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.ids.is_empty() && self.actor().is_none() && self.error().is_none() && !self.all
    }

    pub(crate) fn describe(&self) -> String {
        let mut parts = Vec::new();
        if !self.ids.is_empty() {
            parts.push(format!("{} chosen", self.ids.len()));
        }
        if let Some(a) = self.actor() {
            parts.push(format!("of actor {a}"));
        }
        if let Some(e) = self.error() {
            parts.push(format!("whose error mentions {e:?}"));
        }
        if parts.is_empty() {
            "every dead letter".to_owned()
        } else {
            format!("the dead letters {}", parts.join(", "))
        }
    }
}

/// The broker ids the selection names; `None` for every dead letter.
pub(crate) async fn selected(
    shared: &Shared,
    queue: &str,
    sel: &Selection,
) -> Result<Option<Vec<String>>, Failure> {
    if sel.is_empty() {
        return Err(Failure::bad(
            "choose dead letters: ids, an actor, an error text, or all",
        ));
    }
    if sel.all && sel.ids.is_empty() && sel.actor().is_none() && sel.error().is_none() {
        return Ok(None);
    }
    let letters = data::filtered_dead(shared, queue, sel.actor(), sel.error()).await?;
    Ok(Some(
        letters
            .into_iter()
            .filter(|l| {
                sel.ids.is_empty()
                    || sel.ids.contains(&l.id)
                    || l.message_id.as_ref().is_some_and(|m| sel.ids.contains(m))
            })
            .map(|l| l.id)
            .collect(),
    ))
}

/// What an action did.
#[derive(Debug, Serialize)]
pub(crate) struct Done {
    pub(crate) queue: String,
    pub(crate) count: u64,
    /// The dead-letter ids requeued (requeue only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) ids: Vec<String>,
}

pub(crate) async fn do_requeue(
    shared: &Shared,
    queue: &str,
    sel: &Selection,
) -> Result<Done, Failure> {
    check_queue(queue)?;
    let ids = selected(shared, queue, sel).await?;
    let retries = if sel.keep_retries {
        RetryCount::Keep
    } else {
        RetryCount::Reset
    };
    let requeued = match &ids {
        Some(ids) if ids.is_empty() => Vec::new(),
        ids => {
            shared
                .broker
                .requeue_dead_letters(queue, ids.as_deref(), retries)
                .await?
        }
    };
    tracing::info!(
        queue,
        count = requeued.len(),
        "dashboard requeued dead letters"
    );
    Ok(Done {
        queue: queue.to_owned(),
        count: requeued.len() as u64,
        ids: requeued,
    })
}

pub(crate) async fn do_delete(
    shared: &Shared,
    queue: &str,
    sel: &Selection,
) -> Result<Done, Failure> {
    check_queue(queue)?;
    let ids = selected(shared, queue, sel).await?;
    let count = match &ids {
        Some(ids) if ids.is_empty() => 0,
        ids => {
            shared
                .broker
                .delete_dead_letters(queue, ids.as_deref())
                .await?
        }
    };
    tracing::info!(queue, count, "dashboard deleted dead letters");
    Ok(Done {
        queue: queue.to_owned(),
        count,
        ids: Vec::new(),
    })
}

pub(crate) async fn requeue(
    State(shared): State<Arc<Shared>>,
    Path(queue): Path<String>,
    Json(sel): Json<Selection>,
) -> ApiResult<Done> {
    Ok(Json(do_requeue(&shared, &queue, &sel).await?))
}

pub(crate) async fn delete(
    State(shared): State<Arc<Shared>>,
    Path(queue): Path<String>,
    Json(sel): Json<Selection>,
) -> ApiResult<Done> {
    Ok(Json(do_delete(&shared, &queue, &sel).await?))
}

/// A message to enqueue, as a producer in any language would (no middleware runs).
#[derive(Debug, Deserialize)]
pub(crate) struct Enqueue {
    pub(crate) actor: String,
    pub(crate) queue: String,
    #[serde(default)]
    pub(crate) args: Option<Value>,
    #[serde(default)]
    pub(crate) kwargs: Option<Value>,
    #[serde(default)]
    pub(crate) options: Option<Value>,
    #[serde(default)]
    pub(crate) delay_ms: Option<u64>,
}

pub(crate) async fn do_enqueue(shared: &Shared, e: Enqueue) -> Result<Message, Failure> {
    check_queue(&e.queue)?;
    if e.actor.trim().is_empty() {
        return Err(Failure::bad("the actor name is empty"));
    }
    let args = match e.args.unwrap_or(Value::Array(Vec::new())) {
        v @ Value::Array(_) => v,
        _ => return Err(Failure::bad("args must be a JSON array")),
    };
    let kwargs = match e.kwargs.unwrap_or(Value::Object(Default::default())) {
        v @ Value::Object(_) => v,
        _ => return Err(Failure::bad("kwargs must be a JSON object")),
    };
    let mut message = Message::new(&e.queue, &e.actor, &args, &kwargs)
        .map_err(|err| Failure::bad(err.to_string()))?;
    match e.options {
        None | Some(Value::Null) => {}
        Some(Value::Object(map)) => {
            for (k, v) in map {
                message.options.insert(k, v);
            }
        }
        Some(_) => return Err(Failure::bad("options must be a JSON object")),
    }
    let sent = shared
        .app
        .enqueue(message, e.delay_ms.map(Duration::from_millis))
        .await
        .map_err(|err| Failure::new(StatusCode::BAD_GATEWAY, ErrorChain(&err).to_string()))?;
    tracing::info!(queue = %sent.queue_name, actor = %sent.actor_name, message_id = %sent.message_id, "dashboard enqueued a message");
    Ok(sent)
}

pub(crate) async fn enqueue(
    State(shared): State<Arc<Shared>>,
    Json(e): Json<Enqueue>,
) -> ApiResult<Value> {
    let sent = do_enqueue(&shared, e).await?;
    Ok(Json(sent.to_value()))
}

/// An abort or cancel request.
#[derive(Debug, Deserialize)]
pub(crate) struct AbortRequest {
    #[serde(default)]
    pub(crate) mode: Option<String>,
    #[serde(default)]
    pub(crate) timeout_ms: Option<u64>,
}

pub(crate) async fn do_abort(
    shared: &Shared,
    message_id: &str,
    req: &AbortRequest,
) -> Result<&'static str, Failure> {
    let Some(abortable) = &shared.abortable else {
        return Err(Failure::new(
            StatusCode::NOT_IMPLEMENTED,
            "aborts are not configured: give the dashboard dramatiq-abort's Redis (dq dashboard \
             --abort, or Dashboard::abortable)",
        ));
    };
    if message_id.trim().is_empty() {
        return Err(Failure::bad("the message id is empty"));
    }
    let mode: dq_abort::AbortMode = req
        .mode
        .as_deref()
        .unwrap_or("abort")
        .parse()
        .map_err(Failure::bad)?;
    let options = dq_abort::AbortOptions::default()
        .mode(mode)
        .abort_timeout(Duration::from_millis(req.timeout_ms.unwrap_or(0)));
    abortable
        .abort_with(message_id, &options)
        .await
        .map_err(|e| Failure::new(StatusCode::BAD_GATEWAY, ErrorChain(&e).to_string()))?;
    tracing::info!(
        message_id,
        mode = mode.as_str(),
        "dashboard signalled an abort event"
    );
    Ok(mode.as_str())
}

pub(crate) async fn abort(
    State(shared): State<Arc<Shared>>,
    Path(message_id): Path<String>,
    Json(req): Json<AbortRequest>,
) -> ApiResult<Value> {
    let mode = do_abort(&shared, &message_id, &req).await?;
    Ok(Json(json!({ "message_id": message_id, "mode": mode })))
}

pub(crate) async fn workers(State(shared): State<Arc<Shared>>) -> ApiResult<Value> {
    let workers = data::workers(&shared).await?;
    Ok(Json(match workers {
        Some(ws) => json!({ "supported": true, "workers": ws.iter().map(|w| {
            let mut v = serde_json::to_value(w).unwrap_or(Value::Null);
            if let Value::Object(m) = &mut v {
                m.insert("name".into(), Value::String(w.display_name()));
            }
            v
        }).collect::<Vec<_>>() }),
        None => json!({ "supported": false, "workers": [] }),
    }))
}

pub(crate) async fn schedules(State(shared): State<Arc<Shared>>) -> ApiResult<Value> {
    Ok(Json(match data::schedules(&shared).await? {
        Ok(s) => json!({ "supported": true, "schedules": s }),
        Err(why) => json!({ "supported": false, "reason": why, "schedules": [] }),
    }))
}

pub(crate) async fn unique_locks(State(shared): State<Arc<Shared>>) -> ApiResult<Value> {
    Ok(Json(match data::unique_locks(&shared).await? {
        Ok(l) => json!({
            "supported": true,
            "queues": l.into_iter().map(|(q, n)| json!({ "queue": q, "locks": n })).collect::<Vec<_>>(),
        }),
        Err(why) => json!({ "supported": false, "reason": why, "queues": [] }),
    }))
}

pub(crate) async fn csrf(State(shared): State<Arc<Shared>>) -> Json<Value> {
    Json(json!({ "token": shared.csrf }))
}
