//! A binary for dq-cli's tests of one app definition: by default the worker command, built with
//! [`Cli::app`](dq_cli::Cli::app); with `DQ_TEST_ROLE=send DIR NAME` a producer that builds the
//! same app with [`Cli::build_app`](dq_cli::Cli::build_app), sends `record(DIR, NAME)` and
//! exits. Both choose the broker from the environment (`DQ_REDIS_URL`, `DQ_REDIS_NAMESPACE`), as
//! a deployment would. Needs Redis.
//!
//! `cargo run -p dq-cli --example one_app_worker -- --processes 1`

#[path = "support/one_app.rs"]
mod one_app;

fn main() {
    let cli = dq_cli::Cli::new().app(one_app::app);
    if std::env::var("DQ_TEST_ROLE").as_deref() != Ok("send") {
        cli.main()
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, name] = &args[..] else {
        eprintln!("usage: DQ_TEST_ROLE=send one_app_worker DIR NAME");
        std::process::exit(dq_cli::exit::USAGE);
    };
    let rt = tokio::runtime::Runtime::new().expect("a Tokio runtime");
    let code = rt.block_on(async {
        let app = match cli.build_app().await {
            Ok(app) => app,
            Err(e) => {
                eprintln!("error: {}", dq::ErrorChain(&e));
                return e.exit_code();
            }
        };
        let sent = one_app::record::send_to(&app, dir.clone(), name.clone()).await;
        let _ = app.close().await;
        match sent {
            Ok(_) => {
                println!("sent record({dir:?}, {name:?})");
                dq_cli::exit::OK
            }
            Err(e) => {
                eprintln!("error: {}", dq::ErrorChain(&e));
                dq_cli::exit::KILLED
            }
        }
    });
    std::process::exit(code)
}
