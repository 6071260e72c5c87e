//! The broker: connections, declarations, publishing with confirms, and the admin calls.

use std::collections::HashSet;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use dq_core::{
    async_trait, base_queue_name, is_valid_queue_name, Broker, BrokerError, BrokerErrorKind,
    Consumer, DeadLetter, Message, QueueStats, ScheduleState, TickClaim, TickOutcome, WorkerInfo,
};
use lapin::options::{
    BasicGetOptions, BasicNackOptions, BasicPublishOptions, ConfirmSelectOptions,
};
use lapin::tcp::OwnedTLSConfig;
use lapin::types::{AMQPValue, FieldTable};
use lapin::uri::AMQPUri;
use lapin::{BasicProperties, Confirmation, Connection, ConnectionProperties};
use tracing::{debug, info, warn};

use crate::consumer::AmqpConsumer;
use crate::declare::{self, DEAD_MESSAGE_TTL_ENV};
use crate::error::{broker_error, reply_code, AmqpBrokerError};
use crate::url::{self, DEFAULT_URL};

/// How many times one enqueue is tried before its error is returned, as Python Dramatiq does.
const ENQUEUE_ATTEMPTS: u32 = 6;

/// The environment variable holding the broker URL ([`dq_core::env::AMQP_URL`]).
pub const URL_ENV: &str = dq_core::env::AMQP_URL;

/// A RabbitMQ broker that shares queues with Python Dramatiq 2.2.1.
///
/// Cheap to clone: clones share the connections. See the [crate docs](crate) for what it
/// declares, publishes and guarantees.
#[derive(Clone)]
pub struct AmqpBroker {
    inner: Arc<Inner>,
}

/// Settings for an [`AmqpBroker`]; start from [`AmqpBroker::builder`].
///
/// ```no_run
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), dq_broker_amqp::AmqpBrokerError> {
/// use std::time::Duration;
/// use dq_broker_amqp::AmqpBroker;
///
/// let _broker = AmqpBroker::builder()
///     .url("amqp://billing:secret@mq.internal:5672/billing")
///     .max_priority(Some(10))
///     .dead_message_ttl(Duration::from_secs(3 * 24 * 3600))
///     .build()
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct AmqpBrokerBuilder {
    url: Option<String>,
    max_priority: Option<u8>,
    dead_message_ttl: Option<Duration>,
    confirm_delivery: bool,
    connect_timeout: Duration,
    connection_name: String,
    tls_root_certificate: Option<Vec<u8>>,
}

impl Default for AmqpBrokerBuilder {
    fn default() -> AmqpBrokerBuilder {
        AmqpBrokerBuilder {
            url: None,
            max_priority: None,
            dead_message_ttl: None,
            confirm_delivery: true,
            connect_timeout: Duration::from_secs(10),
            connection_name: "dq".to_owned(),
            tls_root_certificate: None,
        }
    }
}

impl fmt::Debug for AmqpBrokerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AmqpBrokerBuilder")
            .field("url", &self.url.as_deref().map(url::redact))
            .field("max_priority", &self.max_priority)
            .field("dead_message_ttl", &self.dead_message_ttl)
            .field("confirm_delivery", &self.confirm_delivery)
            .field("connect_timeout", &self.connect_timeout)
            .field("connection_name", &self.connection_name)
            .field("tls_root_certificate", &self.tls_root_certificate.is_some())
            .finish()
    }
}

