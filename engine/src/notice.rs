//! Notices: messages from a handler to the handler of a shard (its own or
//! another), for application work that crosses shards, such as handing a
//! session over to the shard its client reconnected to.
//!
//! A handler sends one with [`Hub::notify`](crate::Hub::notify); it
//! travels on the shard's inbox like room traffic, and arrives in
//! [`Handler::on_notice`](crate::Handler::on_notice) with a
//! [`ShardConns`], through which the handler reaches the connections the
//! notice names by their [`ConnAddress`].

use std::any::Any;

use slab::Slab;

use crate::conn::{Conn, ConnAddress};
use crate::connection::{Connection, mark_dirty};
use crate::hub::Hub;

/// A message between shards' handlers: any `Send` value; the receiver
/// downcasts it to the types it knows.
pub type Notice = Box<dyn Any + Send>;

/// A shard's open connections, as [`Handler::on_notice`](crate::Handler::on_notice)
/// reaches them.
pub struct ShardConns<'a, S> {
    pub(crate) connections: &'a mut Slab<Connection<S>>,
    pub(crate) dirty: &'a mut Vec<usize>,
    pub(crate) hub: &'a Hub,
}

impl<S> ShardConns<'_, S> {
    /// Runs `f` on the connection at `address` if it is still open (it
    /// may be closing: see [`Conn::is_closing`]); `None` otherwise. What
    /// `f` sends goes out at the end of the loop turn, as from any
    /// callback.
    pub fn with<R>(
        &mut self,
        address: ConnAddress,
        f: impl FnOnce(&mut Conn<S>) -> R,
    ) -> Option<R> {
        let key = address.key as usize;
        let connection = self.connections.get_mut(key)?;
        let open = connection.open_mut()?;
        if open.conn.id() != address.id {
            return None;
        }
        let result = f(&mut open.conn);
        mark_dirty(self.dirty, key, connection);
        Some(result)
    }

    /// The shard's rooms and broadcast, and [`Hub::notify`] to answer.
    #[must_use]
    pub fn hub(&self) -> &Hub {
        self.hub
    }
}

impl<S> std::fmt::Debug for ShardConns<'_, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardConns")
            .field("connections", &self.connections.len())
            .finish_non_exhaustive()
    }
}
