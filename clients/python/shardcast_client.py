"""A small shardcast.v1 client in Python, independent of shardcast's Rust code.

It speaks the `shardcast.v1` WebSocket subprotocol through the code that
flatc generates from proto/schema/shardcast.fbs (the package `shardcast/`
beside this file, made by `clients/python/generate`), on top of the
`flatbuffers` runtime and the `websocket-client` package (both pinned in
requirements.txt; `clients/python/setup` installs them into .venv).

    from shardcast_client import Client
    with Client("127.0.0.1:8080") as client:
        position = client.join("lobby")            # waits for the Ack
        client.publish("lobby", b"hello", ack=client.next_ack())
        message = client.receive()                 # Message(room, offset, ...)
        answer = client.event("echo", b"ping", ack=client.next_ack())

It is synchronous and single-threaded: a call that waits for an Ack reads
and queues whatever else arrives first (room messages, errors, presence),
so `receive()` still returns every message, in order. A server message
may be one envelope or a `Batch` of several: both are handled. The
server's `Welcome` is kept (`welcome`) and otherwise ignored; envelope
kinds this schema does not know are ignored, as the schema asks of a
client.

What it does not do: reconnection and session resume, TLS, answering
events the server sends (they are queued in `events`), compression.

Also a command-line tool:

    python shardcast_client.py HOST:PORT publish ROOM TEXT
    python shardcast_client.py HOST:PORT listen ROOM [--count N]
    python shardcast_client.py HOST:PORT event NAME [TEXT]
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import itertools
import os
import sys
from typing import Deque, Dict, List, Optional, Tuple

# The generated package imports itself as `shardcast.v1.*`: make it
# importable wherever this module is imported from.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import flatbuffers  # noqa: E402
import websocket  # noqa: E402  (websocket-client)

from shardcast.v1 import Ack as AckT  # noqa: E402
from shardcast.v1 import Batch as BatchT  # noqa: E402
from shardcast.v1 import Envelope as EnvelopeT  # noqa: E402
from shardcast.v1 import Error as ErrorT  # noqa: E402
from shardcast.v1 import Event as EventT  # noqa: E402
from shardcast.v1 import Join as JoinT  # noqa: E402
from shardcast.v1 import Leave as LeaveT  # noqa: E402
from shardcast.v1 import Message as MessageT  # noqa: E402
from shardcast.v1 import Presence as PresenceT  # noqa: E402
from shardcast.v1 import Publish as PublishT  # noqa: E402
from shardcast.v1 import Welcome as WelcomeT  # noqa: E402
from shardcast.v1.Body import Body  # noqa: E402
from shardcast.v1.ErrorCode import ErrorCode  # noqa: E402

SUBPROTOCOL = "shardcast.v1"
FILE_IDENTIFIER = b"SCV1"

ERROR_NAMES: Dict[int, str] = {
    value: name
    for name, value in vars(ErrorCode).items()
    if not name.startswith("_") and isinstance(value, int)
}


def error_name(code: int) -> str:
    """The schema's name of an ErrorCode value (`Unknown(N)` if newer)."""
    return ERROR_NAMES.get(code, f"Unknown({code})")


class ShardcastError(Exception):
    """The server refused a request (failed Ack) or sent an Error envelope."""

    def __init__(self, code: int, message: Optional[str] = None,
                 ack: Optional[int] = None, room: Optional[str] = None):
        self.code = code
        self.message = message
        self.ack = ack
        self.room = room
        detail = f"{error_name(code)} (code {code})"
        if ack is not None:
            detail += f" for ack id {ack}"
        if room is not None:
            detail += f" in room {room!r}"
        if message:
            detail += f": {message}"
        super().__init__(detail)


class ProtocolError(Exception):
    """The server broke shardcast.v1 (no subprotocol, text message, bad envelope)."""


@dataclasses.dataclass(frozen=True)
class Position:
    """A place in a room's stream: offset 0 is before the first message."""
    offset: int
    epoch: int


@dataclasses.dataclass(frozen=True)
class Message:
    """A message published to a room this connection joined."""
    room: str
    offset: int
    epoch: int
    payload: bytes
    publisher: Optional[str]


@dataclasses.dataclass(frozen=True)
class AckResult:
    """A successful Ack: its payload (events) and position (join, publish)."""
    id: int
    payload: bytes
    position: Optional[Position]


@dataclasses.dataclass(frozen=True)
class Welcome:
    session_id: str
    resume_token: bytes
    heartbeat_ms: int
    resumed: bool


