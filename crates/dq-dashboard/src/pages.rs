//! The HTML pages (maud, built at compile time) and the embedded assets.

use std::sync::Arc;

use axum::extract::{Form, Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use dq_core::{now_ms, MessageState};
use maud::{html, Markup, DOCTYPE};
use serde::Deserialize;
use serde_json::Value;

use crate::api::{self, Failure, Selection};
use crate::data::{self, MessageView, QueueRow};
use crate::sampler::Sample;
use crate::security::CSRF_FIELD;
use crate::Shared;

const STYLE: &str = include_str!("../assets/style.css");
const SCRIPT: &str = include_str!("../assets/live.js");

pub(crate) async fn style() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], STYLE).into_response()
}

pub(crate) async fn script() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        SCRIPT,
    )
        .into_response()
}

/// An error as a page.
pub(crate) struct PageFailure(Arc<Shared>, Failure);

impl IntoResponse for PageFailure {
    fn into_response(self) -> Response {
        let PageFailure(shared, f) = self;
        let body = layout(
            &shared,
            "Error",
            "",
            html! {
                h1 { "Error " (f.status.as_u16()) }
                p.error { (f.message) }
                p { a href=(home(&shared)) { "Back to the overview" } }
            },
        );
        (f.status, body).into_response()
    }
}

pub(crate) type PageResult = Result<Response, PageFailure>;

fn fail(shared: &Arc<Shared>) -> impl FnOnce(Failure) -> PageFailure + '_ {
    move |f| PageFailure(shared.clone(), f)
}

fn layout(shared: &Shared, title: &str, active: &str, body: Markup) -> Html<String> {
    let base = &shared.base;
    let nav = [
        ("overview", "/", "Queues"),
        ("workers", "/workers", "Workers"),
        ("schedules", "/schedules", "Schedules"),
        ("enqueue", "/enqueue", "Enqueue"),
    ];
    Html(
        html! {
            (DOCTYPE)
            html lang="en" {
                head {
                    meta charset="utf-8";
                    meta name="viewport" content="width=device-width, initial-scale=1";
                    title { (title) " · dq dashboard" }
                    link rel="stylesheet" href={(base) "/assets/style.css"};
                    script src={(base) "/assets/live.js"} defer {}
                }
                body data-base=(base) {
                    header {
                        a.brand href=(home(shared)) { "dq" }
                        nav {
                            @for (key, path, label) in nav {
                                a class=[(key == active).then_some("active")] href=(if path == "/" { home(shared) } else { format!("{base}{path}") }) { (label) }
                            }
                        }
                        span.broker { (shared.broker.kind()) " broker" }
                    }
                    main { (body) }
                }
            }
        }
        .into_string(),
    )
}

/// The overview's address: the prefix itself (a router nested at `/dq` answers `/dq`, not
/// `/dq/`), or `/`.
fn home(shared: &Shared) -> String {
    if shared.base.is_empty() {
        "/".to_owned()
    } else {
        shared.base.clone()
    }
}

fn when(ms: Option<i64>) -> String {
    ms.and_then(chrono::DateTime::from_timestamp_millis)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| "–".to_owned())
}

fn duration(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {}s", s / 60, s % 60),
        3600..86400 => format!("{}h {}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d {}h", s / 86400, (s % 86400) / 3600),
    }
}

fn ago(ms: Option<i64>) -> String {
    ms.map(|t| format!("{} ago", duration(now_ms() - t)))
        .unwrap_or_else(|| "–".to_owned())
}

fn signed(x: f64) -> String {
    if x > 0.0 {
        format!("+{x}")
    } else {
        format!("{x}")
    }
}

