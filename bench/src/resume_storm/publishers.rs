//! The publishers: connections not cut, one for each room, publishing
//! stamped payloads at a fixed rate from the warm-up until the stop, then
//! learning each room's last position from their acknowledgements.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use shardcast_proto::deflate::Inflater;
use shardcast_proto::envelope::{Body, Envelope, EnvelopeWriter, Position};

use super::args::Args;
use super::link::{Ended, Flow, Link};
use super::phase;
use super::shared::{Shared, wait_for};
use super::stamp::write_stamp;
use crate::client::{Target, XorShift};
use crate::pacing;

/// A publish's acknowledgement id holds its room's index above these
/// bits, and its sequence number below.
const ROOM_SHIFT: u32 = 40;

/// What the publishers did.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Published {
    /// Messages published to the clients' rooms.
    pub(super) storm: u64,
    /// Messages published to the probes' rooms.
    pub(super) probes: u64,
    /// The latest any publish left after its intended time, nanoseconds.
    pub(super) max_lag_nanos: u64,
}

/// The publishers' acknowledgements, shared by their reading tasks.
#[derive(Default)]
struct Acks {
    /// Each room's last position acknowledged (its join's at first).
    last: RefCell<Vec<Option<Position>>>,
    /// Publishes acknowledged.
    acked: Cell<u64>,
    /// Why a publisher's connection failed, if one did.
    failure: RefCell<Option<String>>,
}

impl Acks {
    /// Takes an envelope a publisher received: an `Ack` of a join (id: the
    /// room) or of a publish (id: the room and a sequence number), with
    /// the room's position. Messages of other publishers' rooms do not
    /// come (each room has one publisher, publishing with `exclude_self`),
    /// nor anything else but the `Welcome`.
    fn take(&self, item: Envelope<'_>) -> anyhow::Result<()> {
        match item.body_type() {
            Body::Ack => {
                let ack = item.body_as_ack().context("an Ack without its body")?;
                if let Some(code) = ack.error() {
                    bail!(
                        "the server refused a publisher's request: {code:?}: {}",
                        ack.message().unwrap_or_default()
                    );
                }
                let position = *ack.position().context("an Ack without a position")?;
                let room = usize::try_from(ack.id() >> ROOM_SHIFT)?;
                let mut last = self.last.borrow_mut();
                let slot = last
                    .get_mut(room)
                    .with_context(|| format!("an Ack of unknown id {}", ack.id()))?;
                if slot.is_none_or(|seen| seen.offset() < position.offset()) {
                    *slot = Some(position);
                }
                self.acked.set(self.acked.get() + 1);
                Ok(())
            }
            Body::Welcome => Ok(()),
            Body::Error => {
                let error = item.body_as_error().context("an Error without its body")?;
                bail!(
                    "the server sent a publisher an error: {:?}: {}",
                    error.code(),
                    error.message().unwrap_or_default()
                )
            }
            other => bail!("unexpected {other:?} for a publisher"),
        }
    }
}