@dataclasses.dataclass(frozen=True)
class Presence:
    room: str
    kind: int
    member: str
    count: int


@dataclasses.dataclass(frozen=True)
class Event:
    """An event the server sent (queued, not answered)."""
    name: str
    payload: bytes
    ack: Optional[int]


def _text(value) -> Optional[str]:
    return None if value is None else value.decode("utf-8")


def _bytes(table) -> bytes:
    """A generated table's `payload`/`resume_token`-style byte vector."""
    return bytes(table.Payload(j) for j in range(table.PayloadLength()))


def _position(position) -> Optional[Position]:
    if position is None:
        return None
    return Position(position.Offset(), position.Epoch())


def _finish(builder: flatbuffers.Builder, body_type: int, body: int) -> bytes:
    EnvelopeT.Start(builder)
    EnvelopeT.AddBodyType(builder, body_type)
    EnvelopeT.AddBody(builder, body)
    builder.Finish(EnvelopeT.End(builder), file_identifier=FILE_IDENTIFIER)
    return bytes(builder.Output())


# Encoders: one finished Envelope each, as the server reads them.

def encode_join(room: str, ack: Optional[int] = None, presence: bool = False) -> bytes:
    b = flatbuffers.Builder(64)
    name = b.CreateString(room)
    JoinT.Start(b)
    JoinT.AddRoom(b, name)
    if ack is not None:
        JoinT.AddAck(b, ack)
    if presence:
        JoinT.AddPresence(b, True)
    return _finish(b, Body.Join, JoinT.End(b))


def encode_leave(room: str, ack: Optional[int] = None) -> bytes:
    b = flatbuffers.Builder(64)
    name = b.CreateString(room)
    LeaveT.Start(b)
    LeaveT.AddRoom(b, name)
    if ack is not None:
        LeaveT.AddAck(b, ack)
    return _finish(b, Body.Leave, LeaveT.End(b))


def encode_publish(room: str, payload: bytes, exclude_self: bool = False,
                   ack: Optional[int] = None) -> bytes:
    b = flatbuffers.Builder(64 + len(payload))
    name = b.CreateString(room)
    data = b.CreateByteVector(bytes(payload))
    PublishT.Start(b)
    PublishT.AddRoom(b, name)
    PublishT.AddPayload(b, data)
    if exclude_self:
        PublishT.AddExcludeSelf(b, True)
    if ack is not None:
        PublishT.AddAck(b, ack)
    return _finish(b, Body.Publish, PublishT.End(b))


def encode_event(name: str, payload: bytes, ack: Optional[int] = None) -> bytes:
    b = flatbuffers.Builder(64 + len(payload))
    event_name = b.CreateString(name)
    data = b.CreateByteVector(bytes(payload))
    EventT.Start(b)
    EventT.AddName(b, event_name)
    EventT.AddPayload(b, data)
    if ack is not None:
        EventT.AddAck(b, ack)
    return _finish(b, Body.Event, EventT.End(b))


def decode(data: bytes) -> List[Tuple[int, object]]:
    """The envelopes of one server message, in order: `(body_type, body)`
    pairs of plain Python objects (Message, AckResult or ShardcastError for
    an Ack, ShardcastError for an Error, Welcome, Presence, Event); a Batch
    is flattened. Raises ProtocolError on what is not a shardcast.v1
    envelope."""
    if len(data) < 8 or not EnvelopeT.Envelope.EnvelopeBufferHasIdentifier(data, 0):
        raise ProtocolError(f"server message of {len(data)} bytes is not an SCV1 envelope")
    root = EnvelopeT.Envelope.GetRootAs(data, 0)
    if root.BodyType() == Body.Batch:
        batch = BatchT.Batch()
        batch.Init(root.Body().Bytes, root.Body().Pos)
        items = []
        for j in range(batch.ItemsLength()):
            item = batch.Items(j)
            if item.BodyType() == Body.Batch:
                raise ProtocolError("nested Batch")
            items.append(_decode_body(item))
        return items
    return [_decode_body(root)]


