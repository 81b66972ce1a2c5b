//! The storm clients' side of a run, on one thread's runtime: every
//! client connects and joins, its connection is cut with an RST, and it
//! reconnects after its delay and resumes its session; when each was
//! back, and what it received.

use std::cell::{Cell, RefCell};
use std::net::Ipv4Addr;
use std::os::fd::RawFd;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use shardcast_proto::deflate::Inflater;
use shardcast_proto::envelope::{self, Envelope, EnvelopeWriter, Position, ResumePoint};

use super::args::Args;
use super::link::{Ended, Flow, Link, Outbox};
use super::phase;
use super::shared::{Shared, wait_for};
use super::track::{JOIN_ACK, track};
use super::tracker::{Counts, Reconnect, Step, Tracker};
use crate::client::{Target, XorShift};
use crate::connections;
use crate::hops::parse_index;
use crate::proc_stat::{self, CpuSpent, CpuTimes};
use crate::storm::listen_overflows;

/// The acknowledgement id of a storm client's question to the server
/// about its shard.
const SHARD_ACK: u64 = 1;

/// The event of `shardcast serve` that answers the connection's shard.
const SHARD_EVENT: &str = "shardcast.shard";

/// How long a client waits after a failed reconnection before the next
/// attempt.
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// Makes an abortive close of `fd`: SO_LINGER 0, so closing it sends an
/// RST, then shuts its reading side, which ends the read its task awaits.
fn abort(fd: RawFd) -> std::io::Result<()> {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: `fd` is an open socket (its task closes it only after this
    // thread's controller returns to the runtime), and the value points to
    // a live linger of the length given.
    let set = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&raw const linger).cast(),
            size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    // SAFETY: as above; shutdown takes no pointers.
    if set != 0 || unsafe { libc::shutdown(fd, libc::SHUT_RD) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// One storm client.
pub(super) struct Member {
    /// Its room's index.
    room: usize,
    /// The address it connects from.
    source: Ipv4Addr,
    /// How long after the cut it reconnects.
    delay: Duration,
    /// Its socket while connected.
    fd: Cell<Option<RawFd>>,
    /// Whether its connection was cut.
    cut: Cell<bool>,
    /// Its session and its room's stream.
    tracker: RefCell<Tracker>,
    /// Since the cut, when its reconnection began.
    reconnect_at: Cell<Option<Duration>>,
    /// Since the cut, when its new connection was upgraded and its
    /// `Resume` written.
    upgraded_at: Cell<Option<Duration>>,
    /// Since the cut, when it was back.
    back_at: Cell<Option<Duration>>,
    /// Reconnections that failed and were tried again.
    retries: Cell<u64>,
    /// The shard serving its connection, before the cut and once back,
    /// as the server answered (`shardcast.shard`).
    shards: Cell<[Option<usize>; 2]>,
    /// Why it failed, if it did.
    failure: RefCell<Option<String>>,
}

/// What one storm client ended with.
#[derive(Clone, Debug)]
pub(super) struct MemberResult {
    /// Its counts, its room's end included.
    pub(super) counts: Counts,
    /// Offsets from its join to its room's end.
    pub(super) expected: u64,
    /// Since the cut, when its reconnection began.
    pub(super) reconnect_at: Option<Duration>,
    /// Since the cut, when its new connection was upgraded and its
    /// `Resume` written.
    pub(super) upgraded_at: Option<Duration>,
    /// Since the cut, when it was back.
    pub(super) back_at: Option<Duration>,
    /// Reconnections that failed and were tried again.
    pub(super) retries: u64,
    /// The shard serving its connection, before the cut and once back.
    pub(super) shards: [Option<usize>; 2],
    /// Why it failed, if it did.
    pub(super) failure: Option<String>,
}

/// The storm clients' side of a run, on its own thread's runtime.
pub(super) struct Storm {
    /// The command line.
    args: Args,
    /// The server.
    target: Target,
    /// What the threads share.
    shared: Arc<Shared>,
    /// Room names: the clients' rooms.
    rooms: Vec<String>,
    /// The clients.
    members: Vec<Member>,
    /// Shared by every connection of the thread.
    inflater: Rc<RefCell<Inflater>>,
    /// Builds the envelopes of every connection of the thread.
    envelopes: RefCell<EnvelopeWriter>,
    /// When the cut began.
    cut_at: Cell<Option<Instant>>,
    /// Clients back since the cut.
    back: Cell<usize>,
    /// Clients failed.
    failed: Cell<usize>,
    /// Messages the clients received during the storm phase.
    during_storm: Cell<u64>,
    /// The server's process, for its CPU time.
    server_pid: Option<u32>,
}

/// What the storm clients' thread measured.
pub(super) struct Timeline {
    /// The runtime's driver.
    pub(super) driver: &'static str,
    /// Seconds to connect and join every client.
    pub(super) connect_seconds: f64,
    /// Seconds the cut took to issue.
    pub(super) cut_seconds: f64,
    /// Seconds from the cut until the last client was back (or the storm
    /// timed out).
    pub(super) all_back_seconds: f64,
    /// Seconds of the baseline window.
    pub(super) baseline_seconds: f64,
    /// Messages the clients received during the storm phase.
    pub(super) during_storm: u64,
    /// The server's CPU time during the storm, when known.
    pub(super) server_cpu: Option<CpuSpent>,
    /// This process's CPU time during the storm (all three threads).
    pub(super) generator_cpu: Option<CpuSpent>,
    /// Listen queue overflows during the storm, machine-wide, when known.
    pub(super) listen_overflows: Option<u64>,
    /// Each client's result.
    pub(super) members: Vec<MemberResult>,
}

/// The storm clients of `rooms`: client i in room i mod R, from source
/// address i mod S, reconnecting after a uniform random delay within
/// `--jitter-ms` of the cut.
pub(super) fn members(
    args: &Args,
    rooms: &[String],
    sources: &[Ipv4Addr],
    rng: &mut XorShift,
) -> Vec<Member> {
    (0..args.clients as usize)
        .map(|index| {
            // Uniform in [0, jitter): 53 random bits as a fraction.
            let fraction = (rng.next() >> 11) as f64 / (1u64 << 53) as f64;
            Member {
                room: index % rooms.len(),
                source: sources[index % sources.len()],
                delay: Duration::from_secs_f64(args.jitter_ms * fraction / 1e3),
                fd: Cell::new(None),
                cut: Cell::new(false),
                tracker: RefCell::new(Tracker::new(&rooms[index % rooms.len()])),
                reconnect_at: Cell::new(None),
                upgraded_at: Cell::new(None),
                back_at: Cell::new(None),
                retries: Cell::new(0),
                shards: Cell::new([None; 2]),
                failure: RefCell::new(None),
            }
        })
        .collect()
}

impl Storm {
    /// The clients' side of a run against `target`, `members` in `rooms`;
    /// `server_pid` is the server's process, when the run started it.
    pub(super) fn new(
        args: Args,
        target: Target,
        shared: Arc<Shared>,
        rooms: Vec<String>,
        members: Vec<Member>,
        server_pid: Option<u32>,
    ) -> Rc<Storm> {
        Rc::new(Storm {
            args,
            target,
            shared,
            rooms,
            members,
            inflater: Rc::new(RefCell::new(Inflater::new())),
            envelopes: RefCell::new(EnvelopeWriter::new()),
            cut_at: Cell::new(None),
            back: Cell::new(0),
            failed: Cell::new(0),
            during_storm: Cell::new(0),
            server_pid,
        })
    }

    /// What `item` does to `member`: the answer to its question about its
    /// shard is kept; anything else goes to its tracker. A client back is
    /// timed and asks its new shard; one to join again sends its `Join`.
    fn handle(
        &self,
        member: &Member,
        item: Envelope<'_>,
        outbox: &mut Outbox<'_>,
    ) -> anyhow::Result<Flow> {
        if let Some(ack) = item.body_as_ack().filter(|ack| ack.id() == SHARD_ACK) {
            // A server without the event answers with an error: the
            // placement stays unknown.
            let shard = ack
                .error()
                .is_none()
                .then(|| parse_index(envelope::bytes(ack.payload())).ok())
                .flatten();
            let mut shards = member.shards.get();
            shards[usize::from(member.back_at.get().is_some())] = shard;
            member.shards.set(shards);
            return Ok(Flow::Continue);
        }
        let mut tracker = member.tracker.borrow_mut();
        let (step, message) = track(&mut tracker, item)?;
        if message.is_some() && self.shared.phase() == phase::STORM {
            self.during_storm.set(self.during_storm.get() + 1);
        }
        match step {
            Step::Nothing => {}
            Step::Joined => return Ok(Flow::Stop),
            Step::Back => {
                let since = self.cut_at.get().map(|at| at.elapsed());
                member.back_at.set(since);
                self.back.set(self.back.get() + 1);
                outbox.send(
                    self.envelopes
                        .borrow_mut()
                        .event(SHARD_EVENT, b"", Some(SHARD_ACK)),
                );
            }
            Step::Rejoin => {
                outbox.send(self.envelopes.borrow_mut().join(
                    tracker.room(),
                    Some(JOIN_ACK),
                    false,
                ));
            }
        }
        Ok(Flow::Continue)
    }

    /// Connects client `index`, joins its room and waits for the `Ack`.
    async fn open(&self, index: usize, seed: u64) -> anyhow::Result<Link> {
        let member = &self.members[index];
        let stream = connections::connect_from(&self.target, member.source).await?;
        let inflater = Rc::clone(&self.inflater);
        let mut link = Link::upgrade(stream, &self.target, inflater, XorShift::new(seed)).await?;
        link.send(self.envelopes.borrow_mut().join(
            &self.rooms[member.room],
            Some(JOIN_ACK),
            false,
        ));
        link.flush().await?;
        match link
            .pump(|item, outbox| self.handle(member, item, outbox))
            .await?
        {
            Ended::Stopped => {
                member.fd.set(Some(link.fd()));
                link.send(
                    self.envelopes
                        .borrow_mut()
                        .event(SHARD_EVENT, b"", Some(SHARD_ACK)),
                );
                link.flush().await?;
                Ok(link)
            }
            Ended::Closed => bail!("the server closed the connection before the join's Ack"),
        }
    }

    /// Client `index` from its join on: reads until its connection is
    /// cut, reconnects after its delay, resumes, and reads until the run
    /// is over; a failure is recorded.
    async fn live(self: Rc<Self>, index: usize, link: Link, seed: u64) {
        if let Err(error) = self.through_the_storm(index, link, seed).await {
            let member = &self.members[index];
            // Its connection is closed: the cut must not touch the
            // descriptor, which another socket may have taken.
            member.fd.set(None);
            *member.failure.borrow_mut() = Some(format!("{error:#}"));
            self.failed.set(self.failed.get() + 1);
        }
    }

    /// The body of [`Storm::live`].
    async fn through_the_storm(
        &self,
        index: usize,
        mut link: Link,
        seed: u64,
    ) -> anyhow::Result<()> {
        let member = &self.members[index];
        let ended = link
            .pump(|item, outbox| self.handle(member, item, outbox))
            .await?;
        if ended != Ended::Closed || !member.cut.get() {
            bail!("the server closed the connection before the cut");
        }
        member.fd.set(None);
        // The cut set SO_LINGER to 0: this close sends the RST.
        drop(link);
        member.tracker.borrow_mut().cut()?;
        let cut_at = self.cut_at.get().context("a cut without its time")?;
        let due = cut_at + member.delay;
        monoio::time::sleep(due.saturating_duration_since(Instant::now())).await;
        member.reconnect_at.set(Some(cut_at.elapsed()));
        let mut link = self.reconnect(member, cut_at, seed).await?;
        member.upgraded_at.set(Some(cut_at.elapsed()));
        loop {
            let ended = link
                .pump(|item, outbox| self.handle(member, item, outbox))
                .await?;
            if ended == Ended::Closed {
                bail!("the server closed the connection after the reconnection");
            }
        }
    }

    /// Connects `member` again, retrying until the storm times out, and
    /// sends its `Resume` (or its `Join`, without a session).
    async fn reconnect(&self, member: &Member, cut_at: Instant, seed: u64) -> anyhow::Result<Link> {
        let mut rng = XorShift::new(seed);
        let attempt_timeout = Duration::from_secs_f64(self.args.handshake_timeout);
        let deadline = cut_at + Duration::from_secs_f64(self.args.storm_timeout);
        let mut link = loop {
            let inflater = Rc::clone(&self.inflater);
            let link_rng = XorShift::new(rng.next());
            let attempt = monoio::time::timeout(attempt_timeout, async {
                let stream = connections::connect_from(&self.target, member.source).await?;
                Link::upgrade(stream, &self.target, inflater, link_rng).await
            })
            .await;
            let error = match attempt {
                Ok(Ok(link)) => break link,
                Ok(Err(error)) => error,
                Err(_) => anyhow!("not upgraded within {attempt_timeout:?}"),
            };
            member.retries.set(member.retries.get() + 1);
            if Instant::now() + RETRY_PAUSE >= deadline {
                return Err(error.context("reconnecting, until the storm timed out"));
            }
            monoio::time::sleep(RETRY_PAUSE).await;
        };
        let first = member.tracker.borrow_mut().reconnected()?;
        {
            let mut envelopes = self.envelopes.borrow_mut();
            let room = &self.rooms[member.room];
            link.send(match &first {
                Reconnect::Resume {
                    session_id,
                    token,
                    position,
                } => envelopes.resume(
                    session_id,
                    token,
                    &[ResumePoint {
                        room,
                        offset: position.offset(),
                        epoch: position.epoch(),
                    }],
                ),
                Reconnect::Join => envelopes.join(room, Some(JOIN_ACK), false),
            });
        }
        link.flush().await?;
        member.fd.set(Some(link.fd()));
        Ok(link)
    }

    /// Connects and joins every client, `--concurrency` at a time, each
    /// going on in a task of its own; returns how many failed.
    async fn open_all(self: &Rc<Self>, seed: u64) -> usize {
        let timeout = Duration::from_secs_f64(self.args.connect_timeout);
        let next = Rc::new(Cell::new(0));
        let mut rng = XorShift::new(seed);
        let workers: Vec<_> = (0..(self.args.concurrency as usize).min(self.members.len()))
            .map(|_| {
                let (storm, next) = (Rc::clone(self), Rc::clone(&next));
                let mut rng = XorShift::new(rng.next());
                monoio::spawn(async move {
                    let mut failed = 0;
                    loop {
                        let index = next.get();
                        if index >= storm.members.len() {
                            return failed;
                        }
                        next.set(index + 1);
                        let opened =
                            monoio::time::timeout(timeout, storm.open(index, rng.next())).await;
                        let error = match opened {
                            Ok(Ok(link)) => {
                                let seed = rng.next();
                                monoio::spawn(Rc::clone(&storm).live(index, link, seed));
                                continue;
                            }
                            Ok(Err(error)) => error,
                            Err(_) => anyhow!("not connected and joined within {timeout:?}"),
                        };
                        *storm.members[index].failure.borrow_mut() = Some(format!("{error:#}"));
                        failed += 1;
                    }
                })
            })
            .collect();
        let mut failed = 0;
        for worker in workers {
            failed += worker.await;
        }
        self.failed.set(self.failed.get() + failed);
        failed
    }

    /// Cuts every client's connection; returns when the cut began.
    fn cut_all(&self) -> anyhow::Result<Instant> {
        let at = Instant::now();
        self.cut_at.set(Some(at));
        for member in &self.members {
            if let Some(fd) = member.fd.get() {
                member.cut.set(true);
                abort(fd).context("cutting a connection")?;
            }
        }
        Ok(at)
    }

    /// Runs the clients' side: connects them, waits for the publishers
    /// and probes, moves through warm-up and baseline, cuts, waits until
    /// every client is back, lets the publishers settle and stop, and
    /// waits until every client has its room's whole stream.
    pub(super) async fn run(
        self: Rc<Self>,
        driver: &'static str,
        seed: u64,
    ) -> anyhow::Result<Timeline> {
        let args = &self.args;
        let shared = &self.shared;
        let start = Instant::now();
        let failed = self.open_all(seed).await;
        let connect_seconds = start.elapsed().as_secs_f64();
        let mut timeline = Timeline {
            driver,
            connect_seconds,
            cut_seconds: 0.0,
            all_back_seconds: 0.0,
            baseline_seconds: 0.0,
            during_storm: 0,
            server_cpu: None,
            generator_cpu: None,
            listen_overflows: None,
            members: Vec::new(),
        };
        let others = (args.publishers.min(args.rooms + args.probes) + args.probes) as usize;
        let timeout = Duration::from_secs_f64(args.connect_timeout);
        let ready = wait_for(shared, timeout, || {
            shared.ready.load(Ordering::Acquire) >= others
        })
        .await;
        if failed > 0 || !ready {
            timeline.members = self.results(None);
            return Ok(timeline);
        }
        shared.set(phase::WARMUP);
        monoio::time::sleep(Duration::from_secs_f64(args.warmup)).await;
        let baseline_start = Instant::now();
        shared.set(phase::BASELINE);
        monoio::time::sleep(Duration::from_secs_f64(args.baseline)).await;
        timeline.baseline_seconds = baseline_start.elapsed().as_secs_f64();

        let ticks = proc_stat::ticks_per_second();
        let server_before = self
            .server_pid
            .map(|pid| CpuTimes::read(Some(pid)))
            .transpose()?;
        let generator_before = CpuTimes::read(None)?;
        let overflows_before = listen_overflows();
        shared.set(phase::STORM);
        let cut_at = self.cut_all()?;
        timeline.cut_seconds = cut_at.elapsed().as_secs_f64();
        let clients = self.members.len();
        let storm_timeout = Duration::from_secs_f64(args.storm_timeout);
        wait_for(shared, storm_timeout, || {
            self.back.get() + self.failed.get() >= clients
        })
        .await;
        shared.set(phase::SETTLE);
        timeline.all_back_seconds = if self.back.get() == clients {
            self.members
                .iter()
                .filter_map(|member| member.back_at.get())
                .max()
                .unwrap_or_default()
                .as_secs_f64()
        } else {
            cut_at.elapsed().as_secs_f64()
        };
        timeline.during_storm = self.during_storm.get();
        timeline.server_cpu = match (self.server_pid, server_before) {
            (Some(pid), Some(before)) => Some(CpuTimes::read(Some(pid))?.since(&before, ticks)),
            _ => None,
        };
        timeline.generator_cpu = Some(CpuTimes::read(None)?.since(&generator_before, ticks));
        timeline.listen_overflows = listen_overflows()
            .zip(overflows_before)
            .map(|(after, before)| after.saturating_sub(before));
        monoio::time::sleep(Duration::from_secs_f64(args.settle)).await;
        shared.set(phase::STOP);

        let drain = Duration::from_secs_f64(args.drain_timeout);
        let mut finals = None;
        wait_for(shared, drain, || {
            finals = shared.finals();
            finals.is_some()
        })
        .await;
        if let Some(finals) = &finals {
            wait_for(shared, drain, || {
                self.members.iter().all(|member| {
                    member.failure.borrow().is_some()
                        || member.tracker.borrow().caught_up(finals[member.room])
                })
            })
            .await;
        }
        timeline.members = self.results(finals.as_deref());
        Ok(timeline)
    }

    /// Every client's result, its room's end counted when known.
    fn results(&self, finals: Option<&[Position]>) -> Vec<MemberResult> {
        self.members
            .iter()
            .map(|member| {
                let tracker = member.tracker.borrow();
                let last = finals.map(|finals| finals[member.room]);
                let counts = match last {
                    Some(last) => tracker.finish(last),
                    None => tracker.counts(),
                };
                let expected = match (last, tracker.joined_at()) {
                    (Some(last), Some(joined)) => last.offset().saturating_sub(joined.offset()),
                    _ => 0,
                };
                MemberResult {
                    counts,
                    expected,
                    reconnect_at: member.reconnect_at.get(),
                    upgraded_at: member.upgraded_at.get(),
                    back_at: member.back_at.get(),
                    retries: member.retries.get(),
                    shards: member.shards.get(),
                    failure: member.failure.borrow().clone(),
                }
            })
            .collect()
    }
}
