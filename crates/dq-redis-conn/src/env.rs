//! What the environment says about Redis: the one reader of dq's Redis variables, so the broker,
//! the result backend, the rate-limiter backend and the worker command agree on them.

use std::fmt;

use dq_core::env::{REDIS_NAMESPACE, REDIS_URL, RESULTS_NAMESPACE};
use dq_core::redact_url;
use redis::IntoConnectionInfo;

use crate::pool::DEFAULT_URL;

/// Why the environment's Redis settings cannot be used.
///
/// Its text never holds a password: URLs in it are redacted. Not `#[non_exhaustive]`: this
/// crate is internal glue, and our crates that map it onto their own errors match it without a
/// catch-all, so a new variant makes each of them decide what it means.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EnvError {
    /// The variable holds something the Redis client cannot read as a URL.
    #[error("{var} holds an invalid redis url {url}: {reason}")]
    InvalidUrl {
        /// The variable, e.g. `DQ_REDIS_URL`.
        var: &'static str,
        /// Its value, redacted.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// dq's Redis settings from the environment: the URL in `DQ_REDIS_URL` (default
/// [`DEFAULT_URL`]), the broker's namespace in `DQ_REDIS_NAMESPACE` and the result backend's in
/// `DQ_RESULTS_NAMESPACE` (both unset by default: each component then uses its own default,
/// Dramatiq's `dramatiq` and `dramatiq-results`). A variable set to an empty value counts as
/// unset.
///
/// The URL is checked when read (not connected to): a bad one is an [`EnvError`] naming the
/// variable, not a panic and not a failure at the first command.
///
/// ```
/// use dq_redis_conn::RedisEnv;
///
/// let env = RedisEnv::read_from(|var| match var {
///     "DQ_REDIS_URL" => Some("redis://:secret@cache:6379/2".to_owned()),
///     "DQ_REDIS_NAMESPACE" => Some("shop".to_owned()),
///     _ => None,
/// })?;
/// assert_eq!(env.url(), "redis://:secret@cache:6379/2");
/// assert_eq!(env.namespace(), Some("shop"));
/// assert_eq!(env.results_namespace(), None);
/// // Debug output, like every message about it, hides the password.
/// assert!(!format!("{env:?}").contains("secret"));
/// # Ok::<(), dq_redis_conn::EnvError>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct RedisEnv {
    url: String,
    namespace: Option<String>,
    results_namespace: Option<String>,
}

impl RedisEnv {
    /// Reads this process's environment.
    ///
    /// ```no_run
    /// let env = dq_redis_conn::RedisEnv::read()?;
    /// println!("redis at {}", dq_redis_conn::describe(env.url()));
    /// # Ok::<(), dq_redis_conn::EnvError>(())
    /// ```
    pub fn read() -> Result<RedisEnv, EnvError> {
        // Not UTF-8: kept lossily, to fail as a URL naming its variable rather than be ignored.
        RedisEnv::read_from(|var| std::env::var_os(var).map(|v| v.to_string_lossy().into_owned()))
    }

    /// Reads the variables through `lookup` (a variable's value, `None` when unset): for
    /// tests, and for settings that come from somewhere other than the process environment.
    pub fn read_from(lookup: impl Fn(&str) -> Option<String>) -> Result<RedisEnv, EnvError> {
        let get = |var: &str| lookup(var).filter(|v| !v.trim().is_empty());
        let url = get(REDIS_URL).unwrap_or_else(|| DEFAULT_URL.to_owned());
        if let Err(e) = url.as_str().into_connection_info() {
            return Err(EnvError::InvalidUrl {
                var: REDIS_URL,
                url: redact_url(&url),
                reason: e.to_string(),
            });
        }
        Ok(RedisEnv {
            url,
            namespace: get(REDIS_NAMESPACE),
            results_namespace: get(RESULTS_NAMESPACE),
        })
    }

    /// The Redis URL (with its password, if it has one: never log it; see
    /// [`describe`](crate::describe)).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The broker's key namespace, if `DQ_REDIS_NAMESPACE` sets one.
    pub fn namespace(&self) -> Option<&str> {
        self.namespace.as_deref()
    }

    /// The result backend's key namespace, if `DQ_RESULTS_NAMESPACE` sets one.
    pub fn results_namespace(&self) -> Option<&str> {
        self.results_namespace.as_deref()
    }
}

impl fmt::Debug for RedisEnv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisEnv")
            .field("url", &redact_url(&self.url))
            .field("namespace", &self.namespace)
            .field("results_namespace", &self.results_namespace)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads `vars` as the whole environment.
    fn read(vars: &[(&str, &str)]) -> Result<RedisEnv, EnvError> {
        RedisEnv::read_from(|var| {
            vars.iter()
                .find(|(k, _)| *k == var)
                .map(|(_, v)| (*v).to_owned())
        })
    }

    #[test]
    fn nothing_set_is_the_defaults() {
        let env = read(&[]).unwrap();
        assert_eq!(env.url(), DEFAULT_URL);
        assert_eq!(env.namespace(), None);
        assert_eq!(env.results_namespace(), None);
    }

    #[test]
    fn every_variable_is_read() {
        let env = read(&[
            ("DQ_REDIS_URL", "rediss://u:pw@cache.internal:6380/3"),
            ("DQ_REDIS_NAMESPACE", "shop"),
            ("DQ_RESULTS_NAMESPACE", "shop-results"),
            ("DQ_AMQP_URL", "amqp://elsewhere"),
        ])
        .unwrap();
        assert_eq!(env.url(), "rediss://u:pw@cache.internal:6380/3");
        assert_eq!(env.namespace(), Some("shop"));
        assert_eq!(env.results_namespace(), Some("shop-results"));
    }

    #[test]
    fn empty_values_count_as_unset() {
        let env = read(&[
            ("DQ_REDIS_URL", ""),
            ("DQ_REDIS_NAMESPACE", " "),
            ("DQ_RESULTS_NAMESPACE", ""),
        ])
        .unwrap();
        assert_eq!(env, read(&[]).unwrap());
    }

    #[test]
    fn a_bad_url_is_an_error_naming_the_variable_without_the_password() {
        for bad in [
            "http://:hunter2@somewhere:1",
            "redis://:hunter2@",
            "not a url",
        ] {
            let e = read(&[("DQ_REDIS_URL", bad)]).unwrap_err();
            let EnvError::InvalidUrl { var, url, .. } = &e;
            assert_eq!(*var, "DQ_REDIS_URL");
            let text = e.to_string();
            assert!(
                text.starts_with("DQ_REDIS_URL holds an invalid redis url"),
                "{text}"
            );
            assert!(!text.contains("hunter2"), "{text}");
            assert!(!url.contains("hunter2"), "{url}");
        }
    }

    #[test]
    fn unix_socket_urls_are_urls() {
        let env = read(&[("DQ_REDIS_URL", "redis+unix:///run/redis.sock")]).unwrap();
        assert_eq!(env.url(), "redis+unix:///run/redis.sock");
    }
}
