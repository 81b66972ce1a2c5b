//! `shardcast-bench trivial-echo`: a minimal echo server with no engine,
//! a reference point beside the servers under test.
//!
//! It does as little per message as a WebSocket echo can in user space,
//! and never sleeps: one thread busy-polls epoll (a zero timeout) over
//! non-blocking sockets; the upgrade is parsed by `shardcast-proto`, then
//! for every read each complete frame is unmasked straight into the reply
//! and the replies of one read leave in one write. No limits, no UTF-8
//! check, no fragmentation, no compression: it is fit for the generator's
//! load and nothing else, and it burns its whole core. What it reaches is
//! what one read and one write per message cost on this kernel, with no
//! engine around them; the report counts it among the servers the
//! generator's ceiling is taken from.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use anyhow::{Context, bail};
use shardcast_proto::deflate::DeflateConfig;
use shardcast_proto::handshake::{HeadLimits, Progress, parse_request};

/// Command line of `shardcast-bench trivial-echo`.
#[derive(clap::Args, Clone, Debug)]
pub(crate) struct Args {
    /// The port to listen on, on 127.0.0.1.
    pub(crate) port: u16,
}

/// Bytes read at a time.
const READ_BUFFER: usize = 64 * 1024;

/// Events taken from epoll per poll.
const EVENTS: usize = 256;

/// One connection: its socket, what it sent that is not consumed yet,
/// and replies the socket did not take yet.
struct Connection {
    stream: TcpStream,
    upgraded: bool,
    incoming: Vec<u8>,
    outgoing: Vec<u8>,
}

/// Runs the server until killed.
pub(crate) fn command(args: &Args) -> anyhow::Result<()> {
    let address = SocketAddr::from(([127, 0, 0, 1], args.port));
    let listener = TcpListener::bind(address).with_context(|| format!("listening on {address}"))?;
    listener.set_nonblocking(true)?;
    let epoll = Epoll::new()?;
    epoll.add(listener.as_raw_fd())?;
    println!("listening on {address}");
    let mut connections: Vec<Option<Connection>> = Vec::new();
    let mut scratch = vec![0u8; READ_BUFFER];
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; EVENTS];
    loop {
        let ready = epoll.poll(&mut events)?;
        for event in &events[..ready] {
            let fd = event.u64 as RawFd;
            if fd == listener.as_raw_fd() {
                accept_all(&listener, &epoll, &mut connections)?;
                continue;
            }
            let slot = &mut connections[fd as usize];
            if let Some(connection) = slot {
                if serve(connection, &mut scratch).is_err() {
                    // Closing the socket takes it out of epoll.
                    *slot = None;
                }
            }
        }
        // Replies a full socket did not take are retried on every turn.
        for slot in connections.iter_mut().filter(|slot| {
            slot.as_ref()
                .is_some_and(|connection| !connection.outgoing.is_empty())
        }) {
            if let Some(connection) = slot {
                if flush(connection).is_err() {
                    *slot = None;
                }
            }
        }
    }
}

fn accept_all(
    listener: &TcpListener,
    epoll: &Epoll,
    connections: &mut Vec<Option<Connection>>,
) -> anyhow::Result<()> {
    loop {
        let stream = match listener.accept() {
            Ok((stream, _)) => stream,
            Err(error) if error.kind() == ErrorKind::WouldBlock => return Ok(()),
            Err(error) => return Err(error).context("accepting"),
        };
        stream.set_nonblocking(true)?;
        stream.set_nodelay(true)?;
        let fd = stream.as_raw_fd();
        epoll.add(fd)?;
        let index = usize::try_from(fd)?;
        if connections.len() <= index {
            connections.resize_with(index + 1, || None);
        }
        connections[index] = Some(Connection {
            stream,
            upgraded: false,
            incoming: Vec::new(),
            outgoing: Vec::new(),
        });
    }
}

/// Reads what a ready connection has, answers it, and writes. An error
/// (or the peer's end) closes the connection.
fn serve(connection: &mut Connection, scratch: &mut [u8]) -> anyhow::Result<()> {
    loop {
        match connection.stream.read(scratch) {
            Ok(0) => bail!("closed"),
            Ok(read) => connection.incoming.extend_from_slice(&scratch[..read]),
            Err(error) if error.kind() == ErrorKind::WouldBlock => break,
            Err(error) => return Err(error.into()),
        }
    }
    if !connection.upgraded {
        let head_len = match parse_request(&connection.incoming, &HeadLimits::default()) {
            Ok(Progress::Done { value, head_len }) => {
                let mut no_deflate = DeflateConfig::default();
                no_deflate.enabled = false;
                value
                    .accept(&[], &no_deflate)
                    .write_response(&[], &mut connection.outgoing)?;
                head_len
            }
            Ok(Progress::NeedMore) => return Ok(()),
            Err(error) => bail!("not an upgrade: {error}"),
        };
        connection.incoming.drain(..head_len);
        connection.upgraded = true;
    }
    let consumed = echo_frames(&connection.incoming, &mut connection.outgoing)?;
    connection.incoming.drain(..consumed);
    flush(connection)
}

/// Writes what the socket takes of the pending replies.
fn flush(connection: &mut Connection) -> anyhow::Result<()> {
    while !connection.outgoing.is_empty() {
        match connection.stream.write(&connection.outgoing) {
            Ok(written) => {
                connection.outgoing.drain(..written);
            }
            Err(error) if error.kind() == ErrorKind::WouldBlock => break,
            Err(error) => return Err(error.into()),
        }
    }
    Ok(())
}