impl AmqpBrokerBuilder {
    /// A builder with the URL of the environment: `DQ_AMQP_URL` (default
    /// `amqp://guest:guest@127.0.0.1:5672/%2f`), the variable the worker command reads too, and
    /// `x-max-priority` from `DQ_MAX_PRIORITY` (none when unset; not a number from 1 to 255 is an
    /// [`AmqpBrokerError::InvalidConfig`]). Other settings are the defaults; set them on the
    /// builder.
    ///
    /// The URL is checked here (not connected to): one that does not parse is an
    /// [`AmqpBrokerError::InvalidUrl`] naming the variable, never showing the password.
    ///
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), dq_broker_amqp::AmqpBrokerError> {
    /// use dq_broker_amqp::AmqpBrokerBuilder;
    ///
    /// let broker = AmqpBrokerBuilder::from_env()?.max_priority(Some(10)).build().await?;
    /// # drop(broker); Ok(()) }
    /// ```
    pub fn from_env() -> Result<AmqpBrokerBuilder, AmqpBrokerError> {
        let url = env_url();
        url::parse(&url).map_err(|e| match e {
            AmqpBrokerError::InvalidUrl { url, reason } => AmqpBrokerError::InvalidUrl {
                url,
                reason: format!("{reason} (from {URL_ENV})"),
            },
            other => other,
        })?;
        let max_priority =
            dq_core::env::max_priority(std::env::var(dq_core::env::MAX_PRIORITY).ok().as_deref())
                .map_err(|e| AmqpBrokerError::InvalidConfig(e.to_string()))?;
        Ok(AmqpBrokerBuilder::default()
            .url(url)
            .max_priority(max_priority))
    }

    /// The broker URL: `amqp://user:password@host:port/vhost` or `amqps://...`, with the vhost
    /// percent-encoded (`%2f` is the default vhost `/`) and optional `?heartbeat=S`,
    /// `connection_timeout=MS`, `frame_max` (default 16 KiB, which keeps the client's buffers
    /// small), `channel_max`, `auth_mechanism` parameters.
    /// Default: env `DQ_AMQP_URL`, else `amqp://guest:guest@127.0.0.1:5672/%2f`.
    pub fn url(mut self, url: impl Into<String>) -> AmqpBrokerBuilder {
        self.url = Some(url.into());
        self
    }

    /// `x-max-priority` of every queue and delay queue (1..=255), which makes the
    /// `broker_priority` message option effective. It must be the same in every Python and Rust
    /// process sharing the queues, or RabbitMQ refuses the declaration. Default: none.
    pub fn max_priority(mut self, max_priority: Option<u8>) -> AmqpBrokerBuilder {
        self.max_priority = max_priority;
        self
    }

    /// How long dead letters are kept (`x-message-ttl` of `q.XQ`), in whole milliseconds.
    /// Default: env `dramatiq_dead_message_ttl` (ms), else 7 days, as in Python Dramatiq.
    pub fn dead_message_ttl(mut self, ttl: Duration) -> AmqpBrokerBuilder {
        self.dead_message_ttl = Some(ttl);
        self
    }

    /// Whether an enqueue waits for RabbitMQ's publisher confirm (and publishes `mandatory`, so
    /// a message no queue takes is an error rather than dropped). Default: `true`; Python
    /// Dramatiq's default is `false`, which is faster but can lose a message the broker never
    /// received.
    pub fn confirm_delivery(mut self, confirm: bool) -> AmqpBrokerBuilder {
        self.confirm_delivery = confirm;
        self
    }

    /// How long one connection attempt may take. Default: 10 s.
    pub fn connect_timeout(mut self, timeout: Duration) -> AmqpBrokerBuilder {
        self.connect_timeout = timeout;
        self
    }

    /// The name RabbitMQ shows for this broker's connections (suffixed with `publisher` or
    /// `consumer`). Default: `dq`.
    pub fn connection_name(mut self, name: impl Into<String>) -> AmqpBrokerBuilder {
        self.connection_name = name.into();
        self
    }

    /// A CA certificate (PEM, one or more) to trust for `amqps://` URLs in addition to the
    /// system's roots, for a RabbitMQ whose certificate a private CA signed. The worker command
    /// reads it from the file named by env `DQ_TLS_CA_FILE`.
    ///
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let broker = dq_broker_amqp::AmqpBroker::builder()
    ///     .url("amqps://app:secret@rabbit.internal:5671/%2f")
    ///     .tls_root_certificate(std::fs::read("/etc/ssl/private-ca.pem")?)
    ///     .build()
    ///     .await?;
    /// # drop(broker); Ok(()) }
    /// ```
    pub fn tls_root_certificate(mut self, pem: impl Into<Vec<u8>>) -> AmqpBrokerBuilder {
        self.tls_root_certificate = Some(pem.into());
        self
    }

    /// Checks the settings and connects. An unreachable broker, or one that refuses the
    /// credentials or the vhost, is an [`AmqpBrokerError::Connect`], whose
    /// [`kind`](AmqpBrokerError::kind) is `Connection` (the CLI's exit code 3).
    pub async fn build(self) -> Result<AmqpBroker, AmqpBrokerError> {
        let url = match self.url {
            Some(u) => u,
            None => env_url(),
        };
        let uri = url::parse(&url)?;
        let redacted = url::redact(&url);
        if self.max_priority == Some(0) {
            return Err(AmqpBrokerError::InvalidConfig(
                "max_priority must be between 1 and 255".to_owned(),
            ));
        }
        let tls = match self.tls_root_certificate {
            None => OwnedTLSConfig::default(),
            Some(pem) => OwnedTLSConfig {
                identity: None,
                cert_chain: Some(check_pem(pem)?),
            },
        };
        let dead_message_ttl_ms = match self.dead_message_ttl {
            Some(ttl) => u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX),
            None => declare::dead_message_ttl_from_env(
                std::env::var(DEAD_MESSAGE_TTL_ENV).ok().as_deref(),
            )
            .map_err(AmqpBrokerError::InvalidConfig)?,
        };
        let inner = Arc::new(Inner {
            uri,
            redacted,
            max_priority: self.max_priority,
            dead_message_ttl_ms,
            confirm_delivery: self.confirm_delivery,
            connect_timeout: self.connect_timeout,
            connection_name: self.connection_name,
            tls,
            publisher_link: Slot::new(Role::Publisher),
            consumer_link: Slot::new(Role::Consumer),
            publisher: tokio::sync::Mutex::new(None),
            registry: Default::default(),
            leadership: Default::default(),
        });
        inner
            .link(Role::Publisher)
            .await
            .map_err(|source| AmqpBrokerError::Connect {
                url: inner.redacted.clone(),
                source,
            })?;
        Ok(AmqpBroker { inner })
    }
}

