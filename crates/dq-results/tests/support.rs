//! Actors, apps and Redis helpers shared by the tests.

use std::sync::Arc;
use std::time::Duration;

use dq_broker_stub::StubBroker;
use dq_core::{Actor, ActorOptions, App, Handler, Middleware};
use dq_results::{RedisBackend, ResultBackend, Results};
use dq_worker::{Worker, WorkerOptions};

/// Defines a sync actor handler: typed parameters read like `#[dq::actor]` reads them, and a
/// body returning an `ActorResult`.
macro_rules! sync_handler {
    ($name:ident, || $body:expr) => {
        sync_handler!($name, | | $body);
    };
    ($name:ident, |$($arg:ident : $ty:ty),*| $body:expr) => {
        fn $name(
            m: &dq_core::Message,
        ) -> Result<dq_core::Invocation, dq_core::ArgsError> {
            #[allow(unused_mut)]
            let mut r = dq_core::__private::ArgReader::new(m)?;
            $(let $arg: $ty = r.take(stringify!($arg))?;)*
            r.finish(&[$(stringify!($arg)),*])?;
            Ok(dq_core::Invocation::Sync(Box::new(move || $body)))
        }
    };
}

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
    Actor {
        name: name.to_owned(),
        options,
        handler,
        is_async: false,
    }
}

/// An app on `broker` with the default stack, `extra` middleware (Results, say) and `actors`.
pub(crate) fn app(broker: &StubBroker, extra: Vec<Arc<dyn Middleware>>, actors: Vec<Actor>) -> App {
    let mut b = App::builder(broker.clone())
        .linked_actors(false)
        .middleware_arcs(dq_middleware::default_middleware())
        .middleware_arcs(extra);
    for a in actors {
        b = b.actor(a);
    }
    b.build().unwrap()
}

/// A started worker with `threads` slots that polls often.
pub(crate) async fn worker(app: &App, threads: usize) -> Worker {
    let w = Worker::new(
        app.clone(),
        WorkerOptions {
            threads,
            worker_timeout: Duration::from_millis(50),
            ..Default::default()
        },
    );
    w.start().await.unwrap();
    w
}

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
