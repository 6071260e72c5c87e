//! Authentication (a token or basic auth) and the CSRF check on every POST.

use axum::body::{to_bytes, Body};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use base64::Engine as _;

use crate::{Auth, Shared};
use std::sync::Arc;

/// The cookie a `?token=` login sets, so the pages' links need not carry the token.
pub(crate) const TOKEN_COOKIE: &str = "dq_dashboard_token";
/// The form field and the header that carry the CSRF token.
pub(crate) const CSRF_FIELD: &str = "csrf";
pub(crate) const CSRF_HEADER: &str = "x-csrf-token";
/// Bodies of forms are small: ids and filters.
const MAX_FORM: usize = 4 * 1024 * 1024;

/// Compares without stopping at the first difference, so timing does not tell a guesser how
/// much of a secret it got right.
pub(crate) fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A fresh secret: 32 random bytes as hex.
pub(crate) fn secret() -> String {
    use rand::RngCore as _;
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    query?
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
}

fn basic(headers: &HeaderMap) -> Option<(String, String)> {
    let encoded = headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

fn unauthorized(basic_realm: bool) -> Response {
    let mut response = (
        StatusCode::UNAUTHORIZED,
        "authentication required: a bearer token, ?token=, or basic auth\n",
    )
        .into_response();
    if basic_realm {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"dq dashboard\", charset=\"UTF-8\""),
        );
    }
    response
}

/// Lets a request through when the dashboard needs no authentication or the request carries it.
pub(crate) async fn authenticate(
    State(shared): State<Arc<Shared>>,
    request: Request,
    next: Next,
) -> Response {
    match &shared.auth {
        Auth::None => next.run(request).await,
        Auth::Token(token) => {
            let headers = request.headers();
            if bearer(headers).is_some_and(|t| same(t, token))
                || cookie(headers, TOKEN_COOKIE).is_some_and(|t| same(&t, token))
            {
                return next.run(request).await;
            }
            let query = request.uri().query();
            if query_param(query, "token").is_some_and(|t| same(&t, token)) {
                // Log in: keep the token in a cookie and drop it from the address bar.
                let rest: Vec<&str> = query
                    .unwrap_or("")
                    .split('&')
                    .filter(|kv| !kv.starts_with("token="))
                    .collect();
                let path = request.uri().path();
                let base = shared.base.as_str();
                let target = if rest.is_empty() {
                    format!("{base}{path}")
                } else {
                    format!("{base}{path}?{}", rest.join("&"))
                };
                let mut response = Redirect::to(&target).into_response();
                if let Ok(v) = HeaderValue::from_str(&format!(
                    "{TOKEN_COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/"
                )) {
                    response.headers_mut().insert(header::SET_COOKIE, v);
                }
                return response;
            }
            unauthorized(false)
        }
        Auth::Basic { user, password } => match basic(request.headers()) {
            Some((u, p)) if same(&u, user) && same(&p, password) => next.run(request).await,
            _ => unauthorized(true),
        },
    }
}

/// Refuses (403) every POST that does not carry the dashboard's CSRF token, in the
/// `x-csrf-token` header or the form field `csrf`. A page of another site cannot read the token,
/// so it cannot make the browser act with the user's credentials.
pub(crate) async fn check_csrf(
    State(shared): State<Arc<Shared>>,
    request: Request,
    next: Next,
) -> Response {
    if request.method() != Method::POST {
        return next.run(request).await;
    }
    if let Some(t) = request.headers().get(CSRF_HEADER) {
        return if t.to_str().is_ok_and(|t| same(t, &shared.csrf)) {
            next.run(request).await
        } else {
            forbidden()
        };
    }
    let (parts, body) = request.into_parts();
    let bytes = match to_bytes(body, MAX_FORM).await {
        Ok(b) => b,
        Err(_) => return (StatusCode::PAYLOAD_TOO_LARGE, "body too large\n").into_response(),
    };
    let is_form = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    let token = is_form.then(|| form_value(&bytes, CSRF_FIELD)).flatten();
    if token.is_some_and(|t| same(&t, &shared.csrf)) {
        next.run(Request::from_parts(parts, Body::from(bytes)))
            .await
    } else {
        forbidden()
    }
}

fn forbidden() -> Response {
    (
        StatusCode::FORBIDDEN,
        "refused: this POST does not carry the dashboard's CSRF token\n",
    )
        .into_response()
}

/// The first value of `field` in a URL-encoded form.
fn form_value(bytes: &[u8], field: &str) -> Option<String> {
    let pairs: Vec<(String, String)> = axum::extract::Query::<Vec<(String, String)>>::try_from_uri(
        &format!("/?{}", String::from_utf8_lossy(bytes))
            .parse()
            .ok()?,
    )
    .ok()?
    .0;
    pairs.into_iter().find(|(k, _)| k == field).map(|(_, v)| v)
}

impl Auth {
    /// The authentication the environment asks for: `DQ_DASHBOARD_TOKEN` (a bearer token, or
    /// `?token=` once, which sets a cookie), else `DQ_DASHBOARD_USER` with
    /// `DQ_DASHBOARD_PASSWORD` (basic auth), else none.
    ///
    /// ```
    /// let auth = dq_dashboard::Auth::from_env()?;
    /// # let _ = auth;
    /// # Ok::<(), dq_dashboard::Error>(())
    /// ```
    pub fn from_env() -> crate::Result<Auth> {
        let get = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        Auth::from_values(
            get(crate::TOKEN_ENV),
            get(crate::USER_ENV),
            get(crate::PASSWORD_ENV),
        )
    }

    pub(crate) fn from_values(
        token: Option<String>,
        user: Option<String>,
        password: Option<String>,
    ) -> crate::Result<Auth> {
        match (token, user, password) {
            (Some(t), _, _) => Ok(Auth::Token(t)),
            (None, Some(user), Some(password)) => {
                if user.contains(':') {
                    Err(crate::Error::InvalidAuth(format!(
                        "{} must not contain ':'",
                        crate::USER_ENV
                    )))
                } else {
                    Ok(Auth::Basic { user, password })
                }
            }
            (None, Some(_), None) | (None, None, Some(_)) => Err(crate::Error::InvalidAuth(
                format!("set both {} and {}", crate::USER_ENV, crate::PASSWORD_ENV),
            )),
            (None, None, None) => Ok(Auth::None),
        }
    }

    /// Whether requests must authenticate.
    pub fn is_required(&self) -> bool {
        !matches!(self, Auth::None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comparisons_and_forms() {
        assert!(same("abc", "abc"));
        assert!(!same("abc", "abd"));
        assert!(!same("abc", "ab"));
        assert_eq!(
            form_value(b"a=1&csrf=x%2By&b=2", "csrf").as_deref(),
            Some("x+y")
        );
        assert_eq!(form_value(b"a=1", "csrf"), None);
        assert_eq!(secret().len(), 64);
        assert_ne!(secret(), secret());
    }

    #[test]
    fn auth_from_values() {
        let s = |v: &str| Some(v.to_owned());
        assert!(matches!(
            Auth::from_values(s("t"), None, None),
            Ok(Auth::Token(_))
        ));
        assert!(matches!(
            Auth::from_values(None, s("u"), s("p")),
            Ok(Auth::Basic { .. })
        ));
        assert!(Auth::from_values(None, s("u"), None).is_err());
        assert!(Auth::from_values(None, s("u:x"), s("p")).is_err());
        assert!(matches!(
            Auth::from_values(None, None, None),
            Ok(Auth::None)
        ));
    }
}