/// The PEM text of a CA bundle, or why it is not one: rustls skips what it cannot parse, so a
/// wrong file would otherwise show up only as an untrusted certificate at the first connect.
fn check_pem(pem: Vec<u8>) -> Result<String, AmqpBrokerError> {
    let text = String::from_utf8(pem).map_err(|_| {
        AmqpBrokerError::InvalidConfig("tls_root_certificate is not PEM text".to_owned())
    })?;
    if !text.contains("-----BEGIN CERTIFICATE-----") {
        return Err(AmqpBrokerError::InvalidConfig(
            "tls_root_certificate holds no PEM certificate (-----BEGIN CERTIFICATE-----)"
                .to_owned(),
        ));
    }
    Ok(text)
}

fn env_url() -> String {
    // Not UTF-8: kept lossily, to fail as a URL rather than be ignored for the default.
    match std::env::var_os(URL_ENV).map(|v| v.to_string_lossy().into_owned()) {
        Some(v) if !v.trim().is_empty() => v,
        _ => DEFAULT_URL.to_owned(),
    }
}

impl AmqpBroker {
    /// Settings to build a broker from.
    pub fn builder() -> AmqpBrokerBuilder {
        AmqpBrokerBuilder::default()
    }

    /// A broker at env `DQ_AMQP_URL` (default `amqp://guest:guest@127.0.0.1:5672/%2f`) with
    /// default settings.
    pub async fn from_env() -> Result<AmqpBroker, AmqpBrokerError> {
        AmqpBrokerBuilder::from_env()?.build().await
    }

    /// The broker URL with its password replaced by `***`.
    pub fn redacted_url(&self) -> &str {
        &self.inner.redacted
    }

    /// The `x-max-priority` this broker declares queues with.
    pub fn max_priority(&self) -> Option<u8> {
        self.inner.max_priority
    }

    /// The `x-message-ttl` of dead-letter queues, in ms.
    pub fn dead_message_ttl_ms(&self) -> u64 {
        self.inner.dead_message_ttl_ms
    }

    /// Closes the publisher channel and both connections cleanly (AMQP `connection.close`);
    /// [`Broker::close`] on an `AmqpBroker`.
    async fn close_connections(&self) {
        let publisher = self.inner.publisher.lock().await.take();
        if let Some(p) = publisher {
            if p.usable() {
                if let Err(e) = p.channel.close(200, "closed by dq".into()).await {
                    tracing::debug!(error = %dq_core::ErrorChain(&e), "closing the publisher channel");
                }
            }
        }
        for slot in [&self.inner.publisher_link, &self.inner.consumer_link] {
            let link = slot.current.lock().await.take();
            if let Some(link) = link {
                if link.conn.status().connected() {
                    if let Err(e) = link.conn.close(200, "closed by dq".into()).await {
                        tracing::debug!(error = %dq_core::ErrorChain(&e), "closing the {} connection", slot.role.name());
                    }
                    tracing::debug!(role = slot.role.name(), status = ?link.conn.status(), "closed");
                }
            }
        }
    }
}

impl fmt::Debug for AmqpBroker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AmqpBroker")
            .field("url", &self.inner.redacted)
            .field("max_priority", &self.inner.max_priority)
            .field("dead_message_ttl_ms", &self.inner.dead_message_ttl_ms)
            .field("confirm_delivery", &self.inner.confirm_delivery)
            .finish()
    }
}

/// What a connection is for. Publishing and consuming use separate connections, as RabbitMQ
/// advises: under a memory or disk alarm RabbitMQ blocks connections that publish, and a
/// consumer sharing one could then not ack the very messages whose removal would clear it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    Publisher,
    Consumer,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::Publisher => "publisher",
            Role::Consumer => "consumer",
        }
    }
}

/// One live connection, and the canonical queues declared through it. Declarations are
/// remembered per connection so a new one (after a reconnect, maybe to a node that lost
/// non-mirrored queues) declares again.
pub(crate) struct Link {
    pub(crate) conn: Connection,
    declared: Mutex<HashSet<String>>,
}

