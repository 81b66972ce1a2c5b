//! [`UpgradeLayers`]: the ordered stack of upgrade checks a shard runs.

use std::fmt;
use std::net::SocketAddr;

use shardcast_proto::handshake::UpgradeRequest;

use super::{Identity, UpgradeLayer};
use crate::handler::Rejection;

/// An ordered stack of [`UpgradeLayer`]s, run in the order they were
/// pushed until one refuses.
///
/// Put the cheapest and most discriminating checks first (origin, then
/// rate, then credentials that need decoding), since a refusal skips the
/// rest.
#[derive(Default)]
pub struct UpgradeLayers {
    layers: Vec<Box<dyn UpgradeLayer>>,
}

impl UpgradeLayers {
    /// An empty stack, which lets every request through.
    #[must_use]
    pub fn new() -> UpgradeLayers {
        UpgradeLayers::default()
    }

    /// Adds `layer` after the layers already pushed.
    pub fn push(&mut self, layer: impl UpgradeLayer) -> &mut UpgradeLayers {
        self.layers.push(Box::new(layer));
        self
    }

    /// How many layers the stack holds.
    #[must_use]
    pub fn len(&self) -> usize {
        self.layers.len()
    }

    /// Whether the stack holds no layer.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.layers.is_empty()
    }

    /// Runs every layer on `request` from `peer`, in the order pushed:
    /// the client's [`Identity`] once all have passed.
    ///
    /// # Errors
    /// The first refusing layer's [`Rejection`]; the layers after it do
    /// not run.
    pub fn check(
        &mut self,
        request: &UpgradeRequest<'_>,
        peer: SocketAddr,
    ) -> Result<Identity, Rejection> {
        let mut identity = Identity::default();
        for layer in &mut self.layers {
            layer.check(request, peer, &mut identity)?;
        }
        Ok(identity)
    }
}

impl fmt::Debug for UpgradeLayers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpgradeLayers")
            .field("len", &self.layers.len())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::rc::Rc;

    use super::*;
    use crate::middleware::test_request::{PEER, parse, request};

    /// A layer that logs its name to a shared log, then passes (naming the
    /// client after itself) or refuses with `status`.
    struct Probe {
        name: &'static str,
        refuse: Option<u16>,
        log: Rc<RefCell<Vec<&'static str>>>,
    }

    impl UpgradeLayer for Probe {
        fn check(
            &mut self,
            _: &UpgradeRequest<'_>,
            _: SocketAddr,
            identity: &mut Identity,
        ) -> Result<(), Rejection> {
            self.log.borrow_mut().push(self.name);
            match self.refuse {
                Some(status) => Err(Rejection::new(status, self.name)),
                None => {
                    identity.set_user_id(self.name);
                    Ok(())
                }
            }
        }
    }

    fn probes(
        spec: &[(&'static str, Option<u16>)],
    ) -> (UpgradeLayers, Rc<RefCell<Vec<&'static str>>>) {
        let log = Rc::default();
        let mut layers = UpgradeLayers::new();
        for &(name, refuse) in spec {
            layers.push(Probe {
                name,
                refuse,
                log: Rc::clone(&log),
            });
        }
        (layers, log)
    }

    #[test]
    fn an_empty_stack_passes_with_an_anonymous_identity() {
        let buf = request(&[]);
        let mut layers = UpgradeLayers::new();
        assert!(layers.is_empty());
        assert_eq!(layers.check(&parse(&buf), PEER), Ok(Identity::default()));
    }

    #[test]
    fn layers_run_in_the_order_pushed_and_later_ones_see_earlier_ones_identity() {
        let buf = request(&[]);
        let (mut layers, log) = probes(&[("a", None), ("b", None), ("c", None)]);
        assert_eq!(layers.len(), 3);
        let identity = layers.check(&parse(&buf), PEER).unwrap();
        assert_eq!(*log.borrow(), ["a", "b", "c"]);
        assert_eq!(identity.user_id().map(|id| &**id), Some("c"));
    }

    #[test]
    fn the_first_refusal_wins_and_stops_the_stack() {
        let buf = request(&[]);
        let (mut layers, log) = probes(&[("a", None), ("b", Some(403)), ("c", Some(401))]);
        let refusal = layers.check(&parse(&buf), PEER).unwrap_err();
        assert_eq!((refusal.status(), refusal.reason()), (403, "b"));
        assert_eq!(*log.borrow(), ["a", "b"]);
    }

    /// Refuses a request whose identity an earlier layer already named.
    struct ExpectAnonymous;

    impl UpgradeLayer for ExpectAnonymous {
        fn check(
            &mut self,
            _: &UpgradeRequest<'_>,
            _: SocketAddr,
            identity: &mut Identity,
        ) -> Result<(), Rejection> {
            match identity.user_id() {
                None => Ok(()),
                Some(_) => Err(Rejection::new(500, "identity leaked")),
            }
        }
    }

    #[test]
    fn each_check_starts_from_a_fresh_identity() {
        let buf = request(&[]);
        let (mut layers, _) = probes(&[]);
        layers.push(ExpectAnonymous).push(Probe {
            name: "a",
            refuse: None,
            log: Rc::default(),
        });
        for _ in 0..2 {
            let identity = layers.check(&parse(&buf), PEER).unwrap();
            assert_eq!(identity.user_id().map(|id| &**id), Some("a"));
        }
    }

    #[test]
    fn debug_shows_the_number_of_layers() {
        let (layers, _) = probes(&[("a", None), ("b", None)]);
        assert_eq!(format!("{layers:?}"), "UpgradeLayers { len: 2, .. }");
    }
}
