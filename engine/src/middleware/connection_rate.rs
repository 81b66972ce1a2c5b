//! [`ConnectionRate`]: limits how fast one client address may open
//! connections.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use shardcast_proto::handshake::UpgradeRequest;
use tracing::warn;

use super::{Identity, Millis, RateLimit, TokenBucket, UpgradeLayer};
use crate::admission::AddrKey;
use crate::handler::Rejection;

/// How many addresses a layer tracks by default.
const DEFAULT_MAX_ADDRESSES: usize = 16 * 1024;

/// A table that shrank keeps at most this many entries of capacity.
const RETAINED: usize = 1024;

/// Limits the upgrades one client address makes, with a token bucket per
/// address: [`RateLimit::burst`] at once, then the limit's rate. An IPv6
/// client counts per /64 prefix (one host's usual allocation), an
/// IPv4-mapped IPv6 address as its IPv4 address, as the server's
/// per-address connection limit counts them.
///
/// A refusal is `429 Too Many Requests`; the body says how many seconds to
/// wait (a [`Rejection`] carries no headers, so there is no `Retry-After`
/// header).
///
/// # Per shard
///
/// Each shard has its own layer and table, and the kernel spreads one
/// client's connections over the shards (by source port), so a client may
/// make up to the limit *on each shard*. For a server-wide budget, divide
/// it by the shard count. The server's
/// [`max_connections_per_ip`](crate::ServerBuilder::max_connections_per_ip)
/// bounds how many connections an address holds at once; this bounds how
/// fast it opens them.
///
/// The address is the TCP peer's: behind a reverse proxy every client has
/// the proxy's address, and shares its allowance.
///
/// # Memory
///
/// A tracked address takes 32 bytes of table, plus the table's slack. A
/// full bucket is the same as no bucket, so each time the limit's fill
/// time (an empty bucket's time to fill up) has passed, the next check
/// drops the full buckets: an address quiet for that long is forgotten.
/// The table holds at most [`max_addresses`](Self::max_addresses) (16 384
/// by default, about 1 MiB a shard, the table's capacity being a power of
/// two). When it is full, an upgrade from an address not in it passes
/// *unlimited*: refusing every new address would let whoever fills the
/// table lock everyone else out. Such upgrades are counted
/// ([`untracked`](Self::untracked)) and the first of each spell is logged
/// as a warning, until a sweep makes room.
pub struct ConnectionRate {
    limit: RateLimit,
    buckets: HashMap<AddrKey, TokenBucket>,
    max_addresses: usize,
    /// What [`Millis`] count from.
    epoch: Instant,
    /// When the full buckets are next dropped.
    next_sweep: Millis,
    untracked: u64,
    /// Whether this spell of a full table was logged.
    warned: bool,
}

impl ConnectionRate {
    /// A layer allowing each address `limit`, tracking up to 16 384
    /// addresses.
    #[must_use]
    pub fn new(limit: RateLimit) -> ConnectionRate {
        ConnectionRate {
            limit,
            buckets: HashMap::new(),
            max_addresses: DEFAULT_MAX_ADDRESSES,
            epoch: Instant::now(),
            next_sweep: Millis::new(0).saturating_add(limit.fill_time()),
            untracked: 0,
            warned: false,
        }
    }

    /// Tracks up to `max` addresses (default 16 384) instead; past that,
    /// new addresses pass unlimited (see the type's docs). 0 tracks none:
    /// every upgrade passes.
    #[must_use]
    pub fn max_addresses(mut self, max: usize) -> ConnectionRate {
        self.max_addresses = max;
        self
    }

    /// How many addresses the table holds now.
    #[must_use]
    pub fn tracked(&self) -> usize {
        self.buckets.len()
    }

    /// How many upgrades passed unlimited because the table was full.
    #[must_use]
    pub fn untracked(&self) -> u64 {
        self.untracked
    }

