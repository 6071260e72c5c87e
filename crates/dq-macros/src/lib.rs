//! # dq-macros
//!
//! `#[dq::actor]`: turns a typed Rust fn, sync or `async`, into a dq actor. Use it through the `dq`
//! crate (`#[dq::actor]`); this crate is its implementation.
//!
//! **Key design decision:** the fn stays exactly as written, and everything the macro adds lives
//! in a module of the same name next to it (fns and modules live in different namespaces). So
//! `add(1, 2)` still just calls the fn, `add::send(1, 2)` sends a message, and the generated
//! code never changes how the fn itself type-checks or is called. The module reaches dq only
//! through `dq::__private`, so the macro crate depends on syn and quote alone.

#![doc(test(attr(deny(warnings))))]

mod attr;
mod expand;
mod sig;

use proc_macro::TokenStream;

/// Turns a fn into a dq actor and registers it at link time.
///
/// The fn is kept exactly as written: calling it runs it directly. Next to it, a module of the
/// same name (and the same visibility) holds:
///
/// | item | what it does |
/// |---|---|
/// | `NAME`, `QUEUE` | the actor name (`actor_name`, default the fn's name) and its queue (default `"default"`) |
/// | `options()` | the actor's `ActorOptions` |
/// | `actor()` | the `Actor` the worker runs: name, options, argument decoder |
/// | `Output` | what the actor returns when it succeeds (`T` of a `Result<T, E>`, `()` for nothing) |
/// | `message(args..)` | builds a `TypedMessage<Output>` without sending it (for groups and pipelines; it derefs to and converts into a `Message`) |
/// | `message_with_options(args.., opts)` | the same, with `SendOptions` applied |
/// | `piped(args but the last..)` | a `Stage<Last, Output>` of a typed pipeline (`dq::pipe(..).then(..)`): the previous stage's result becomes the last argument |
/// | `piped_with_options(args but the last.., opts)` | the same, with `SendOptions` applied |
/// | `send(args..).await` | sends through the current app (`App::current`), returns a `Sent<Output>` that reads the result |
/// | `send_with_options(args.., opts).await` | with a delay, per-message option overrides, `on_success` / `on_failure` callbacks |
/// | `send_to(&app, args..).await` | sends through a given app |
/// | `send_blocking(args..)` | `send` from synchronous code |
///
/// `piped` exists for actors with at least one message argument and not declared with
/// `pipe_ignore`. A stage whose last parameter is not of the type the previous stage returns is
/// a compile error (`expected Stage<usize, _>, found Stage<String, String>`).
///
/// The generated fns take the same parameters as the actor. Arguments travel positionally in
/// `args`, as Dramatiq's `actor.send(a, b)` does; the worker also accepts them by keyword (a
/// Python producer's `actor.send(b=2, a=1)`), and a missing `Option<T>` parameter is `None`.
///
/// # Example
///
/// ```
/// use std::time::Duration;
///
/// use dq::SendOptions;
///
/// /// An error of the actor's own: any `Display` type will do.
/// #[derive(Debug)]
/// pub struct NoSuchUser(u64);
///
/// impl std::fmt::Display for NoSuchUser {
///     fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
///         write!(f, "no user {}", self.0)
///     }
/// }
///
/// #[dq::actor(queue_name = "emails", max_retries = 3, time_limit = 60_000, throws = [NoSuchUser])]
/// pub fn send_welcome(user_id: u64, template: Option<String>) -> Result<String, NoSuchUser> {
///     if user_id == 0 {
///         return Err(NoSuchUser(user_id));
///     }
///     Ok(format!("sent {} to {user_id}", template.as_deref().unwrap_or("welcome")))
/// }
///
/// #[dq::actor(priority = 10)]
/// pub async fn resize(url: String, width: u32) {
///     println!("resizing {url} to {width}px");
/// }
///
/// #[dq::actor]
/// pub fn audit(level: u8, line: String) {
///     println!("[{level}] {line}");
/// }
///
/// #[tokio::main(flavor = "current_thread")]
/// async fn main() -> Result<(), dq::Error> {
///     // A plain call runs the fn, here and now.
///     assert_eq!(send_welcome(7, None).unwrap(), "sent welcome to 7");
///
///     // Sending goes through the global app, set once at start-up.
///     dq::set_broker(dq::StubBroker::new())?;
///     send_welcome::send(7, None).await?;
///     resize::send_with_options(
///         "https://example.com/a.png".into(),
///         640,
///         SendOptions::new().delay(Duration::from_secs(10)).max_retries(1),
///     )
///     .await?;
///
///     // A send returns the message, typed with what the actor returns: its result is a
///     // `String` (read with `sent.wait_result(&backend, timeout)`, feature `results`).
///     let sent: dq::Sent<String> = send_welcome::send(8, None).await?;
///     assert_eq!(sent.actor_name, "send_welcome");
///
///     // A message built but not sent, for a pipeline or a group.
///     let msg = send_welcome::message(7, Some("promo".into()))?;
///     assert_eq!(msg.queue_name, "emails");
///     assert_eq!(msg.args.get(), r#"[7,"promo"]"#);
///
///     // A typed pipeline: `send_welcome`'s result is `audit`'s last argument, `line`.
///     let sent = dq::pipe(msg).then(audit::piped(3)?).run().await?;
///     assert_eq!(sent.messages()[1].args.get(), "[3]");
///     Ok(())
/// }
/// ```
///
/// # Options
///
/// Every option is `key = value`. Durations are integers of milliseconds, as in Dramatiq.
///
/// | option | value |
/// |---|---|
/// | `actor_name` | string: the name on the wire (default: the fn's name) |
/// | `queue_name` | string matching `[a-zA-Z_][a-zA-Z0-9._-]*` (default `"default"`) |
/// | `priority` | `i32`, lower runs sooner (default 0) |
/// | `max_retries` | `u32`, or `None` to retry forever (default: the Retries middleware's, 20) |
/// | `min_backoff`, `max_backoff`, `max_age`, `time_limit`, `result_ttl` | milliseconds |
/// | `store_results`, `notify_shutdown` | `bool` |
/// | `throws` | error types that fail the message at once: `[MyError, "OtherError"]` (types or type names) |
/// | `retry_when` | a `fn(u32, &ActorError) -> bool` deciding whether to retry; replaces `max_retries` |
/// | `on_retry_exhausted` | string: the actor told when retries run out |
/// | `unique_for`, `debounce`, `throttle` | milliseconds: every send of the actor is unique for that TTL, debounced or throttled by that window (see `SendOptions::unique_for`); `send` then reports a refused duplicate in `Sent::outcome` |
/// | `unique_until` | `"finished"` (default), `"started"` or `"ttl"`: when a `unique_for` lock is released |
/// | `crate` | the path generated code reaches dq through (default `::dq`) |
/// | anything else | an option some middleware declares; the value (a literal, `None`, or an array of these) goes to `ActorOptions::extra` as JSON, and `AppBuilder::build` rejects a key no middleware declares |
///
/// A literal value is checked at compile time; any other expression (a constant, `60 * 1000`)
/// is type-checked by rustc where the option is used.
///
/// # Requirements on the fn
///
/// Parameters are plain names with owned types that implement `serde::Serialize` and
/// `serde::de::DeserializeOwned` (`String`, not `&str`); the return type implements `Serialize`,
/// or is `Result<T, E>` (recognised by its name) with `T: Serialize` and `E: Display`. An actor
/// cannot be generic, take `self`, or be `const`, `unsafe` or `extern`. It must be an item of a
/// module (not of a block or an `impl`), and at most 16 parameters. An `async` actor's future
/// must be `Send`.
#[proc_macro_attribute]
pub fn actor(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand::actor(attr.into(), item.into()).into()
}
