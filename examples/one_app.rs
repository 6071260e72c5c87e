//! One app for the worker and the producer: `app` below is the only place that says which
//! middleware, result backend and state the application has. The worker binary runs
//! `dq::cli::Cli::new().app(app).main()`; a web server that sends messages builds its app with
//! `dq::cli::Cli::new().app(app).build_app()`. Both choose the broker the same way, from the
//! environment (`DQ_REDIS_URL`, `DQ_REDIS_NAMESPACE`), and the result backend reads
//! `DQ_REDIS_URL` and `DQ_RESULTS_NAMESPACE`, so one set of variables configures both.
//!
//! In an application these are two binaries (`src/bin/worker.rs`, `src/bin/web.rs`) sharing
//! `fn app` from the library. To stay one runnable file, this example plays both: it starts
//! itself as the worker command (`ONE_APP_ROLE=worker`, one worker process), serves the web app
//! with axum on 127.0.0.1, posts a few requests with reqwest, and stops the worker with TERM.
//! The `Tenant` middleware acts on both sides (the web app stamps, the worker checks), and the
//! worker's actor gets the app's state: each answer shows it ran with the same app. Needs Redis.
//!
//! ```text
//! cargo run -p examples --example one_app
//! ONE_APP_ROLE=worker cargo run -p examples --example one_app -- --processes 2   # the worker alone
//! ```

use std::process::{Child, Command};
use std::time::Duration;

use axum::extract::{Form, State as Extract};
use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use dq::cli::{BoxError, Cli};
use dq::middleware::{
    async_trait, Control, CurrentMessage, Hooks, Job, Middleware, MiddlewareError,
};
use dq::results::{MessageResult, RedisBackend, Results};
use dq::{App, AppBuilder, Message, State};
use serde::Deserialize;

/// Tells this file which side to play; an application has two binaries instead.
const ROLE_ENV: &str = "ONE_APP_ROLE";

/// The application, defined once, for the worker command and the web server alike.
fn app(app: AppBuilder) -> Result<AppBuilder, BoxError> {
    // DQ_REDIS_URL and DQ_RESULTS_NAMESPACE; a bad URL is an error here, on both sides.
    let results = RedisBackend::from_env()?;
    Ok(app
        .middleware(Tenant("acme"))
        .middleware(CurrentMessage)
        .middleware(Results::new(results.clone()))
        // The web server reads results through the app's own backend.
        .state(results)
        .state(Greeting("Hello".to_owned())))
}

/// Middleware with a side in each process: the producer's `before_enqueue` stamps its tenant on
/// every message, the worker's `before_process` skips messages of another tenant.
struct Tenant(&'static str);

#[async_trait]
impl Middleware for Tenant {
    fn name(&self) -> &str {
        "Tenant"
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
        message.options.insert("tenant".to_owned(), self.0.into());
        Ok(())
    }

    async fn before_process(&self, _app: &App, job: &mut Job) -> Result<Control, MiddlewareError> {
        Ok(match job.message.options.get_str("tenant") {
            Some(tenant) if tenant == self.0 => Control::Continue,
            _ => Control::Skip,
        })
    }
}

/// State the app function adds; the worker hands it to the actor.
struct Greeting(String);

/// Greets `name`, saying which tenant the message was sent for.
#[dq::actor(queue_name = "dq-example-one-app", store_results = true)]
fn greet(greeting: State<Greeting>, name: String) -> String {
    let tenant = dq::current_message()
        .and_then(|m| m.options.get_str("tenant").map(str::to_owned))
        .unwrap_or_default();
    format!("{}, {name}! (for tenant {tenant})", greeting.0)
}

#[derive(Deserialize)]
struct Greet {
    name: String,
}

/// `POST /greet` with a form `name=..`: sends `greet` and, for the example's sake, waits for the worker's
/// answer (a real handler would answer 202 at once).
async fn greet_handler(
    Extract(app): Extract<App>,
    Form(Greet { name }): Form<Greet>,
) -> (StatusCode, String) {
    let backend = app
        .states()
        .get::<RedisBackend>()
        .expect("the app function adds the backend");
    let sent = match greet::send_to(&app, name).await {
        Ok(message) => message,
        Err(e) => return (StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    };
    match sent
        .get_result::<String>(&*backend, true, Some(Duration::from_secs(30)))
        .await
    {
        Ok(text) => (StatusCode::OK, text),
        Err(e) => (StatusCode::GATEWAY_TIMEOUT, e.to_string()),
    }
}

/// The worker command started from this file; stopped with TERM, or killed if the example
/// fails before it gets there.
struct WorkerCommand(Child);

impl WorkerCommand {
    fn start() -> std::io::Result<WorkerCommand> {
        let child = Command::new(std::env::current_exe()?)
            .env(ROLE_ENV, "worker")
            .args(["--processes", "1", "--threads", "2"])
            .spawn()?;
        Ok(WorkerCommand(child))
    }

    /// TERM, as systemd or Ctrl-C would send, and the exit code.
    fn stop(mut self) -> Result<i32, Box<dyn std::error::Error>> {
        let pid = nix::unistd::Pid::from_raw(self.0.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM)?;
        Ok(self.0.wait()?.code().unwrap_or(-1))
    }
}

impl Drop for WorkerCommand {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

async fn web_server_and_requests() -> Result<(), Box<dyn std::error::Error>> {
    // The same app the worker processes build, on the broker they would choose.
    let app = match Cli::new().app(app).build_app().await {
        Ok(app) => app,
        Err(e) => {
            eprintln!("error: {}", dq::ErrorChain(&e));
            std::process::exit(e.exit_code()); // 3 when Redis is down, as for the worker
        }
    };
    let worker = WorkerCommand::start()?;

    let router = Router::new()
        .route("/greet", post(greet_handler))
        .with_state(app.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/greet", listener.local_addr()?);
    let (stop_server, server_stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async {
                let _ = server_stopped.await;
            })
            .await
    });

    let client = reqwest::Client::new();
    for name in ["Ann", "Bob"] {
        let response = client.post(&url).form(&[("name", name)]).send().await?;
        let status = response.status().as_u16();
        println!(
            "POST /greet name={name} -> {status} {}",
            response.text().await?
        );
    }

    let _ = stop_server.send(());
    server.await??;
    app.close().await?;
    println!(
        "the worker command stopped with exit code {}",
        worker.stop()?
    );
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::var(ROLE_ENV).as_deref() == Ok("worker") {
        // The worker binary's whole main.
        Cli::new().app(app).main()
    }
    tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    tokio::runtime::Runtime::new()?.block_on(web_server_and_requests())
}
