//! The Redis rate-limiter backend on a locked-down Redis: a password, and an ACL user held to
//! its limiters' keys. Its URL's password shows nowhere.

use std::time::Duration;

use dq_ratelimit::{Barrier, ConcurrentRateLimiter, RateLimiter, RedisBackend};
use dq_test::{percent_encode, PrivateRedis};

/// The commands of the README's ACL (KEYS is for the broker's script: not needed here).
const ACL_COMMANDS: &str =
    "-@all +@read +@write +@scripting +@pubsub +@connection +@transaction -@dangerous +keys";

/// A password with characters a URL must escape.
const PASSWORD: &str = "p@ss:w0rd/";

fn assert_no_secret(text: &str) {
    for secret in [PASSWORD, "wr@ng:pw/"] {
        for form in [secret.to_owned(), percent_encode(secret)] {
            assert!(!text.contains(&form), "{form:?} leaked in:\n{text}");
        }
    }
}

/// A mutex taken and given back, and a barrier of one passed, on keys under `prefix`.
async fn exercise(backend: &RedisBackend, prefix: &str) {
    let mutex = ConcurrentRateLimiter::new(backend.clone(), &format!("{prefix}:mutex"), 1);
    let first = mutex.try_acquire().await.unwrap();
    assert!(first.acquired());
    assert!(!mutex.try_acquire().await.unwrap().acquired());
    first.release().await.unwrap();
    assert!(mutex.try_acquire().await.unwrap().acquired());

    let barrier = Barrier::new(backend.clone(), &format!("{prefix}:barrier"));
    assert!(barrier.create(1).await.unwrap());
    let passed = barrier.wait(true, Some(Duration::from_secs(5))).await;
    assert!(passed.unwrap());
}

#[tokio::test]
async fn a_redis_with_a_password_and_an_acl_user() {
    let redis = PrivateRedis::start(&["--requirepass", PASSWORD]);
    let url = redis.url_with("", PASSWORD);
    let builder = RedisBackend::builder().url(&url);
    let shown = format!("{builder:?}");
    let backend = builder.build().unwrap();
    backend.ping().await.unwrap();
    exercise(&backend, &dq_test::unique_name("rl")).await;
    assert_no_secret(&format!("{shown} {backend:?}"));

    // Limiter keys have no namespace: the user is held to the prefix the app gives its keys.
    let prefix = dq_test::unique_name("limits");
    let pass = format!(">{PASSWORD}");
    let keys = format!("~{prefix}:*");
    let acl = ["ACL", "SETUSER", "limits", "reset", "on", &pass, &keys];
    redis.cli(
        PASSWORD,
        &[&acl[..], &ACL_COMMANDS.split(' ').collect::<Vec<_>>()].concat(),
    );
    let backend = RedisBackend::from_url(&redis.url_with("limits", PASSWORD)).unwrap();
    exercise(&backend, &prefix).await;
    let log = redis.cli(PASSWORD, &["ACL", "LOG"]);
    assert!(log.trim().is_empty(), "refused: {log}");

    // A wrong password: the error says so, without it.
    let wrong = RedisBackend::from_url(&redis.url_with("", "wr@ng:pw/")).unwrap();
    let err = wrong.ping().await.unwrap_err();
    let text = format!("{} {err:?} {wrong:?}", dq_core::ErrorChain(&err));
    assert!(text.contains("AuthenticationFailed"), "{text}");
    assert_no_secret(&text);
}
