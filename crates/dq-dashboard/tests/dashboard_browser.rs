//! The dashboard in a real browser: headless Chromium driven through chromedriver (WebDriver,
//! with fantoccini), against a dashboard on the real Redis with a worker. It loads the
//! overview and sees the live refresh, opens a dead letter, requeues it and sees it run, bulk
//! deletes the dead letters of one actor through the confirmation page, and checks that a POST
//! without the CSRF token is refused. Screenshots of each page go to
//! `target/dashboard-screens/`.
//!
//! Needs Debian's `chromium` and `chromium-driver` (`cargo xtask services` installs them).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dq_broker_redis::RedisBroker;
use dq_core::{Actor, ActorOptions, App, Broker, Message};
use dq_dashboard::Dashboard;
use dq_worker::{Worker, WorkerOptions};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

const PATIENCE: Duration = Duration::from_secs(30);

/// chromedriver on a port of its own, killed on drop.
struct Driver {
    child: Child,
    port: u16,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn find(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| names.iter().map(move |n| dir.join(n)))
        .find(|p| p.is_file())
}

fn start_driver() -> Driver {
    let driver = find(&["chromedriver"]).unwrap_or_else(|| {
        panic!(
            "chromedriver is needed for the browser test: `apt-get install chromium \
             chromium-driver` (cargo xtask services installs them)"
        )
    });
    let port = free_port();
    let child = Command::new(driver)
        .arg(format!("--port={port}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver starts");
    Driver { child, port }
}

async fn browser(driver: &Driver) -> Client {
    let binary = find(&["chromium", "chromium-browser", "google-chrome"]).unwrap_or_else(|| {
        panic!("chromium is needed for the browser test: `apt-get install chromium`")
    });
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": binary,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,900"],
        }),
    );
    let url = format!("http://127.0.0.1:{}", driver.port);
    let mut last = None;
    for _ in 0..100 {
        match ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps.clone())
            .connect(&url)
            .await
        {
            Ok(c) => return c,
            Err(e) => {
                last = Some(e.to_string());
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    panic!("chromedriver at {url} did not start a session: {last:?}");
}

fn screens_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    let dir = target.join("dashboard-screens");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn screenshot(c: &Client, name: &str) {
    let png = c.screenshot().await.unwrap();
    std::fs::write(screens_dir().join(format!("{name}.png")), png).unwrap();
}

static GREETED: AtomicUsize = AtomicUsize::new(0);
dq_test::sync_handler!(greet, |_name: String| {
    GREETED.fetch_add(1, Ordering::SeqCst);
    Ok(serde_json::Value::Null)
});

/// Enqueues one message per call and dead-letters them all, as a worker whose retries ran out.
async fn dead_letters(broker: &RedisBroker, queue: &str, calls: &[(&str, &str)]) {
    for (actor, arg) in calls {
        let mut m = Message::new(queue, actor, &(arg,), &()).unwrap();
        m.options.set_retries(20);
        m.options.insert(
            "traceback".into(),
            format!("Traceback (most recent call last):\nRuntimeError: {actor} failed for {arg}\n")
                .into(),
        );
        broker.enqueue(&mut m).await.unwrap();
    }
    let mut c = broker.consume(queue, calls.len()).await.unwrap();
    let mut got = Vec::new();
    while got.len() < calls.len() {
        got.extend(c.fetch(Duration::from_millis(200)).await.unwrap());
    }
    for d in &got {
        c.acker().nack(&d.token, "retries exceeded").await.unwrap();
    }
    c.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_browser_requeue_runs_bulk_delete_confirms_and_csrf_refuses() {
    let url = dq_test::require_redis();
    let ns = format!("dqtest-browser-{}", uuid::Uuid::new_v4());
    let broker = RedisBroker::builder()
        .url(&url)
        .namespace(&ns)
        .build()
        .await
        .unwrap();
    let queue = "greetings";
    dead_letters(
        &broker,
        queue,
        &[
            ("greet", "ada"),
            ("greet", "grace"),
            ("other", "x"),
            ("other", "y"),
        ],
    )
    .await;
    for n in 0..5 {
        let mut m = Message::new("newsletters", "mail", &(n,), &()).unwrap();
        broker.enqueue(&mut m).await.unwrap();
    }

    let dashboard = Dashboard::new(Arc::new(broker.clone()))
        .sample_interval(Duration::from_millis(500))
        .build()
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move { axum::serve(listener, dashboard).await });

    let driver = start_driver();
    let c = browser(&driver).await;
    let result = drive(&c, &base, &broker, queue).await;
    let _ = c.close().await;
    server.abort();
    broker.flush(queue).await.unwrap();
    broker.flush("newsletters").await.unwrap();
    result.unwrap();
}

async fn drive(
    c: &Client,
    base: &str,
    broker: &RedisBroker,
    queue: &str,
) -> Result<(), fantoccini::error::CmdError> {
    // The overview lists the queue, and the script refreshes it in place.
    c.goto(&format!("{base}/")).await?;
    c.wait()
        .at_most(PATIENCE)
        .for_element(Locator::Css(&format!(r#"tr[data-queue="{queue}"]"#)))
        .await?;
    let live = c.find(Locator::Id("live-status")).await?;
    let mut refreshed = false;
    for _ in 0..100 {
        if live.text().await?.contains("updated") {
            refreshed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(refreshed, "the live refresh never ran");
    // Let a few samples in, for the sparkline.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    c.refresh().await?;
    screenshot(c, "overview").await;

    // The dead letters, then one of greet's.
    c.goto(&format!("{base}/queues/{queue}?state=dead")).await?;
    screenshot(c, "queue-dead").await;
    let rows = c.find_all(Locator::Css("table.messages tbody tr")).await?;
    assert_eq!(rows.len(), 4);
    let mut opened = false;
    for row in rows {
        if row.text().await?.contains("greet(\"ada\")") {
            row.find(Locator::Css("a")).await?.click().await?;
            opened = true;
            break;
        }
    }
    assert!(opened, "no dead letter of greet(\"ada\")");
    c.wait()
        .at_most(PATIENCE)
        .for_element(Locator::Css("pre.traceback"))
        .await?;
    let page = c.source().await?;
    assert!(page.contains("RuntimeError: greet failed for ada"));
    screenshot(c, "message").await;

    // Requeue it and see it run on a worker.
    let app = App::builder_shared(Arc::new(broker.clone()) as Arc<dyn Broker>)
        .without_linked_actors()
        .middleware_arcs(dq_middleware::default_middleware())
        .actor(Actor::new(
            "greet",
            ActorOptions {
                queue_name: queue.into(),
                ..ActorOptions::default()
            },
            greet,
        ))
        .build()
        .unwrap();
    let worker = Worker::new(
        app,
        WorkerOptions {
            threads: 2,
            worker_timeout: Duration::from_millis(50),
            ..Default::default()
        },
    );
    worker.start().await.unwrap();
    let message_page = c.current_url().await?;
    // The running worker, from the registry, refreshed in place.
    c.goto(&format!("{base}/workers")).await?;
    c.wait()
        .at_most(PATIENCE)
        .for_element(Locator::Css("tr[data-worker]"))
        .await?;
    let live = c.find(Locator::Id("live-status")).await?;
    let mut refreshed = false;
    for _ in 0..100 {
        if live.text().await?.contains("updated") {
            refreshed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(refreshed, "the workers page never refreshed");
    screenshot(c, "workers").await;
    c.goto(message_page.as_str()).await?;
    c.find(Locator::Css(r#"form[action$="/requeue"] button"#))
        .await?
        .click()
        .await?;
    let done = c
        .wait()
        .at_most(PATIENCE)
        .for_element(Locator::Css("p.done"))
        .await?;
    assert!(done.text().await?.contains("Requeued 1 message"));
    let ran =
        dq_test::wait_until_async(PATIENCE, || async { GREETED.load(Ordering::SeqCst) == 1 }).await;
    worker.stop().await.unwrap();
    assert!(ran, "the requeued message did not run");
    assert_eq!(broker.stats(queue).await.unwrap().dead, 3);

    // Bulk delete of other's dead letters: filter, Delete…, confirm.
    c.goto(&format!("{base}/queues/{queue}?state=dead")).await?;
    c.find(Locator::Css(r#"form.filters input[name="actor"]"#))
        .await?
        .send_keys("other")
        .await?;
    c.find(Locator::Css("form.filters button"))
        .await?
        .click()
        .await?;
    c.wait()
        .at_most(PATIENCE)
        .for_element(Locator::Css("button.danger"))
        .await?;
    assert_eq!(
        c.find_all(Locator::Css("table.messages tbody tr"))
            .await?
            .len(),
        2
    );
    c.find(Locator::Css("button.danger")).await?.click().await?;
    let question = c
        .wait()
        .at_most(PATIENCE)
        .for_element(Locator::Css("p.question"))
        .await?;
    assert!(question.text().await?.contains("of actor other"));
    screenshot(c, "confirm").await;
    assert_eq!(
        broker.stats(queue).await.unwrap().dead,
        3,
        "deleted before confirming"
    );
    c.find(Locator::Css("button.danger")).await?.click().await?;
    let done = c
        .wait()
        .at_most(PATIENCE)
        .for_element(Locator::Css("p.done"))
        .await?;
    assert!(done.text().await?.contains("Deleted 2 dead letter"));
    assert_eq!(broker.stats(queue).await.unwrap().dead, 1);

    // A POST from the page's own origin without the token: refused.
    let status = c
        .execute_async(
            r#"const [url, done] = arguments;
               fetch(url, { method: "POST", headers: { "content-type": "application/json" },
                            body: JSON.stringify({ all: true }) })
                 .then(r => done(r.status), e => done(String(e)));"#,
            vec![json!(format!("{base}/api/queues/{queue}/dead/delete"))],
        )
        .await?;
    assert_eq!(status, json!(403));
    assert_eq!(broker.stats(queue).await.unwrap().dead, 1);

    for (page, name) in [
        ("/schedules", "schedules"),
        ("/enqueue", "enqueue"),
        ("/queues/newsletters?state=ready", "queue-ready"),
    ] {
        c.goto(&format!("{base}{page}")).await?;
        screenshot(c, name).await;
    }
    Ok(())
}