/// The publishers: connect, join each room (room j on publisher j mod P),
/// publish from the warm-up until the stop, the clients' rooms at
/// `--rate` and the probes' at `--probe-rate`, each publish with an
/// acknowledgement; then wait for every acknowledgement and hand the
/// rooms' last positions to the other threads.
pub(super) async fn publish(
    args: &Args,
    target: &Target,
    shared: &Shared,
    rooms: &[String],
    seed: u64,
) -> anyhow::Result<Published> {
    let storm_rooms = args.rooms as usize;
    let count = (args.publishers as usize).min(rooms.len());
    let inflater = Rc::new(RefCell::new(Inflater::new()));
    let mut envelopes = EnvelopeWriter::new();
    let mut rng = XorShift::new(seed);
    let acks = Rc::new(Acks {
        last: RefCell::new(vec![None; rooms.len()]),
        ..Acks::default()
    });
    let connect_timeout = Duration::from_secs_f64(args.connect_timeout);
    let write_timeout = Duration::from_secs_f64(args.drain_timeout);
    let mut writers = Vec::with_capacity(count);
    for publisher in 0..count {
        let own: Vec<usize> = (publisher..rooms.len()).step_by(count).collect();
        let joining = async {
            let mut link =
                Link::open(target, Rc::clone(&inflater), XorShift::new(rng.next())).await?;
            for &room in &own {
                let id = (room as u64) << ROOM_SHIFT;
                link.send(envelopes.join(&rooms[room], Some(id), false));
            }
            link.flush().await?;
            let acked = Cell::new(0);
            let ended = link
                .pump(|item, _| {
                    let before = acks.acked.get();
                    acks.take(item)?;
                    acked.set(acked.get() + acks.acked.get() - before);
                    Ok(if acked.get() == own.len() as u64 {
                        Flow::Stop
                    } else {
                        Flow::Continue
                    })
                })
                .await?;
            if ended == Ended::Closed {
                bail!("the server closed a publisher's connection before its joins' Acks");
            }
            Ok(link)
        };
        let link = monoio::time::timeout(connect_timeout, joining)
            .await
            .map_err(|_| anyhow!("a publisher not joined within {connect_timeout:?}"))??;
        let (reader, writer) = link.split();
        let acks = Rc::clone(&acks);
        monoio::spawn(async move {
            let error = reader
                .run(|item, _| acks.take(item).map(|()| Flow::Continue))
                .await;
            *acks.failure.borrow_mut() = Some(format!("{error:#}"));
        });
        writers.push(writer);
        shared.ready.fetch_add(1, Ordering::AcqRel);
    }
    // Joins were acknowledged too: only publishes count from here.
    acks.acked.set(0);
    while shared.phase() == phase::SETUP {
        if shared.failed() {
            return Ok(Published::default());
        }
        monoio::time::sleep(Duration::from_millis(1)).await;
    }
    let probe_rooms = rooms.len() - storm_rooms;
    let (storm_period, probe_period) = (1e9 / args.rate, 1e9 / args.probe_rate);
    let begin = shared.nanos();
    let mut payload = vec![b'.'; args.size];
    let mut published = Published::default();
    loop {
        let storm_due = begin + (published.storm as f64 * storm_period) as u64;
        let probe_due = begin + (published.probes as f64 * probe_period) as u64;
        let (due, room) = if storm_due <= probe_due {
            (storm_due, (published.storm % storm_rooms as u64) as usize)
        } else {
            let nth = (published.probes % probe_rooms as u64) as usize;
            (probe_due, storm_rooms + nth)
        };
        pacing::wait_until(due, || shared.nanos());
        let phase = shared.phase();
        if phase >= phase::STOP || shared.failed() {
            break;
        }
        if let Some(failure) = acks.failure.borrow().as_ref() {
            bail!("a publisher's connection failed: {failure}");
        }
        published.max_lag_nanos = published
            .max_lag_nanos
            .max(shared.nanos().saturating_sub(due));
        if room < storm_rooms {
            published.storm += 1;
        } else {
            published.probes += 1;
        }
        write_stamp(&mut payload, phase, due);
        let sequence = published.storm + published.probes;
        let id = ((room as u64) << ROOM_SHIFT) | sequence;
        let writer = &mut writers[room % count];
        writer.send(envelopes.publish(&rooms[room], &payload, true, Some(id)));
        monoio::time::timeout(write_timeout, writer.flush())
            .await
            .map_err(|_| anyhow!("a publish not written within {write_timeout:?}"))?
            .context("publishing")?;
    }
    let sent = published.storm + published.probes;
    let drained = wait_for(shared, Duration::from_secs_f64(args.drain_timeout), || {
        acks.acked.get() >= sent || acks.failure.borrow().is_some()
    })
    .await;
    if let Some(failure) = acks.failure.borrow().as_ref() {
        bail!("a publisher's connection failed: {failure}");
    }
    if !drained {
        bail!(
            "{} of {sent} publishes not acknowledged within --drain-timeout",
            sent.saturating_sub(acks.acked.get())
        );
    }
    let finals = acks
        .last
        .borrow()
        .iter()
        .map(|last| last.unwrap_or(Position::new(0, 0)))
        .collect();
    *shared
        .finals
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(finals);
    Ok(published)
}
