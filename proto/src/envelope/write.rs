//! Writing envelopes into one reused buffer.

use flatbuffers::{FlatBufferBuilder, UnionWIPOffset, WIPOffset};

use super::shardcast_generated::shardcast::v_1::{
    AckArgs, BatchArgs, EnvelopeArgs, ErrorArgs, EventArgs, JoinArgs, LeaveArgs, MessageArgs,
    PresenceArgs, PublishArgs, ResumeArgs, RoomRecoveryArgs, RoomResumeArgs, WelcomeArgs,
};
use super::{
    Ack, Batch, Body, ENVELOPE_IDENTIFIER, Envelope, Error, ErrorCode, Event, Join, Leave, Message,
    Position, Presence, PresenceKind, Publish, Resume, RoomRecovery, RoomResume, Welcome,
};

/// Recovery result of one room, for [`EnvelopeWriter::welcome`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecoveryReport<'a> {
    /// The room.
    pub room: &'a str,
    /// The room's current offset (after the recovered messages, if any).
    pub offset: u64,
    /// The room's current epoch.
    pub epoch: u64,
    /// `None` if every missed message is recovered (they follow the
    /// `Welcome`); otherwise why not (`GapTooLarge`, `EpochChanged`, ...).
    pub error: Option<ErrorCode>,
}

/// The last position a client saw in one room, for [`EnvelopeWriter::resume`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResumePoint<'a> {
    /// The room.
    pub room: &'a str,
    /// Offset of the last message received (or of the join ack).
    pub offset: u64,
    /// Epoch of that offset; 0 if the client never learned one.
    pub epoch: u64,
}

/// Writes envelopes into one reused FlatBuffers builder.
///
/// Each method resets the builder, writes one envelope and returns the
/// finished bytes, valid until the next call. The builder keeps its
/// capacity, so once it has grown to the largest envelope written, writing
/// does not allocate. The returned bytes are what goes into one WebSocket
/// binary message.
///
/// Methods take plain Rust values; absent optional fields are not
/// written, and an empty payload is written as an absent one.
///
/// # Panics
///
/// Only if an envelope would exceed 2 GiB, the FlatBuffers format's limit;
/// callers bound payloads far below that.
pub struct EnvelopeWriter {
    fbb: FlatBufferBuilder<'static>,
    items: Vec<WIPOffset<Envelope<'static>>>,
    recoveries: Vec<WIPOffset<RoomRecovery<'static>>>,
    resumes: Vec<WIPOffset<RoomResume<'static>>>,
}

impl std::fmt::Debug for EnvelopeWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnvelopeWriter")
            .field("batch_items", &self.items.len())
            .finish_non_exhaustive()
    }
}

impl Default for EnvelopeWriter {
    fn default() -> Self {
        EnvelopeWriter::new()
    }
}

impl EnvelopeWriter {
    /// A writer with a small initial buffer that grows as needed.
    pub fn new() -> Self {
        EnvelopeWriter::with_capacity(1024)
    }

    /// A writer whose buffer starts at `bytes` bytes, to avoid growing it
    /// when the usual envelope size is known.
    pub fn with_capacity(bytes: usize) -> Self {
        EnvelopeWriter {
            fbb: FlatBufferBuilder::with_capacity(bytes),
            items: Vec::new(),
            recoveries: Vec::new(),
            resumes: Vec::new(),
        }
    }

    /// Client to server: join `room`, asking for an `Ack` of id `ack` if
    /// given, and for `Presence` updates if `presence`.
    pub fn join(&mut self, room: &str, ack: Option<u64>, presence: bool) -> &[u8] {
        self.fbb.reset();
        let body = join(&mut self.fbb, room, ack, presence);
        self.finish(body)
    }

    /// Client to server: leave `room`, asking for an `Ack` if `ack` is given.
    pub fn leave(&mut self, room: &str, ack: Option<u64>) -> &[u8] {
        self.fbb.reset();
        let body = leave(&mut self.fbb, room, ack);
        self.finish(body)
    }