impl Link {
    fn declared(&self) -> MutexGuard<'_, HashSet<String>> {
        self.declared.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Forgets that `canonical` was declared, so the next use declares it again (after a 404
    /// or an unroutable publish: someone deleted it).
    pub(crate) fn undeclare(&self, canonical: &str) {
        self.declared().remove(canonical);
    }
}

/// Where the current connection of one role lives; replaced when it dies.
struct Slot {
    role: Role,
    current: tokio::sync::Mutex<Option<Arc<Link>>>,
    connects: AtomicU64,
}

impl Slot {
    fn new(role: Role) -> Slot {
        Slot {
            role,
            current: tokio::sync::Mutex::new(None),
            connects: AtomicU64::new(0),
        }
    }
}

/// The publisher channel, in confirm mode when `confirm_delivery` is set.
struct PubChannel {
    link: Arc<Link>,
    channel: lapin::Channel,
}

impl PubChannel {
    fn usable(&self) -> bool {
        self.channel.status().connected() && self.link.conn.status().connected()
    }
}

pub(crate) struct Inner {
    /// Holds the password: never format it; use `redacted`.
    uri: AMQPUri,
    pub(crate) redacted: String,
    max_priority: Option<u8>,
    dead_message_ttl_ms: u64,
    confirm_delivery: bool,
    connect_timeout: Duration,
    connection_name: String,
    /// The CA to trust besides the system's roots, for `amqps://`.
    tls: OwnedTLSConfig,
    publisher_link: Slot,
    consumer_link: Slot,
    /// Held while publishing, not while waiting for confirms. lapin numbers a confirm before it
    /// queues the frames, without a lock across both, so two tasks publishing on one channel at
    /// once could swap sequence numbers and one would take the other's confirm as its own.
    publisher: tokio::sync::Mutex<Option<PubChannel>>,
    /// The worker registry's bookkeeping (see the `workers` module).
    pub(crate) registry: crate::workers::Registry,
    /// The periodic schedules' leadership (see the `schedules` module).
    pub(crate) leadership: crate::schedules::Leadership,
}

impl Inner {
    async fn connect(&self, role: Role) -> Result<Connection, BrokerError> {
        let name = format!("{} {}", self.connection_name, role.name());
        // lapin's `tokio` feature runs the connection on the current Tokio runtime. Its
        // defaults are dq's: no automatic recovery (the links reconnect themselves) and no
        // retried connection attempts (a start against a dead server fails at once).
        let props = ConnectionProperties::default().with_connection_name(name.into());
        let runtime = lapin::runtime::default_runtime().map_err(|e| {
            broker_error(
                e,
                format!("connecting to {} ({})", self.redacted, role.name()),
            )
        })?;
        let connecting =
            Connection::connect_uri_with_config(self.uri.clone(), props, self.tls.clone(), runtime);
        match tokio::time::timeout(self.connect_timeout, connecting).await {
            Ok(Ok(conn)) => Ok(conn),
            Ok(Err(e)) => Err(broker_error(
                e,
                format!("connecting to {} ({})", self.redacted, role.name()),
            )),
            Err(_) => Err(BrokerError::new(
                BrokerErrorKind::Timeout,
                format!(
                    "connecting to {} ({}) took over {:?}",
                    self.redacted,
                    role.name(),
                    self.connect_timeout
                ),
            )),
        }
    }

    /// The live connection for `role`, connecting (again) if there is none.
    pub(crate) async fn link(&self, role: Role) -> Result<Arc<Link>, BrokerError> {
        let slot = match role {
            Role::Publisher => &self.publisher_link,
            Role::Consumer => &self.consumer_link,
        };
        let mut current = slot.current.lock().await;
        if let Some(link) = current.as_ref() {
            if link.conn.status().connected() {
                return Ok(link.clone());
            }
        }
        let conn = self.connect(slot.role).await?;
        let n = slot.connects.fetch_add(1, Ordering::Relaxed);
        if n == 0 {
            info!(url = %self.redacted, role = role.name(), "connected to rabbitmq");
        } else {
            // The worker says once that the broker is back; one line per connection is a detail.
            debug!(url = %self.redacted, role = role.name(), "reconnected to rabbitmq");
        }
        let link = Arc::new(Link {
            conn,
            declared: Mutex::new(HashSet::new()),
        });
        *current = Some(link.clone());
        Ok(link)
    }

    /// Declares `canonical`, `canonical.DQ` and `canonical.XQ` through `link` unless that was
    /// done already on this connection.
    pub(crate) async fn ensure_declared(
        &self,
        link: &Link,
        canonical: &str,
    ) -> Result<(), BrokerError> {
        if link.declared().contains(canonical) {
            return Ok(());
        }
        // A channel of its own: a 406 closes the channel it happens on, and must not take the
        // publisher's pending confirms or a consumer's deliveries down with it.
        let channel =
            link.conn.create_channel().await.map_err(|e| {
                broker_error(e, format!("opening a channel to declare {canonical}"))
            })?;
        let result = self.declare_on(&channel, canonical).await;
        if channel.status().connected() {
            let _ = channel.close(200, "declared".into()).await;
        }
        result?;
        debug!(
            queue = canonical,
            "declared queue, delay queue and dead-letter queue"
        );
        link.declared().insert(canonical.to_owned());
        Ok(())
    }

    async fn declare_on(
        &self,
        channel: &lapin::Channel,
        canonical: &str,
    ) -> Result<(), BrokerError> {
        let args = declare::queue_arguments(canonical, self.max_priority).to_field_table();
        let dq = dq_core::delay_queue_name(canonical);
        let xq = dq_core::dead_letter_queue_name(canonical);
        for (name, arguments) in [
            (canonical, args.clone()),
            (dq.as_str(), args),
            (
                xq.as_str(),
                declare::dead_letter_arguments(self.dead_message_ttl_ms).to_field_table(),
            ),
        ] {
            channel
                .queue_declare(name.into(), declare::options(false), arguments)
                .await
                .map_err(|e| {
                    let hint = if reply_code(&e) == Some(406) {
                        ": it exists with other arguments; every process sharing it must use the \
                         same max_priority and dead-message TTL"
                    } else {
                        ""
                    };
                    broker_error(e, format!("declaring queue {name}{hint}"))
                })?;
        }
        Ok(())
    }

