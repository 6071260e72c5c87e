//! A web dashboard for dq and Python Dramatiq queues, on Redis or RabbitMQ.
//!
//! Pages: an overview of every queue (ready, delayed, in flight, dead-lettered, throughput over
//! the last minutes, refreshed live), a queue's messages page by page (ready, delayed and dead
//! tabs), a message in full (arguments, options, the last traceback or reason, its stored
//! result), the running workers, the periodic schedules. Actions: requeue and delete dead
//! letters, one by one or in bulk filtered by actor or error text, enqueue a message, abort or
//! cancel a message through dramatiq-abort's events. Every page has its JSON twin under
//! `/api/` for scripts and autoscalers.
//!
//! **The key design decision:** the dashboard holds nothing of its own. Everything it shows is
//! read from the broker through dq-core's [`Broker`] trait (counts, [`Broker::browse`], the
//! worker registry, schedule records), so it shows Python Dramatiq's messages as well as dq's
//! (they are the same messages) and any broker dq supports, saying on the page what a broker
//! cannot show. The one thing it computes is throughput, from counts it samples every few
//! seconds. Pages are HTML built at compile time ([`maud`]); the CSS and the small script that
//! refreshes counts are in the binary, so nothing is fetched from elsewhere.
//!
//! Every POST must carry the CSRF token the pages embed (403 otherwise), destructive actions
//! ask for confirmation on a page of their own (no script needed), and [`Dashboard::serve`]
//! refuses a non-loopback address without [`Auth`].
//!
//! Mount it in your own axum app:
//!
//! ```no_run
//! use std::sync::Arc;
//! use dq_dashboard::Dashboard;
//!
//! # #[allow(dead_code)]
//! # async fn demo(broker: Arc<dyn dq_core::Broker>) -> Result<(), Box<dyn std::error::Error>> {
//! let dashboard = Dashboard::new(broker).prefix("/dq").build()?;
//! let app = axum::Router::new().nest("/dq", dashboard);
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8484").await?;
//! axum::serve(listener, app).await?;
//! # Ok(()) }
//! ```
//!
//! or run it on its own with `dq dashboard` (the admin tool, feature `dashboard`).
//!
//! | JSON API | |
//! |---|---|
//! | `GET /api/queues` | every queue's counts, rates and recent samples |
//! | `GET /api/queues/{queue}/messages?state=ready\|delayed\|dead&offset=&limit=` | one page of messages |
//! | `GET /api/queues/{queue}/messages/{id}?state=` | one message (by broker id or message id), with its result |
//! | `GET /api/workers`, `GET /api/schedules` | the worker registry, the schedules |
//! | `GET /api/unique-locks` | unique locks held, per queue |
//! | `GET /api/csrf` | the token POSTs carry in `x-csrf-token` |
//! | `POST /api/queues/{queue}/dead/requeue`, `.../dead/delete` | `{"ids": [..]}` or `{"actor": .., "error": ..}` or `{"all": true}` |
//! | `POST /api/enqueue` | `{"actor", "queue", "args", "kwargs", "options", "delay_ms"}` |
//! | `POST /api/messages/{message_id}/abort` | `{"mode": "abort"\|"cancel", "timeout_ms"}` |

#![doc(test(attr(deny(warnings))))]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::routing::{get, post};
use axum::Router;
use dq_abort::Abortable;
use dq_core::{App, Broker, ResultSource};

mod api;
mod data;
mod error;
mod management;
mod pages;
mod sampler;
mod security;

pub use error::{Error, Result};

/// The environment variable holding the dashboard's bearer token.
pub const TOKEN_ENV: &str = "DQ_DASHBOARD_TOKEN";
/// The environment variable holding the basic-auth user name.
pub const USER_ENV: &str = "DQ_DASHBOARD_USER";
/// The environment variable holding the basic-auth password.
pub const PASSWORD_ENV: &str = "DQ_DASHBOARD_PASSWORD";
/// The environment variable holding RabbitMQ's management API URL.
pub const MANAGEMENT_URL_ENV: &str = "DQ_RABBITMQ_MANAGEMENT_URL";

/// How requests prove who they are.
///
/// ```
/// use dq_dashboard::Auth;
///
/// let auth = Auth::Basic { user: "ops".into(), password: "s3cret".into() };
/// assert!(auth.is_required());
/// assert!(!Auth::None.is_required());
/// ```
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub enum Auth {
    /// No authentication: only for a dashboard on a loopback address, or behind a proxy that
    /// authenticates.
    #[default]
    None,
    /// `Authorization: Bearer <token>`, or `?token=<token>` once (it sets a cookie).
    Token(String),
    /// HTTP basic authentication.
    Basic {
        /// The user name.
        user: String,
        /// The password.
        password: String,
    },
}

