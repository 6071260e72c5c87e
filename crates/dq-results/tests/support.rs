//! Actors, apps and Redis helpers shared by the tests.

use std::sync::Arc;

use dq_core::{Actor, ActorOptions, Handler, Middleware};
use dq_results::{RedisBackend, ResultBackend, Results};

/// An actor on `queue` that stores its results unless `f` says otherwise.
pub(crate) fn actor(
    name: &str,
    queue: &str,
    handler: Handler,
    f: impl FnOnce(&mut ActorOptions),
) -> Actor {
    let mut options = ActorOptions {
        queue_name: queue.to_owned(),
        store_results: Some(true),
        ..Default::default()
    };
    f(&mut options);
    Actor::new(name.to_owned(), options, handler)
}

pub(crate) use dq_test::stack::{app, worker};

pub(crate) fn results(backend: &Arc<dyn ResultBackend>) -> Arc<dyn Middleware> {
    Arc::new(Results::from_arc(backend.clone()))
}

/// A Redis result backend in a namespace of its own, with readable keys so that
/// [`RedisNamespace::drop`] can find and delete them.
pub(crate) struct RedisNamespace {
    pub(crate) namespace: String,
    pub(crate) url: String,
}

impl RedisNamespace {
    pub(crate) fn new(prefix: &str) -> RedisNamespace {
        RedisNamespace {
            url: dq_test::require_redis(),
            namespace: dq_test::unique_name(prefix),
        }
    }

    /// A backend with readable keys in this namespace.
    pub(crate) fn readable(&self) -> RedisBackend {
        RedisBackend::builder()
            .url(&self.url)
            .namespace(&self.namespace)
            .namespace_prefix_keys(true)
            .build()
            .unwrap()
    }

    /// A backend with Dramatiq's default hashed keys in this namespace: delete its keys with
    /// [`RedisNamespace::forget`].
    pub(crate) fn hashed(&self) -> RedisBackend {
        RedisBackend::builder()
            .url(&self.url)
            .namespace(&self.namespace)
            .build()
            .unwrap()
    }

    pub(crate) fn client(&self) -> redis::Connection {
        redis::Client::open(self.url.as_str())
            .unwrap()
            .get_connection()
            .unwrap()
    }

    /// Deletes `keys` (hashed ones, which the namespace scan cannot find).
    pub(crate) fn forget(&self, keys: &[String]) {
        if keys.is_empty() {
            return;
        }
        let _: () = redis::cmd("DEL")
            .arg(keys)
            .query(&mut self.client())
            .unwrap();
    }
}

impl Drop for RedisNamespace {
    fn drop(&mut self) {
        let mut c = self.client();
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}:*", self.namespace))
            .query(&mut c)
            .unwrap_or_default();
        if !keys.is_empty() {
            let _: redis::RedisResult<()> = redis::cmd("DEL").arg(keys).query(&mut c);
        }
    }
}
