//! The task behind a client: it owns the connection, reconnects with
//! backoff, resumes the session, keeps the send buffer and the requests
//! waiting for their answers, checks every room message's position, and
//! reports all of it as events.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Duration;

use shardcast_proto::CloseCode;
use shardcast_proto::envelope::{
    self, Ack, Envelope, EnvelopeWriter, ErrorCode, PresenceKind, ResumePoint, VerifyLimits,
    Welcome,
};
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, sleep_until, timeout};
use tracing::{debug, error, info, warn};

use crate::batch::Batcher;
use crate::config::{Config, Heartbeat, Mode};
use crate::endpoint::Endpoint;
use crate::error::Error;
use crate::event::{DisconnectReason, Event, Presence, RoomMessage};
use crate::link::{Incoming, Link};
use crate::outbox::{Outbox, Slot};
use crate::outgoing::{self, Outgoing};
use crate::sequence::Position;
use crate::session::{Receipt, Recovery, Rooms, Session};

/// How long a closing client waits for the server's close frame.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// A handler of the server's named events: it gets the payload and
/// returns the answer (sent when the event asks for an acknowledgement).
pub(crate) type Handler = Arc<dyn Fn(&[u8]) -> Result<Vec<u8>, ErrorCode> + Send + Sync>;

/// Where the answer of a request goes.
pub(crate) type ReplySender = oneshot::Sender<Result<Answer, Error>>;

/// A successful acknowledgement.
#[derive(Debug)]
pub(crate) struct Answer {
    /// The answer's data.
    pub(crate) payload: Vec<u8>,
    /// The position it names (a join's or a publish's), if any.
    pub(crate) position: Option<Position>,
}

/// What the application sends.
#[derive(Debug)]
pub(crate) enum Payload {
    /// A `shardcast.v1` envelope.
    Envelope(Outgoing),
    /// A raw text message.
    Text(String),
    /// A raw binary message.
    Binary(Vec<u8>),
}

/// Who waits for the acknowledgement of an envelope.
#[derive(Debug)]
pub(crate) enum Reply {
    /// Nobody: the envelope asks for none.
    None,
    /// A caller, until `deadline`.
    Caller {
        sender: ReplySender,
        deadline: Instant,
    },
    /// The driver itself: the join of a room lost with its session, to
    /// report with `code` once answered.
    Rejoin { code: ErrorCode },
}

/// A message on its way to a connection, holding its place in the send
/// buffer until it is written (the driver's own envelopes hold none).
#[derive(Debug)]
pub(crate) struct Queued {
    pub(crate) payload: Payload,
    pub(crate) reply: Reply,
    pub(crate) _slot: Option<Slot>,
}

/// What a client handle asks of the driver.
pub(crate) enum Command {
    /// Send this, now or once connected.
    Send(Queued),
    /// Route the server's events named `.0` to `.1`.
    On(String, Handler),
    /// Close the connection and stop.
    Close,
}

/// A request written and waiting for its `Ack`.
#[derive(Debug)]
enum Pending {
    /// The application's; `join` names the room of a join.
    Caller {
        sender: ReplySender,
        join: Option<String>,
    },
    /// The driver's join of a room lost with its session.
    Rejoin { room: String, code: ErrorCode },
}

/// Where a `shardcast.v1` connection is in its start.
#[derive(Debug)]
enum Phase {
    /// Waiting for the server's first `Welcome`; `resuming` if a `Resume`
    /// was sent.
    Welcome { resuming: bool },
    /// Got the fresh `Welcome`, waiting for the answer to the `Resume`.
    Resume { fresh: Session },
    /// The session is ready: application messages flow.
    Ready,
}

/// The application closed the client.
#[derive(Debug)]
struct Stopped;

/// The state of one client, run by [`Driver::run`] on its own task.
pub(crate) struct Driver {
    config: Arc<Config>,
    endpoint: Endpoint,
    commands: mpsc::UnboundedReceiver<Command>,
    events: mpsc::UnboundedSender<Event>,
    outbox: Outbox,
    handlers: HashMap<String, Handler>,
    /// What waits for a ready connection, in order.
    queue: VecDeque<Queued>,
    batcher: Option<Batcher<(Outgoing, Reply)>>,
    session: Option<Session>,
    rooms: Rooms,
    pending: HashMap<u64, Pending>,
    deadlines: BTreeSet<(Instant, u64)>,
    next_ack: u64,
    writer: EnvelopeWriter,
    limits: VerifyLimits,
    rng: fastrand::Rng,
}

