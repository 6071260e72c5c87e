//! Log lines in Dramatiq's format:
//! `[2017-06-27 13:03:09,675] [PID 13047] [MainThread] [dq.MainProcess] [INFO] message`.

use std::fmt;
use std::fs::File;
use std::io;
use std::sync::Arc;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

/// The target dq-cli logs its process-level lines under; the formatter prints it as the
/// process's logger name, `dq.MainProcess` or `dq.WorkerProcess(N)`, as Dramatiq does.
pub(crate) const PROCESS: &str = "dq.process";

/// Formats events as Dramatiq's `logging` format string does.
pub(crate) struct DramatiqFormat {
    /// `dq.MainProcess` or `dq.WorkerProcess(N)`.
    process: String,
}

impl DramatiqFormat {
    pub(crate) fn new(process: String) -> DramatiqFormat {
        DramatiqFormat { process }
    }
}

/// The logger name for a tracing target: `dq_worker::worker` → `dq.worker.worker`, so the
/// names read like Dramatiq's (`dramatiq.worker.WorkerThread`); other crates keep their path
/// with dots.
fn logger_name(target: &str) -> String {
    let dotted = target.replace("::", ".");
    match dotted.strip_prefix("dq_") {
        Some(rest) => format!("dq.{rest}"),
        None => dotted,
    }
}

/// The broker client libraries whose records dq logs at DEBUG: lapin and its AMQP crates (the
/// Redis client logs nothing of its own).
const BROKER_CLIENTS: [&str; 3] = ["lapin", "amq_protocol", "tcp_stream"];

/// Whether `target` is one of [`BROKER_CLIENTS`] or a module of one.
fn is_broker_client(target: &str) -> bool {
    BROKER_CLIENTS.iter().any(|c| {
        target
            .strip_prefix(c)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with("::") || rest.starts_with('_'))
    })
}

/// Python's level names.
fn level_name(level: &Level) -> &'static str {
    match *level {
        Level::ERROR => "ERROR",
        Level::WARN => "WARNING",
        Level::INFO => "INFO",
        Level::DEBUG => "DEBUG",
        Level::TRACE => "TRACE",
    }
}

/// The AMQP methods that carry the login (the SASL response: user and password, in clear or as
/// bytes). lapin's DEBUG records dump every frame it writes, these included, so a broker
/// client's field that shows one is replaced by [`HIDDEN_LOGIN`].
const LOGIN_FRAMES: [&str; 2] = ["StartOk(", "SecureOk("];

/// What a broker client's field holding a [`LOGIN_FRAMES`] method shows instead.
const HIDDEN_LOGIN: &str = "<an AMQP login frame, hidden: it holds the credentials>";

/// Collects an event's message and its other fields as ` key=value`.
#[derive(Default)]
struct Fields {
    message: String,
    rest: String,
    /// Whether the event is a broker client's, whose fields may dump login frames.
    hide_logins: bool,
}

impl Fields {
    fn push(&mut self, field: &Field, value: &str) {
        let value = if self.hide_logins && LOGIN_FRAMES.iter().any(|f| value.contains(f)) {
            HIDDEN_LOGIN
        } else {
            value
        };
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            use fmt::Write;
            let _ = write!(self.rest, " {}={}", field.name(), value);
        }
    }
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.push(field, value);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.push(field, &format!("{value:?}"));
    }
}

impl<S, N> FormatEvent<S, N> for DramatiqFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        let now = chrono::Local::now();
        let thread = std::thread::current();
        let thread_name = match thread.name() {
            Some("main") | None => "MainThread",
            Some(name) => name,
        };
        let target = meta.target();
        let logger = if target == PROCESS {
            self.process.clone()
        } else {
            logger_name(target)
        };
        let mut fields = Fields {
            hide_logins: is_broker_client(target),
            ..Fields::default()
        };
        event.record(&mut fields);
        // A broker client's own records are details of what dq logs once itself (a lost
        // broker is one WARN when it goes and one INFO when it is back): DEBUG, whatever level
        // the client gave them, which stays in a field.
        let level = if is_broker_client(target) {
            use fmt::Write as _;
            let _ = write!(fields.rest, " client_level={}", level_name(meta.level()));
            "DEBUG"
        } else {
            level_name(meta.level())
        };
        writeln!(
            writer,
            "[{}] [PID {}] [{}] [{}] [{}] {}{}",
            now.format("%Y-%m-%d %H:%M:%S,%3f"),
            std::process::id(),
            thread_name,
            logger,
            level,
            fields.message,
            fields.rest,
        )
    }
}

