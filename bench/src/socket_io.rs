//! The client side of Socket.IO (protocol 5) over Engine.IO 4, WebSocket
//! transport only: what the benchmarks need to load a Socket.IO server
//! the way a `transports: ['websocket']` client does.
//!
//! Engine.IO sends its packets as text messages, a type digit then the
//! data: `0{...}` opens the session, `2` is the server's ping (the client
//! answers `3`), `4...` carries a Socket.IO packet. Socket.IO's packets
//! are a type digit, an optional acknowledgement id and a JSON array:
//! `40` connects the default namespace, `42["event",args...]` is an
//! event, `43ID[...]` acknowledges event ID. The benchmarks send ASCII
//! strings that need no JSON escaping, so no binary attachments and no
//! JSON parser are needed.

use std::io::Write;

use anyhow::{Context, bail};
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::TcpStream;
use shardcast_proto::Client;
use shardcast_proto::deflate::Inflater;
use shardcast_proto::frame::{Decoder, DecoderConfig, Encoder, Message, OpCode};

use crate::client::XorShift;

/// The request target of Engine.IO 4 over WebSocket, default path: the
/// client upgrades at once, with no long-polling first.
pub(crate) const PATH: &str = "/socket.io/?EIO=4&transport=websocket";

/// The Engine.IO pong, the answer to a ping (`2`).
pub(crate) const PONG: &[u8] = b"3";

/// A Socket.IO packet or Engine.IO control packet the benchmarks act on.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Inbound<'a> {
    /// An Engine.IO ping: answer with [`PONG`] at once, or the server
    /// closes the session after its ping timeout.
    Ping,
    /// An event on the default namespace with its name and first argument,
    /// a string (empty when there is none), both without their quotes.
    Event {
        /// The event's name.
        name: &'a [u8],
        /// The first argument's characters.
        arg: &'a [u8],
    },
    /// The acknowledgement of the event sent with this id.
    Ack(u64),
    /// Anything else (a namespace connect, an error, a string the
    /// benchmarks did not expect).
    Other(&'a [u8]),
}

/// Reads one text message from the server.
pub(crate) fn parse(text: &[u8]) -> Inbound<'_> {
    if text == b"2" {
        return Inbound::Ping;
    }
    if let Some(event) = text
        .strip_prefix(b"42[\"")
        .and_then(|rest| rest.strip_suffix(b"\"]"))
    {
        return match event.windows(3).position(|window| window == b"\",\"") {
            Some(comma) => Inbound::Event {
                name: &event[..comma],
                arg: &event[comma + 3..],
            },
            None => Inbound::Event {
                name: event,
                arg: b"",
            },
        };
    }
    if let Some(rest) = text.strip_prefix(b"43") {
        let digits = rest.iter().take_while(|byte| byte.is_ascii_digit()).count();
        if let Some(id) = std::str::from_utf8(&rest[..digits])
            .ok()
            .and_then(|digits| digits.parse().ok())
        {
            return Inbound::Ack(id);
        }
    }
    Inbound::Other(text)
}

/// Appends event `name` with string arguments `args` to `out`, as the
/// text of one message: `42["name","arg",...]`, or `42ID[...]` asking
/// for an acknowledgement when `ack` is given.
///
/// Names and arguments go out as they are, so they must need no JSON
/// escaping: printable ASCII without `"` or `\` (checked in debug builds).
pub(crate) fn event(out: &mut Vec<u8>, ack: Option<u64>, name: &[u8], args: &[&[u8]]) {
    debug_assert!(
        std::iter::once(name)
            .chain(args.iter().copied())
            .flatten()
            .all(|&byte| (b' '..=b'~').contains(&byte) && byte != b'"' && byte != b'\\'),
        "Socket.IO strings here must need no JSON escaping"
    );
    out.extend_from_slice(b"42");
    if let Some(id) = ack {
        // Writing to a Vec cannot fail.
        let _ = write!(out, "{id}");
    }
    out.extend_from_slice(b"[\"");
    out.extend_from_slice(name);
    for arg in args {
        out.extend_from_slice(b"\",\"");
        out.extend_from_slice(arg);
    }
    out.extend_from_slice(b"\"]");
}