/// The backlog over the sampled minutes as an inline SVG line.
fn sparkline(samples: &[Sample]) -> Markup {
    let (w, h) = (120.0, 24.0);
    if samples.len() < 2 {
        return html! { span.muted { "sampling…" } };
    }
    let values: Vec<f64> = samples
        .iter()
        .map(|s| (s.ready + s.delayed + s.in_flight) as f64)
        .collect();
    let max = values.iter().copied().fold(1.0, f64::max);
    let step = w / (values.len() - 1) as f64;
    let points: Vec<String> = values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            format!(
                "{:.1},{:.1}",
                i as f64 * step,
                h - v / max * (h - 2.0) - 1.0
            )
        })
        .collect();
    html! {
        svg.spark width=(w) height=(h) viewBox={"0 0 " (w) " " (h)} role="img" aria-label="backlog over the last minutes" {
            polyline points=(points.join(" ")) {}
        }
    }
}

fn csrf_input(shared: &Shared) -> Markup {
    html! { input type="hidden" name=(CSRF_FIELD) value=(shared.csrf); }
}

fn queue_link(shared: &Shared, queue: &str, state: &str) -> String {
    format!("{}/queues/{}?state={}", shared.base, queue, state)
}

fn message_link(shared: &Shared, m: &MessageView) -> String {
    format!(
        "{}/queues/{}/messages/{}?state={}",
        shared.base,
        m.queue,
        encode(&m.id),
        m.state
    )
}

/// Percent-encodes what a path segment or query value cannot hold.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn overview_row(shared: &Shared, q: &QueueRow) -> Markup {
    html! {
        tr data-queue=(q.name) {
            td { a href=(queue_link(shared, &q.name, "ready")) { (q.name) } }
            td.num data-field="ready" { (q.ready) }
            td.num data-field="delayed" { (q.delayed) }
            td.num data-field="in_flight" { (q.in_flight) }
            td.num data-field="dead" {
                @if q.dead > 0 { a.dead href=(queue_link(shared, &q.name, "dead")) { (q.dead) } } @else { "0" }
            }
            td.num data-field="workers" { (q.workers.map(|w| w.to_string()).unwrap_or_else(|| "–".into())) }
            td.num data-field="backlog_per_min" { (signed(q.rates.backlog_per_min)) }
            td.num data-field="dead_per_min" { (q.rates.dead_per_min) }
            td data-field="spark" { (sparkline(&q.history)) }
            @if let Some(m) = &q.management {
                td.num { (format!("{:.1}", m.publish_per_s)) }
                td.num { (format!("{:.1}", m.deliver_per_s)) }
                td.num { (format!("{:.1}", m.ack_per_s)) }
                td.num { (m.consumers) }
            }
        }
    }
}

pub(crate) async fn overview(State(shared): State<Arc<Shared>>) -> PageResult {
    let o = data::sample(&shared)
        .await
        .map_err(Failure::from)
        .map_err(fail(&shared))?;
    let management = shared.management.is_some();
    let body = html! {
        h1 { "Queues" }
        p.live { span #live-status { "Live: counts refresh every few seconds." } }
        @for l in &o.limits { p.note { (l) } }
        @if o.queues.is_empty() {
            p { "No queues yet: none holds a message and no worker is running." }
        } @else {
            table #overview data-live="overview" {
                thead { tr {
                    th { "Queue" } th.num { "Ready" } th.num { "Delayed" } th.num { "In flight" }
                    th.num { "Dead" } th.num { "Workers" }
                    th.num title="Change of the messages waiting (ready, delayed, in flight) per minute over the last 5 minutes of samples: negative when workers drain the queue" { "Backlog Δ/min" }
                    th.num title="New dead letters per minute over the last 5 minutes of samples" { "Dead/min" }
                    th { "Last 10 min" }
                    @if management { th.num { "Publish/s" } th.num { "Deliver/s" } th.num { "Ack/s" } th.num { "Consumers" } }
                } }
                tbody { @for q in &o.queues { (overview_row(&shared, q)) } }
            }
        }
        p.muted { "Throughput is computed from the counts this dashboard samples every few seconds while it runs." }
    };
    Ok(layout(&shared, "Queues", "overview", body).into_response())
}

