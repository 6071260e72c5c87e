//! One app definition, shared by the `one_app_worker` binary (the worker command, and a
//! producer mode) and by the tests' own producer: what the test of [`Cli::app`] and
//! [`Cli::build_app`] proves is that both sides get everything this file defines.
//!
//! [`Cli::app`]: dq_cli::Cli::app
//! [`Cli::build_app`]: dq_cli::Cli::build_app

use std::path::Path;
use std::time::Duration;

use dq_core::{async_trait, App, AppBuilder, Control, Hooks, Job, Message, Middleware};
use dq_core::{MiddlewareError, State};

/// The option [`Release`] stamps on every message it enqueues.
pub(crate) const RELEASE_OPTION: &str = "release";

/// The release this app stamps.
pub(crate) const RELEASE: &str = "r42";

/// With this variable set, [`app`] fails: the worker must exit with code 2.
pub(crate) const FAIL_ENV: &str = "DQ_TEST_APP_FAIL";

/// Middleware that acts on both sides: a producer's `before_enqueue` stamps the release on the
/// message, a worker's `before_process` refuses one without it (so a producer that did not
/// build this app cannot get a message run).
pub(crate) struct Release(pub(crate) &'static str);

#[async_trait]
impl Middleware for Release {
    fn name(&self) -> &str {
        "Release"
    }

    fn hooks(&self) -> Hooks {
        Hooks::BEFORE_ENQUEUE | Hooks::BEFORE_PROCESS
    }

    async fn before_enqueue(
        &self,
        _app: &App,
        message: &mut Message,
        _delay: Option<Duration>,
    ) -> Result<(), MiddlewareError> {
        message
            .options
            .insert(RELEASE_OPTION.to_owned(), self.0.into());
        Ok(())
    }

    async fn before_process(&self, _app: &App, job: &mut Job) -> Result<Control, MiddlewareError> {
        if job.message.options.get_str(RELEASE_OPTION) != Some(self.0) {
            job.fail(format!("not sent by an app of release {}", self.0));
        }
        Ok(Control::Continue)
    }
}

/// State only the app function adds.
pub(crate) struct Greeting(pub(crate) String);

/// Writes `dir/name` holding the release the message carries and the app's greeting: the
/// middleware of the producer's app and the state of the worker's, seen together.
#[dq::actor(queue_name = "one-app")]
pub(crate) fn record(greeting: State<Greeting>, dir: String, name: String) -> Result<(), String> {
    let message = dq_core::current_message().ok_or("CurrentMessage is not installed")?;
    let release = message.options.get_str(RELEASE_OPTION).unwrap_or("none");
    let text = format!("{release} {}", greeting.0);
    // Written then renamed, so a test polling for the file never reads half of it.
    let tmp = Path::new(&dir).join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).map_err(|e| e.to_string())?;
    std::fs::rename(&tmp, Path::new(&dir).join(name)).map_err(|e| e.to_string())
}

/// The app, written once: middleware for both sides, state for the worker.
pub(crate) fn app(app: AppBuilder) -> Result<AppBuilder, std::io::Error> {
    if std::env::var_os(FAIL_ENV).is_some() {
        return Err(std::io::Error::other(
            "the test asked the app function to fail",
        ));
    }
    Ok(app
        .middleware(Release(RELEASE))
        .middleware(dq_middleware::CurrentMessage)
        .state(Greeting("hello from the app function".to_owned())))
}