    /// [`UpgradeLayer::check`] at `now`.
    fn check_at(&mut self, peer: IpAddr, now: Instant) -> Result<(), Rejection> {
        let now = Millis::since(self.epoch, now);
        if now >= self.next_sweep {
            self.sweep(now);
        }
        let full = self.buckets.len() >= self.max_addresses;
        let bucket = match self.buckets.entry(AddrKey::of(peer)) {
            Entry::Occupied(entry) => entry.into_mut(),
            Entry::Vacant(_) if full => {
                self.untracked += 1;
                if !self.warned {
                    self.warned = true;
                    warn!(
                        max_addresses = self.max_addresses,
                        "upgrade rate limit: address table full; upgrades from new addresses pass unlimited until it has room"
                    );
                }
                return Ok(());
            }
            Entry::Vacant(entry) => entry.insert(TokenBucket::full(&self.limit, now)),
        };
        if bucket.try_take(&self.limit, now) {
            return Ok(());
        }
        let wait = bucket.retry_after(&self.limit, now);
        let seconds = wait.as_millis().div_ceil(1000).max(1);
        Err(Rejection::new(429, "Too Many Requests").with_body(
            format!("too many connection attempts; retry after {seconds} s").into_bytes(),
        ))
    }

    /// Drops the full buckets and the memory a larger table held.
    fn sweep(&mut self, now: Millis) {
        let limit = self.limit;
        self.buckets
            .retain(|_, bucket| !bucket.is_full(&limit, now));
        self.buckets.shrink_to(self.buckets.len().max(RETAINED));
        self.next_sweep = now.saturating_add(limit.fill_time());
        if self.buckets.len() < self.max_addresses {
            self.warned = false;
        }
    }
}

impl fmt::Debug for ConnectionRate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectionRate")
            .field("limit", &self.limit)
            .field("tracked", &self.buckets.len())
            .field("max_addresses", &self.max_addresses)
            .field("untracked", &self.untracked)
            .finish_non_exhaustive()
    }
}