#[derive(Deserialize, Default)]
pub(crate) struct QueueQuery {
    state: Option<String>,
    page: Option<usize>,
    actor: Option<String>,
    error: Option<String>,
    done: Option<String>,
}

const PER_PAGE: usize = 50;

pub(crate) async fn queue(
    State(shared): State<Arc<Shared>>,
    Path(queue): Path<String>,
    Query(q): Query<QueueQuery>,
) -> PageResult {
    let f = fail(&shared);
    api::check_queue(&queue).map_err(fail(&shared))?;
    let state = api::parse_state(q.state.as_deref()).map_err(fail(&shared))?;
    // Far past any queue's end, and far from overflowing `page_no * PER_PAGE`.
    let page_no = q.page.unwrap_or(0).min(1 << 32);
    let stats = shared
        .broker
        .stats(&queue)
        .await
        .map_err(Failure::from)
        .map_err(fail(&shared))?;
    let actor = q.actor.as_deref().filter(|s| !s.trim().is_empty());
    let error = q.error.as_deref().filter(|s| !s.trim().is_empty());
    let filtered = state == MessageState::DeadLettered && (actor.is_some() || error.is_some());
    let page = if filtered {
        let all = data::filtered_dead(&shared, &queue, actor, error)
            .await
            .map_err(Failure::from)
            .map_err(fail(&shared))?;
        data::MessagePage {
            queue: queue.clone(),
            state: state.as_str(),
            offset: page_no * PER_PAGE,
            limit: PER_PAGE,
            supported: true,
            unsupported: None,
            messages: all
                .into_iter()
                .skip(page_no * PER_PAGE)
                .take(PER_PAGE)
                .collect(),
        }
    } else {
        data::page(&shared, &queue, state, page_no * PER_PAGE, PER_PAGE)
            .await
            .map_err(Failure::from)
            .map_err(f)?
    };
    let dead = state == MessageState::DeadLettered;
    let tabs = [
        (MessageState::Ready, "Ready", stats.ready),
        (MessageState::Delayed, "Delayed", stats.delayed),
        (MessageState::DeadLettered, "Dead-lettered", stats.dead),
    ];
    let filter_q = format!(
        "&actor={}&error={}",
        encode(actor.unwrap_or("")),
        encode(error.unwrap_or(""))
    );
    let body = html! {
        h1 { "Queue " code { (queue) } }
        @if let Some(done) = &q.done { p.done { (done) } }
        p.counts data-live="queue" data-queue=(queue) {
            "Ready " strong data-field="ready" { (stats.ready) } " · Delayed " strong data-field="delayed" { (stats.delayed) }
            " · In flight " strong data-field="in_flight" { (stats.in_flight) } " · Dead " strong data-field="dead" { (stats.dead) }
        }
        nav.tabs {
            @for (s, label, n) in tabs {
                a class=[(s == state).then_some("active")] href=(queue_link(&shared, &queue, s.as_str())) { (label) " (" (n) ")" }
            }
        }
        @if let Some(why) = &page.unsupported {
            p.note { (why) }
        } @else {
            @if dead {
                form.filters method="get" action={(shared.base) "/queues/" (queue)} {
                    input type="hidden" name="state" value="dead";
                    label { "Actor " input name="actor" value=(actor.unwrap_or("")) placeholder="any"; }
                    label { "Error contains " input name="error" value=(error.unwrap_or("")) placeholder="any"; }
                    button type="submit" { "Filter" }
                }
            }
            form #messages method="post" action={(shared.base) "/queues/" (queue) "/requeue"} {
                (csrf_input(&shared))
                @if let Some(a) = actor { input type="hidden" name="actor" value=(a); }
                @if let Some(e) = error { input type="hidden" name="error" value=(e); }
                @if page.messages.is_empty() {
                    p { "No " (state.as_str()) " messages" @if filtered { " match these filters" } "." }
                } @else {
                    table.messages {
                        thead { tr {
                            @if dead { th { input type="checkbox" data-check-all title="select all on this page"; } }
                            th { "Message" } th { "Actor" } th { "Call" } th { "Enqueued" } th { "ETA" }
                            th.num { "Retries" } th { "Age" }
                            @if dead { th { "Dead-lettered" } th { "Error" } }
                        } }
                        tbody {
                            @for m in &page.messages {
                                tr {
                                    @if dead { td { input type="checkbox" name="ids" value=(m.id); } }
                                    td { a href=(message_link(&shared, m)) { code { (m.message_id.as_deref().unwrap_or(&m.id)) } } }
                                    td { (m.actor.as_deref().unwrap_or("–")) }
                                    td.call { code { (m.call) } }
                                    td { (when(m.enqueued_at)) }
                                    td { (when(m.eta)) }
                                    td.num { (m.retries) }
                                    td { (m.age_ms.map(duration).unwrap_or_else(|| "–".into())) }
                                    @if dead {
                                        td { (when(m.dead_lettered_at)) }
                                        td.error { (first_line(&m.error_text())) }
                                    }
                                }
                            }
                        }
                    }
                }
                nav.pages {
                    @if page_no > 0 {
                        a href={(queue_link(&shared, &queue, state.as_str())) "&page=" (page_no - 1) (filter_q)} { "← Newer page" }
                    }
                    " Page " (page_no + 1) " "
                    @if page.messages.len() == PER_PAGE {
                        a href={(queue_link(&shared, &queue, state.as_str())) "&page=" (page_no + 1) (filter_q)} { "Next page →" }
                    }
                }
                @if dead && stats.dead > 0 {
                    fieldset.bulk {
                        legend { "Dead letters" }
                        p.muted {
                            "Acts on the checked letters; with none checked, on every letter "
                            @if filtered { "matching the filters" } @else { "of this queue" }
                            ". Requeueing resets each message's retries, as Python's dashboard does."
                        }
                        @if !filtered { input type="hidden" name="all_if_none" value="yes"; }
                        button type="submit" { "Requeue" }
                        " "
                        button.danger type="submit" formaction={(shared.base) "/queues/" (queue) "/delete"} { "Delete…" }
                    }
                }
            }
        }
    };
    Ok(layout(&shared, &queue, "overview", body).into_response())
}

