//! [`Protocol`]: the [`Handler`] that serves `shardcast.v1` connections:
//! envelopes in, rooms, routes and acknowledgements out.

use std::borrow::Cow;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use shardcast_proto::envelope::{self, Body, Envelope, EnvelopeWriter, ErrorCode, VerifyLimits};
use tracing::debug;

use super::layer::{MessageLayer, Request, Verdict};
use super::plugin::Plugin;
use super::router::{EventError, Reply, Router};
use super::sessions::{Handover, SessionTable, Take};
use super::{SUBPROTOCOL, Session};
use crate::conn::{Conn, JoinOptions, PublishOptions};
use crate::handler::{Handler, Message, Rejection};
use crate::middleware::{Millis, RateLimit, TokenBucket, UpgradeLayer, UpgradeLayers};
use crate::notice::{Notice, ShardConns};
use crate::prepared::PreparedMessage;
use crate::rooms::{Position, Recovery, RoomError};
use crate::{CloseCode, UpgradeRequest};

/// A hook run when a connection opens.
type OpenHook<S> = Box<dyn FnMut(&mut Conn<Session<S>>)>;
/// A hook run when a connection closes, with the close code and reason.
type CloseHook<S> = Box<dyn FnMut(&mut Conn<Session<S>>, CloseCode, &str)>;
/// The handler of connections that negotiated no subprotocol.
type RawHandler<S> = Box<dyn FnMut(&mut Conn<Session<S>>, Message<'_>)>;

/// The `shardcast.v1` server: a [`Handler`] that reads each connection's
/// envelopes and acts on them.
///
/// - `Join`, `Leave` and `Publish` work on the engine's rooms
///   ([`Conn::join`]); a join is acknowledged with the room's position
///   once it takes effect, a publish once the room's owner numbered the
///   message; members receive `Message` envelopes in offset order. A join
///   with `presence` set also receives `Presence` envelopes as members
///   arrive and leave; members are named by the user id their upgrade
///   layers found, else by their connection id.
/// - `Event`s go to the [`Router`]; the handler's [`Reply`] answers an
///   event that asked for an acknowledgement.
/// - Failures come back as a failed `Ack` when the request had an ack id,
///   as an `Error` envelope otherwise, with the `ErrorCode` that tells the
///   client what to do. An envelope that cannot be read closes the
///   connection (1007, or 1009 past the size limits).
/// - Before any of that: upgrade layers ([`UpgradeLayer`]) decide on the
///   upgrade and learn the client's identity; per request, the
///   connection's token bucket ([`Protocol::rate_limit`]) and then the
///   message layers ([`MessageLayer`]), in the order they were added.
///
/// Sessions: every connection starts with a `Welcome`; a client whose
/// link dropped resumes its session with `Resume` on a new connection
/// (see [the module](super) and [`Protocol::session_timeout`]). The
/// application's state `S` is part of the session: it is `Send`, as it
/// moves to the shard the client resumes on.
///
/// Connections that offer no subprotocol are refused (400), unless a raw
/// handler was given ([`Protocol::raw`]), which then receives their
/// messages. A server that serves this protocol lists
/// [`SUBPROTOCOL`] in
/// [`ServerBuilder::subprotocols`](crate::ServerBuilder::subprotocols).
///
/// ```no_run
/// use shardcast::Server;
/// use shardcast::v1::{Protocol, Router, SUBPROTOCOL};
///
/// let handle = Server::builder()
///     .listen("127.0.0.1:9000".parse().unwrap())
///     .subprotocols([SUBPROTOCOL])
///     .build(|_shard| {
///         let router = Router::new().on("echo", |_conn, payload| Ok(payload.to_vec()));
///         Protocol::<()>::new(router)
///     })
///     .start()
///     .unwrap();
/// # drop(handle);
/// ```
pub struct Protocol<S> {
    router: Router<S>,
    upgrade: UpgradeLayers,
    layers: Vec<Box<dyn MessageLayer<S>>>,
    rate: Option<RateLimit>,
    on_open: Vec<OpenHook<S>>,
    on_close: Vec<CloseHook<S>>,
    raw: Option<RawHandler<S>>,
    reveal_publisher: bool,
    limits: VerifyLimits,
    /// The sessions this shard keeps; `None` when sessions are off.
    pub(super) sessions: Option<SessionTable<S>>,
    /// The shard's envelope buffer, reused for every answer.
    pub(super) writer: EnvelopeWriter,
    /// The time buckets count from.
    epoch: Instant,
}

impl<S> fmt::Debug for Protocol<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Protocol")
            .field("router", &self.router)
            .field("upgrade_layers", &self.upgrade.len())
            .field("message_layers", &self.layers.len())
            .field("rate", &self.rate)
            .field("raw", &self.raw.is_some())
            .finish_non_exhaustive()
    }
}

