//! dq-dashboard's integration tests: the router driven in process (`tower::ServiceExt::oneshot`)
//! on the stub broker and on a real Redis.

mod dashboard_amqp;
mod dashboard_api;
mod dashboard_browser;
mod dashboard_redis;
mod dashboard_security;

use axum::body::{to_bytes, Body};
use axum::http::{header, Request, StatusCode};
use axum::Router;
use serde_json::Value;
use tower::ServiceExt as _;

/// A response's status, headers and body as text.
pub(crate) struct Got {
    pub(crate) status: StatusCode,
    pub(crate) headers: axum::http::HeaderMap,
    pub(crate) text: String,
}

impl Got {
    pub(crate) fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text))
    }
}

pub(crate) async fn send(router: &Router, request: Request<Body>) -> Got {
    let response = router.clone().oneshot(request).await.expect("infallible");
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = to_bytes(response.into_body(), usize::MAX).await.unwrap();
    Got {
        status,
        headers,
        text: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

pub(crate) async fn get(router: &Router, uri: &str) -> Got {
    send(router, Request::get(uri).body(Body::empty()).unwrap()).await
}

/// The CSRF token the dashboard gives its pages.
pub(crate) async fn csrf(router: &Router) -> String {
    get(router, "/api/csrf").await.json()["token"]
        .as_str()
        .unwrap()
        .to_owned()
}

pub(crate) async fn post_json(router: &Router, uri: &str, token: Option<&str>, body: Value) -> Got {
    let mut r = Request::post(uri).header(header::CONTENT_TYPE, "application/json");
    if let Some(t) = token {
        r = r.header("x-csrf-token", t);
    }
    send(router, r.body(Body::from(body.to_string())).unwrap()).await
}

pub(crate) async fn post_form(router: &Router, uri: &str, fields: &[(&str, &str)]) -> Got {
    let body: Vec<String> = fields
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect();
    send(
        router,
        Request::post(uri)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(body.join("&")))
            .unwrap(),
    )
    .await
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