impl Driver {
    /// A driver for `config`, taking commands from `commands`, reporting
    /// to `events`.
    pub(crate) fn new(
        config: Config,
        endpoint: Endpoint,
        commands: mpsc::UnboundedReceiver<Command>,
        events: mpsc::UnboundedSender<Event>,
        outbox: Outbox,
        seed: u64,
    ) -> Driver {
        let limits = VerifyLimits {
            max_bytes: config.max_message_size,
            ..VerifyLimits::DEFAULT
        };
        Driver {
            batcher: config.batching.map(Batcher::new),
            config: Arc::new(config),
            endpoint,
            commands,
            events,
            outbox,
            handlers: HashMap::new(),
            queue: VecDeque::new(),
            session: None,
            rooms: Rooms::default(),
            pending: HashMap::new(),
            deadlines: BTreeSet::new(),
            next_ack: 1,
            writer: EnvelopeWriter::new(),
            limits,
            rng: fastrand::Rng::with_seed(seed),
        }
    }

    /// Connects, serves, reconnects, until the application closes the
    /// client or the backoff gives up.
    pub(crate) async fn run(mut self) {
        let mut attempts = 0_u32;
        let mut retry = 0_u32;
        let mut first = true;
        loop {
            attempts = attempts.saturating_add(1);
            if !self.config.backoff.allows(attempts) {
                info!(attempts = attempts - 1, "giving up reconnecting");
                self.emit(Event::GaveUp {
                    attempts: attempts - 1,
                });
                break;
            }
            if !first {
                retry = retry.saturating_add(1);
                let wait = self.config.backoff.delay(retry, &mut self.rng);
                debug!(?wait, retry, "waiting before reconnecting");
                if self.hold_until(Instant::now() + wait).await.is_err() {
                    break;
                }
            }
            first = false;
            self.forget_abandoned();
            self.emit(Event::Connecting { attempt: attempts });
            let deadline = Instant::now() + self.config.connect_timeout;
            let link = match self.open(deadline).await {
                Ok(Ok(link)) => link,
                Ok(Err(error)) => {
                    debug!(%error, attempt = attempts, "connection attempt failed");
                    self.emit(Event::Disconnected {
                        reason: DisconnectReason::Failed(error),
                    });
                    continue;
                }
                Err(Stopped) => break,
            };
            let (reason, established) = self.serve(link, deadline).await;
            if established {
                attempts = 0;
                retry = 0;
            }
            self.connection_lost();
            let closed = matches!(reason, DisconnectReason::Closed);
            info!(?reason, "disconnected");
            self.emit(Event::Disconnected { reason });
            if closed {
                break;
            }
        }
        self.shut_down();
    }

    fn emit(&self, event: Event) {
        // Nobody reads events any more: the application dropped them.
        let _ = self.events.send(event);
    }

    /// Takes a command while no connection is ready.
    fn hold(&mut self, command: Option<Command>) -> Result<(), Stopped> {
        match command {
            None | Some(Command::Close) => Err(Stopped),
            Some(Command::Send(queued)) => {
                self.queue.push_back(queued);
                Ok(())
            }
            Some(Command::On(name, handler)) => {
                self.handlers.insert(name, handler);
                Ok(())
            }
        }
    }

    /// Drops the held requests whose caller stopped waiting (timed out or
    /// cancelled), freeing their places in the send buffer.
    fn forget_abandoned(&mut self) {
        self.queue.retain(|queued| match &queued.reply {
            Reply::Caller { sender, .. } => !sender.is_closed(),
            Reply::None | Reply::Rejoin { .. } => true,
        });
    }

    /// Waits until `deadline`, holding commands meanwhile.
    async fn hold_until(&mut self, deadline: Instant) -> Result<(), Stopped> {
        loop {
            tokio::select! {
                () = sleep_until(deadline) => return Ok(()),
                command = self.commands.recv() => self.hold(command)?,
            }
        }
    }

