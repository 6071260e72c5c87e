//! What tests of a middleware crate build on: an app on the stub broker with Dramatiq's default
//! middleware, a started worker for it, and sync actor handlers written inline
//! ([`sync_handler!`](crate::sync_handler)).
//!
//! ```no_run
//! # async fn demo() {
//! use dq_test::stack;
//!
//! dq_test::sync_handler!(add, |a: i64, b: i64| Ok(serde_json::json!(a + b)));
//! let broker = dq_broker_stub::StubBroker::new();
//! let actor = dq_core::Actor::new("add", dq_core::ActorOptions::default(), add);
//! let app = stack::app(&broker, vec![], vec![actor]);
//! let worker = stack::worker(&app, 4).await;
//! // ... send, join, assert ...
//! worker.stop().await.unwrap();
//! # }
//! ```

use std::sync::Arc;
use std::time::Duration;

use dq_broker_stub::StubBroker;
use dq_core::{Actor, App, Middleware};
use dq_worker::{Worker, WorkerOptions};

/// Defines a sync actor handler named `$name`: its typed parameters are read from the message as
/// `#[dq::actor]` reads them, and its body returns an `ActorResult`.
#[macro_export]
macro_rules! sync_handler {
    ($name:ident, || $body:expr) => {
        $crate::sync_handler!($name, | | $body);
    };
    ($name:ident, |$($arg:ident : $ty:ty),*| $body:expr) => {
        fn $name(
            m: &$crate::__dq_core::Message,
            _: &$crate::__dq_core::States,
        ) -> Result<$crate::__dq_core::Invocation, $crate::__dq_core::ArgsError> {
            #[allow(unused_mut)]
            let mut r = $crate::__dq_core::__private::ArgReader::new(m)?;
            $(let $arg: $ty = r.take(stringify!($arg))?;)*
            r.finish(&[$(stringify!($arg)),*])?;
            Ok($crate::__dq_core::Invocation::Sync(Box::new(move || $body)))
        }
    };
}

/// An app on `broker` with Dramatiq's default middleware, then `extra`, and only `actors`.
pub fn app(broker: &StubBroker, extra: Vec<Arc<dyn Middleware>>, actors: Vec<Actor>) -> App {
    let mut b = App::builder(broker.clone())
        .without_linked_actors()
        .middleware_arcs(dq_middleware::default_middleware())
        .middleware_arcs(extra);
    for a in actors {
        b = b.actor(a);
    }
    b.build().expect("a valid test app")
}

/// A started worker for `app` with `threads` slots, whose consumers poll every 50 ms.
pub async fn worker(app: &App, threads: usize) -> Worker {
    let w = Worker::new(
        app.clone(),
        WorkerOptions {
            threads,
            worker_timeout: Duration::from_millis(50),
            ..Default::default()
        },
    );
    w.start().await.expect("the test worker starts");
    w
}
