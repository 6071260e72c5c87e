//! Application state for actors: a database pool, an HTTP client, settings.
//!
//! State is registered on the app ([`AppBuilder::state`](crate::AppBuilder::state), or
//! [`AppBuilder::state_with`](crate::AppBuilder::state_with) for state that needs async set-up
//! when the worker boots) and an actor asks for it with a parameter of type [`State<T>`]. Such
//! parameters are not message arguments: the wire format does not change, and a producer's
//! `send` does not take them. The worker refuses to start when an actor asks for a state the app
//! does not have, naming the actor and the type.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::ops::Deref;
use std::pin::Pin;
use std::sync::Arc;

/// Shared application state an actor receives, the way axum handlers receive `State`: a cheap
/// clone of an `Arc<T>` the app holds.
///
/// ```
/// #[derive(Debug)]
/// struct Settings { greeting: String }
///
/// let s = dq_core::State::new(Settings { greeting: "hello".into() });
/// assert_eq!(s.greeting, "hello"); // derefs to the value
/// let again = s.clone();           // another handle on the same value
/// assert!(std::ptr::eq(&*s, &*again));
/// ```
pub struct State<T: ?Sized>(Arc<T>);

impl<T> State<T> {
    /// Wraps a value, e.g. to call an actor fn directly in a test.
    pub fn new(value: T) -> State<T> {
        State(Arc::new(value))
    }
}

impl<T: ?Sized> State<T> {
    /// A state from a value that is shared already.
    pub fn from_arc(value: Arc<T>) -> State<T> {
        State(value)
    }

    /// The shared value.
    pub fn arc(&self) -> &Arc<T> {
        &self.0
    }
}

impl<T: ?Sized> Clone for State<T> {
    fn clone(&self) -> State<T> {
        State(self.0.clone())
    }
}

impl<T: ?Sized> Deref for State<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for State<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("State").field(&&*self.0).finish()
    }
}

/// The key of one state type: what an actor needs, what an app has.
#[derive(Clone, Copy)]
pub struct StateKey {
    id: fn() -> TypeId,
    name: fn() -> &'static str,
}

impl StateKey {
    /// The key of `State<T>`.
    pub fn of<T: Send + Sync + 'static>() -> StateKey {
        StateKey {
            id: TypeId::of::<T>,
            name: std::any::type_name::<T>,
        }
    }

    /// The type's full name, for error messages.
    pub fn type_name(&self) -> &'static str {
        (self.name)()
    }

    fn id(&self) -> TypeId {
        (self.id)()
    }
}

impl fmt::Debug for StateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.type_name())
    }
}

impl PartialEq for StateKey {
    fn eq(&self, other: &StateKey) -> bool {
        self.id() == other.id()
    }
}

impl Eq for StateKey {}

/// The states an app holds, by type. Cheap to clone.
///
/// ```
/// let mut states = dq_core::States::default();
/// states.insert(42_u32);
/// assert_eq!(*states.get::<u32>().unwrap(), 42);
/// assert!(states.get::<String>().is_none());
/// ```
#[derive(Clone, Default)]
pub struct States {
    map: HashMap<TypeId, (StateKey, Arc<dyn Any + Send + Sync>)>,
}

impl States {
    /// Adds (or replaces) the state of type `T`.
    pub fn insert<T: Send + Sync + 'static>(&mut self, value: T) {
        self.insert_arc(Arc::new(value));
    }

    /// Adds (or replaces) the state of type `T`, shared already.
    pub fn insert_arc<T: Send + Sync + 'static>(&mut self, value: Arc<T>) {
        self.map
            .insert(TypeId::of::<T>(), (StateKey::of::<T>(), value));
    }

    pub(crate) fn insert_any(&mut self, key: StateKey, value: Arc<dyn Any + Send + Sync>) {
        self.map.insert(key.id(), (key, value));
    }

    /// The state of type `T`, if the app has one.
    pub fn get<T: Send + Sync + 'static>(&self) -> Option<State<T>> {
        let (_, any) = self.map.get(&TypeId::of::<T>())?;
        any.clone().downcast::<T>().ok().map(State)
    }

    /// Whether a state of this key is present.
    pub fn contains(&self, key: &StateKey) -> bool {
        self.map.contains_key(&key.id())
    }

    /// How many states there are.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

impl fmt::Debug for States {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set()
            .entries(self.map.values().map(|(k, _)| k))
            .finish()
    }
}

/// What building a state at worker boot can fail with.
pub type StateBuildError = Box<dyn std::error::Error + Send + Sync + 'static>;

type BuiltState = Result<Arc<dyn Any + Send + Sync>, StateBuildError>;

/// A state built when the worker boots (see [`AppBuilder::state_with`](crate::AppBuilder::state_with)).
#[derive(Clone)]
pub struct StateBuilder {
    key: StateKey,
    build: Arc<dyn Fn() -> Pin<Box<dyn Future<Output = BuiltState> + Send>> + Send + Sync>,
}

impl StateBuilder {
    pub(crate) fn new<T, F, Fut, E>(f: F) -> StateBuilder
    where
        T: Send + Sync + 'static,
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<T, E>> + Send + 'static,
        E: Into<StateBuildError>,
    {
        StateBuilder {
            key: StateKey::of::<T>(),
            build: Arc::new(move || {
                let fut = f();
                Box::pin(async move {
                    match fut.await {
                        Ok(v) => Ok(Arc::new(v) as Arc<dyn Any + Send + Sync>),
                        Err(e) => Err(e.into()),
                    }
                })
            }),
        }
    }

    /// The type it builds.
    pub fn key(&self) -> StateKey {
        self.key
    }

    /// Builds the state and adds it to `states`.
    pub async fn build_into(&self, states: &mut States) -> Result<(), StateBuildError> {
        let value = (self.build)().await?;
        states.insert_any(self.key, value);
        Ok(())
    }
}

impl fmt::Debug for StateBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StateBuilder")
            .field("type", &self.key)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_by_type() {
        let mut s = States::default();
        s.insert(String::from("a"));
        s.insert(7_u8);
        s.insert(8_u8);
        assert_eq!(s.len(), 2);
        assert_eq!(*s.get::<u8>().unwrap(), 8);
        assert_eq!(&*s.get::<String>().unwrap(), "a");
        assert!(s.contains(&StateKey::of::<u8>()));
        assert!(!s.contains(&StateKey::of::<u16>()));
        assert_eq!(StateKey::of::<u16>().type_name(), "u16");
    }

    #[tokio::test]
    async fn builders_add_their_state() {
        let b = StateBuilder::new(|| async { Ok::<_, std::io::Error>(vec![1, 2]) });
        let mut s = States::default();
        b.build_into(&mut s).await.unwrap();
        assert_eq!(*s.get::<Vec<i32>>().unwrap(), vec![1, 2]);
        let failing = StateBuilder::new(|| async { Err::<u8, _>("no database") });
        assert_eq!(
            failing.build_into(&mut s).await.unwrap_err().to_string(),
            "no database"
        );
    }
}
