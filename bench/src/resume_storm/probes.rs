//! The probes: connections not cut, each in a room of its own, that
//! measure publish-to-delivery latency before the storm and during it,
//! and check their rooms' streams like the storm clients'.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{anyhow, bail};
use hdrhistogram::Histogram;
use shardcast_proto::deflate::Inflater;
use shardcast_proto::envelope::{Envelope, EnvelopeWriter};

use super::args::Args;
use super::link::{Ended, Flow, Link};
use super::phase;
use super::shared::{POLL, Shared, wait_for};
use super::stamp::read_stamp;
use super::track::{JOIN_ACK, track};
use super::tracker::{Counts, Step, Tracker};
use crate::client::{Target, XorShift};

/// Latencies above this many nanoseconds (one minute) are recorded as it.
pub(super) const MAX_LATENCY_NANOS: u64 = 60_000_000_000;

/// The probes' latencies and counts.
pub(super) struct Probed {
    /// Publish-to-delivery latency, nanoseconds: baseline, storm.
    pub(super) windows: [Histogram<u64>; 2],
    /// What the probes' trackers counted, their rooms' ends included.
    pub(super) counts: Counts,
    /// Payloads without a readable stamp.
    pub(super) unstamped: u64,
    /// Why a probe failed, if one did.
    pub(super) failure: Option<String>,
}

/// What the probes' reading tasks share.
struct Probing {
    /// Each probe's room stream.
    trackers: Vec<RefCell<Tracker>>,
    /// Latencies: baseline, storm.
    windows: RefCell<[Histogram<u64>; 2]>,
    /// Payloads without a readable stamp.
    unstamped: Cell<u64>,
    /// Why a probe failed, if one did.
    failure: RefCell<Option<String>>,
}

impl Probing {
    /// Takes what probe `index` received; a message's latency goes to the
    /// window it was published in.
    fn take(&self, index: usize, item: Envelope<'_>, shared: &Shared) -> anyhow::Result<Flow> {
        let (step, payload) = track(&mut self.trackers[index].borrow_mut(), item)?;
        if let Some(payload) = payload {
            let now = shared.nanos();
            match read_stamp(payload) {
                Some((phase, due)) => {
                    let window = match phase {
                        phase::BASELINE => Some(0),
                        phase::STORM => Some(1),
                        _ => None,
                    };
                    if let Some(window) = window {
                        let latency = now.saturating_sub(due).min(MAX_LATENCY_NANOS);
                        self.windows.borrow_mut()[window].saturating_record(latency);
                    }
                }
                None => self.unstamped.set(self.unstamped.get() + 1),
            }
        }
        Ok(if step == Step::Joined {
            Flow::Stop
        } else {
            Flow::Continue
        })
    }
}

/// The probes: connect, join their rooms, and record latency until every
/// probe has its room's whole stream.
pub(super) async fn probe(
    args: &Args,
    target: &Target,
    shared: &Arc<Shared>,
    rooms: &[String],
    seed: u64,
) -> anyhow::Result<Probed> {
    let inflater = Rc::new(RefCell::new(Inflater::new()));
    let mut envelopes = EnvelopeWriter::new();
    let mut rng = XorShift::new(seed);
    let histogram = || Histogram::new_with_bounds(1, MAX_LATENCY_NANOS, 3);
    let probing = Rc::new(Probing {
        trackers: rooms
            .iter()
            .map(|room| RefCell::new(Tracker::new(room)))
            .collect(),
        windows: RefCell::new([histogram()?, histogram()?]),
        unstamped: Cell::new(0),
        failure: RefCell::new(None),
    });
    let connect_timeout = Duration::from_secs_f64(args.connect_timeout);
    for (index, room) in rooms.iter().enumerate() {
        let joining = async {
            let mut link =
                Link::open(target, Rc::clone(&inflater), XorShift::new(rng.next())).await?;
            link.send(envelopes.join(room, Some(JOIN_ACK), false));
            link.flush().await?;
            let ended = link
                .pump(|item, _| probing.take(index, item, shared))
                .await?;
            if ended == Ended::Closed {
                bail!("the server closed a probe's connection before its join's Ack");
            }
            Ok(link)
        };
        let mut link = monoio::time::timeout(connect_timeout, joining)
            .await
            .map_err(|_| anyhow!("a probe not joined within {connect_timeout:?}"))??;
        let (probing, reading) = (Rc::clone(&probing), Arc::clone(shared));
        monoio::spawn(async move {
            loop {
                let ended = link
                    .pump(|item, _| probing.take(index, item, &reading))
                    .await;
                let error = match ended {
                    Ok(Ended::Stopped) => continue,
                    Ok(Ended::Closed) => anyhow!("the server closed a probe's connection"),
                    Err(error) => error,
                };
                *probing.failure.borrow_mut() = Some(format!("{error:#}"));
                return;
            }
        });
        shared.ready.fetch_add(1, Ordering::AcqRel);
    }
    let drain = Duration::from_secs_f64(args.drain_timeout);
    let mut finals = None;
    while finals.is_none() {
        if shared.failed() || probing.failure.borrow().is_some() {
            break;
        }
        finals = shared.finals();
        monoio::time::sleep(POLL).await;
    }
    let storm_rooms = args.rooms as usize;
    if let Some(finals) = &finals {
        wait_for(shared, drain, || {
            probing.failure.borrow().is_some()
                || probing
                    .trackers
                    .iter()
                    .enumerate()
                    .all(|(index, tracker)| tracker.borrow().caught_up(finals[storm_rooms + index]))
        })
        .await;
    }
    let mut counts = Counts::default();
    for (index, tracker) in probing.trackers.iter().enumerate() {
        let tracker = tracker.borrow();
        counts.add(&match &finals {
            Some(finals) => tracker.finish(finals[storm_rooms + index]),
            None => tracker.counts(),
        });
    }
    let windows = probing.windows.borrow().clone();
    let failure = probing.failure.borrow().clone();
    Ok(Probed {
        windows,
        counts,
        unstamped: probing.unstamped.get(),
        failure,
    })
}
