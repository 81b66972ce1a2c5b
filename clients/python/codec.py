"""The Python client's envelope codec, without a socket, for tests that
check it against shardcast's own reader and writer (shardcast-proto).

    python codec.py decode   stdin: one server message per line, in hex;
                             stdout: one line per envelope (a Batch's items
                             one by one), `N KIND field=value ...`, N being
                             the message's line number from 0
    python codec.py encode   stdout: a fixed list of client requests, one
                             finished envelope per line, in hex

Decoded lines (a `-` for an absent field; a free-text message comes last):

    N Message room=R offset=O epoch=E payload=HEX publisher=P
    N Ack id=I payload=HEX position=O/E
    N AckError id=I code=NAME message...
    N Error code=NAME ack=I room=R message...
    N Welcome session=S token=HEX heartbeat_ms=H resumed=BOOL
    N Presence room=R kind=K member=M count=C
    N Event name=E payload=HEX ack=I
    N Ignored kind=K             (a client-to-server or newer body)
    N Refused reason...          (not a shardcast.v1 envelope)
"""

from __future__ import annotations

import sys

import shardcast_client as sc
from shardcast_client import Body


def _opt(value) -> str:
    return "-" if value is None else str(value)


def describe(kind: int, body) -> str:
    if kind == Body.Message:
        return (f"Message room={body.room} offset={body.offset} epoch={body.epoch} "
                f"payload={body.payload.hex()} publisher={_opt(body.publisher)}")
    if kind == Body.Ack and isinstance(body, sc.AckResult):
        position = "-" if body.position is None else f"{body.position.offset}/{body.position.epoch}"
        return f"Ack id={body.id} payload={body.payload.hex()} position={position}"
    if kind == Body.Ack:
        return f"AckError id={body.ack} code={sc.error_name(body.code)} {body.message or ''}".rstrip()
    if kind == Body.Error:
        return (f"Error code={sc.error_name(body.code)} ack={_opt(body.ack)} room={_opt(body.room)} "
                f"{body.message or ''}").rstrip()
    if kind == Body.Welcome:
        return (f"Welcome session={body.session_id} token={body.resume_token.hex()} "
                f"heartbeat_ms={body.heartbeat_ms} resumed={str(body.resumed).lower()}")
    if kind == Body.Presence:
        return f"Presence room={body.room} kind={body.kind} member={body.member} count={body.count}"
    if kind == Body.Event:
        return f"Event name={body.name} payload={body.payload.hex()} ack={_opt(body.ack)}"
    return f"Ignored kind={kind}"


def decode_lines(lines) -> None:
    for number, line in enumerate(lines):
        data = bytes.fromhex(line.strip())
        try:
            envelopes = sc.decode(data)
        except sc.ProtocolError as error:
            print(f"{number} Refused {error}")
            continue
        for kind, body in envelopes:
            print(f"{number} {describe(kind, body)}")


# What `encode` writes, in order; the Rust test reads each back.
REQUESTS = [
    sc.encode_join("lobby", ack=1, presence=True),
    sc.encode_join("lobby"),
    sc.encode_leave("lobby", ack=2),
    sc.encode_publish("lobby", b"\x00\xffhi", exclude_self=True, ack=2**64 - 1),
    sc.encode_publish("lobby", b""),
    sc.encode_event("echo", b"ping", ack=3),
    sc.encode_event("tick", b""),
]


def main() -> int:
    if sys.argv[1:] == ["decode"]:
        decode_lines(line for line in sys.stdin if line.strip())
    elif sys.argv[1:] == ["encode"]:
        for request in REQUESTS:
            print(request.hex())
    else:
        print("usage: codec.py decode|encode", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
