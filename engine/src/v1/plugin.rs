//! [`Plugin`]: a bundle of routes, middleware and lifecycle hooks that
//! registers on a [`Protocol`](super::Protocol) in one call.

use super::Protocol;

/// A reusable bundle of what a `shardcast.v1` application is made of:
/// routes, upgrade and message layers, lifecycle hooks.
///
/// A plugin is registered per shard (the server's handler factory builds
/// each shard's [`Protocol`]), so it may hold shard-local state; what it
/// registers runs after what was registered before it, in the layers'
/// and hooks' order.
///
/// ```
/// use shardcast::v1::{Plugin, Protocol, Router};
///
/// /// Answers "time" with the server's Unix time in seconds.
/// struct Clock;
///
/// impl<S: Default + Send + 'static> Plugin<S> for Clock {
///     fn name(&self) -> &str {
///         "clock"
///     }
///
///     fn register(self: Box<Self>, protocol: &mut Protocol<S>) {
///         protocol.router_mut().add("time", |_conn, _payload| {
///             let now = std::time::SystemTime::now()
///                 .duration_since(std::time::UNIX_EPOCH)
///                 .map_or(0, |since| since.as_secs());
///             Ok(now.to_string().into_bytes())
///         });
///     }
/// }
///
/// let protocol: Protocol<()> = Protocol::new(Router::new()).plugin(Clock);
/// assert!(protocol.router().routes("time"));
/// ```
pub trait Plugin<S>: 'static {
    /// The plugin's name, for logs.
    fn name(&self) -> &str;

    /// Adds the plugin's routes, layers and hooks to `protocol`.
    fn register(self: Box<Self>, protocol: &mut Protocol<S>);
}