    /// Connects and upgrades before `deadline`, holding commands meanwhile.
    async fn open(&mut self, deadline: Instant) -> Result<Result<Link, Error>, Stopped> {
        let endpoint = self.endpoint.clone();
        let config = Arc::clone(&self.config);
        let open = async move { Link::open(&endpoint, &config).await };
        tokio::pin!(open);
        loop {
            tokio::select! {
                link = &mut open => return Ok(link),
                () = sleep_until(deadline) => return Ok(Err(Error::Timeout)),
                command = self.commands.recv() => self.hold(command)?,
            }
        }
    }

    /// Serves one upgraded connection until it ends; returns why, and
    /// whether its session became ready.
    async fn serve(
        &mut self,
        mut link: Link,
        connect_deadline: Instant,
    ) -> (DisconnectReason, bool) {
        let mut phase = match self.config.mode {
            Mode::Raw => Phase::Ready,
            Mode::V1 => Phase::Welcome {
                resuming: self.session.is_some(),
            },
        };
        match (&phase, self.session.clone()) {
            (Phase::Ready, _) => self.ready(
                &mut link,
                Event::Connected { session_id: None },
                Recovery::default(),
                ErrorCode::RecoveryFailed,
            ),
            (Phase::Welcome { .. }, Some(session)) => {
                let points = self.rooms.resume_points();
                let points: Vec<ResumePoint<'_>> = points
                    .iter()
                    .map(|(room, position)| ResumePoint {
                        room,
                        offset: position.offset,
                        epoch: position.epoch,
                    })
                    .collect();
                debug!(session = %session.id, rooms = points.len(), "resuming");
                link.queue_binary(self.writer.resume(&session.id, &session.token, &points));
            }
            _ => {}
        }
        // The server may have sent frames in the same read as its 101.
        if let Err(reason) = self.take_input(&mut link, &mut phase) {
            let _ = link.flush(CLOSE_GRACE).await;
            return (reason, matches!(phase, Phase::Ready));
        }
        let mut last_heard = Instant::now();
        let mut next_ping = self
            .config
            .heartbeat
            .ping_interval
            .map(|every| last_heard + every);
        loop {
            let ready = matches!(phase, Phase::Ready);
            let silence = if ready { self.silence_bound() } else { None };
            let write_bound = silence.unwrap_or(self.config.connect_timeout);
            if let Err(error) = link.flush(write_bound).await {
                return (DisconnectReason::Failed(error), ready);
            }
            let timer = [
                (!ready).then_some(connect_deadline),
                silence.map(|bound| last_heard + bound),
                next_ping,
                self.batcher.as_ref().and_then(Batcher::deadline),
                self.deadlines.first().map(|(at, _)| *at),
            ]
            .into_iter()
            .flatten()
            .min();
            tokio::select! {
                read = link.fill() => {
                    match read {
                        Ok(0) => return (DisconnectReason::Eof, ready),
                        Err(error) => return (DisconnectReason::Failed(error.into()), ready),
                        Ok(_) => last_heard = Instant::now(),
                    }
                    if let Err(reason) = self.take_input(&mut link, &mut phase) {
                        // Best effort: the close frame or answer queued.
                        let _ = link.flush(CLOSE_GRACE).await;
                        return (reason, matches!(phase, Phase::Ready));
                    }
                }
                command = self.commands.recv() => match command {
                    None | Some(Command::Close) => {
                        self.close_gracefully(&mut link).await;
                        return (DisconnectReason::Closed, ready);
                    }
                    Some(Command::Send(queued)) => self.submit(queued, &mut link, &phase),
                    Some(Command::On(name, handler)) => {
                        self.handlers.insert(name, handler);
                    }
                },
                () = sleep_until(timer.unwrap_or_else(far_future)), if timer.is_some() => {
                    let now = Instant::now();
                    if !ready && now >= connect_deadline {
                        return (DisconnectReason::Failed(Error::Timeout), false);
                    }
                    if let Some(bound) = silence {
                        if now >= last_heard + bound {
                            warn!(?bound, "nothing heard from the server: reconnecting");
                            return (DisconnectReason::Silent(bound), true);
                        }
                    }
                    if let (Some(at), Some(every)) = (next_ping, self.config.heartbeat.ping_interval) {
                        if now >= at {
                            link.queue_ping();
                            next_ping = Some(now + every);
                        }
                    }
                    if self.batcher.as_ref().and_then(Batcher::deadline).is_some_and(|at| now >= at) {
                        self.flush_batch(&mut link);
                    }
                    self.expire(now);
                }
            }
        }
    }