/// An epoll instance polled without waiting.
struct Epoll {
    fd: OwnedFd,
}

impl Epoll {
    fn new() -> anyhow::Result<Epoll> {
        // SAFETY: epoll_create1 takes no pointer; a non-negative result is
        // a new descriptor that only this value owns.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error()).context("epoll_create1");
        }
        // SAFETY: `fd` was just created and is owned by nothing else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Epoll { fd })
    }

    /// Watches `fd` for input, level-triggered, with `fd` as its token.
    fn add(&self, fd: RawFd) -> anyhow::Result<()> {
        let mut event = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: u64::try_from(fd)?,
        };
        // SAFETY: `event` is a valid epoll_event that outlives the call;
        // both descriptors are open.
        let result = unsafe {
            libc::epoll_ctl(self.fd.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &raw mut event)
        };
        if result < 0 {
            return Err(std::io::Error::last_os_error()).context("epoll_ctl");
        }
        Ok(())
    }

    /// The events ready now, without waiting.
    fn poll(&self, events: &mut [libc::epoll_event]) -> anyhow::Result<usize> {
        let capacity = i32::try_from(events.len())?;
        // SAFETY: `events` is valid for `capacity` entries for the call.
        let ready =
            unsafe { libc::epoll_wait(self.fd.as_raw_fd(), events.as_mut_ptr(), capacity, 0) };
        match ready {
            n if n >= 0 => Ok(n as usize),
            _ => {
                let error = std::io::Error::last_os_error();
                if error.kind() == ErrorKind::Interrupted {
                    Ok(0)
                } else {
                    Err(error).context("epoll_wait")
                }
            }
        }
    }
}

/// Appends the unmasked echo of every complete client frame at the start
/// of `incoming` to `outgoing`; returns the bytes consumed. A close frame
/// is answered with an empty close.
fn echo_frames(incoming: &[u8], outgoing: &mut Vec<u8>) -> anyhow::Result<usize> {
    let mut at = 0;
    loop {
        let frame = &incoming[at..];
        if frame.len() < 2 {
            return Ok(at);
        }
        if frame[1] & 0x80 == 0 {
            bail!("an unmasked client frame");
        }
        let (len, header) = match frame[1] & 0x7f {
            126 if frame.len() >= 4 => (usize::from(u16::from_be_bytes([frame[2], frame[3]])), 4),
            127 if frame.len() >= 10 => {
                let mut bytes = [0; 8];
                bytes.copy_from_slice(&frame[2..10]);
                (usize::try_from(u64::from_be_bytes(bytes))?, 10)
            }
            126 | 127 => return Ok(at),
            small => (usize::from(small), 2),
        };
        let Some(total) = (header + 4usize)
            .checked_add(len)
            .filter(|&t| t <= frame.len())
        else {
            return Ok(at);
        };
        let opcode = frame[0] & 0x0f;
        if opcode == 0x8 {
            outgoing.extend_from_slice(&[0x88, 0]);
            return Ok(at + total);
        }
        let reply_opcode = if opcode == 0x9 { 0x8a } else { frame[0] };
        outgoing.push(reply_opcode);
        match len {
            0..=125 => outgoing.push(len as u8),
            126..=0xffff => {
                outgoing.push(126);
                outgoing.extend_from_slice(&(len as u16).to_be_bytes());
            }
            _ => {
                outgoing.push(127);
                outgoing.extend_from_slice(&(len as u64).to_be_bytes());
            }
        }
        let mask = [
            frame[header],
            frame[header + 1],
            frame[header + 2],
            frame[header + 3],
        ];
        let payload = &frame[header + 4..total];
        outgoing.extend(payload.iter().zip(mask.iter().cycle()).map(|(b, m)| b ^ m));
        at += total;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shardcast_proto::Client;
    use shardcast_proto::frame::{Encoder, OpCode};

    #[test]
    fn complete_frames_are_echoed_unmasked_and_a_partial_one_waits() {
        let encoder = Encoder::<Client>::new();
        let mut incoming = Vec::new();
        encoder.frame(&mut incoming, OpCode::Binary, true, b"hello", [1, 2, 3, 4]);
        encoder.frame(
            &mut incoming,
            OpCode::Text,
            true,
            &[b'x'; 300],
            [9, 8, 7, 6],
        );
        let whole = incoming.len();
        encoder.frame(&mut incoming, OpCode::Binary, true, b"cut", [5, 5, 5, 5]);
        let mut outgoing = Vec::new();
        let consumed = echo_frames(&incoming[..incoming.len() - 1], &mut outgoing).unwrap();
        assert_eq!(consumed, whole);
        let mut expected = vec![0x82, 5];
        expected.extend_from_slice(b"hello");
        expected.extend_from_slice(&[0x81, 126, 1, 44]);
        expected.extend_from_slice(&[b'x'; 300]);
        assert_eq!(outgoing, expected);
    }

    #[test]
    fn a_close_is_answered_and_ends_the_frames() {
        let encoder = Encoder::<Client>::new();
        let mut incoming = Vec::new();
        encoder.frame(&mut incoming, OpCode::Close, true, &[3, 232], [1, 2, 3, 4]);
        let mut outgoing = Vec::new();
        assert_eq!(
            echo_frames(&incoming, &mut outgoing).unwrap(),
            incoming.len()
        );
        assert_eq!(outgoing, [0x88, 0]);
        assert!(echo_frames(&[0x82, 0x05], &mut Vec::new()).is_err());
    }
}