fn first_line(s: &str) -> String {
    let line = s
        .trim()
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim();
    if line.chars().count() > 100 {
        format!("{}…", line.chars().take(99).collect::<String>())
    } else {
        line.to_owned()
    }
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
}

#[derive(Deserialize)]
pub(crate) struct StateQuery {
    state: Option<String>,
    done: Option<String>,
}

pub(crate) async fn message(
    State(shared): State<Arc<Shared>>,
    Path((queue, id)): Path<(String, String)>,
    Query(q): Query<StateQuery>,
) -> PageResult {
    let state = api::parse_state(q.state.as_deref()).map_err(fail(&shared))?;
    let d = api::detail(&shared, &queue, state, &id)
        .await
        .map_err(fail(&shared))?;
    let m = &d.message;
    let dead = state == MessageState::DeadLettered;
    let body = html! {
        h1 { "Message " code { (m.message_id.as_deref().unwrap_or(&m.id)) } }
        @if let Some(done) = &q.done { p.done { (done) } }
        p { a href=(queue_link(&shared, &queue, state.as_str())) { "← " (queue) ", " (state.as_str()) } }
        dl.fields {
            dt { "Actor" } dd { (m.actor.as_deref().unwrap_or("–")) }
            dt { "Call" } dd { code { (m.call) } }
            dt { "Queue" } dd { (m.queue) " (" (m.state) ")" }
            dt { "Broker id" } dd { code { (m.id) } }
            dt { "Enqueued" } dd { (when(m.enqueued_at)) " (" (ago(m.enqueued_at)) ")" }
            dt { "ETA" } dd { (when(m.eta)) }
            dt { "Retries" } dd { (m.retries) }
            @if dead { dt { "Dead-lettered" } dd { (when(m.dead_lettered_at)) } }
        }
        @if let Some(e) = &m.decode_error { p.error { "This body is not a Dramatiq message: " (e) } }
        @if let Some(reason) = &m.reason { h2 { "Reason" } pre.error { (reason) } }
        @if let Some(tb) = &m.traceback { h2 { "Last error" } pre.traceback { (tb) } }
        @if dead && m.reason.is_none() && m.traceback.is_none() {
            p.muted { "No reason is recorded: Dramatiq's brokers keep none for a dead letter, and no traceback is in its options." }
        }
        @if let Some(args) = &m.args { h2 { "Arguments" } pre { (pretty(args)) } }
        @if let Some(kwargs) = &m.kwargs { h2 { "Keyword arguments" } pre { (pretty(kwargs)) } }
        @if let Some(options) = &m.options { h2 { "Options" } pre { (pretty(&Value::Object(options.clone()))) } }
        h2 { "Result" }
        @match &d.result {
            Some(r) => pre { (pretty(r)) },
            None => p.muted { "No result store is configured for this dashboard." },
        }
        h2 { "Actions" }
        div.actions {
            @if dead {
                form method="post" action={(shared.base) "/queues/" (queue) "/requeue"} {
                    (csrf_input(&shared))
                    input type="hidden" name="ids" value=(m.id);
                    input type="hidden" name="confirmed" value="yes";
                    button type="submit" { "Requeue" }
                }
                form method="post" action={(shared.base) "/queues/" (queue) "/delete"} {
                    (csrf_input(&shared))
                    input type="hidden" name="ids" value=(m.id);
                    button.danger type="submit" { "Delete…" }
                }
            }
            @if let (Some(mid), true) = (&m.message_id, shared.abortable.is_some() && !dead) {
                form method="post" action={(shared.base) "/messages/" (encode(mid)) "/abort"} {
                    (csrf_input(&shared))
                    input type="hidden" name="queue" value=(queue);
                    select name="mode" { option value="cancel" { "Cancel (if not started)" } option value="abort" { "Abort (running too)" } }
                    button.danger type="submit" { "Send…" }
                }
            }
            @if shared.abortable.is_none() && !dead {
                p.muted { "Abort and cancel need dramatiq-abort's Redis: run the dashboard with --abort." }
            }
        }
        details { summary { "Raw body" } pre { (m.body) } }
    };
    Ok(layout(&shared, "Message", "overview", body).into_response())
}

