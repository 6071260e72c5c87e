//! `dq dashboard`: refuses to listen beyond loopback without authentication, and serves the
//! pages and the JSON API under its prefix, behind the token from the environment.

use super::*;
use crate::cli_admin::{check, stderr};

#[test]
fn an_open_dashboard_beyond_loopback_is_refused_before_connecting() {
    let o = Command::new(dq_bin())
        .args([
            "-b",
            "redis://127.0.0.1:1",
            "dashboard",
            "--bind",
            "0.0.0.0:8484",
        ])
        .env_remove("DQ_DASHBOARD_TOKEN")
        .env_remove("DQ_DASHBOARD_USER")
        .env_remove("DQ_DASHBOARD_PASSWORD")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    check(&o, 2);
    assert!(stderr(&o).contains("DQ_DASHBOARD_TOKEN"), "{}", stderr(&o));
    let o = Command::new(dq_bin())
        .args(["-b", "redis://127.0.0.1:1", "dashboard", "--prefix", "ops"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    check(&o, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_serves_its_api_under_the_prefix_with_a_token() {
    let scope = Scope::new("cli-dashboard");
    let broker = scope.broker().await;
    scope.send(&broker, "reports", "build", "r1").await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut args = scope.broker_args();
    args.extend([
        "dashboard".into(),
        "--bind".into(),
        format!("127.0.0.1:{port}"),
        "--prefix".into(),
        "/ops".into(),
    ]);
    let mut dash = Running::start(&dq_bin(), &args, &[("DQ_DASHBOARD_TOKEN", "t0ken")]);
    dash.wait_lines("dq dashboard on", 1).await;
    let client = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/ops/api/queues");
    let mut got = None;
    for _ in 0..100 {
        match client.get(&url).bearer_auth("t0ken").send().await {
            Ok(r) => {
                got = Some(r);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let got = got.unwrap_or_else(|| panic!("no answer; output:\n{}", dash.output()));
    assert_eq!(got.status(), 200);
    let o: serde_json::Value = got.json().await.unwrap();
    assert_eq!(o["queues"][0]["name"], "reports", "{o}");
    assert_eq!(o["queues"][0]["ready"], 1);
    let refused = client.get(&url).send().await.unwrap();
    assert_eq!(refused.status(), 401);
    let page = client
        // `/ops/` redirects to the overview at `/ops`.
        .get(format!("http://127.0.0.1:{port}/ops/"))
        .bearer_auth("t0ken")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains(r#"href="/ops/queues/reports?state=ready""#),
        "{page}"
    );
    dash.signal(Signal::SIGTERM);
    assert_eq!(dash.wait_exit().await, 0, "{}", dash.output());
}