/// Opens the Socket.IO session on an upgraded connection: waits for
/// Engine.IO's open packet, connects the default namespace (`40`) and
/// waits for the server's `40{...}`, answering pings meanwhile. `leftover`
/// holds the bytes that came after the upgrade response; returns the
/// bytes read after the connect packet, to decode next.
pub(crate) async fn connect(
    stream: &mut TcpStream,
    leftover: Vec<u8>,
    rng: &mut XorShift,
) -> anyhow::Result<Vec<u8>> {
    let encoder = Encoder::<Client>::new();
    let mut decoder = Decoder::<Client>::new(DecoderConfig::DEFAULT);
    let mut inflater = Inflater::new();
    let mut incoming = leftover;
    incoming.reserve(4096);
    let mut outgoing = Vec::new();
    let mut opened = false;
    loop {
        let mut offset = 0;
        let filled = incoming.len();
        while offset < filled {
            let (used, message) = decoder.decode(&mut incoming[offset..filled], &mut inflater)?;
            offset += used;
            let text = match message {
                None | Some(Message::Pong(_)) => continue,
                Some(Message::Text(text)) => text.as_bytes(),
                Some(Message::Ping(payload)) => {
                    encoder.pong(&mut outgoing, payload, rng.mask_key())?;
                    continue;
                }
                Some(other) => bail!("Socket.IO handshake: unexpected {other:?}"),
            };
            match text {
                b"2" => encoder.frame(&mut outgoing, OpCode::Text, true, PONG, rng.mask_key()),
                _ if !opened && text.starts_with(b"0{") => {
                    opened = true;
                    encoder.frame(&mut outgoing, OpCode::Text, true, b"40", rng.mask_key());
                }
                _ if opened && text.starts_with(b"40") => {
                    // The decoder stopped at this message's end: the rest
                    // of the read is whole frames or the start of one, for
                    // the caller's decoder.
                    let rest = incoming[offset..filled].to_vec();
                    send(stream, &mut outgoing).await?;
                    return Ok(rest);
                }
                _ => bail!(
                    "Socket.IO handshake: unexpected {:?}",
                    String::from_utf8_lossy(text)
                ),
            }
        }
        send(stream, &mut outgoing).await?;
        incoming.clear();
        let (result, buf) = stream.read(incoming).await;
        incoming = buf;
        if result.context("receiving the Socket.IO handshake")? == 0 {
            bail!("the server closed the connection during the Socket.IO handshake");
        }
    }
}

/// Writes and clears `outgoing`, if it holds anything.
async fn send(stream: &mut TcpStream, outgoing: &mut Vec<u8>) -> anyhow::Result<()> {
    if outgoing.is_empty() {
        return Ok(());
    }
    let (result, buf) = stream.write_all(std::mem::take(outgoing)).await;
    result.context("sending the Socket.IO handshake")?;
    *outgoing = buf;
    outgoing.clear();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_written_as_socket_io_packets() {
        let mut out = Vec::new();
        event(&mut out, None, b"echo", &[b"abc"]);
        assert_eq!(out, b"42[\"echo\",\"abc\"]");
        out.clear();
        event(&mut out, Some(12), b"publish", &[b"r1", b"xyz"]);
        assert_eq!(out, b"4212[\"publish\",\"r1\",\"xyz\"]");
    }

    #[test]
    fn server_packets_are_read() {
        assert_eq!(parse(b"2"), Inbound::Ping);
        assert_eq!(
            parse(b"42[\"message\",\"0001abcd\"]"),
            Inbound::Event {
                name: b"message",
                arg: b"0001abcd"
            }
        );
        assert_eq!(
            parse(b"42[\"tick\"]"),
            Inbound::Event {
                name: b"tick",
                arg: b""
            }
        );
        assert_eq!(parse(b"430[]"), Inbound::Ack(0));
        assert_eq!(parse(b"4317[]"), Inbound::Ack(17));
        assert_eq!(parse(b"43[]"), Inbound::Other(b"43[]"));
        assert_eq!(
            parse(b"40{\"sid\":\"x\"}"),
            Inbound::Other(b"40{\"sid\":\"x\"}")
        );
    }
}