    /// The silence bound of the current session (or of raw mode).
    fn silence_bound(&self) -> Option<Duration> {
        let interval = match self.config.mode {
            Mode::Raw => Some(Heartbeat::SERVER_DEFAULT_INTERVAL),
            Mode::V1 => self.session.as_ref().and_then(|session| session.heartbeat),
        };
        self.config.heartbeat.silence_bound(interval)
    }

    /// Handles every whole message read so far.
    fn take_input(&mut self, link: &mut Link, phase: &mut Phase) -> Result<(), DisconnectReason> {
        loop {
            match link.next_incoming() {
                Ok(None) => return Ok(()),
                Ok(Some(incoming)) => self.on_incoming(incoming, link, phase)?,
                Err(error) => {
                    warn!(%error, "the server broke the WebSocket protocol");
                    link.queue_close(error.close_code(), "");
                    return Err(DisconnectReason::Failed(error.into()));
                }
            }
        }
    }

    fn on_incoming(
        &mut self,
        incoming: Incoming,
        link: &mut Link,
        phase: &mut Phase,
    ) -> Result<(), DisconnectReason> {
        match incoming {
            Incoming::Ping(payload) => link.queue_pong(&payload),
            Incoming::Pong => {}
            Incoming::Close(code, reason) => {
                link.queue_close(code, "");
                return Err(DisconnectReason::ServerClosed { code, reason });
            }
            Incoming::Text(text) => match self.config.mode {
                Mode::Raw => self.emit(Event::Text(text)),
                Mode::V1 => warn!("text message on a shardcast.v1 connection ignored"),
            },
            Incoming::Binary(bytes) => match self.config.mode {
                Mode::Raw => self.emit(Event::Binary(bytes)),
                Mode::V1 => {
                    let envelope = match envelope::read(&bytes, &self.limits) {
                        Ok(envelope) => envelope,
                        Err(error) => {
                            warn!(%error, "unreadable envelope from the server");
                            link.queue_close(error.close_code(), "");
                            return Err(DisconnectReason::Failed(error.into()));
                        }
                    };
                    for item in envelope::items(envelope) {
                        self.on_envelope(item, link, phase)?;
                    }
                }
            },
        }
        Ok(())
    }

