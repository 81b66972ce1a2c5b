//! [`UpgradeLayer`]: one check an upgrade request must pass before the
//! application sees it.

use std::net::SocketAddr;

use shardcast_proto::handshake::UpgradeRequest;

use super::Identity;
use crate::handler::Rejection;

/// One check on an upgrade request (origin, credentials, rate), run before
/// the application's own [`Handler::on_upgrade`](crate::Handler::on_upgrade).
///
/// Layers are stacked in an [`UpgradeLayers`](super::UpgradeLayers), one
/// stack per shard, like the handler.
///
/// # Contract
///
/// - `check` runs on the shard thread, between reads: it must not block
///   (no network or disk I/O, no waiting on locks), or every connection of
///   the shard waits with it. A layer is owned by its shard, so it may
///   keep shard-local state behind `&mut self` without locks.
/// - It returns `Ok(())` to pass the request on to the next layer, or the
///   [`Rejection`] the client is answered with. The first refusal wins:
///   the layers after it do not run, and the connection is closed after
///   the answer.
/// - It may record what it learned in `identity` (an auth layer sets the
///   user id); the identity reaches the connection only if every layer
///   passes.
/// - Run from [`Handler::on_upgrade`](crate::Handler::on_upgrade), a
///   panic is caught like any panic there: the client is answered 500 and
///   the shard goes on.
pub trait UpgradeLayer: 'static {
    /// Checks `request` from `peer`, and records in `identity` what it
    /// learned about the client.
    ///
    /// # Errors
    /// A [`Rejection`] refuses the upgrade; no later layer runs.
    fn check(
        &mut self,
        request: &UpgradeRequest<'_>,
        peer: SocketAddr,
        identity: &mut Identity,
    ) -> Result<(), Rejection>;
}
