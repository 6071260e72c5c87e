//! dq-redis-conn against a real Redis (`DQ_REDIS_URL`, default `redis://127.0.0.1:6379`).

use std::time::{Duration, Instant};

/// redis 1.x times async commands out after 500 ms by default; dq's pools turn that off, so a
/// blocking read (a result or a lock wait) may block for as long as it asks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pooled_connections_block_longer_than_the_clients_default_timeout() {
    let url = dq_test::require_redis();
    let pool = dq_redis_conn::pool(&url, 1, Duration::from_secs(5)).unwrap();
    let mut conn = dq_redis_conn::Exclusive::get(&pool).await.unwrap();
    let key = dq_test::unique_name("dqtest-conn");
    let mut cmd = redis::cmd("BRPOPLPUSH");
    cmd.arg(&key).arg(&key).arg("0.8");
    let started = Instant::now();
    let got: Option<String> = conn.query(&cmd).await.unwrap();
    assert_eq!(got, None);
    assert!(started.elapsed() >= Duration::from_millis(700));
}

/// The broker's path: a client with the URL's settings and a manager without the client's
/// timeouts; a bad URL is an error naming the server, never its password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_and_managers_connect_and_bad_urls_say_where() {
    let url = dq_test::require_redis();
    let client = dq_redis_conn::client(&url, None).unwrap();
    let manager = dq_redis_conn::manager(&client).unwrap();
    let pool = deadpool_redis::Pool::builder(manager).build().unwrap();
    let mut conn = pool.get().await.unwrap();
    let pong: String = redis::cmd("PING").query_async(&mut conn).await.unwrap();
    assert_eq!(pong, "PONG");

    let err =
        dq_redis_conn::pool("http://:hunter2@somewhere:1", 1, Duration::from_secs(1)).unwrap_err();
    assert!(err.contains("somewhere:1"), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
}
