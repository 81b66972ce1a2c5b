//! [`Admission`]: the server-wide connection count and the per-address
//! counts behind `max_connections` and `max_connections_per_ip`.
//!
//! These are the only counters every shard writes: each connection
//! touches them twice (at accept and at close), never per message. The
//! total is one atomic. The per-address counts are a map split into
//! stripes, each behind its own mutex, keyed by a hash of the address:
//! two shards contend only when they admit clients whose addresses land in
//! the same stripe at the same instant, and a lookup is a few dozen
//! nanoseconds next to the accept syscall that precedes it.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// Stripes of the per-address map.
const STRIPES: usize = 64;

/// The key a client address is counted under: the IPv4 address, or the
/// IPv6 /64 prefix (one host's usual allocation; counting whole IPv6
/// addresses would let one host open connections from 2^64 of them).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum AddrKey {
    V4(u32),
    V6Prefix(u64),
}

impl AddrKey {
    pub(crate) fn of(addr: IpAddr) -> AddrKey {
        match addr {
            IpAddr::V4(v4) => AddrKey::V4(v4.to_bits()),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => AddrKey::V4(v4.to_bits()),
                None => AddrKey::V6Prefix((v6.to_bits() >> 64) as u64),
            },
        }
    }
}

/// Per-address connection counts, limited to `limit` each.
#[derive(Debug)]
struct PerAddress {
    limit: usize,
    hasher: RandomState,
    stripes: Box<[Mutex<HashMap<AddrKey, usize>>]>,
}

impl PerAddress {
    fn stripe(&self, key: AddrKey) -> &Mutex<HashMap<AddrKey, usize>> {
        let hash = self.hasher.hash_one(key) as usize;
        &self.stripes[hash % STRIPES]
    }

    /// Counts one more connection for `key`, unless it is at its limit.
    fn acquire(&self, key: AddrKey) -> bool {
        let mut counts = self
            .stripe(key)
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let count = counts.entry(key).or_insert(0);
        if *count >= self.limit {
            return false;
        }
        *count += 1;
        true
    }

    fn release(&self, key: AddrKey) {
        let mut counts = self
            .stripe(key)
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Entry::Occupied(mut entry) = counts.entry(key) {
            *entry.get_mut() -= 1;
            if *entry.get() == 0 {
                entry.remove();
            }
        }
    }
}

/// Connection counts over all shards, from accept to close.
#[derive(Debug)]
pub(crate) struct Admission {
    total: AtomicUsize,
    max_total: usize,
    per_address: Option<PerAddress>,
}

impl Admission {
    /// Counts for a server of at most `max_total` connections and, if
    /// given, at most `max_per_address` from one client address.
    pub(crate) fn new(max_total: usize, max_per_address: Option<usize>) -> Admission {
        Admission {
            total: AtomicUsize::new(0),
            max_total,
            per_address: max_per_address.map(|limit| PerAddress {
                limit,
                hasher: RandomState::new(),
                stripes: (0..STRIPES).map(|_| Mutex::default()).collect(),
            }),
        }
    }

    /// Counts a connection just accepted from `peer`: a ticket that gives
    /// the count back when dropped, and whether a limit was passed (the
    /// upgrade is then answered 503).
    pub(crate) fn admit(self: &Arc<Self>, peer: IpAddr) -> (Ticket, bool) {
        let full = self.total.fetch_add(1, Ordering::Relaxed) >= self.max_total;
        let mut ticket = Ticket {
            admission: Arc::clone(self),
            address: None,
        };
        let mut refused = full;
        if !full {
            if let Some(per_address) = &self.per_address {
                let key = AddrKey::of(peer);
                if per_address.acquire(key) {
                    ticket.address = Some(key);
                } else {
                    refused = true;
                }
            }
        }
        (ticket, refused)
    }
}

/// One connection's place in the counts, given back on drop.
#[derive(Debug)]
pub(crate) struct Ticket {
    admission: Arc<Admission>,
    /// The address counted for this connection, if one was.
    address: Option<AddrKey>,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.admission.total.fetch_sub(1, Ordering::Relaxed);
        if let (Some(key), Some(per_address)) = (self.address, &self.admission.per_address) {
            per_address.release(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn the_total_limit_refuses_the_connection_past_it() {
        let admission = Arc::new(Admission::new(2, None));
        let first = admission.admit(ip("127.0.0.1"));
        let second = admission.admit(ip("127.0.0.2"));
        let third = admission.admit(ip("127.0.0.3"));
        assert!(!first.1 && !second.1);
        assert!(third.1);
        drop((third, second));
        assert!(!admission.admit(ip("127.0.0.3")).1);
    }

    #[test]
    fn the_per_address_limit_counts_each_address_alone() {
        let admission = Arc::new(Admission::new(100, Some(2)));
        let a1 = admission.admit(ip("10.0.0.1"));
        let a2 = admission.admit(ip("10.0.0.1"));
        let b1 = admission.admit(ip("10.0.0.2"));
        assert!(!a1.1 && !a2.1 && !b1.1);
        let a3 = admission.admit(ip("10.0.0.1"));
        assert!(a3.1);
        drop(a3);
        drop(a1);
        let a4 = admission.admit(ip("10.0.0.1"));
        assert!(!a4.1, "a closed connection frees its place");
    }

    #[test]
    fn a_refused_connection_does_not_hold_a_per_address_place() {
        let admission = Arc::new(Admission::new(100, Some(1)));
        let first = admission.admit(ip("10.0.0.1"));
        for _ in 0..5 {
            assert!(admission.admit(ip("10.0.0.1")).1);
        }
        drop(first);
        assert!(!admission.admit(ip("10.0.0.1")).1);
    }

    #[test]
    fn ipv6_hosts_are_counted_per_64_prefix_and_mapped_v4_as_v4() {
        assert_eq!(
            AddrKey::of(ip("2001:db8:1:2::1")),
            AddrKey::of(ip("2001:db8:1:2:ffff::9"))
        );
        assert_ne!(
            AddrKey::of(ip("2001:db8:1:2::1")),
            AddrKey::of(ip("2001:db8:1:3::1"))
        );
        assert_eq!(
            AddrKey::of(ip("::ffff:192.0.2.7")),
            AddrKey::of(ip("192.0.2.7"))
        );
    }
}