/// Where log lines go: standard error, or a file opened for appending (`--log-file`).
#[derive(Clone)]
pub(crate) enum Sink {
    Stderr,
    File(Arc<File>),
}

/// A writer for one log line.
pub(crate) enum SinkWriter {
    Stderr(io::Stderr),
    File(Arc<File>),
}

impl io::Write for SinkWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            SinkWriter::Stderr(e) => e.write(buf),
            SinkWriter::File(f) => (&**f).write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            SinkWriter::Stderr(e) => e.flush(),
            SinkWriter::File(f) => (&**f).flush(),
        }
    }
}

impl<'a> MakeWriter<'a> for Sink {
    type Writer = SinkWriter;

    fn make_writer(&'a self) -> SinkWriter {
        match self {
            Sink::Stderr => SinkWriter::Stderr(io::stderr()),
            Sink::File(f) => SinkWriter::File(f.clone()),
        }
    }
}

/// The filter for `-v` given `verbose` times: INFO, then DEBUG, then TRACE, as Dramatiq's
/// `-v` goes from INFO to DEBUG. `RUST_LOG`, when set, wins; when it does not parse, it is
/// ignored and the second value says why. An empty `RUST_LOG` counts as unset, as every
/// variable dq reads does (tracing's own reading of it would turn every line off).
fn filter(verbose: u8) -> (EnvFilter, Option<String>) {
    let mut invalid = None;
    match std::env::var(EnvFilter::DEFAULT_ENV) {
        Ok(v) if v.trim().is_empty() => {}
        Ok(v) => match EnvFilter::try_new(&v) {
            Ok(f) => return (f, None),
            Err(e) => invalid = Some(format!("RUST_LOG={v:?} is invalid ({e})")),
        },
        Err(std::env::VarError::NotPresent) => {}
        Err(std::env::VarError::NotUnicode(_)) => {
            invalid = Some("RUST_LOG is not valid UTF-8".to_owned());
        }
    }
    // Broker clients' records are DEBUG lines (see `is_broker_client`), so they are off
    // until `-v`.
    let mut directives = String::from(match verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    });
    if verbose == 0 {
        for client in BROKER_CLIENTS {
            directives.push_str(&format!(",{client}=off"));
        }
    }
    (EnvFilter::new(directives), invalid)
}

/// For `--skip-logging` in a binary that installed no subscriber: WARNING and ERROR lines only,
/// as Python's `logging` shows through its last-resort handler when nothing is configured, so a
/// worker that cannot start still says why.
pub(crate) fn init_last_resort(process: String, sink: Sink) {
    let mut directives = String::from("warn");
    for client in BROKER_CLIENTS {
        directives.push_str(&format!(",{client}=off"));
    }
    let _ = tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::new(directives))
        .event_format(DramatiqFormat::new(process))
        .with_writer(sink)
        .try_init();
}