    fn on_envelope(
        &mut self,
        item: Envelope<'_>,
        link: &mut Link,
        phase: &mut Phase,
    ) -> Result<(), DisconnectReason> {
        if let Some(welcome) = item.body_as_welcome() {
            return self.on_welcome(welcome, link, phase);
        }
        if let Some(ack) = item.body_as_ack() {
            self.on_ack(ack);
        } else if let Some(message) = item.body_as_message() {
            let room = message.room();
            let position = Position::from(message.position());
            let deliver = match self.rooms.receive(room, position) {
                Receipt::Deliver => true,
                Receipt::GapThenDeliver { last } => {
                    warn!(room, %last, got = %position, "messages missing in a room");
                    self.emit(Event::Gap {
                        room: room.to_owned(),
                        last,
                        got: position,
                    });
                    true
                }
                Receipt::Duplicate => {
                    debug!(room, %position, "duplicate message dropped");
                    false
                }
                Receipt::NotJoined => {
                    debug!(room, %position, "message of a room not joined dropped");
                    false
                }
            };
            if deliver {
                self.emit(Event::Message(RoomMessage {
                    room: room.to_owned(),
                    position,
                    payload: envelope::bytes(message.payload()).to_vec(),
                    publisher: message.publisher().map(str::to_owned),
                }));
            }
        } else if let Some(event) = item.body_as_event() {
            let name = event.name();
            let answer = match self.handlers.get(name) {
                Some(handler) => {
                    let payload = envelope::bytes(event.payload());
                    // A handler's panic must not take the connection down.
                    panic::catch_unwind(AssertUnwindSafe(|| handler(payload))).unwrap_or_else(
                        |_| {
                            error!(name, "the handler of the server's event panicked");
                            Err(ErrorCode::Internal)
                        },
                    )
                }
                None => {
                    warn!(name, "no handler for the server's event");
                    Err(ErrorCode::UnknownEvent)
                }
            };
            if let Some(id) = event.ack() {
                let ack = Outgoing::Ack { id, answer };
                self.submit(
                    Queued {
                        payload: Payload::Envelope(ack),
                        reply: Reply::None,
                        _slot: None,
                    },
                    link,
                    phase,
                );
            }
        } else if let Some(presence) = item.body_as_presence() {
            self.emit(Event::Presence(Presence {
                room: presence.room().to_owned(),
                member: presence.member().to_owned(),
                joined: presence.kind() == PresenceKind::Joined,
                count: presence.count(),
            }));
        } else if let Some(error) = item.body_as_error() {
            let code = error.code();
            let message = error.message().unwrap_or_default();
            if matches!(phase, Phase::Resume { .. }) && error.ack().is_none() {
                let Phase::Resume { fresh } = std::mem::replace(phase, Phase::Ready) else {
                    unreachable!("matched just above");
                };
                info!(
                    ?code,
                    message, "the session could not be resumed: rejoining"
                );
                let recovery = Recovery {
                    rejoin: self.rooms.all(),
                    ..Recovery::default()
                };
                let session_id = Some(fresh.id.clone());
                self.session = Some(fresh);
                self.ready(link, Event::Connected { session_id }, recovery, code);
            } else if let Some(pending) = error.ack().and_then(|id| self.pending.remove(&id)) {
                self.answer(pending, Err((code, message.to_owned())), None);
            } else {
                warn!(?code, message, room = error.room(), "error from the server");
                self.emit(Event::ServerError {
                    code,
                    message: message.to_owned(),
                    room: error.room().map(str::to_owned),
                });
            }
        } else {
            debug!(body = ?item.body_type(), "envelope a client does not expect ignored");
        }
        Ok(())
    }

    fn on_welcome(
        &mut self,
        welcome: Welcome<'_>,
        link: &mut Link,
        phase: &mut Phase,
    ) -> Result<(), DisconnectReason> {
        let session = Session::new(
            welcome.session_id(),
            envelope::bytes(welcome.resume_token()),
            welcome.heartbeat_ms(),
        );
        match (std::mem::replace(phase, Phase::Ready), welcome.resumed()) {
            (Phase::Welcome { resuming: false }, false) => {
                info!(session = %session.id, "connected with a new session");
                let session_id = Some(session.id.clone());
                self.session = Some(session);
                self.ready(
                    link,
                    Event::Connected { session_id },
                    Recovery::default(),
                    ErrorCode::RecoveryFailed,
                );
                Ok(())
            }
            (Phase::Welcome { resuming: true }, false) => {
                *phase = Phase::Resume { fresh: session };
                Ok(())
            }
            (Phase::Resume { .. }, true) => {
                let report = welcome.rooms().into_iter().flatten().map(|recovery| {
                    (
                        recovery.room(),
                        recovery.error(),
                        Position::from(recovery.position()),
                    )
                });
                let recovery = self.rooms.recover(report);
                info!(
                    session = %session.id,
                    lost = recovery.lost.len(),
                    rejoin = recovery.rejoin.len(),
                    "session resumed"
                );
                let session_id = session.id.clone();
                self.session = Some(session);
                self.ready(
                    link,
                    Event::Resumed { session_id },
                    recovery,
                    ErrorCode::RecoveryFailed,
                );
                Ok(())
            }
            (_, resumed) => {
                warn!(resumed, "Welcome out of place");
                link.queue_close(CloseCode::PROTOCOL_ERROR, "Welcome out of place");
                Err(DisconnectReason::Failed(Error::Session(
                    "a Welcome out of place",
                )))
            }
        }
    }