/// A POSTed form's fields, in order (`ids` may repeat).
type Fields = Vec<(String, String)>;

fn field<'a>(fields: &'a Fields, name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn selection(fields: &Fields) -> Selection {
    let ids: Vec<String> = fields
        .iter()
        .filter(|(k, v)| k == "ids" && !v.is_empty())
        .map(|(_, v)| v.clone())
        .collect();
    let actor = field(fields, "actor").map(str::to_owned);
    let error = field(fields, "error").map(str::to_owned);
    let mut sel = Selection {
        ids,
        actor,
        error,
        ..Selection::default()
    };
    sel.all = field(fields, "all") == Some("yes")
        || (sel.is_empty() && field(fields, "all_if_none") == Some("yes"));
    sel.keep_retries = field(fields, "keep_retries") == Some("yes");
    sel
}

/// The page asking to confirm a destructive action, carrying the form's fields on.
fn confirm(shared: &Shared, action: &str, question: &str, fields: &Fields, back: &str) -> Response {
    let body = html! {
        h1 { "Confirm" }
        p.question { (question) }
        form method="post" action=(action) {
            @for (k, v) in fields {
                @if k != CSRF_FIELD && k != "confirmed" { input type="hidden" name=(k) value=(v); }
            }
            (csrf_input(shared))
            input type="hidden" name="confirmed" value="yes";
            button.danger type="submit" { "Yes, do it" }
            " "
            a href=(back) { "No, go back" }
        }
    };
    layout(shared, "Confirm", "overview", body).into_response()
}