    async fn open_publisher(&self) -> Result<PubChannel, BrokerError> {
        let link = self.link(Role::Publisher).await?;
        let channel = link
            .conn
            .create_channel()
            .await
            .map_err(|e| broker_error(e, "opening the publisher channel"))?;
        if self.confirm_delivery {
            channel
                .confirm_select(ConfirmSelectOptions::default())
                .await
                .map_err(|e| broker_error(e, "enabling publisher confirms"))?;
        }
        Ok(PubChannel { link, channel })
    }

    fn properties(&self, message: &Message) -> BasicProperties {
        publish_properties(message)
    }

    /// One round of publishing `todo` (indices into `messages`). On return `todo` holds what
    /// must be tried again: messages RabbitMQ returned as unroutable (their queue is marked
    /// undeclared) and, with the error, those whose fate is unknown.
    async fn publish_round(
        &self,
        messages: &[Message],
        bodies: &[Vec<u8>],
        todo: &mut Vec<usize>,
    ) -> Result<(), BrokerError> {
        let options = BasicPublishOptions {
            mandatory: self.confirm_delivery,
            immediate: false,
        };
        let mut confirms = Vec::with_capacity(todo.len());
        let mut unsent: Vec<usize> = Vec::new();
        let mut failure: Option<BrokerError> = None;
        let link = {
            let mut guard = self.publisher.lock().await;
            if !guard.as_ref().is_some_and(PubChannel::usable) {
                *guard = None;
                *guard = Some(self.open_publisher().await?);
            }
            let publisher = guard.as_ref().expect("set above");
            // Declarations first (each once per connection), so that what follows never waits.
            let mut ready = todo.len();
            for (n, &i) in todo.iter().enumerate() {
                let m = &messages[i];
                if let Err(e) = self
                    .ensure_declared(&publisher.link, m.canonical_queue())
                    .await
                {
                    failure = Some(e);
                    ready = n;
                    break;
                }
            }
            // Every publish queues its frames (and takes its confirm number) when first polled,
            // with no wait in between, and the futures of one task are polled one at a time:
            // so numbers and frames stay in step, in `todo`'s order. Awaiting them together
            // lets the connection write the whole batch at once, where awaiting each in turn
            // would wait for one socket write per message.
            let publishes = todo[..ready].iter().map(|&i| {
                let m = &messages[i];
                publisher.channel.basic_publish(
                    "".into(),
                    m.queue_name.as_str().into(),
                    options,
                    &bodies[i],
                    self.properties(m),
                )
            });
            let sent = futures_util::future::join_all(publishes).await;
            for (&i, sent) in todo[..ready].iter().zip(sent) {
                match sent {
                    Ok(confirm) => confirms.push((i, confirm)),
                    Err(e) => {
                        unsent.push(i);
                        if failure.is_none() {
                            failure = Some(broker_error(
                                e,
                                format!("publishing to {}", messages[i].queue_name),
                            ));
                        }
                    }
                }
            }
            unsent.extend_from_slice(&todo[ready..]);
            publisher.link.clone()
        };
        // Wait for every confirm, even after a failure: those RabbitMQ acked must not be sent
        // twice.
        let mut again = Vec::new();
        for (i, confirm) in confirms {
            let queue = &messages[i].queue_name;
            match confirm.await {
                Ok(Confirmation::Ack(None) | Confirmation::NotRequested) => {}
                Ok(Confirmation::Ack(Some(_returned))) => {
                    // Mandatory and unroutable: the queue is gone. Python Dramatiq 2.2 declares
                    // it again and retries; so do we.
                    warn!(queue = %queue, "rabbitmq returned an unroutable message; declaring its queue again");
                    link.undeclare(messages[i].canonical_queue());
                    again.push(i);
                }
                Ok(Confirmation::Nack(_)) => {
                    return Err(BrokerError::new(
                        BrokerErrorKind::Rejected,
                        format!(
                            "rabbitmq refused (nacked) message {} for {queue}",
                            messages[i].message_id
                        ),
                    ));
                }
                Err(e) => {
                    again.push(i);
                    if failure.is_none() {
                        failure = Some(broker_error(
                            e,
                            format!("waiting for rabbitmq to confirm a message for {queue}"),
                        ));
                    }
                }
            }
        }
        again.extend(unsent);
        *todo = again;
        match failure {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// A fresh channel for an admin call, on the publisher connection.
    async fn admin_channel(&self) -> Result<(Arc<Link>, lapin::Channel), BrokerError> {
        let link = self.link(Role::Publisher).await?;
        let channel = link
            .conn
            .create_channel()
            .await
            .map_err(|e| broker_error(e, "opening a channel"))?;
        Ok((link, channel))
    }
}

/// Puts every message fetched unacked on `channel` up to `tag` back on `xq`, in one
/// `basic.nack(multiple, requeue)`.
pub(crate) async fn give_back(
    channel: &lapin::Channel,
    tag: u64,
    xq: &str,
) -> Result<(), BrokerError> {
    channel
        .basic_nack(
            tag,
            BasicNackOptions {
                multiple: true,
                requeue: true,
            },
        )
        .await
        .map_err(|e| broker_error(e, format!("giving back messages to {xq}")))
}

/// Pause before enqueue attempt `attempt + 1`: 100 ms doubling to 1.6 s, about 3 s in all, which
/// covers a connection reset or a quick node restart.
fn enqueue_backoff(attempt: u32) -> Duration {
    Duration::from_millis(100u64 << attempt.min(4))
}

/// The longest queue name AMQP carries (a short string).
const MAX_AMQP_NAME: usize = 255;

/// Checks `queue` is a name dq accepts and that it, its `.DQ` and its `.XQ` fit in an AMQP short
/// string (lapin panics on a longer one; lapin 3 sent a corrupt frame).
fn check_queue(queue: &str, what: &str) -> Result<(), BrokerError> {
    let canonical = base_queue_name(queue);
    if canonical.len() + ".XQ".len() > MAX_AMQP_NAME {
        return Err(BrokerError::new(
            BrokerErrorKind::Rejected,
            format!(
                "{what}: queue name of {} bytes is too long (at most {} with its .DQ and .XQ)",
                canonical.len(),
                MAX_AMQP_NAME - ".XQ".len()
            ),
        ));
    }
    if is_valid_queue_name(canonical) {
        Ok(())
    } else {
        Err(BrokerError::new(
            BrokerErrorKind::Rejected,
            format!("{what}: invalid queue name {queue:?}"),
        ))
    }
}

/// Runs `op` on `channel`; a 404 (no such queue) yields `None` and a fresh channel, since it
/// closed this one.
pub(crate) async fn if_exists<T, F, Fut>(
    link: &Link,
    channel: &mut lapin::Channel,
    what: &str,
    op: F,
) -> Result<Option<T>, BrokerError>
where
    F: FnOnce(lapin::Channel) -> Fut,
    Fut: std::future::Future<Output = lapin::Result<T>>,
{
    match op(channel.clone()).await {
        Ok(v) => Ok(Some(v)),
        Err(e) if reply_code(&e) == Some(404) => {
            *channel = link
                .conn
                .create_channel()
                .await
                .map_err(|e| broker_error(e, "opening a channel"))?;
            Ok(None)
        }
        Err(e) => Err(broker_error(e, what.to_owned())),
    }
}

pub(crate) async fn close_quietly(channel: lapin::Channel) {
    if channel.status().connected() {
        let _ = channel.close(200, "done".into()).await;
    }
}

#[async_trait]
impl Broker for AmqpBroker {
    fn kind(&self) -> &'static str {
        "amqp"
    }

    /// Closes this broker's connections to RabbitMQ cleanly (AMQP `connection.close`), so a
    /// program that is done with the broker exits without RabbitMQ logging an abrupt
    /// disconnect; publishes still on their way reach RabbitMQ before the channel's close does.
    /// Stop workers and close consumers first: unacked deliveries of a closed connection go back
    /// to their queues. Using the broker afterwards connects again. Never fails.
    ///
    /// ```no_run
    /// use dq_core::Broker as _;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let broker = dq_broker_amqp::AmqpBroker::from_env().await?;
    /// // ... send, run a worker, stop it ...
    /// broker.close().await?;
    /// # Ok(()) }
    /// ```
    async fn close(&self) -> Result<(), BrokerError> {
        self.close_connections().await;
        Ok(())
    }

    async fn declare_queue(&self, queue: &str) -> Result<(), BrokerError> {
        check_queue(queue, "declare queue")?;
        let link = self.inner.link(Role::Publisher).await?;
        self.inner
            .ensure_declared(&link, base_queue_name(queue))
            .await
    }

    async fn enqueue(&self, message: &mut Message) -> Result<(), BrokerError> {
        self.enqueue_many(std::slice::from_mut(message)).await
    }

    /// Claims the tick if this process leads the schedules (it holds the exclusive queue
    /// `dq:schedules.leader`), then publishes with confirms and records the tick in the queue
    /// `dq:schedule.<name>`; see the crate's notes on failover. `no_overlap` is unsupported.
    async fn enqueue_tick(
        &self,
        claim: &TickClaim<'_>,
        message: &mut Message,
    ) -> Result<TickOutcome, BrokerError> {
        check_queue(&message.queue_name, "enqueue")?;
        self.inner
            .claim_tick(claim, || self.enqueue_many(std::slice::from_mut(message)))
            .await
    }

    async fn schedules(&self) -> Result<Vec<ScheduleState>, BrokerError> {
        self.inner.schedules().await
    }

    /// Publishes all of `messages` back to back, then waits for all their confirms together.
    async fn enqueue_many(&self, messages: &mut [Message]) -> Result<(), BrokerError> {
        for m in messages.iter() {
            check_queue(&m.queue_name, "enqueue")?;
        }
        let bodies: Vec<Vec<u8>> = messages.iter().map(Message::encode).collect();
        let mut todo: Vec<usize> = (0..messages.len()).collect();
        let mut attempt = 0;
        loop {
            let result = self.inner.publish_round(messages, &bodies, &mut todo).await;
            if todo.is_empty() {
                return result;
            }
            attempt += 1;
            match result {
                Err(e) if !e.is_transient() => return Err(e),
                Err(e) if attempt >= ENQUEUE_ATTEMPTS => return Err(e),
                Err(e) => {
                    let pause = enqueue_backoff(attempt - 1);
                    // The caller gets the error if every attempt fails.
                    debug!(error = %dq_core::ErrorChain(&e), count = todo.len(), retry_in_ms = pause.as_millis() as u64, "enqueue failed; retrying");
                    tokio::time::sleep(pause).await;
                }
                Ok(()) if attempt >= ENQUEUE_ATTEMPTS => {
                    return Err(BrokerError::new(
                        BrokerErrorKind::QueueNotFound,
                        format!(
                            "rabbitmq kept returning messages for {} as unroutable",
                            messages[todo[0]].queue_name
                        ),
                    ));
                }
                Ok(()) => {}
            }
        }
    }

    async fn consume(
        &self,
        queue: &str,
        prefetch: usize,
    ) -> Result<Box<dyn Consumer>, BrokerError> {
        check_queue(queue, "consume")?;
        if prefetch == 0 {
            // basic.qos 0 means "unlimited" to RabbitMQ: never what a bounded worker wants.
            return Err(BrokerError::new(
                BrokerErrorKind::Rejected,
                format!("consume {queue}: prefetch must be at least 1"),
            ));
        }
        let consumer = AmqpConsumer::open(self.inner.clone(), queue, prefetch).await?;
        Ok(Box::new(consumer))
    }

    /// Ready messages of `q`, `q.DQ` and `q.XQ`, by passive declaration. RabbitMQ does not say
    /// how many are unacked over AMQP, so `in_flight` is 0. A missing queue counts as empty.
    async fn stats(&self, queue: &str) -> Result<QueueStats, BrokerError> {
        check_queue(queue, "stats")?;
        let canonical = base_queue_name(queue);
        let (link, mut channel) = self.inner.admin_channel().await?;
        let mut counts = [0u64; 3];
        let names = [
            canonical.to_owned(),
            dq_core::delay_queue_name(canonical),
            dq_core::dead_letter_queue_name(canonical),
        ];
        for (count, name) in counts.iter_mut().zip(&names) {
            let found = if_exists(
                &link,
                &mut channel,
                &format!("counting {name}"),
                |ch| async move {
                    ch.queue_declare(
                        name.as_str().into(),
                        declare::options(true),
                        FieldTable::default(),
                    )
                    .await
                },
            )
            .await?;
            *count = found.map_or(0, |q| u64::from(q.message_count()));
        }
        close_quietly(channel).await;
        Ok(QueueStats {
            ready: counts[0],
            prioritized: 0,
            delayed: counts[1],
            dead: counts[2],
            in_flight: 0,
        })
    }

    /// Purges `q`, `q.DQ` and `q.XQ`. Messages consumers hold unacked are not purged: RabbitMQ
    /// only purges ready messages.
    async fn flush(&self, queue: &str) -> Result<(), BrokerError> {
        check_queue(queue, "flush")?;
        let canonical = base_queue_name(queue);
        let (link, mut channel) = self.inner.admin_channel().await?;
        for name in [
            canonical.to_owned(),
            dq_core::delay_queue_name(canonical),
            dq_core::dead_letter_queue_name(canonical),
        ] {
            if_exists(&link, &mut channel, &format!("purging {name}"), |ch| {
                let name = name.clone();
                async move { ch.queue_purge(name.into(), Default::default()).await }
            })
            .await?;
        }
        close_quietly(channel).await;
        Ok(())
    }

    /// Reads up to `limit` messages of `q.XQ` without removing them: each is fetched unacked,
    /// then all are given back with one `basic.nack(requeue)`. RabbitMQ puts them back at their
    /// old positions, but a concurrent reader or a nack racing with ours may reorder them.
    /// `id` is the message's `message_id`, `dead_lettered_at` comes from RabbitMQ's `x-death`
    /// header, and `reason` is `None`: RabbitMQ keeps none.
    async fn dead_letters(
        &self,
        queue: &str,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, BrokerError> {
        check_queue(queue, "dead letters")?;
        let xq = dq_core::dead_letter_queue_name(queue);
        let (link, mut channel) = self.inner.admin_channel().await?;
        let mut out = Vec::new();
        let mut last_tag = None;
        while out.len() < limit {
            let got = if_exists(&link, &mut channel, &format!("reading {xq}"), |ch| {
                let xq = xq.clone();
                async move {
                    ch.basic_get(xq.into(), BasicGetOptions { no_ack: false })
                        .await
                }
            })
            .await?;
            let Some(Some(m)) = got else { break };
            let d = m.delivery;
            last_tag = Some(d.delivery_tag);
            let id = Message::decode(&d.data)
                .map(|m| m.message_id)
                .unwrap_or_default();
            out.push(DeadLetter {
                id,
                dead_lettered_at: death_time_ms(&d.properties),
                reason: None,
                body: d.data,
            });
        }
        if let Some(tag) = last_tag {
            give_back(&channel, tag, &xq).await?;
        }
        close_quietly(channel).await;
        Ok(out)
    }

    /// Deletes dead letters of `q.XQ`. Without `ids` the queue is purged. With `ids` (message
    /// ids, as [`dead_letters`](Broker::dead_letters) gives them) every letter is fetched
    /// unacked, the named ones are acked, which deletes them, and the rest are given back with
    /// one `basic.nack(requeue)`, as `dead_letters` does.
    async fn delete_dead_letters(
        &self,
        queue: &str,
        ids: Option<&[String]>,
    ) -> Result<u64, BrokerError> {
        check_queue(queue, "delete dead letters")?;
        let xq = dq_core::dead_letter_queue_name(queue);
        let (link, mut channel) = self.inner.admin_channel().await?;
        let Some(ids) = ids else {
            let purged = if_exists(&link, &mut channel, &format!("purging {xq}"), |ch| {
                let xq = xq.clone();
                async move { ch.queue_purge(xq.into(), Default::default()).await }
            })
            .await?;
            close_quietly(channel).await;
            return Ok(purged.map_or(0, u64::from));
        };
        let mut deleted = 0;
        let mut kept_tag = None;
        if !ids.is_empty() {
            loop {
                let got = if_exists(&link, &mut channel, &format!("reading {xq}"), |ch| {
                    let xq = xq.clone();
                    async move {
                        ch.basic_get(xq.into(), BasicGetOptions { no_ack: false })
                            .await
                    }
                })
                .await?;
                let Some(Some(m)) = got else { break };
                let d = m.delivery;
                let named = Message::decode(&d.data).is_ok_and(|m| ids.contains(&m.message_id));
                if named {
                    channel
                        .basic_ack(d.delivery_tag, Default::default())
                        .await
                        .map_err(|e| broker_error(e, format!("deleting a message of {xq}")))?;
                    deleted += 1;
                } else {
                    kept_tag = Some(d.delivery_tag);
                }
            }
        }
        if let Some(tag) = kept_tag {
            give_back(&channel, tag, &xq).await?;
        }
        close_quietly(channel).await;
        Ok(deleted)
    }

    /// Publishes the record to the queue `dq:workers` (durable, classic, `x-max-length`
    /// 10000), as a transient message whose `expiration` is `ttl`; Dramatiq never declares or
    /// reads that queue. See [`WORKERS_QUEUE`](crate::WORKERS_QUEUE).
    async fn publish_worker(&self, info: &WorkerInfo, ttl: Duration) -> Result<(), BrokerError> {
        self.inner.publish_worker(info, ttl).await
    }

    /// Publishes a withdrawal to `dq:workers`, which hides the worker's records from readers
    /// until they expire.
    async fn withdraw_worker(&self, worker_id: &str) -> Result<(), BrokerError> {
        self.inner.withdraw_worker(worker_id).await
    }

    /// Reads `dq:workers` without consuming it: every message is fetched unacked and given
    /// back, while this reader holds the exclusive queue `dq:workers.lock` so that readers take
    /// turns.
    async fn workers(&self) -> Result<Vec<WorkerInfo>, BrokerError> {
        self.inner.workers().await
    }

    /// Connects if needed, then opens and closes a channel: one real round trip.
    async fn ping(&self) -> Result<(), BrokerError> {
        let (_link, channel) = self.inner.admin_channel().await?;
        channel
            .close(200, "ping".into())
            .await
            .map_err(|e| broker_error(e, "closing the ping channel"))
    }
}

/// When RabbitMQ last dead-lettered the message, in ms: the `time` (seconds since the epoch) of
/// the first, newest, entry of its `x-death` header.
pub(crate) fn death_time_ms(props: &BasicProperties) -> Option<i64> {
    let headers = props.headers().as_ref()?;
    let AMQPValue::FieldArray(deaths) = headers.inner().get("x-death")? else {
        return None;
    };
    let AMQPValue::FieldTable(death) = deaths.as_slice().first()? else {
        return None;
    };
    match death.inner().get("time")? {
        // A time past i64's milliseconds is no time at all rather than an overflow.
        AMQPValue::Timestamp(secs) => i64::try_from(*secs).ok()?.checked_mul(1000),
        _ => None,
    }
}

/// The properties a message is published with: exactly what Python Dramatiq sets, persistent,
/// plus the priority when asked for. No content type, headers or ids: Python reads none, and
/// RabbitMQ compares nothing.
pub(crate) fn publish_properties(message: &Message) -> BasicProperties {
    let props = BasicProperties::default().with_delivery_mode(2);
    match message.options.broker_priority() {
        Some(p) => props.with_priority(p),
        None => props,
    }
}
