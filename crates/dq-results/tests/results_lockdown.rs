//! The Redis result backend on a locked-down Redis: a password, and an ACL user held to the
//! backend's namespace. Its URL's password shows nowhere.

use std::time::Duration;

use dq_core::Message;
use dq_results::{RedisBackend, ResultBackendExt};
use dq_test::{percent_encode, PrivateRedis};
use serde_json::json;

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

/// Stores and reads a result, blocking and not.
async fn round_trip(backend: &RedisBackend) {
    let m = Message::new("default", "add", &(1, 2), &()).unwrap();
    let ttl = Duration::from_secs(30);
    backend.store_result(&m, &json!(3), ttl).await.unwrap();
    assert_eq!(backend.get_result::<i64>(&m, false, None).await.unwrap(), 3);
    let within = Some(Duration::from_secs(5));
    assert_eq!(
        backend.get_result::<i64>(&m, true, within).await.unwrap(),
        3
    );
}

#[tokio::test]
async fn a_redis_with_a_password_and_an_acl_user() {
    let redis = PrivateRedis::start(&["--requirepass", PASSWORD]);
    let url = redis.url_with("", PASSWORD);
    let builder = RedisBackend::builder().url(&url);
    let shown = format!("{builder:?}");
    let backend = builder.build().unwrap();
    backend.ping().await.unwrap();
    round_trip(&backend).await;
    assert_no_secret(&format!("{shown} {backend:?}"));

    // A user that may only touch the namespace's keys (readable keys: hashed ones have no
    // prefix an ACL could name).
    let ns = dq_test::unique_name("results");
    let pass = format!(">{PASSWORD}");
    let keys = format!("~{ns}:*");
    let acl = ["ACL", "SETUSER", "results", "reset", "on", &pass, &keys];
    redis.cli(
        PASSWORD,
        &[&acl[..], &ACL_COMMANDS.split(' ').collect::<Vec<_>>()].concat(),
    );
    let backend = RedisBackend::builder()
        .url(&redis.url_with("results", PASSWORD))
        .namespace(&ns)
        .namespace_prefix_keys(true)
        .build()
        .unwrap();
    round_trip(&backend).await;
    let log = redis.cli(PASSWORD, &["ACL", "LOG"]);
    assert!(log.trim().is_empty(), "refused: {log}");

    // A wrong password: the error says so, without it.
    let wrong = RedisBackend::from_url(&redis.url_with("", "wr@ng:pw/")).unwrap();
    let err = wrong.ping().await.unwrap_err();
    let text = format!("{} {err:?} {wrong:?}", dq_core::ErrorChain(&err));
    assert!(text.contains("AuthenticationFailed"), "{text}");
    assert_no_secret(&text);
}

#[test]
fn bad_urls_do_not_show_the_password() {
    let enc = percent_encode(PASSWORD);
    for url in [
        format!("redis://:{enc}@127.0.0.1:notaport"),
        format!("redis://ann:{enc}@"),
        format!("http://ann:{enc}@127.0.0.1"),
    ] {
        let text = match RedisBackend::from_url(&url) {
            Ok(b) => format!("{b:?}"),
            Err(e) => format!("{} {e:?}", dq_core::ErrorChain(&e)),
        };
        assert_no_secret(&text);
    }
}
