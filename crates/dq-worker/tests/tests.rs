//! Worker tests on the stub broker, with hand-built actors (the macro is tested elsewhere) and
//! the default middleware stack.

mod worker_behaviour;
mod worker_registry;
mod worker_spans;
