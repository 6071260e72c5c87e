//! # dq-core
//!
//! The bottom layer of dq, Dramatiq rebuilt in Rust: the wire [`Message`] and its typed
//! [`Options`], actors and their [`Registry`], the [`Broker`] and [`Middleware`] traits, the
//! [`App`] that producers send through, and the errors of all of these.
//!
//! **Key design decision:** this crate does no I/O and knows no broker client. Brokers, middleware
//! and the worker are separate crates that depend on this one only, so a Python Dramatiq 2.2.1
//! message means the same thing in every one of them, and a transport can be swapped without
//! touching how messages are processed.
//!
//! Most users depend on the `dq` facade crate instead, which re-exports these types together with
//! `#[dq::actor]`, the brokers and the worker.
//!
//! ```
//! use dq_core::Message;
//!
//! // Decode a message a Python producer wrote, as Dramatiq 2.2.1 does.
//! let body = br#"{"queue_name":"default","actor_name":"add","args":[3,4],"kwargs":{},"options":{},"message_id":"5029b3a5-3be4-4a04-a9a0-56e2a5e4e8b9","message_timestamp":1795397559159}"#;
//! let msg = Message::decode(body).unwrap();
//! assert_eq!(msg.display_call(), "add(3,4)");
//! ```

mod actor;
mod app;
mod backoff;
mod broker;
mod browse;
mod composition;
mod context;
pub mod env;
mod error;
mod interrupt;
mod message;
mod middleware;
mod options;
mod redact;
mod result;
mod schedules;
mod send;
mod state;
mod typed;
mod unique;
mod workers;

pub use actor::{
    short_type_name, Actor, ActorError, ActorResult, BoxActorFuture, FailureKind, Handler,
    Invocation, Registry, Retry, Shutdown, TimeLimitExceeded,
};
pub use app::{App, AppBuilder, AppScope, StateError, DEFAULT_MAX_MESSAGE_SIZE};
pub use async_trait::async_trait;
pub use backoff::{compute_backoff, compute_backoff_with, MAX_BACKOFF_MS};
pub use broker::{Acker, Broker, Consumer, DeadLetter, Delivery, QueueStats, RetryCount, Token};
pub use browse::{BrowsedMessage, MessageState, UnknownMessageState};
pub use composition::{group, pipeline, Group, GroupBarrier, GroupChild, Pipeline, PipelineStep};
pub use context::{check, current_message, stop_requested, ActorContext, Scoped};
pub use error::{
    ArgsError, BrokerError, BrokerErrorKind, DecodeError, Error, ErrorChain, MiddlewareError,
    Result, ResultError,
};
pub use interrupt::Interrupt;
pub use message::{
    base_queue_name, dead_letter_queue_name, delay_queue_name, encode_args, encode_kwargs,
    is_valid_queue_name, kwargs_from_map, new_message_id, now_ms, Message,
};
pub use middleware::{Control, Extensions, Hooks, Job, Middleware, Outcome};
pub use options::{ActorOptions, Options, BUILTIN_ACTOR_OPTIONS};
pub use redact::redact_url;
pub use result::ResultSource;
pub use schedules::{ScheduleState, TickClaim, TickOutcome};
pub use send::SendOptions;
pub use state::{State, StateBuildError, StateBuilder, StateKey, States};
pub use typed::{pipe, Sent, SentPipeline, Stage, TypedMessage, TypedPipeline};
pub use unique::{
    default_unique_key, ReleaseOutcome, SendOutcome, UniqueLock, UniqueMode, UniqueUntil,
    UNIQUE_ACTOR_OPTIONS, UNIQUE_KEY_OPTION, UNIQUE_MODE_OPTION, UNIQUE_TTL_OPTION,
    UNIQUE_UNTIL_OPTION,
};
pub use workers::{ActorInfo, WorkerInfo};

/// Items generated code refers to. Not part of the public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::actor::{short_type_name, to_result_value, ActorRegistration, ArgReader};
    pub use crate::state::{State, States};
    pub use crate::typed::{ResultOk, Sent, Stage, TypedMessage};
    pub use inventory;
    pub use serde_json;
}