/// How many dead letters the selection takes now, for the confirmation page.
async fn how_many(shared: &Shared, queue: &str, sel: &Selection) -> Result<u64, Failure> {
    api::check_queue(queue)?;
    Ok(match api::selected(shared, queue, sel).await? {
        Some(ids) => ids.len() as u64,
        None => shared.broker.stats(queue).await?.dead,
    })
}

fn confirmed(fields: &Fields) -> bool {
    field(fields, "confirmed") == Some("yes")
}

fn done_redirect(shared: &Shared, queue: &str, text: &str) -> Response {
    Redirect::to(&format!(
        "{}&done={}",
        queue_link(shared, queue, "dead"),
        encode(text)
    ))
    .into_response()
}

pub(crate) async fn requeue(
    State(shared): State<Arc<Shared>>,
    Path(queue): Path<String>,
    Form(fields): Form<Fields>,
) -> PageResult {
    let sel = selection(&fields);
    let single = sel.ids.len() == 1 && sel.actor.is_none() && sel.error.is_none();
    if !single && !confirmed(&fields) {
        let n = how_many(&shared, &queue, &sel)
            .await
            .map_err(fail(&shared))?;
        let question = format!(
            "Requeue {n} message(s), {} of {queue}? Each goes back to the end of the queue with its retries reset.",
            sel.describe()
        );
        return Ok(confirm(
            &shared,
            &format!("{}/queues/{queue}/requeue", shared.base),
            &question,
            &fields,
            &queue_link(&shared, &queue, "dead"),
        ));
    }
    let done = api::do_requeue(&shared, &queue, &sel)
        .await
        .map_err(fail(&shared))?;
    Ok(done_redirect(
        &shared,
        &queue,
        &format!("Requeued {} message(s).", done.count),
    ))
}

pub(crate) async fn delete(
    State(shared): State<Arc<Shared>>,
    Path(queue): Path<String>,
    Form(fields): Form<Fields>,
) -> PageResult {
    let sel = selection(&fields);
    if !confirmed(&fields) {
        let n = how_many(&shared, &queue, &sel)
            .await
            .map_err(fail(&shared))?;
        let question = format!(
            "Delete {n} message(s), {} of {queue}, for good?",
            sel.describe()
        );
        return Ok(confirm(
            &shared,
            &format!("{}/queues/{queue}/delete", shared.base),
            &question,
            &fields,
            &queue_link(&shared, &queue, "dead"),
        ));
    }
    let done = api::do_delete(&shared, &queue, &sel)
        .await
        .map_err(fail(&shared))?;
    Ok(done_redirect(
        &shared,
        &queue,
        &format!("Deleted {} dead letter(s).", done.count),
    ))
}

pub(crate) async fn abort(
    State(shared): State<Arc<Shared>>,
    Path(message_id): Path<String>,
    Form(fields): Form<Fields>,
) -> PageResult {
    let mode = field(&fields, "mode").unwrap_or("abort").to_owned();
    let queue = field(&fields, "queue").unwrap_or("default").to_owned();
    let back = format!(
        "{}/queues/{}/messages/{}",
        shared.base,
        queue,
        encode(&message_id)
    );
    if !confirmed(&fields) {
        let question = if mode == "cancel" {
            format!("Cancel message {message_id}? A worker with the Abortable middleware skips it if it has not started.")
        } else {
            format!("Abort message {message_id}? A worker with the Abortable middleware stops it, running or not.")
        };
        return Ok(confirm(
            &shared,
            &format!("{}/messages/{}/abort", shared.base, encode(&message_id)),
            &question,
            &fields,
            &back,
        ));
    }
    let req = api::AbortRequest {
        mode: Some(mode),
        timeout_ms: None,
    };
    let mode = api::do_abort(&shared, &message_id, &req)
        .await
        .map_err(fail(&shared))?;
    let body = html! {
        h1 { "Sent" }
        p.done { "The " (mode) " event for " code { (message_id) } " is set: a worker with the Abortable middleware acts on it." }
        p { a href=(queue_link(&shared, &queue, "ready")) { "Back to " (queue) } }
    };
    Ok(layout(&shared, "Sent", "overview", body).into_response())
}