/// What a dashboard shows and how: the broker, queues to show besides the ones it finds, where
/// results and abort events are, authentication. [`build`](Dashboard::build) makes the router.
///
/// ```
/// use std::sync::Arc;
/// use dq_dashboard::{Auth, Dashboard};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), dq_dashboard::Error> {
/// let broker = Arc::new(dq_broker_stub::StubBroker::new());
/// let router = Dashboard::new(broker)
///     .queue("emails")
///     .auth(Auth::Token("let-me-in".into()))
///     .build()?;
/// # let _ = router;
/// # Ok(()) }
/// ```
pub struct Dashboard {
    broker: Arc<dyn Broker>,
    queues: Vec<String>,
    results: Option<Arc<dyn ResultSource>>,
    abortable: Option<Abortable>,
    auth: Auth,
    prefix: String,
    management: Option<(String, String)>,
    sample_interval: Duration,
}

impl Dashboard {
    /// A dashboard of `broker`'s queues, without authentication, results or aborts.
    pub fn new(broker: Arc<dyn Broker>) -> Dashboard {
        Dashboard {
            broker,
            queues: Vec::new(),
            results: None,
            abortable: None,
            auth: Auth::None,
            prefix: String::new(),
            management: None,
            sample_interval: Duration::from_secs(5),
        }
    }

    /// Shows canonical queue `queue` too: for a broker that cannot list its queues (RabbitMQ)
    /// and a queue no running worker consumes.
    pub fn queue(mut self, queue: impl Into<String>) -> Dashboard {
        self.queues.push(queue.into());
        self
    }

    /// Shows each message's stored result from `results` (for example dq-results'
    /// `RedisBackend`, the store Python's `Results` middleware writes too).
    pub fn results(mut self, results: Arc<dyn ResultSource>) -> Dashboard {
        self.results = Some(results);
        self
    }

    /// Offers abort and cancel on messages, through `abortable`'s event backend.
    pub fn abortable(mut self, abortable: Abortable) -> Dashboard {
        self.abortable = Some(abortable);
        self
    }

    /// How requests authenticate (default none; see [`Auth::from_env`]).
    pub fn auth(mut self, auth: Auth) -> Dashboard {
        self.auth = auth;
        self
    }

    /// The path the router is nested under (`"/dq"` for `Router::nest("/dq", ..)`), which the
    /// pages' links start with. Default: the root.
    pub fn prefix(mut self, prefix: &str) -> Dashboard {
        self.prefix = prefix.trim_end_matches('/').to_owned();
        self
    }

    /// RabbitMQ's management API (`http://user:password@host:15672`), for every queue's name,
    /// rates and consumers, with the vhost (`"/"` by default in RabbitMQ).
    pub fn management(mut self, url: &str, vhost: &str) -> Dashboard {
        self.management = Some((url.to_owned(), vhost.to_owned()));
        self
    }

    /// How often queues are counted for the throughput (default 5 s).
    pub fn sample_interval(mut self, interval: Duration) -> Dashboard {
        self.sample_interval = interval.max(Duration::from_millis(100));
        self
    }

    /// The router: pages, JSON API and assets, behind the authentication and the CSRF check.
    /// The counting for the throughput starts with the first request, on its runtime, and stops
    /// when the router is dropped.
    pub fn build(self) -> Result<Router> {
        let app = App::builder_shared(self.broker.clone())
            .without_linked_actors()
            .build()
            .map_err(Error::App)?;
        let management = self
            .management
            .as_ref()
            .map(|(url, vhost)| management::Management::new(url, vhost))
            .transpose()?;
        let shared = Arc::new(Shared {
            broker: self.broker,
            app,
            queues: self.queues,
            results: self.results,
            abortable: self.abortable,
            auth: self.auth,
            csrf: security::secret(),
            base: self.prefix,
            management,
            history: Mutex::default(),
            sampling: AtomicBool::new(false),
            sample_interval: self.sample_interval,
        });
        Ok(routes(shared))
    }