    /// Client to server: publish `payload` to `room`, not to the sender
    /// itself if `exclude_self`, with an `Ack` once sequenced if `ack` is
    /// given.
    pub fn publish(
        &mut self,
        room: &str,
        payload: &[u8],
        exclude_self: bool,
        ack: Option<u64>,
    ) -> &[u8] {
        self.fbb.reset();
        let body = publish(&mut self.fbb, room, payload, exclude_self, ack);
        self.finish(body)
    }

    /// Server to client: deliver a message of `room` at `offset` in
    /// `epoch`, published by member `publisher` if it is revealed.
    pub fn message(
        &mut self,
        room: &str,
        offset: u64,
        epoch: u64,
        payload: &[u8],
        publisher: Option<&str>,
    ) -> &[u8] {
        self.fbb.reset();
        let body = message(&mut self.fbb, room, offset, epoch, payload, publisher);
        self.finish(body)
    }

    /// Either direction: the event `name` with `payload`, expecting an
    /// `Ack` of id `ack` if given.
    pub fn event(&mut self, name: &str, payload: &[u8], ack: Option<u64>) -> &[u8] {
        self.fbb.reset();
        let body = event(&mut self.fbb, name, payload, ack);
        self.finish(body)
    }

    /// Either direction: request `id` succeeded, with answer `payload`.
    pub fn ack_ok(&mut self, id: u64, payload: &[u8]) -> &[u8] {
        self.fbb.reset();
        let body = ack(&mut self.fbb, id, payload, None, "", None);
        self.finish(body)
    }

    /// Server to client: the request with ack id `id` succeeded at a
    /// place in a room's stream: a `Join` (the room is now at `offset` in
    /// `epoch`) or a `Publish` (the message got that position).
    pub fn ack_position(&mut self, id: u64, offset: u64, epoch: u64) -> &[u8] {
        self.fbb.reset();
        let position = Position::new(offset, epoch);
        let body = ack(&mut self.fbb, id, &[], None, "", Some(&position));
        self.finish(body)
    }

    /// Either direction: request `id` failed with `code`; `message` is a
    /// human-readable detail for logs (empty for none).
    pub fn ack_error(&mut self, id: u64, code: ErrorCode, message: &str) -> &[u8] {
        self.fbb.reset();
        let body = ack(&mut self.fbb, id, &[], Some(code), message, None);
        self.finish(body)
    }

    /// Server to client: the connection belongs to session `session_id`,
    /// which the client resumes with `resume_token`; pings come every
    /// `heartbeat_ms`. `resumed` says whether the client's `Resume` was
    /// honoured, and `rooms` what was recovered per room.
    pub fn welcome(
        &mut self,
        session_id: &str,
        resume_token: &[u8],
        heartbeat_ms: u32,
        resumed: bool,
        rooms: &[RecoveryReport<'_>],
    ) -> &[u8] {
        self.fbb.reset();
        let body = welcome(
            &mut self.fbb,
            &mut self.recoveries,
            session_id,
            resume_token,
            heartbeat_ms,
            resumed,
            rooms,
        );
        self.finish(body)
    }

    /// Client to server: resume session `session_id` with `token`,
    /// recovering each room from its last seen position.
    pub fn resume(&mut self, session_id: &str, token: &[u8], rooms: &[ResumePoint<'_>]) -> &[u8] {
        self.fbb.reset();
        let body = resume(&mut self.fbb, &mut self.resumes, session_id, token, rooms);
        self.finish(body)
    }

    /// Server to client: `member` joined or left `room`, which now has
    /// `count` members.
    pub fn presence(&mut self, room: &str, kind: PresenceKind, member: &str, count: u32) -> &[u8] {
        self.fbb.reset();
        let body = presence(&mut self.fbb, room, kind, member, count);
        self.finish(body)
    }

    /// Either direction: an error `code` with a human-readable `message`
    /// (empty for none), about the request with ack id `ack` and/or about
    /// `room` if given.
    pub fn error(
        &mut self,
        code: ErrorCode,
        message: &str,
        ack: Option<u64>,
        room: Option<&str>,
    ) -> &[u8] {
        self.fbb.reset();
        let body = error(&mut self.fbb, code, message, ack, room);
        self.finish(body)
    }

    /// Starts a batch: several envelopes in one message. Add items with the
    /// [`BatchWriter`]'s methods, then call [`BatchWriter::finish`].
    pub fn batch(&mut self) -> BatchWriter<'_> {
        self.fbb.reset();
        self.items.clear();
        BatchWriter { writer: self }
    }

    fn finish(&mut self, (body_type, body): (Body, WIPOffset<UnionWIPOffset>)) -> &[u8] {
        let root = envelope(&mut self.fbb, body_type, body);
        self.fbb.finish(root, Some(ENVELOPE_IDENTIFIER));
        self.fbb.finished_data()
    }
}

/// Builds one batch envelope; made by [`EnvelopeWriter::batch`].
///
/// Each method appends one item, in order, and returns the batch writer
/// for chaining; the methods mean what the [`EnvelopeWriter`] method of the
/// same name means. [`finish`](BatchWriter::finish) writes the batch.
/// Dropping a batch writer without finishing it discards the batch.
#[derive(Debug)]
pub struct BatchWriter<'w> {
    writer: &'w mut EnvelopeWriter,
}

