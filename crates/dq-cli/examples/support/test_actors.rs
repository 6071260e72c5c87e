//! The actors and `main` of the test worker binaries (`test_worker`, `test_worker_v2`), which
//! differ only in the version they write: the watch-reload test swaps one build for the other.

use std::path::Path;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

static VERSION: OnceLock<&'static str> = OnceLock::new();

/// Writes this build's version and the worker process's pid.
fn mark(dir: &str, name: &str) -> Result<(), String> {
    let text = format!(
        "{} {}",
        VERSION.get().copied().unwrap_or("?"),
        std::process::id()
    );
    // Written then renamed, so a test polling for the file never reads half of it.
    let tmp = Path::new(dir).join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).map_err(|e| e.to_string())?;
    std::fs::rename(&tmp, Path::new(dir).join(name)).map_err(|e| e.to_string())
}

/// Creates file `dir/name` holding the build's version and the pid that ran it.
#[dq::actor]
pub(crate) fn touch(dir: String, name: String) -> Result<(), String> {
    mark(&dir, &name)
}

/// `touch` on another queue, for `--queues`.
#[dq::actor(queue_name = "other")]
pub(crate) fn touch_other(dir: String, name: String) -> Result<(), String> {
    mark(&dir, &name)
}

/// Creates `dir/started-NAME`, waits until the test creates `dir/release`, then creates
/// `dir/done-NAME`: a message that is in flight for exactly as long as a test needs.
#[dq::actor]
pub(crate) fn hold(dir: String, name: String) -> Result<(), String> {
    mark(&dir, &format!("started-{name}"))?;
    let release = Path::new(&dir).join("release");
    let deadline = Instant::now() + Duration::from_secs(120);
    while !release.exists() {
        if Instant::now() > deadline {
            return Err("never released".to_owned());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    mark(&dir, &format!("done-{name}"))
}

/// Runs the worker command.
///
/// With `DQ_TEST_WORKER_BAD_ACTOR` set, it adds an actor whose option no middleware declares,
/// which must make every worker process exit with code 2. With `DQ_TEST_WORKER_QUEUE_PREFIX`
/// set, the actors' queues get that prefix (`PREFIXdefault`, `PREFIXother`): RabbitMQ has no
/// namespaces, so tests sharing it need queues of their own.
pub(crate) fn main(version: &'static str) -> ! {
    let _ = VERSION.set(version);
    let bad_actor = std::env::var_os("DQ_TEST_WORKER_BAD_ACTOR").is_some();
    let prefix = std::env::var("DQ_TEST_WORKER_QUEUE_PREFIX").ok();
    dq_cli::Cli::new()
        .configure(move |mut app| {
            if let Some(prefix) = &prefix {
                app = app.without_linked_actors();
                for mut actor in [touch::actor(), touch_other::actor(), hold::actor()] {
                    actor.options.queue_name = format!("{prefix}{}", actor.options.queue_name);
                    app = app.actor(actor);
                }
            }
            if bad_actor {
                let mut bad = touch::actor();
                bad.name = "bad_options".to_owned();
                bad.options
                    .extra
                    .insert("no_such_option".to_owned(), serde_json::Value::from(1));
                app = app.actor(bad);
            }
            app
        })
        .main()
}