    /// Serves the dashboard on `addr` until `shutdown` completes. Refuses
    /// ([`Error::AuthRequired`]) an address that is not loopback without authentication.
    ///
    /// ```no_run
    /// # #[allow(dead_code)]
    /// # async fn demo(broker: std::sync::Arc<dyn dq_core::Broker>) -> Result<(), dq_dashboard::Error> {
    /// let dashboard = dq_dashboard::Dashboard::new(broker).auth(dq_dashboard::Auth::from_env()?);
    /// dashboard
    ///     .serve("127.0.0.1:8484".parse().unwrap(), async {
    ///         let _ = tokio::signal::ctrl_c().await;
    ///     })
    ///     .await
    /// # }
    /// ```
    pub async fn serve(
        self,
        addr: SocketAddr,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<()> {
        check_bind(addr, &self.auth)?;
        let prefix = self.prefix.clone();
        let dashboard = self.build()?;
        let router = if prefix.is_empty() {
            dashboard
        } else {
            let home = prefix.clone();
            Router::new().nest(&prefix, dashboard).route(
                &format!("{prefix}/"),
                get(move || async move { axum::response::Redirect::permanent(&home) }),
            )
        };
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| Error::Bind { addr, source })?;
        axum::serve(listener, router)
            .with_graceful_shutdown(shutdown)
            .await
            .map_err(Error::Serve)
    }
}

/// Refuses to listen beyond this machine without authentication.
///
/// ```
/// use dq_dashboard::{check_bind, Auth};
///
/// assert!(check_bind("127.0.0.1:8484".parse().unwrap(), &Auth::None).is_ok());
/// assert!(check_bind("0.0.0.0:8484".parse().unwrap(), &Auth::None).is_err());
/// assert!(check_bind("0.0.0.0:8484".parse().unwrap(), &Auth::Token("t".into())).is_ok());
/// ```
pub fn check_bind(addr: SocketAddr, auth: &Auth) -> Result<()> {
    if addr.ip().is_loopback() || auth.is_required() {
        Ok(())
    } else {
        Err(Error::AuthRequired { addr })
    }
}

/// What every handler reads.
pub(crate) struct Shared {
    pub(crate) broker: Arc<dyn Broker>,
    pub(crate) app: App,
    pub(crate) queues: Vec<String>,
    pub(crate) results: Option<Arc<dyn ResultSource>>,
    pub(crate) abortable: Option<Abortable>,
    pub(crate) auth: Auth,
    pub(crate) csrf: String,
    /// The prefix of every link, without a trailing slash.
    pub(crate) base: String,
    pub(crate) management: Option<management::Management>,
    pub(crate) history: Mutex<sampler::History>,
    sampling: AtomicBool,
    sample_interval: Duration,
}

impl Shared {
    /// Starts the sampler once, on the runtime serving requests.
    fn start_sampling(self: &Arc<Shared>) {
        if !self.sampling.swap(true, Ordering::AcqRel) {
            sampler::spawn(self, self.sample_interval);
        }
    }
}

async fn start_sampling(
    axum::extract::State(shared): axum::extract::State<Arc<Shared>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    shared.start_sampling();
    next.run(request).await
}

fn routes(shared: Arc<Shared>) -> Router {
    use axum::middleware::from_fn_with_state;
    Router::new()
        .route("/", get(pages::overview))
        .route("/queues/{queue}", get(pages::queue))
        .route("/queues/{queue}/messages/{id}", get(pages::message))
        .route("/queues/{queue}/requeue", post(pages::requeue))
        .route("/queues/{queue}/delete", post(pages::delete))
        .route("/messages/{message_id}/abort", post(pages::abort))
        .route("/workers", get(pages::workers))
        .route("/schedules", get(pages::schedules))
        .route("/enqueue", get(pages::enqueue_form).post(pages::enqueue))
        .route("/assets/style.css", get(pages::style))
        .route("/assets/live.js", get(pages::script))
        .route("/api/queues", get(api::queues))
        .route("/api/queues/{queue}/messages", get(api::messages))
        .route("/api/queues/{queue}/messages/{id}", get(api::message))
        .route("/api/queues/{queue}/dead/requeue", post(api::requeue))
        .route("/api/queues/{queue}/dead/delete", post(api::delete))
        .route("/api/workers", get(api::workers))
        .route("/api/schedules", get(api::schedules))
        .route("/api/unique-locks", get(api::unique_locks))
        .route("/api/enqueue", post(api::enqueue))
        .route("/api/messages/{message_id}/abort", post(api::abort))
        .route("/api/csrf", get(api::csrf))
        .layer(from_fn_with_state(shared.clone(), security::check_csrf))
        .layer(from_fn_with_state(shared.clone(), start_sampling))
        .layer(from_fn_with_state(shared.clone(), security::authenticate))
        .with_state(shared)
}
