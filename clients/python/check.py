"""Checks a shardcast.v1 server with the Python client (shardcast_client.py).

    clients/python/.venv/bin/python clients/python/check.py HOST:PORT [--messages N]
        [--publisher] [--api-key KEY_A --api-key KEY_B --api-key KEY_C]

The server must serve `shardcast.v1` and route an event "echo" that
answers its payload. Three connections, A, B and C:

1. A and B join "py-room": acks with the room's position, one epoch.
2. A publishes N messages with ack ids, all sent before any ack is read:
   each ack's position is the join position plus 1, 2, ..., N.
3. B receives all N in order, with consecutive offsets from the join
   position, the same epoch and the payloads unchanged (binary, empty,
   larger than 64 KiB); A, which did not exclude itself, receives them
   too, identically. With --publisher, every message names its publisher,
   the same for all of A's and another for B's (the server tells clients
   apart by the keys given with --api-key, sent as `x-api-key`).
4. A publishes with exclude_self, then without: B receives both, A only
   the second.
5. C joins late: its ack's position is the room's last message's; it
   receives the next message only.
6. Publishing to a room not joined: a failed Ack NotJoined (3) with an ack
   id, an Error envelope NotJoined naming the room without one.
7. Event "echo" with an ack returns the payload; an unknown event returns
   UnknownEvent (2).
8. A leaves "py-room" (acked); publishing there is then NotJoined.

Exits 0 when every check passes; otherwise prints what failed and exits 1.
"""

from __future__ import annotations

import argparse
import sys
import traceback

import websocket  # websocket-client

import shardcast_client as sc
from shardcast_client import Client, ErrorCode, ShardcastError

ROOM = "py-room"


class CheckFailed(Exception):
    pass


def expect(condition: bool, what: str) -> None:
    if not condition:
        raise CheckFailed(what)


STEP = "connecting"


def step(name: str) -> None:
    """Names the check under way, for the failure message."""
    global STEP
    STEP = name


def ok(what: str) -> None:
    print(f"ok: {what}", flush=True)


def payload_of(i: int) -> bytes:
    """Payloads of varied length and every byte value: empty, short,
    binary, past 125 and 65535 bytes (the frame's extended lengths)."""
    if i == 0:
        return b""
    if i == 1:
        return bytes(range(256))
    if i == 2:
        return bytes([0xAB]) * 70_000
    return f"message {i} ".encode() + bytes([i % 256, 0, 255]) * (i % 50)


def expect_error(code: int, what: str, call) -> ShardcastError:
    try:
        result = call()
    except ShardcastError as error:
        expect(error.code == code,
               f"{what}: expected error {sc.error_name(code)} ({code}), got {error}")
        return error
    raise CheckFailed(f"{what}: expected error {sc.error_name(code)} ({code}), got success {result!r}")


def check_messages(who: str, got: list, join: sc.Position, first: int, payloads: list,
                   epoch: int) -> None:
    for i, (message, payload) in enumerate(zip(got, payloads)):
        want_offset = join.offset + first + i
        expect(message.room == ROOM, f"{who}: message {i} is from room {message.room!r}")
        expect(message.offset == want_offset,
               f"{who}: message {i} has offset {message.offset}, expected {want_offset} "
               f"(join position {join.offset} + {first + i})")
        expect(message.epoch == epoch,
               f"{who}: message {i} has epoch {message.epoch}, expected {epoch}")
        expect(message.payload == payload,
               f"{who}: message {i} payload differs: {len(message.payload)} bytes "
               f"{message.payload[:32]!r}..., expected {len(payload)} bytes {payload[:32]!r}...")