impl<S: Default + Send + 'static> Protocol<S> {
    /// How long a session stays resumable after its connection closed,
    /// unless [`Protocol::session_timeout`] says otherwise.
    pub const DEFAULT_SESSION_TIMEOUT: Duration = Duration::from_secs(120);

    /// A protocol that routes events with `router`, with no middleware, no
    /// rate limit and no raw handler, and sessions that stay resumable for
    /// [`Protocol::DEFAULT_SESSION_TIMEOUT`].
    #[must_use]
    pub fn new(router: Router<S>) -> Protocol<S> {
        Protocol {
            router,
            upgrade: UpgradeLayers::new(),
            layers: Vec::new(),
            rate: None,
            on_open: Vec::new(),
            on_close: Vec::new(),
            raw: None,
            reveal_publisher: false,
            limits: VerifyLimits::default(),
            sessions: Some(SessionTable::new(Self::DEFAULT_SESSION_TIMEOUT)),
            writer: EnvelopeWriter::new(),
            epoch: Instant::now(),
        }
    }

    /// Adds an upgrade layer, run after those added before it.
    #[must_use]
    pub fn upgrade_layer(mut self, layer: impl UpgradeLayer) -> Protocol<S> {
        self.upgrade.push(layer);
        self
    }

    /// Adds a message layer, run after those added before it.
    #[must_use]
    pub fn message_layer(mut self, layer: impl MessageLayer<S>) -> Protocol<S> {
        self.layers.push(Box::new(layer));
        self
    }

    /// Limits each connection's requests (each envelope of a batch counts)
    /// with a token bucket; a request past it is refused with
    /// `RateLimited` before any message layer sees it. Default: no limit.
    #[must_use]
    pub fn rate_limit(mut self, limit: RateLimit) -> Protocol<S> {
        self.rate = Some(limit);
        self
    }

    /// Runs `hook` when a connection opens, after the hooks added before.
    #[must_use]
    pub fn on_open(mut self, hook: impl FnMut(&mut Conn<Session<S>>) + 'static) -> Protocol<S> {
        self.on_open.push(Box::new(hook));
        self
    }

    /// Runs `hook` when a connection closes, after the hooks added before.
    #[must_use]
    pub fn on_close(
        mut self,
        hook: impl FnMut(&mut Conn<Session<S>>, CloseCode, &str) + 'static,
    ) -> Protocol<S> {
        self.on_close.push(Box::new(hook));
        self
    }

    /// Accepts connections that offer no subprotocol and hands their
    /// messages to `handler`, instead of refusing them.
    #[must_use]
    pub fn raw(
        mut self,
        handler: impl FnMut(&mut Conn<Session<S>>, Message<'_>) + 'static,
    ) -> Protocol<S> {
        self.raw = Some(Box::new(handler));
        self
    }

    /// Whether room messages name their publisher (the user id its upgrade
    /// layers set) to the members. Default: off.
    #[must_use]
    pub fn reveal_publisher(mut self, reveal: bool) -> Protocol<S> {
        self.reveal_publisher = reveal;
        self
    }

    /// Limits on the envelopes clients send. Default:
    /// [`VerifyLimits::default`].
    #[must_use]
    pub fn envelope_limits(mut self, limits: VerifyLimits) -> Protocol<S> {
        self.limits = limits;
        self
    }

    /// How long a session (its rooms, user and application state `S`)
    /// stays resumable after its connection closed; `None` turns sessions
    /// off: no `Welcome`, and every `Resume` is refused. The room history
    /// ([`ServerBuilder::room_history`](crate::ServerBuilder::room_history))
    /// bounds what a resume can replay.
    #[must_use]
    pub fn session_timeout(mut self, timeout: Option<Duration>) -> Protocol<S> {
        self.sessions = timeout.map(SessionTable::new);
        self
    }

    /// Registers `plugin`: its routes, layers and hooks.
    #[must_use]
    pub fn plugin(mut self, plugin: impl Plugin<S>) -> Protocol<S> {
        let plugin: Box<dyn Plugin<S>> = Box::new(plugin);
        debug!(plugin = plugin.name(), "registering plugin");
        plugin.register(&mut self);
        self
    }

    /// The router.
    #[must_use]
    pub fn router(&self) -> &Router<S> {
        &self.router
    }

    /// The router, to add routes (from a plugin).
    pub fn router_mut(&mut self) -> &mut Router<S> {
        &mut self.router
    }

    /// Adds an upgrade layer by reference (from a plugin).
    pub fn add_upgrade_layer(&mut self, layer: impl UpgradeLayer) {
        self.upgrade.push(layer);
    }

    /// Adds a message layer by reference (from a plugin).
    pub fn add_message_layer(&mut self, layer: impl MessageLayer<S>) {
        self.layers.push(Box::new(layer));
    }

    /// Adds an open hook by reference (from a plugin).
    pub fn add_open_hook(&mut self, hook: impl FnMut(&mut Conn<Session<S>>) + 'static) {
        self.on_open.push(Box::new(hook));
    }

    /// Adds a close hook by reference (from a plugin).
    pub fn add_close_hook(
        &mut self,
        hook: impl FnMut(&mut Conn<Session<S>>, CloseCode, &str) + 'static,
    ) {
        self.on_close.push(Box::new(hook));
    }

    /// Acts on one envelope (or one item of a batch).
    fn handle(&mut self, conn: &mut Conn<Session<S>>, item: Envelope<'_>) {
        // Each request, its ack id, and its flag: a join's presence, a
        // publish's exclude_self.
        let (mut request, ack, flag) = match item.body_type() {
            Body::Join => {
                let Some(join) = item.body_as_join() else {
                    return;
                };
                let request = Request::Join { room: join.room() };
                (request, join.ack(), join.presence())
            }
            Body::Leave => {
                let Some(leave) = item.body_as_leave() else {
                    return;
                };
                (Request::Leave { room: leave.room() }, leave.ack(), false)
            }
            Body::Publish => {
                let Some(publish) = item.body_as_publish() else {
                    return;
                };
                let request = Request::Publish {
                    room: publish.room(),
                    payload: Cow::Borrowed(envelope::bytes(publish.payload())),
                };
                (request, publish.ack(), publish.exclude_self())
            }
            Body::Event => {
                let Some(event) = item.body_as_event() else {
                    return;
                };
                let request = Request::Event {
                    name: event.name(),
                    payload: Cow::Borrowed(envelope::bytes(event.payload())),
                };
                (request, event.ack(), false)
            }
            Body::Ack => {
                // The server asks clients nothing yet: an answer is late
                // or stray, and harmless.
                return;
            }
            Body::Resume => {
                if let Some(resume) = item.body_as_resume() {
                    self.resume(conn, resume);
                }
                return;
            }
            _ => {
                let error = EventError::bad_request(
                    "the server does not accept this envelope from clients",
                );
                self.answer(conn, None, None, Err(error));
                return;
            }
        };
        if conn.state().resuming.is_some() && request.room().is_some() {
            // Its rooms are being rejoined: a change now would race the
            // recovery the resumed `Welcome` reports.
            let room = request.room().map(str::to_owned);
            let error = EventError::bad_request(
                "the session is resuming: wait for its Welcome before room requests",
            );
            self.answer(conn, ack, room.as_deref(), Err(error));
            return;
        }
        if !self.check(conn, &mut request, ack) {
            return;
        }
        match request {
            Request::Join { room } => self.join(conn, room, flag, ack),
            Request::Publish { room, payload } => self.publish(conn, room, &payload, flag, ack),
            Request::Leave { room } => {
                // A join undone before it took effect is answered now,
                // without a position: it will hear no `on_joined`.
                for id in take_joins(conn.state_mut(), room) {
                    self.answer(conn, Some(id), Some(room), Ok(Vec::new()));
                }
                let outcome = if conn.leave(room) {
                    Ok(Vec::new())
                } else {
                    Err(EventError::new(
                        ErrorCode::NotJoined,
                        "the connection is not in this room",
                    ))
                };
                self.answer(conn, ack, Some(room), outcome);
            }
            Request::Event { name, payload } => {
                let reply = self
                    .router
                    .dispatch(name, conn, &payload)
                    .unwrap_or_else(|| {
                        Err(EventError::new(
                            ErrorCode::UnknownEvent,
                            "no handler for this event",
                        ))
                    });
                if ack.is_some() || reply.is_err() {
                    self.answer(conn, ack, None, reply);
                }
            }
        }
    }

    /// Runs the rate limit and the message layers; whether the request
    /// goes on.
    fn check(
        &mut self,
        conn: &mut Conn<Session<S>>,
        request: &mut Request<'_>,
        ack: Option<u64>,
    ) -> bool {
        if let Some(limit) = &self.rate {
            let now = Millis::since(self.epoch, Instant::now());
            let session = conn.state_mut();
            let bucket = session
                .bucket
                .get_or_insert_with(|| TokenBucket::full(limit, now));
            if !bucket.try_take(limit, now) {
                let room = request.room().map(str::to_owned);
                self.answer(
                    conn,
                    ack,
                    room.as_deref(),
                    Err(EventError::new(
                        ErrorCode::RateLimited,
                        "request rate limit exceeded",
                    )),
                );
                return false;
            }
        }
        for layer in &mut self.layers {
            match layer.check(conn, request) {
                Verdict::Pass => {}
                Verdict::Drop => return false,
                Verdict::Refuse(error) => {
                    let room = request.room().map(str::to_owned);
                    self.answer(conn, ack, room.as_deref(), Err(error));
                    return false;
                }
                Verdict::Close(code, reason) => {
                    let _ = conn.close(code, &reason);
                    return false;
                }
            }
        }
        true
    }

    fn join(&mut self, conn: &mut Conn<Session<S>>, room: &str, presence: bool, ack: Option<u64>) {
        let mut options = JoinOptions::default().presence(presence);
        options.member = conn.state().identity().user_id().cloned();
        match conn.join_with(room, &options) {
            Ok(true) => {
                if let Some(ack) = ack {
                    // Answered by `on_joined`, with the position.
                    conn.state_mut().joins.push((room.into(), ack));
                }
            }
            Ok(false) => self.answer(conn, ack, Some(room), Ok(Vec::new())),
            Err(RoomError::Closing) => {}
            Err(error) => {
                let error = EventError::bad_request(error.to_string());
                self.answer(conn, ack, Some(room), Err(error));
            }
        }
    }

    fn publish(
        &mut self,
        conn: &mut Conn<Session<S>>,
        room: &str,
        payload: &[u8],
        except_self: bool,
        ack: Option<u64>,
    ) {
        if !conn.is_member(room) {
            let error = EventError::new(
                ErrorCode::NotJoined,
                "publishing needs the room to be joined",
            );
            self.answer(conn, ack, Some(room), Err(error));
            return;
        }
        let options = PublishOptions {
            except_self,
            receipt: ack,
            publisher: self
                .reveal_publisher
                .then(|| conn.state().identity().user_id().cloned())
                .flatten(),
        };
        if let Err(error) = conn.publish_with(room, &PreparedMessage::binary(payload), &options) {
            let error = EventError::bad_request(error.to_string());
            self.answer(conn, ack, Some(room), Err(error));
        }
    }

    /// Sends the outcome of a request: an `Ack` when it had an ack id, an
    /// `Error` when it failed without one, nothing when it succeeded
    /// without one.
    pub(super) fn answer(
        &mut self,
        conn: &mut Conn<Session<S>>,
        ack: Option<u64>,
        room: Option<&str>,
        outcome: Reply,
    ) {
        let bytes = match (ack, &outcome) {
            (Some(id), Ok(payload)) => self.writer.ack_ok(id, payload),
            (Some(id), Err(error)) => self.writer.ack_error(id, error.code(), error.message()),
            (None, Err(error)) => self.writer.error(error.code(), error.message(), None, room),
            (None, Ok(_)) => return,
        };
        // A failed send has already closed the connection with the reason.
        let _ = conn.send_binary(bytes);
    }
}