pub(crate) async fn workers(State(shared): State<Arc<Shared>>) -> PageResult {
    let workers = data::workers(&shared)
        .await
        .map_err(Failure::from)
        .map_err(fail(&shared))?;
    let now = now_ms();
    let body = html! {
        h1 { "Workers" }
        @match &workers {
            None => p.note { "The " (shared.broker.kind()) " broker keeps no worker registry." },
            Some(ws) if ws.is_empty() => p { "No worker is running (or none has published itself in the last minute)." },
            Some(ws) => {
                p.live { span #live-status { "Live: last-seen times refresh every few seconds." } }
                table #workers data-live="workers" {
                    thead { tr { th { "Worker" } th { "Id" } th { "Started" } th { "Last seen" } th.num { "Threads" } th { "Queues" } th { "Actors" } th { "Version" } } }
                    tbody {
                        @for w in ws {
                            tr data-worker=(w.worker_id) {
                                td { strong { (w.display_name()) } }
                                td { code title=(w.worker_id) { (w.worker_id.chars().take(8).collect::<String>()) } }
                                td { (when(Some(w.started_at))) }
                                td data-field="last_seen" { (duration(now - w.last_seen)) " ago" }
                                td.num { (w.threads) }
                                td { (w.queues.join(", ")) }
                                td { (w.actors.iter().map(|a| a.actor_name.as_str()).collect::<Vec<_>>().join(", ")) }
                                td { (w.version) }
                            }
                        }
                    }
                }
                p.muted { "Messages in flight are counted per queue (the overview), not per worker: the registry does not record them." }
            }
        }
    };
    Ok(layout(&shared, "Workers", "workers", body).into_response())
}

pub(crate) async fn schedules(State(shared): State<Arc<Shared>>) -> PageResult {
    let states = data::schedules(&shared)
        .await
        .map_err(Failure::from)
        .map_err(fail(&shared))?;
    let locks = data::unique_locks(&shared)
        .await
        .map_err(Failure::from)
        .map_err(fail(&shared))?;
    let now = now_ms();
    let body = html! {
        h1 { "Schedules" }
        @match &states {
            Err(why) => p.note { (why) },
            Ok(s) if s.is_empty() => p { "No schedules are recorded (none ticked in the last 7 days)." },
            Ok(s) => table {
                thead { tr { th { "Schedule" } th { "Expression" } th { "Zone" } th { "Actor" } th { "Queue" } th { "Last tick" } th { "Next tick" } th { "Last message" } } }
                tbody {
                    @for s in s {
                        tr {
                            td { (s.name) } td { code { (s.expression) } } td { (s.timezone) }
                            td { (s.actor_name) } td { (s.queue_name) }
                            td { (when(Some(s.last_tick_ms))) }
                            td { (when(s.next_tick_ms)) @if s.next_tick_ms.is_some_and(|t| t < now) { " (overdue)" } }
                            td { code { (s.last_message_id) } }
                        }
                    }
                }
            },
        }
        h2 { "Unique locks" }
        @match &locks {
            Err(why) => p.note #unique-locks { (why) },
            Ok(l) if l.is_empty() => p #unique-locks { "No unique locks are held." },
            Ok(l) => table #unique-locks {
                thead { tr { th { "Queue" } th.num { "Locks held" } } }
                tbody {
                    @for (q, n) in l {
                        tr { td { a href=(queue_link(&shared, q, "ready")) { (q) } } td.num { (n) } }
                    }
                }
            },
        }
        p.muted { "A lock is taken by a unique, debounced or throttled send and released by a dq worker at the point the send chose, or when its TTL runs out." }
    };
    Ok(layout(&shared, "Schedules", "schedules", body).into_response())
}