/// Installs the global subscriber. Errors when one is installed already, which `--skip-logging`
/// is for: the binary configures logging itself. `Ok(Some(why))` when `RUST_LOG` was ignored
/// because it does not parse: worth a warning.
pub(crate) fn init(process: String, verbose: u8, sink: Sink) -> Result<Option<String>, String> {
    let (filter, invalid) = filter(verbose);
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .event_format(DramatiqFormat::new(process))
        .with_writer(sink)
        .try_init()
        .map_err(|e| e.to_string())?;
    Ok(invalid)
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::Mutex;

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Buf {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Buf {
        type Writer = Buf;
        fn make_writer(&'a self) -> Buf {
            self.clone()
        }
    }

    /// The line `log` produces under a formatter for `process`, without its timestamp.
    fn line(process: &str, log: impl FnOnce()) -> String {
        let buf = Buf::default();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(Level::TRACE)
            .event_format(DramatiqFormat::new(process.to_owned()))
            .with_writer(buf.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, log);
        let out = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let (stamp, rest) = out.split_at(out.find("] ").expect("a timestamp") + 2);
        // [2017-06-27 13:03:09,675]
        assert_eq!(stamp.len(), 26, "{out}");
        assert_eq!(&stamp[20..21], ",", "{out}");
        rest.to_owned()
    }

    #[test]
    fn process_lines_use_the_process_logger_name() {
        let pid = std::process::id();
        let got = line(
            "dq.MainProcess",
            || tracing::info!(target: PROCESS, "Dq '0.1.0' is booting up."),
        );
        // Test threads have names of their own; the main thread prints as MainThread.
        let thread = std::thread::current().name().unwrap().to_owned();
        assert_eq!(
            got,
            format!("[PID {pid}] [{thread}] [dq.MainProcess] [INFO] Dq '0.1.0' is booting up.\n")
        );
    }

    #[test]
    fn other_targets_become_dotted_logger_names_and_fields_follow_the_message() {
        let got = line(
            "dq.WorkerProcess(3)",
            || tracing::warn!(target: "dq_worker::worker", queue = "default", n = 2, "slow"),
        );
        assert!(
            got.ends_with("[dq.worker.worker] [WARNING] slow queue=default n=2\n"),
            "{got}"
        );
        let got = line(
            "dq.WorkerProcess(3)",
            || tracing::error!(target: "redis::aio", "gone"),
        );
        assert!(got.ends_with("[redis.aio] [ERROR] gone\n"), "{got}");
    }

    #[test]
    fn broker_clients_records_are_debug_lines_off_by_default() {
        let got = line(
            "dq.WorkerProcess(0)",
            || tracing::error!(target: "lapin::io_loop", error = "reset by peer", "error doing IO"),
        );
        assert!(
            got.ends_with(
                "[lapin.io_loop] [DEBUG] error doing IO error=reset by peer client_level=ERROR\n"
            ),
            "{got}"
        );
        assert!(is_broker_client("lapin"));
        assert!(is_broker_client("amq_protocol_tcp::tcp"));
        assert!(!is_broker_client("lapinou"));
        assert!(!is_broker_client("dq_broker_amqp::broker"));
        if std::env::var_os("RUST_LOG").is_none() {
            let quiet = filter(0).0.to_string();
            assert!(quiet.contains("lapin=off"), "{quiet}");
            assert!(!filter(1).0.to_string().contains("lapin=off"));
        }
    }

    #[test]
    fn broker_clients_login_frames_are_hidden() {
        // lapin's dump of Connection.StartOk: the SASL PLAIN response is "\0ann\0p@ss", as bytes.
        let frame = "AMQPFrame::Method(Connection(StartOk(StartOk { mechanism: \"PLAIN\", \
                     response: LongString([0, 97, 110, 110, 0, 112, 64, 115, 115]) })))";
        let got = line(
            "dq.WorkerProcess(0)",
            || tracing::debug!(target: "lapin::io_loop", next_msg = frame, "will write to buffer"),
        );
        assert!(
            got.ends_with(&format!(
                "[lapin.io_loop] [DEBUG] will write to buffer next_msg={HIDDEN_LOGIN} \
                 client_level=DEBUG\n"
            )),
            "{got}"
        );
        let got = line(
            "dq.WorkerProcess(0)",
            || tracing::debug!(target: "lapin::io_loop", "sending {:?}", frame),
        );
        assert!(!got.contains("112, 64"), "{got}");
        // Other frames, and dq's own records, are shown as they are.
        let got = line(
            "dq.WorkerProcess(0)",
            || tracing::debug!(target: "lapin::io_loop", next_msg = "Basic(Ack(..))", "write"),
        );
        assert!(got.contains("next_msg=Basic(Ack(..))"), "{got}");
        let got = line(
            "dq.WorkerProcess(0)",
            || tracing::info!(target: "dq_worker::worker", "StartOk("),
        );
        assert!(got.contains("StartOk("), "{got}");
    }

    #[test]
    fn level_names_are_pythons() {
        assert_eq!(level_name(&Level::WARN), "WARNING");
        assert_eq!(level_name(&Level::DEBUG), "DEBUG");
        assert_eq!(
            logger_name("dq_middleware::retries"),
            "dq.middleware.retries"
        );
        assert_eq!(logger_name("my_app"), "my_app");
    }
}