impl<S: Default + Send + 'static> Handler for Protocol<S> {
    type State = Session<S>;

    fn on_upgrade(
        &mut self,
        request: &UpgradeRequest<'_>,
        peer: SocketAddr,
    ) -> Result<Session<S>, Rejection> {
        let offers_v1 = request.subprotocols().any(|offered| offered == SUBPROTOCOL);
        if !offers_v1 && self.raw.is_none() {
            return Err(Rejection::new(400, "Bad Request")
                .with_body(&b"this server speaks the shardcast.v1 subprotocol only"[..]));
        }
        let identity = self.upgrade.check(request, peer)?;
        Ok(Session::new(identity))
    }

    fn on_open(&mut self, conn: &mut Conn<Session<S>>) {
        if conn.speaks_v1() {
            self.start_session(conn);
        }
        for hook in &mut self.on_open {
            hook(conn);
        }
    }

    fn on_message(&mut self, conn: &mut Conn<Session<S>>, message: Message<'_>) {
        if !conn.speaks_v1() {
            match &mut self.raw {
                Some(raw) => raw(conn, message),
                None => {
                    let _ = conn.close(CloseCode::UNSUPPORTED_DATA, "shardcast.v1 only");
                }
            }
            return;
        }
        let Message::Binary(bytes) = message else {
            let _ = conn.close(
                CloseCode::UNSUPPORTED_DATA,
                "shardcast.v1 envelopes are binary messages",
            );
            return;
        };
        match envelope::read(bytes, &self.limits) {
            Ok(read) => {
                for item in envelope::items(read) {
                    if conn.is_closing() {
                        break;
                    }
                    self.handle(conn, item);
                }
            }
            Err(error) => {
                debug!(conn = %conn.id(), %error, "unreadable envelope; closing");
                let _ = conn.close(error.close_code(), &error.to_string());
            }
        }
    }

    fn on_joined(&mut self, conn: &mut Conn<Session<S>>, room: &str, position: Position) {
        for ack in take_joins(conn.state_mut(), room) {
            let bytes = self
                .writer
                .ack_position(ack, position.offset, position.epoch);
            let _ = conn.send_binary(bytes);
        }
    }

    fn on_published(
        &mut self,
        conn: &mut Conn<Session<S>>,
        _room: &str,
        tag: u64,
        position: Position,
    ) {
        let bytes = self
            .writer
            .ack_position(tag, position.offset, position.epoch);
        let _ = conn.send_binary(bytes);
    }

    fn on_recovered(&mut self, conn: &mut Conn<Session<S>>, room: &str, recovery: Recovery) {
        self.recovered(conn, room, recovery);
    }

    fn on_notice(&mut self, conns: &mut ShardConns<'_, Session<S>>, notice: Notice) {
        let notice = match notice.downcast::<Take>() {
            Ok(take) => return self.take(conns, *take),
            Err(notice) => notice,
        };
        match notice.downcast::<Handover<S>>() {
            Ok(handover) => self.hand_over(conns, *handover),
            Err(_) => debug!("a notice of a type shardcast.v1 does not know; dropped"),
        }
    }

    fn on_close(&mut self, conn: &mut Conn<Session<S>>, code: CloseCode, reason: &str) {
        for hook in &mut self.on_close {
            hook(conn, code, reason);
        }
        self.end_session(conn, code);
    }
}

/// Removes and returns the ack ids of the session's joins of `room` that
/// wait for their position.
fn take_joins<S>(session: &mut Session<S>, room: &str) -> Vec<u64> {
    let mut acks = Vec::new();
    session.joins.retain(|(joined, ack)| {
        let done = &**joined == room;
        if done {
            acks.push(*ack);
        }
        !done
    });
    acks
}

/// The room names a session's pending joins keep.
pub(super) type PendingJoin = (Arc<str>, u64);