    /// The session is ready: reports `event` and the rooms whose messages
    /// were lost, leaves and rejoins what `recovery` says (reporting the
    /// rejoined rooms with `code` once answered), then sends what waited.
    fn ready(&mut self, link: &mut Link, event: Event, recovery: Recovery, code: ErrorCode) {
        self.emit(event);
        for (room, code, position) in recovery.lost {
            warn!(room, ?code, %position, "messages of a room lost across the reconnection");
            self.emit(Event::RecoveryFailed {
                room,
                code,
                position: Some(position),
            });
        }
        for room in recovery.leave {
            self.send(
                Queued {
                    payload: Payload::Envelope(Outgoing::Leave { room, ack: None }),
                    reply: Reply::None,
                    _slot: None,
                },
                link,
            );
        }
        for (room, presence) in recovery.rejoin {
            self.send(
                Queued {
                    payload: Payload::Envelope(Outgoing::Join {
                        room,
                        presence,
                        ack: None,
                    }),
                    reply: Reply::Rejoin { code },
                    _slot: None,
                },
                link,
            );
        }
        while let Some(queued) = self.queue.pop_front() {
            self.send(queued, link);
        }
    }

    /// Sends `queued` if the session is ready, else keeps it for then.
    fn submit(&mut self, queued: Queued, link: &mut Link, phase: &Phase) {
        if matches!(phase, Phase::Ready) {
            self.send(queued, link);
        } else {
            self.queue.push_back(queued);
        }
    }

    /// Writes `queued` to the link's buffer (or the batch), unless its
    /// caller gave up waiting.
    fn send(&mut self, queued: Queued, link: &mut Link) {
        if let Reply::Caller { sender, .. } = &queued.reply {
            if sender.is_closed() {
                debug!("a request whose caller gave up is not sent");
                return;
            }
        }
        match queued.payload {
            Payload::Text(text) => link.queue_text(&text),
            Payload::Binary(bytes) => link.queue_binary(&bytes),
            Payload::Envelope(outgoing) => {
                let full = match &mut self.batcher {
                    Some(batcher) => batcher.push((outgoing, queued.reply), Instant::now()),
                    None => {
                        let outgoing = self.prepare(outgoing, queued.reply);
                        link.queue_binary(outgoing.write(&mut self.writer));
                        false
                    }
                };
                if full {
                    self.flush_batch(link);
                }
            }
        }
    }

    /// Writes the gathered batch, if any.
    fn flush_batch(&mut self, link: &mut Link) {
        let Some(batcher) = &mut self.batcher else {
            return;
        };
        if batcher.is_empty() {
            return;
        }
        let items: Vec<Outgoing> = batcher
            .take()
            .into_iter()
            .map(|(outgoing, reply)| self.prepare(outgoing, reply))
            .collect();
        link.queue_binary(outgoing::write_all(items.iter(), &mut self.writer));
    }

    /// Makes `outgoing` ready to be written: gives it an ack id and
    /// registers who waits for the answer, and records the rooms it joins
    /// or leaves.
    fn prepare(&mut self, mut outgoing: Outgoing, reply: Reply) -> Outgoing {
        let pending = match (reply, &outgoing) {
            (Reply::None, _) => None,
            (Reply::Caller { sender, deadline }, Outgoing::Join { room, .. }) => Some((
                Pending::Caller {
                    sender,
                    join: Some(room.clone()),
                },
                deadline,
            )),
            (Reply::Caller { sender, deadline }, _) => {
                Some((Pending::Caller { sender, join: None }, deadline))
            }
            (Reply::Rejoin { code }, Outgoing::Join { room, .. }) => Some((
                Pending::Rejoin {
                    room: room.clone(),
                    code,
                },
                Instant::now() + self.config.request_timeout,
            )),
            (Reply::Rejoin { .. }, _) => None,
        };
        match &outgoing {
            Outgoing::Join { room, presence, .. } => self.rooms.joining(room, *presence),
            Outgoing::Leave { room, .. } => self.rooms.remove(room),
            _ => {}
        }
        if let (Some((pending, deadline)), Some(ack)) = (pending, outgoing.ack_mut()) {
            let id = self.next_ack;
            self.next_ack += 1;
            *ack = Some(id);
            self.pending.insert(id, pending);
            self.deadlines.insert((deadline, id));
        }
        outgoing
    }