fn enqueue_page(
    shared: &Shared,
    fields: &Fields,
    error: Option<&str>,
    sent: Option<&dq_core::Message>,
) -> Response {
    let get = |k: &str, d: &'static str| field(fields, k).unwrap_or(d).to_owned();
    let body = html! {
        h1 { "Enqueue a message" }
        @if let Some(e) = error { p.error { (e) } }
        @if let Some(m) = sent {
            p.done { "Enqueued " code { (m.message_id) } " on " a href=(queue_link(shared, dq_core::base_queue_name(&m.queue_name), if m.options.eta().is_some() { "delayed" } else { "ready" })) { (m.queue_name) } "." }
        }
        p.muted { "As a producer in any language would: no middleware runs." }
        form.enqueue method="post" action={(shared.base) "/enqueue"} {
            (csrf_input(shared))
            label { "Actor " input name="actor" required value=(get("actor", "")); }
            label { "Queue " input name="queue" required value=(get("queue", "default")); }
            label { "Arguments (JSON array) " textarea name="args" rows="3" { (get("args", "[]")) } }
            label { "Keyword arguments (JSON object) " textarea name="kwargs" rows="3" { (get("kwargs", "{}")) } }
            label { "Options (JSON object) " textarea name="options" rows="3" { (get("options", "{}")) } }
            label { "Delay (ms) " input name="delay_ms" type="number" min="0" value=(get("delay_ms", "")); }
            button type="submit" { "Enqueue" }
        }
    };
    let status = if error.is_some() {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    (status, layout(shared, "Enqueue", "enqueue", body)).into_response()
}

pub(crate) async fn enqueue_form(State(shared): State<Arc<Shared>>) -> Response {
    enqueue_page(&shared, &Vec::new(), None, None)
}

pub(crate) async fn enqueue(
    State(shared): State<Arc<Shared>>,
    Form(fields): Form<Fields>,
) -> Response {
    let json = |name: &str| -> Result<Option<Value>, String> {
        match field(&fields, name)
            .map(str::trim)
            .filter(|t| !t.is_empty())
        {
            None => Ok(None),
            Some(t) => serde_json::from_str(t)
                .map(Some)
                .map_err(|e| format!("{name} is not JSON: {e}")),
        }
    };
    let parsed = (|| -> Result<api::Enqueue, String> {
        Ok(api::Enqueue {
            actor: field(&fields, "actor").unwrap_or("").trim().to_owned(),
            queue: field(&fields, "queue").unwrap_or("").trim().to_owned(),
            args: json("args")?,
            kwargs: json("kwargs")?,
            options: json("options")?,
            delay_ms: match field(&fields, "delay_ms")
                .map(str::trim)
                .filter(|t| !t.is_empty())
            {
                None => None,
                Some(t) => Some(
                    t.parse()
                        .map_err(|_| format!("the delay {t:?} is not a number of milliseconds"))?,
                ),
            },
        })
    })();
    match parsed {
        Err(e) => enqueue_page(&shared, &fields, Some(&e), None),
        Ok(e) => match api::do_enqueue(&shared, e).await {
            Ok(sent) => enqueue_page(&shared, &fields, None, Some(&sent)),
            Err(f) => enqueue_page(&shared, &fields, Some(&f.message), None),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_for_times_and_errors() {
        assert_eq!(duration(59_999), "59s");
        assert_eq!(duration(61_000), "1m 1s");
        assert_eq!(duration(3_600_000 * 25), "1d 1h");
        assert_eq!(encode("a b/é"), "a%20b%2F%C3%A9");
        assert_eq!(
            first_line("Traceback:\n  line\nValueError: boom\n"),
            "ValueError: boom"
        );
        assert_eq!(signed(2.5), "+2.5");
        assert_eq!(signed(-1.0), "-1");
    }
}
