//! Authentication and the CSRF check.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use base64::Engine as _;
use dq_broker_stub::StubBroker;
use dq_dashboard::{check_bind, Auth, Dashboard, Error};
use serde_json::json;

use crate::{get, post_form, post_json, send};

fn router(auth: Auth) -> axum::Router {
    Dashboard::new(Arc::new(StubBroker::new()))
        .auth(auth)
        .build()
        .unwrap()
}

#[tokio::test]
async fn a_token_is_a_bearer_header_or_a_cookie_set_by_query() {
    let r = router(Auth::Token("s3cret".into()));
    assert_eq!(get(&r, "/").await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        get(&r, "/api/queues").await.status,
        StatusCode::UNAUTHORIZED
    );
    let bearer = |t: &str| {
        Request::get("/api/queues")
            .header(header::AUTHORIZATION, format!("Bearer {t}"))
            .body(Body::empty())
            .unwrap()
    };
    assert_eq!(
        send(&r, bearer("wrong")).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(send(&r, bearer("s3cret")).await.status, StatusCode::OK);

    let login = get(&r, "/workers?token=s3cret").await;
    assert_eq!(login.status, StatusCode::SEE_OTHER);
    assert_eq!(login.headers[header::LOCATION], "/workers");
    let cookie = login.headers[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(cookie.contains("HttpOnly"), "{cookie}");
    let with_cookie = Request::get("/workers")
        .header(header::COOKIE, cookie.split(';').next().unwrap())
        .body(Body::empty())
        .unwrap();
    assert_eq!(send(&r, with_cookie).await.status, StatusCode::OK);
    assert_eq!(
        get(&r, "/?token=nope").await.status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn basic_auth_asks_the_browser() {
    let r = router(Auth::Basic {
        user: "ops".into(),
        password: "pw".into(),
    });
    let refused = get(&r, "/").await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    assert!(refused.headers[header::WWW_AUTHENTICATE]
        .to_str()
        .unwrap()
        .starts_with("Basic"));
    let with = |creds: &str| {
        Request::get("/")
            .header(
                header::AUTHORIZATION,
                format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(creds)
                ),
            )
            .body(Body::empty())
            .unwrap()
    };
    assert_eq!(
        send(&r, with("ops:nope")).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(send(&r, with("ops:pw")).await.status, StatusCode::OK);
}

#[tokio::test]
async fn every_post_needs_the_csrf_token() {
    let r = router(Auth::None);
    let token = crate::csrf(&r).await;
    let body = json!({ "actor": "add", "queue": "default", "args": [1, 2] });
    // JSON without the header, with a wrong one, and a form without the field: refused.
    assert_eq!(
        post_json(&r, "/api/enqueue", None, body.clone())
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        post_json(&r, "/api/enqueue", Some("forged"), body.clone())
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    let form = post_form(&r, "/enqueue", &[("actor", "add"), ("queue", "default")]).await;
    assert_eq!(form.status, StatusCode::FORBIDDEN);
    assert!(form.text.contains("CSRF"));
    let forged = post_form(
        &r,
        "/queues/default/delete",
        &[("csrf", "forged"), ("all", "yes"), ("confirmed", "yes")],
    )
    .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    // With the token: done.
    let ok = post_json(&r, "/api/enqueue", Some(&token), body).await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.text);
    let ok = post_form(
        &r,
        "/enqueue",
        &[
            ("csrf", &token),
            ("actor", "add"),
            ("queue", "default"),
            ("args", "[3]"),
        ],
    )
    .await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.text);
    assert!(ok.text.contains("Enqueued"));
}

#[test]
fn listening_beyond_loopback_needs_authentication() {
    let any = "0.0.0.0:8484".parse().unwrap();
    assert!(matches!(
        check_bind(any, &Auth::None),
        Err(Error::AuthRequired { .. })
    ));
    assert!(check_bind(any, &Auth::Token("t".into())).is_ok());
    assert!(check_bind("[::1]:8484".parse().unwrap(), &Auth::None).is_ok());
}

#[tokio::test]
async fn serve_refuses_to_start_open_to_the_network() {
    let d = Dashboard::new(Arc::new(StubBroker::new()));
    let e = d
        .serve("0.0.0.0:0".parse().unwrap(), async {})
        .await
        .unwrap_err();
    assert!(matches!(e, Error::AuthRequired { .. }), "{e}");
}