    fn on_ack(&mut self, ack: Ack<'_>) {
        let Some(pending) = self.pending.remove(&ack.id()) else {
            debug!(
                id = ack.id(),
                "acknowledgement of a request no longer waited for"
            );
            return;
        };
        let position = ack.position().map(Position::from);
        let result = match ack.error() {
            Some(code) => Err((code, ack.message().unwrap_or_default().to_owned())),
            None => Ok(envelope::bytes(ack.payload()).to_vec()),
        };
        self.answer(pending, result, position);
    }

    /// Delivers the answer to a request: a payload, or the server's code
    /// and message.
    fn answer(
        &mut self,
        pending: Pending,
        result: Result<Vec<u8>, (ErrorCode, String)>,
        position: Option<Position>,
    ) {
        match pending {
            Pending::Caller { sender, join } => {
                if let Some(room) = join {
                    match result {
                        Ok(_) => self.rooms.joined(&room, position),
                        Err(_) => self.rooms.join_failed(&room),
                    }
                }
                let _ = sender.send(
                    result
                        .map(|payload| Answer { payload, position })
                        .map_err(|(code, message)| Error::Refused { code, message }),
                );
            }
            Pending::Rejoin { room, code } => {
                let position = match result {
                    Ok(_) => {
                        self.rooms.rejoined(&room, position);
                        position
                    }
                    Err((refusal, message)) => {
                        warn!(room, ?refusal, message, "a room could not be joined again");
                        self.rooms.remove(&room);
                        None
                    }
                };
                self.emit(Event::RecoveryFailed {
                    room,
                    code,
                    position,
                });
            }
        }
    }

    /// Fails the requests whose deadline passed.
    fn expire(&mut self, now: Instant) {
        while let Some(&(at, id)) = self.deadlines.first() {
            if at > now {
                break;
            }
            self.deadlines.pop_first();
            match self.pending.remove(&id) {
                Some(Pending::Caller { sender, join }) => {
                    if let Some(room) = join {
                        self.rooms.join_failed(&room);
                    }
                    let _ = sender.send(Err(Error::Timeout));
                }
                Some(Pending::Rejoin { room, code }) => {
                    warn!(room, "no answer to joining a room again");
                    self.rooms.remove(&room);
                    self.emit(Event::RecoveryFailed {
                        room,
                        code,
                        position: None,
                    });
                }
                None => {}
            }
        }
    }

    /// The connection is gone: requests written on it will get no answer,
    /// and what was gathered for a batch but not written waits for the next
    /// connection, ahead of what came later.
    fn connection_lost(&mut self) {
        for (_, pending) in self.pending.drain() {
            match pending {
                Pending::Caller { sender, join } => {
                    if let Some(room) = join {
                        self.rooms.join_failed(&room);
                    }
                    let _ = sender.send(Err(Error::Disconnected));
                }
                Pending::Rejoin { .. } => {}
            }
        }
        self.deadlines.clear();
        if let Some(batcher) = &mut self.batcher {
            for (outgoing, reply) in batcher.take().into_iter().rev() {
                self.queue.push_front(Queued {
                    payload: Payload::Envelope(outgoing),
                    reply,
                    _slot: None,
                });
            }
        }
    }

    /// Sends what is gathered, a close frame, and waits a little for the
    /// server's.
    async fn close_gracefully(&mut self, link: &mut Link) {
        self.flush_batch(link);
        link.queue_close(CloseCode::NORMAL, "");
        if link.flush(CLOSE_GRACE).await.is_err() {
            return;
        }
        let _ = timeout(CLOSE_GRACE, async {
            while let Ok(read) = link.fill().await {
                if read == 0 {
                    return;
                }
                while let Ok(Some(incoming)) = link.next_incoming() {
                    if matches!(incoming, Incoming::Close(..)) {
                        return;
                    }
                }
            }
        })
        .await;
    }

    /// The client is done: everything still waiting fails with
    /// [`Error::Closed`], and later sends are refused.
    fn shut_down(&mut self) {
        self.outbox.close();
        self.commands.close();
        while let Ok(command) = self.commands.try_recv() {
            if let Command::Send(queued) = command {
                self.queue.push_back(queued);
            }
        }
        for queued in self.queue.drain(..) {
            if let Reply::Caller { sender, .. } = queued.reply {
                let _ = sender.send(Err(Error::Closed));
            }
        }
    }
}

/// A time no timer reaches.
fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86_400 * 365)
}