impl<'w> BatchWriter<'w> {
    /// Number of items added so far.
    pub fn len(&self) -> usize {
        self.writer.items.len()
    }

    /// Whether no item was added yet.
    pub fn is_empty(&self) -> bool {
        self.writer.items.is_empty()
    }

    /// Appends a `Join`; see [`EnvelopeWriter::join`].
    pub fn join(&mut self, room: &str, ack: Option<u64>, presence: bool) -> &mut Self {
        let body = join(&mut self.writer.fbb, room, ack, presence);
        self.push(body)
    }

    /// Appends a `Leave`; see [`EnvelopeWriter::leave`].
    pub fn leave(&mut self, room: &str, ack: Option<u64>) -> &mut Self {
        let body = leave(&mut self.writer.fbb, room, ack);
        self.push(body)
    }

    /// Appends a `Publish`; see [`EnvelopeWriter::publish`].
    pub fn publish(
        &mut self,
        room: &str,
        payload: &[u8],
        exclude_self: bool,
        ack: Option<u64>,
    ) -> &mut Self {
        let body = publish(&mut self.writer.fbb, room, payload, exclude_self, ack);
        self.push(body)
    }

    /// Appends a `Message`; see [`EnvelopeWriter::message`].
    pub fn message(
        &mut self,
        room: &str,
        offset: u64,
        epoch: u64,
        payload: &[u8],
        publisher: Option<&str>,
    ) -> &mut Self {
        let body = message(
            &mut self.writer.fbb,
            room,
            offset,
            epoch,
            payload,
            publisher,
        );
        self.push(body)
    }

    /// Appends an `Event`; see [`EnvelopeWriter::event`].
    pub fn event(&mut self, name: &str, payload: &[u8], ack: Option<u64>) -> &mut Self {
        let body = event(&mut self.writer.fbb, name, payload, ack);
        self.push(body)
    }

    /// Appends a successful `Ack`; see [`EnvelopeWriter::ack_ok`].
    pub fn ack_ok(&mut self, id: u64, payload: &[u8]) -> &mut Self {
        let body = ack(&mut self.writer.fbb, id, payload, None, "", None);
        self.push(body)
    }

    /// Appends the `Ack` of a `Join` or `Publish`; see
    /// [`EnvelopeWriter::ack_position`].
    pub fn ack_position(&mut self, id: u64, offset: u64, epoch: u64) -> &mut Self {
        let position = Position::new(offset, epoch);
        let body = ack(&mut self.writer.fbb, id, &[], None, "", Some(&position));
        self.push(body)
    }

    /// Appends a failed `Ack`; see [`EnvelopeWriter::ack_error`].
    pub fn ack_error(&mut self, id: u64, code: ErrorCode, message: &str) -> &mut Self {
        let body = ack(&mut self.writer.fbb, id, &[], Some(code), message, None);
        self.push(body)
    }