impl UpgradeLayer for ConnectionRate {
    fn check(
        &mut self,
        _: &UpgradeRequest<'_>,
        peer: SocketAddr,
        _: &mut Identity,
    ) -> Result<(), Rejection> {
        self.check_at(peer.ip(), Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::middleware::test_request::{parse, request};

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    /// 2 upgrades at once, then one every 500 ms; fill time 1 s.
    fn layer() -> ConnectionRate {
        ConnectionRate::new(RateLimit::new(2, 2).unwrap())
    }

    /// `rate.check_at(peer, ..)`, `millis` after the layer's epoch.
    fn at(rate: &mut ConnectionRate, peer: &str, millis: u64) -> Result<(), Rejection> {
        let now = rate.epoch + Duration::from_millis(millis);
        rate.check_at(ip(peer), now)
    }

    #[test]
    fn an_address_gets_its_burst_then_429_until_a_token_refills() {
        let mut rate = layer();
        assert_eq!(at(&mut rate, "192.0.2.1", 0), Ok(()));
        assert_eq!(at(&mut rate, "192.0.2.1", 0), Ok(()));
        let refusal = at(&mut rate, "192.0.2.1", 0).unwrap_err();
        assert_eq!(refusal.status(), 429);
        assert_eq!(refusal.reason(), "Too Many Requests");
        assert_eq!(
            refusal.body(),
            b"too many connection attempts; retry after 1 s"
        );
        assert!(at(&mut rate, "192.0.2.1", 499).is_err());
        assert_eq!(at(&mut rate, "192.0.2.1", 500), Ok(()));
        assert!(at(&mut rate, "192.0.2.1", 500).is_err());
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        let mut rate =
            ConnectionRate::new(RateLimit::per_window(1, Duration::from_secs(60), 1).unwrap());
        assert_eq!(at(&mut rate, "192.0.2.1", 0), Ok(()));
        let refusal = at(&mut rate, "192.0.2.1", 1).unwrap_err();
        assert_eq!(
            refusal.body(),
            b"too many connection attempts; retry after 60 s"
        );
    }

    #[test]
    fn addresses_are_limited_apart_and_ipv6_per_64() {
        let mut rate = layer().max_addresses(10);
        for peer in [
            "192.0.2.1",
            "192.0.2.1",
            "2001:db8:0:1::1",
            "2001:db8:0:1::2",
        ] {
            assert_eq!(at(&mut rate, peer, 0), Ok(()), "{peer}");
        }
        assert!(
            at(&mut rate, "2001:db8:0:1:ffff::9", 0).is_err(),
            "same /64"
        );
        assert!(at(&mut rate, "::ffff:192.0.2.1", 0).is_err(), "mapped IPv4");
        assert_eq!(at(&mut rate, "2001:db8:0:2::1", 0), Ok(()), "another /64");
        assert_eq!(at(&mut rate, "192.0.2.2", 0), Ok(()));
        assert_eq!(rate.tracked(), 4);
    }

    #[test]
    fn full_buckets_are_dropped_once_the_fill_time_has_passed() {
        let mut rate = layer();
        at(&mut rate, "192.0.2.1", 0).unwrap();
        at(&mut rate, "192.0.2.2", 0).unwrap();
        at(&mut rate, "192.0.2.2", 0).unwrap();
        assert_eq!(rate.tracked(), 2);
        // 192.0.2.1 is full again at 500 ms, 192.0.2.2 at 1 s; the first
        // sweep runs at the first check from 1 s on.
        at(&mut rate, "192.0.2.3", 999).unwrap();
        assert_eq!(rate.tracked(), 3);
        at(&mut rate, "192.0.2.2", 1_000).unwrap();
        assert_eq!(
            rate.tracked(),
            2,
            "192.0.2.1 and 192.0.2.2 were full, 192.0.2.3 not"
        );
        // The next sweep is a fill time after the first.
        at(&mut rate, "192.0.2.4", 1_999).unwrap();
        assert_eq!(rate.tracked(), 3);
        at(&mut rate, "192.0.2.4", 2_000).unwrap();
        assert_eq!(
            rate.tracked(),
            1,
            "only 192.0.2.4, used 1 ms ago, was not full"
        );
    }

    #[test]
    fn a_full_table_lets_new_addresses_pass_untracked_until_a_sweep_makes_room() {
        let mut rate = layer().max_addresses(2);
        for _ in 0..2 {
            at(&mut rate, "192.0.2.1", 0).unwrap();
        }
        at(&mut rate, "192.0.2.2", 0).unwrap();
        for _ in 0..5 {
            assert_eq!(at(&mut rate, "192.0.2.3", 10), Ok(()), "unlimited");
        }
        assert_eq!((rate.tracked(), rate.untracked()), (2, 5));
        assert!(
            at(&mut rate, "192.0.2.1", 10).is_err(),
            "tracked ones still limited"
        );
        // At 1 s both buckets are full and swept: 192.0.2.3 is tracked.
        for _ in 0..2 {
            at(&mut rate, "192.0.2.3", 1_000).unwrap();
        }
        assert!(at(&mut rate, "192.0.2.3", 1_000).is_err());
        assert_eq!((rate.tracked(), rate.untracked()), (1, 5));
    }

    #[test]
    fn zero_max_addresses_tracks_nothing() {
        let mut rate = layer().max_addresses(0);
        for _ in 0..10 {
            assert_eq!(at(&mut rate, "192.0.2.1", 0), Ok(()));
        }
        assert_eq!((rate.tracked(), rate.untracked()), (0, 10));
    }

    #[test]
    fn the_layer_limits_a_real_request_by_its_peer_address() {
        let buf = request(&[]);
        let request = parse(&buf);
        let mut rate = ConnectionRate::new(RateLimit::new(1, 1).unwrap());
        let peer: SocketAddr = "198.51.100.7:40000".parse().unwrap();
        let other_port: SocketAddr = "198.51.100.7:40001".parse().unwrap();
        let mut identity = Identity::default();
        assert_eq!(rate.check(&request, peer, &mut identity), Ok(()));
        let refusal = rate.check(&request, other_port, &mut identity).unwrap_err();
        assert_eq!(refusal.status(), 429);
        assert_eq!(identity, Identity::default());
    }

    #[test]
    fn a_tracked_address_takes_32_bytes_of_table() {
        assert_eq!(size_of::<(AddrKey, TokenBucket)>(), 32);
    }

    #[test]
    fn debug_shows_counts_not_addresses() {
        let mut rate = layer();
        at(&mut rate, "192.0.2.1", 0).unwrap();
        let shown = format!("{rate:?}");
        assert!(shown.contains("tracked: 1"), "{shown}");
        assert!(!shown.contains("192"), "{shown}");
    }
}