def _decode_body(envelope) -> Tuple[int, object]:
    kind = envelope.BodyType()
    table = envelope.Body()
    if table is None:
        return (kind, None)
    if kind == Body.Message:
        m = MessageT.Message()
        m.Init(table.Bytes, table.Pos)
        position = m.Position()
        if m.Room() is None or position is None:
            raise ProtocolError("Message without room or position")
        return (kind, Message(_text(m.Room()), position.Offset(), position.Epoch(),
                              _bytes(m), _text(m.Publisher())))
    if kind == Body.Ack:
        a = AckT.Ack()
        a.Init(table.Bytes, table.Pos)
        if a.Error() is not None:
            return (kind, ShardcastError(a.Error(), _text(a.Message()), ack=a.Id()))
        return (kind, AckResult(a.Id(), _bytes(a), _position(a.Position())))
    if kind == Body.Error:
        e = ErrorT.Error()
        e.Init(table.Bytes, table.Pos)
        return (kind, ShardcastError(e.Code(), _text(e.Message()), ack=e.Ack(),
                                     room=_text(e.Room())))
    if kind == Body.Welcome:
        w = WelcomeT.Welcome()
        w.Init(table.Bytes, table.Pos)
        token = bytes(w.ResumeToken(j) for j in range(w.ResumeTokenLength()))
        return (kind, Welcome(_text(w.SessionId()), token, w.HeartbeatMs(), w.Resumed()))
    if kind == Body.Presence:
        p = PresenceT.Presence()
        p.Init(table.Bytes, table.Pos)
        return (kind, Presence(_text(p.Room()), p.Kind(), _text(p.Member()), p.Count()))
    if kind == Body.Event:
        ev = EventT.Event()
        ev.Init(table.Bytes, table.Pos)
        return (kind, Event(_text(ev.Name()), _bytes(ev), ev.Ack()))
    # Client-to-server kinds, or newer than this schema: ignored.
    return (kind, None)