    /// Appends a `Welcome`; see [`EnvelopeWriter::welcome`].
    pub fn welcome(
        &mut self,
        session_id: &str,
        resume_token: &[u8],
        heartbeat_ms: u32,
        resumed: bool,
        rooms: &[RecoveryReport<'_>],
    ) -> &mut Self {
        let body = welcome(
            &mut self.writer.fbb,
            &mut self.writer.recoveries,
            session_id,
            resume_token,
            heartbeat_ms,
            resumed,
            rooms,
        );
        self.push(body)
    }

    /// Appends a `Resume`; see [`EnvelopeWriter::resume`].
    pub fn resume(
        &mut self,
        session_id: &str,
        token: &[u8],
        rooms: &[ResumePoint<'_>],
    ) -> &mut Self {
        let body = resume(
            &mut self.writer.fbb,
            &mut self.writer.resumes,
            session_id,
            token,
            rooms,
        );
        self.push(body)
    }

    /// Appends a `Presence`; see [`EnvelopeWriter::presence`].
    pub fn presence(
        &mut self,
        room: &str,
        kind: PresenceKind,
        member: &str,
        count: u32,
    ) -> &mut Self {
        let body = presence(&mut self.writer.fbb, room, kind, member, count);
        self.push(body)
    }

    /// Appends an `Error`; see [`EnvelopeWriter::error`].
    pub fn error(
        &mut self,
        code: ErrorCode,
        message: &str,
        ack: Option<u64>,
        room: Option<&str>,
    ) -> &mut Self {
        let body = error(&mut self.writer.fbb, code, message, ack, room);
        self.push(body)
    }

    /// Writes the batch envelope with the items added, in order, and
    /// returns its bytes, valid until the writer's next use.
    pub fn finish(self) -> &'w [u8] {
        let writer = self.writer;
        let items = writer.fbb.create_vector(&writer.items);
        let batch = Batch::create(&mut writer.fbb, &BatchArgs { items: Some(items) });
        writer.finish((Body::Batch, batch.as_union_value()))
    }

    fn push(&mut self, (body_type, body): (Body, WIPOffset<UnionWIPOffset>)) -> &mut Self {
        let item = envelope(&mut self.writer.fbb, body_type, body);
        self.writer.items.push(item);
        self
    }
}

type Fbb = FlatBufferBuilder<'static>;
type BodyOffset = (Body, WIPOffset<UnionWIPOffset>);

fn envelope(
    fbb: &mut Fbb,
    body_type: Body,
    body: WIPOffset<UnionWIPOffset>,
) -> WIPOffset<Envelope<'static>> {
    Envelope::create(
        fbb,
        &EnvelopeArgs {
            body_type,
            body: Some(body),
        },
    )
}

fn opt_bytes(fbb: &mut Fbb, bytes: &[u8]) -> Option<WIPOffset<flatbuffers::Vector<'static, u8>>> {
    (!bytes.is_empty()).then(|| fbb.create_vector(bytes))
}

fn opt_str(fbb: &mut Fbb, text: &str) -> Option<WIPOffset<&'static str>> {
    (!text.is_empty()).then(|| fbb.create_string(text))
}

fn join(fbb: &mut Fbb, room: &str, ack: Option<u64>, presence: bool) -> BodyOffset {
    let room = fbb.create_string(room);
    let table = Join::create(
        fbb,
        &JoinArgs {
            room: Some(room),
            ack,
            presence,
        },
    );
    (Body::Join, table.as_union_value())
}

fn leave(fbb: &mut Fbb, room: &str, ack: Option<u64>) -> BodyOffset {
    let room = fbb.create_string(room);
    let table = Leave::create(
        fbb,
        &LeaveArgs {
            room: Some(room),
            ack,
        },
    );
    (Body::Leave, table.as_union_value())
}

fn publish(
    fbb: &mut Fbb,
    room: &str,
    payload: &[u8],
    exclude_self: bool,
    ack: Option<u64>,
) -> BodyOffset {
    let room = fbb.create_string(room);
    let payload = opt_bytes(fbb, payload);
    let table = Publish::create(
        fbb,
        &PublishArgs {
            room: Some(room),
            payload,
            exclude_self,
            ack,
        },
    );
    (Body::Publish, table.as_union_value())
}