def run(address: str, count: int, require_publisher: bool, keys: list) -> None:
    def connect(i: int) -> Client:
        headers = {"x-api-key": keys[i]} if i < len(keys) else None
        return Client(address, headers=headers)

    a = connect(0)
    b = connect(1)
    ok(f"A and B connected to {address} with subprotocol {sc.SUBPROTOCOL}")

    # 1. Joins.
    step("joins")
    join_a = a.join(ROOM, ack=a.next_ack())
    join_b = b.join(ROOM, ack=b.next_ack())
    expect(join_a == join_b,
           f"A and B joined an idle room at different positions: {join_a} and {join_b}")
    ok(f"A and B joined {ROOM!r} at offset {join_b.offset}, epoch {join_b.epoch}")
    join = join_b

    # 2. N publications, pipelined, each with an ack id.
    step("publications with acks")
    payloads = [payload_of(i) for i in range(count)]
    ids = []
    for payload in payloads:
        ids.append(a.next_ack())
        a.publish(ROOM, payload, ack=ids[-1], wait=False)
    acked = [a.wait_ack(ack).position for ack in ids]
    for i, position in enumerate(acked):
        expect(position is not None, f"publish ack {ids[i]} carries no position")
        expect(position.offset == join.offset + 1 + i,
               f"publish ack {ids[i]} has offset {position.offset}, expected {join.offset + 1 + i}")
    epoch = acked[0].epoch
    expect(epoch != 0, "publish acks have epoch 0 (never a real stream's epoch)")
    expect(all(p.epoch == epoch for p in acked), f"publish acks of several epochs: {acked}")
    if join.epoch != 0:
        expect(join.epoch == epoch,
               f"messages have epoch {epoch}, the join ack said {join.epoch}")
    ok(f"A published {count} messages, acked at offsets {acked[0].offset}..{acked[-1].offset} "
       f"epoch {epoch}")

    # 3. B and A receive them all, in order.
    step("receiving the publications")
    got_b = [b.receive() for _ in range(count)]
    check_messages("B", got_b, join, 1, payloads, epoch)
    publishers = {m.publisher for m in got_b}
    expect(len(publishers) == 1, f"B saw several publishers for A's messages: {publishers}")
    publisher_a = publishers.pop()
    if require_publisher:
        expect(publisher_a, "B's messages from A carry no publisher id")
    ok(f"B received all {count} in order, consecutive offsets, payloads unchanged "
       f"(publisher {publisher_a!r})")
    got_a = [a.receive() for _ in range(count)]
    check_messages("A", got_a, join, 1, payloads, epoch)
    ok(f"A (exclude_self=False) received its own {count} too")

    # 4. exclude_self.
    step("exclude_self")
    excluded = a.publish(ROOM, b"not for A", exclude_self=True, ack=a.next_ack())
    included = a.publish(ROOM, b"for everyone", ack=a.next_ack())
    last = join.offset + count
    expect(excluded.offset == last + 1 and included.offset == last + 2,
           f"acks of the exclude_self pair at {excluded.offset}, {included.offset}, "
           f"expected {last + 1}, {last + 2}")
    check_messages("B", [b.receive(), b.receive()], join, count + 1,
                   [b"not for A", b"for everyone"], epoch)
    next_a = a.receive()
    expect(next_a.offset == last + 2 and next_a.payload == b"for everyone",
           f"A's next message after excluding itself is offset {next_a.offset} "
           f"{next_a.payload[:32]!r}, expected offset {last + 2} b'for everyone'")
    ok("exclude_self: B received both, A only the one it did not exclude itself from")
    last += 2

    # 5. A late joiner starts at the room's current position.
    step("a late joiner")
    c = connect(2)
    join_c = c.join(ROOM, ack=c.next_ack())
    expect(join_c.offset == last and (join.epoch == 0 or join_c.epoch == epoch),
           f"C joined at {join_c}, expected offset {last} epoch {epoch}")
    late = b.publish(ROOM, b"after C joined", ack=b.next_ack())
    expect(late.offset == last + 1, f"B's publish acked at {late.offset}, expected {last + 1}")
    for who, client in (("C", c), ("A", a), ("B", b)):
        message = client.receive()
        expect(message.offset == last + 1 and message.payload == b"after C joined",
               f"{who} received offset {message.offset} {message.payload[:32]!r}, "
               f"expected offset {last + 1} b'after C joined'")
        if require_publisher:
            expect(message.publisher and message.publisher != publisher_a,
                   f"{who}: B's message has publisher {message.publisher!r} "
                   f"(A's is {publisher_a!r})")
    expect(not c.messages, f"C received earlier messages: {list(c.messages)[:3]}")
    ok(f"C joined late at offset {join_c.offset} and received only what followed")
    last += 1

    # 6. Not joined.
    step("publishing to a room not joined")
    error = expect_error(ErrorCode.NotJoined, "publish with an ack to a room not joined",
                         lambda: c.publish("py-elsewhere", b"x", ack=c.next_ack()))
    ok(f"publish with an ack to a room not joined: {error}")
    c.publish("py-elsewhere", b"x")
    error = c.next_error()
    expect(error.code == ErrorCode.NotJoined,
           f"publish without an ack to a room not joined: expected an Error NotJoined, got {error}")
    expect(error.room in (None, "py-elsewhere"), f"the NotJoined Error names room {error.room!r}")
    ok(f"publish without an ack to a room not joined: Error envelope {error}")

    # 7. Events.
    step("events (echo, unknown)")
    for payload in (b"ping", bytes(range(256)) * 3, b""):
        answer = a.event("echo", payload, ack=a.next_ack())
        expect(answer == payload, f"echo answered {answer[:32]!r} ({len(answer)} bytes) "
                                  f"to {payload[:32]!r} ({len(payload)} bytes)")
    ok("event echo with an ack: the payload came back unchanged (short, 768 bytes, empty)")
    error = expect_error(ErrorCode.UnknownEvent, "an unknown event",
                         lambda: a.event("py-no-such-event", b"?", ack=a.next_ack()))
    ok(f"unknown event: {error}")

    # 8. Leave.
    step("leave")
    a.leave(ROOM, ack=a.next_ack())
    error = expect_error(ErrorCode.NotJoined, "publish after leaving",
                         lambda: a.publish(ROOM, b"gone", ack=a.next_ack()))
    b.publish(ROOM, b"after A left", ack=b.next_ack())
    message = b.receive()
    expect(message.offset == last + 1, f"B received offset {message.offset}, expected {last + 1}")
    a.event("echo", b"", ack=a.next_ack())  # best effort: lets a stray message arrive first
    expect(not a.messages, f"A received messages after leaving: {list(a.messages)[:3]}")
    ok("A left (acked); its publish there is NotJoined")

    for client in (a, b, c):
        expect(not client.errors, f"unexpected Error envelopes: {list(client.errors)}")
        client.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("address", help="HOST:PORT of a shardcast.v1 server")
    parser.add_argument("--messages", type=int, default=100, help="N, at least 3 (default 100)")
    parser.add_argument("--publisher", action="store_true",
                        help="require a publisher id on messages (a server that reveals it)")
    parser.add_argument("--api-key", action="append", default=[], metavar="KEY",
                        help="x-api-key header of A, then B, then C (repeat)")
    args = parser.parse_args()
    if args.messages < 3:
        parser.error("--messages must be at least 3")
    try:
        run(args.address, args.messages, args.publisher, args.api_key)
    except CheckFailed as failure:
        print(f"FAILED ({STEP}): {failure}", file=sys.stderr)
        return 1
    except (ShardcastError, sc.ProtocolError, ConnectionError, OSError,
            websocket.WebSocketException) as error:
        traceback.print_exc()
        print(f"FAILED ({STEP}): {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    print("check.py: every check passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