class Client:
    """One shardcast.v1 connection. `address` is HOST:PORT or a ws:// URL;
    `headers` are extra upgrade request headers (such as `x-api-key`);
    `timeout` bounds the handshake and every wait (None: wait forever)."""

    def __init__(self, address: str, timeout: Optional[float] = 10.0,
                 headers: Optional[Dict[str, str]] = None):
        url = address if "://" in address else f"ws://{address}/"
        self.url = url
        header = [f"{name}: {value}" for name, value in (headers or {}).items()]
        try:
            self.ws = websocket.create_connection(url, timeout=timeout, header=header,
                                                  subprotocols=[SUBPROTOCOL])
        except websocket.WebSocketBadStatusException:
            raise
        except websocket.WebSocketException as error:
            # websocket-client refuses a 101 that selects no subprotocol, or
            # one not offered, as "Invalid WebSocket Header".
            raise ProtocolError(f"handshake with {url} failed ({error}): "
                                f"the server must select subprotocol {SUBPROTOCOL!r}") from error
        selected = self.ws.getsubprotocol()
        if selected != SUBPROTOCOL:
            self.ws.close()
            raise ProtocolError(f"{url} selected subprotocol {selected!r}, not {SUBPROTOCOL!r}")
        self.welcome: Optional[Welcome] = None
        self.messages: Deque[Message] = collections.deque()
        self.errors: Deque[ShardcastError] = collections.deque()
        self.presence: Deque[Presence] = collections.deque()
        self.events: Deque[Event] = collections.deque()
        self._acks: Dict[int, object] = {}
        self._ids = itertools.count(1)

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *_) -> None:
        self.close()

    def close(self) -> None:
        self.ws.close()

    def next_ack(self) -> int:
        """A fresh ack id for this connection."""
        return next(self._ids)

    # Requests.

    def join(self, room: str, ack: Optional[int] = None, presence: bool = False) -> Position:
        """Joins `room` and waits for its Ack: the room's current position.
        Raises ShardcastError if the server refuses."""
        ack = self.next_ack() if ack is None else ack
        self._send(encode_join(room, ack, presence))
        result = self.wait_ack(ack)
        if result.position is None:
            raise ProtocolError(f"join ack {ack} for {room!r} carries no position")
        return result.position

    def leave(self, room: str, ack: Optional[int] = None) -> None:
        """Leaves `room` and waits for its Ack (raises ShardcastError on failure)."""
        ack = self.next_ack() if ack is None else ack
        self._send(encode_leave(room, ack))
        self.wait_ack(ack)

    def publish(self, room: str, payload: bytes, exclude_self: bool = False,
                ack: Optional[int] = None, wait: bool = True) -> Optional[Position]:
        """Publishes `payload` to `room`. With an ack id and `wait`, waits
        for the Ack and returns the message's position (raises
        ShardcastError if refused); otherwise returns None at once (collect
        the Ack later with wait_ack)."""
        self._send(encode_publish(room, payload, exclude_self, ack))
        if ack is None or not wait:
            return None
        return self.wait_ack(ack).position

    def event(self, name: str, payload: bytes = b"", ack: Optional[int] = None) -> bytes:
        """Sends event `name` and waits for its Ack: the answer's payload.
        Raises ShardcastError with the code (UnknownEvent, ...) if refused."""
        ack = self.next_ack() if ack is None else ack
        self._send(encode_event(name, payload, ack))
        return self.wait_ack(ack).payload

    # Reading.

    def wait_ack(self, ack: int) -> AckResult:
        """Reads until the Ack of id `ack` (or an Error naming it) arrives;
        queues everything else. Raises ShardcastError if it failed."""
        while ack not in self._acks:
            self._pump()
        result = self._acks.pop(ack)
        if isinstance(result, ShardcastError):
            raise result
        return result

    def receive(self) -> Message:
        """The next room message, in the order the server sent it. Raises a
        queued Error envelope (one without an ack id) first, if any."""
        while not self.messages:
            if self.errors:
                raise self.errors.popleft()
            self._pump()
        return self.messages.popleft()

    def next_error(self) -> ShardcastError:
        """Reads until an Error envelope without an ack id arrives, and
        returns it (messages arriving meanwhile stay queued)."""
        while not self.errors:
            self._pump()
        return self.errors.popleft()

    def _send(self, envelope: bytes) -> None:
        self.ws.send(envelope, opcode=websocket.ABNF.OPCODE_BINARY)

    def _pump(self) -> None:
        """Reads one WebSocket message and files its envelopes."""
        opcode, data = self.ws.recv_data()
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            code = int.from_bytes(data[:2], "big") if len(data) >= 2 else None
            raise ConnectionError(f"server closed the connection (close code {code}, "
                                  f"reason {data[2:].decode('utf-8', 'replace')!r})")
        if opcode != websocket.ABNF.OPCODE_BINARY:
            raise ProtocolError(f"server sent a non-binary message (opcode {opcode}) on shardcast.v1")
        for kind, body in decode(data):
            if kind == Body.Message:
                self.messages.append(body)
            elif kind == Body.Ack:
                self._acks[body.id if isinstance(body, AckResult) else body.ack] = body
            elif kind == Body.Error:
                if body.ack is not None:
                    self._acks[body.ack] = body
                else:
                    self.errors.append(body)
            elif kind == Body.Welcome:
                self.welcome = body
            elif kind == Body.Presence:
                self.presence.append(body)
            elif kind == Body.Event:
                self.events.append(body)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="A shardcast.v1 client (Python).")
    parser.add_argument("address", help="HOST:PORT or ws://HOST:PORT/PATH")
    commands = parser.add_subparsers(dest="command", required=True)
    publish = commands.add_parser("publish", help="join ROOM, publish TEXT, print its position")
    publish.add_argument("room")
    publish.add_argument("text")
    listen = commands.add_parser("listen", help="join ROOM and print its messages")
    listen.add_argument("room")
    listen.add_argument("--count", type=int, default=None, help="stop after N messages")
    event = commands.add_parser("event", help="send event NAME, print the answer")
    event.add_argument("name")
    event.add_argument("text", nargs="?", default="")
    args = parser.parse_args(argv)

    try:
        with Client(args.address, timeout=None if args.command == "listen" else 10.0) as client:
            if args.command == "publish":
                client.join(args.room)
                position = client.publish(args.room, args.text.encode(), exclude_self=True,
                                          ack=client.next_ack())
                print(f"published to {args.room} at offset {position.offset} epoch {position.epoch}")
            elif args.command == "listen":
                position = client.join(args.room)
                print(f"joined {args.room} at offset {position.offset} epoch {position.epoch}",
                      flush=True)
                seen = 0
                while args.count is None or seen < args.count:
                    m = client.receive()
                    print(f"{m.room} {m.offset}/{m.epoch} from {m.publisher}: "
                          f"{m.payload.decode('utf-8', 'replace')}", flush=True)
                    seen += 1
            elif args.command == "event":
                print(client.event(args.name, args.text.encode()).decode("utf-8", "replace"))
    except (ShardcastError, ProtocolError, ConnectionError, OSError,
            websocket.WebSocketException) as error:
        print(f"shardcast_client: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