fn message(
    fbb: &mut Fbb,
    room: &str,
    offset: u64,
    epoch: u64,
    payload: &[u8],
    publisher: Option<&str>,
) -> BodyOffset {
    let room = fbb.create_string(room);
    let payload = opt_bytes(fbb, payload);
    let publisher = publisher.map(|publisher| fbb.create_string(publisher));
    let position = Position::new(offset, epoch);
    let table = Message::create(
        fbb,
        &MessageArgs {
            room: Some(room),
            position: Some(&position),
            payload,
            publisher,
        },
    );
    (Body::Message, table.as_union_value())
}

fn event(fbb: &mut Fbb, name: &str, payload: &[u8], ack: Option<u64>) -> BodyOffset {
    let name = fbb.create_string(name);
    let payload = opt_bytes(fbb, payload);
    let table = Event::create(
        fbb,
        &EventArgs {
            name: Some(name),
            payload,
            ack,
        },
    );
    (Body::Event, table.as_union_value())
}

fn ack(
    fbb: &mut Fbb,
    id: u64,
    payload: &[u8],
    error: Option<ErrorCode>,
    message: &str,
    position: Option<&Position>,
) -> BodyOffset {
    let payload = opt_bytes(fbb, payload);
    let message = opt_str(fbb, message);
    let table = Ack::create(
        fbb,
        &AckArgs {
            id,
            payload,
            error,
            message,
            position,
        },
    );
    (Body::Ack, table.as_union_value())
}

fn welcome(
    fbb: &mut Fbb,
    scratch: &mut Vec<WIPOffset<RoomRecovery<'static>>>,
    session_id: &str,
    resume_token: &[u8],
    heartbeat_ms: u32,
    resumed: bool,
    rooms: &[RecoveryReport<'_>],
) -> BodyOffset {
    scratch.clear();
    for report in rooms {
        let room = fbb.create_string(report.room);
        let position = Position::new(report.offset, report.epoch);
        scratch.push(RoomRecovery::create(
            fbb,
            &RoomRecoveryArgs {
                room: Some(room),
                error: report.error,
                position: Some(&position),
            },
        ));
    }
    let rooms = (!scratch.is_empty()).then(|| fbb.create_vector(scratch));
    let session_id = fbb.create_string(session_id);
    let resume_token = opt_bytes(fbb, resume_token);
    let table = Welcome::create(
        fbb,
        &WelcomeArgs {
            session_id: Some(session_id),
            resume_token,
            heartbeat_ms,
            resumed,
            rooms,
        },
    );
    (Body::Welcome, table.as_union_value())
}

fn resume(
    fbb: &mut Fbb,
    scratch: &mut Vec<WIPOffset<RoomResume<'static>>>,
    session_id: &str,
    token: &[u8],
    rooms: &[ResumePoint<'_>],
) -> BodyOffset {
    scratch.clear();
    for point in rooms {
        let room = fbb.create_string(point.room);
        let position = Position::new(point.offset, point.epoch);
        scratch.push(RoomResume::create(
            fbb,
            &RoomResumeArgs {
                room: Some(room),
                position: Some(&position),
            },
        ));
    }
    let rooms = (!scratch.is_empty()).then(|| fbb.create_vector(scratch));
    let session_id = fbb.create_string(session_id);
    let token = opt_bytes(fbb, token);
    let table = Resume::create(
        fbb,
        &ResumeArgs {
            session_id: Some(session_id),
            token,
            rooms,
        },
    );
    (Body::Resume, table.as_union_value())
}

fn presence(fbb: &mut Fbb, room: &str, kind: PresenceKind, member: &str, count: u32) -> BodyOffset {
    let room = fbb.create_string(room);
    let member = fbb.create_string(member);
    let table = Presence::create(
        fbb,
        &PresenceArgs {
            room: Some(room),
            kind,
            member: Some(member),
            count,
        },
    );
    (Body::Presence, table.as_union_value())
}

fn error(
    fbb: &mut Fbb,
    code: ErrorCode,
    message: &str,
    ack: Option<u64>,
    room: Option<&str>,
) -> BodyOffset {
    let message = opt_str(fbb, message);
    let room = room.map(|room| fbb.create_string(room));
    let table = Error::create(
        fbb,
        &ErrorArgs {
            code,
            message,
            ack,
            room,
        },
    );
    (Body::Error, table.as_union_value())
}
