//! Helpers shared by the integration tests: a server on 127.0.0.1 port 0
//! on a chosen I/O driver, a tungstenite client, a raw client that writes
//! hand-built frames (or any bytes) and reads frames back, and payloads.
//!
//! Every test binary compiles its own copy of this module and uses only
//! part of it (a binary may not even use the macro, or its re-export), so
//! what one binary leaves unused is not dead code: another binary uses it.
#![allow(dead_code, unused_macros, unused_imports)]

pub(crate) mod v1_client;

use std::fmt;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use shardcast::{
    Handler, IoDriver, Server, ServerBuilder, ServerHandle, ShardId, ShardStats, ShutdownReport,
};
use shardcast_proto::deflate::{Deflater, Inflater};

/// How long a client waits for the server before a read fails the test.
pub(crate) const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// How long [`TestServer::shutdown`] gives connections to close.
pub(crate) const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// An I/O driver a test runs the server on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Driver {
    /// The default: io_uring. The test fails if the host cannot run it
    /// rather than silently testing the fallback twice.
    IoUring,
    /// The epoll fallback, forced with `force_epoll(true)`.
    Epoll,
}

impl Driver {
    /// What the shards' stats must report when the server runs on this
    /// driver.
    pub(crate) fn io_driver(self) -> IoDriver {
        match self {
            Driver::IoUring => IoDriver::IoUring,
            Driver::Epoll => IoDriver::Epoll,
        }
    }
}

impl fmt::Display for Driver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            Driver::IoUring => "io_uring",
            Driver::Epoll => "epoll",
        })
    }
}

/// Runs a test function `fn name(driver: Driver)` on both I/O drivers: it
/// becomes a module `name` with the tests `name::io_uring` and
/// `name::epoll`, each with the attributes given before the name (such as
/// `#[ignore = "why"]`). A function left out of it is dead code, which the
/// lints refuse, so no test is forgotten.
macro_rules! on_both_drivers {
    ($(#[$attribute:meta])* $name:ident) => {
        mod $name {
            use $crate::common::Driver;

            #[test]
            $(#[$attribute])*
            fn io_uring() {
                super::$name(Driver::IoUring);
            }

            #[test]
            $(#[$attribute])*
            fn epoll() {
                super::$name(Driver::Epoll);
            }
        }
    };
}
pub(crate) use on_both_drivers;

/// A server started for a test.
pub(crate) struct TestServer {
    pub(crate) handle: ServerHandle,
}

impl TestServer {
    /// The server's one address.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.handle.local_addrs()[0]
    }

    /// Every shard's counters.
    pub(crate) fn stats(&self) -> Vec<ShardStats> {
        self.handle.stats()
    }

    /// Shuts the server down, giving connections [`SHUTDOWN_GRACE`].
    pub(crate) fn shutdown(&self) -> ShutdownReport {
        self.handle.shutdown(Instant::now() + SHUTDOWN_GRACE)
    }
}

/// Starts a server with two unpinned shards on a free loopback port, on
/// `driver`, with the handlers `factory` makes (one per shard, on the
/// shard's thread), after `configure` adjusts the builder.
///
/// Checks that every shard really runs on `driver`: a host without
/// io_uring fails the io_uring tests instead of running them on epoll.
pub(crate) fn start<H, F>(
    driver: Driver,
    configure: impl FnOnce(ServerBuilder) -> ServerBuilder,
    factory: F,
) -> TestServer
where
    H: Handler,
    F: Fn(ShardId) -> H + Send + Sync + 'static,
{
    let builder = Server::builder()
        .listen("127.0.0.1:0".parse().unwrap())
        .shards(2)
        .pin_cores(false)
        .force_epoll(driver == Driver::Epoll);
    let handle = configure(builder).build(factory).start().unwrap();
    // Each shard records its driver before it reports ready, and `start`
    // returns once every shard is ready.
    let stats = handle.stats();
    assert!(
        stats.iter().all(|shard| shard.driver == driver.io_driver()),
        "asked for {driver}, the shards run on {:?}",
        stats.iter().map(|shard| shard.driver).collect::<Vec<_>>()
    );
    TestServer { handle }
}

/// A tungstenite client, connected and upgraded.
pub(crate) fn connect_tungstenite(addr: SocketAddr) -> tungstenite::WebSocket<TcpStream> {
    let stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    let (socket, response) = tungstenite::client(format!("ws://{addr}/"), stream).unwrap();
    assert_eq!(response.status(), 101);
    socket
}

/// A valid upgrade request for `/`, with `extra_headers` (each line ending
/// in `\r\n`) before the blank line.
pub(crate) fn upgrade_request(extra_headers: &str) -> String {
    format!(
        "GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         {extra_headers}\r\n"
    )
}

/// The header that offers permessage-deflate the way the server accepts
/// it: no context takeover either way.
pub(crate) const DEFLATE_OFFER: &str = "Sec-WebSocket-Extensions: permessage-deflate; \
    client_no_context_takeover; server_no_context_takeover\r\n";

/// Reads an HTTP head, byte by byte, up to the blank line (or the end of
/// the stream).
pub(crate) fn read_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).unwrap() == 0 {
            break;
        }
        head.push(byte[0]);
    }
    String::from_utf8(head).unwrap()
}

/// Opcodes, as the raw client writes and reads them.
pub(crate) mod opcode {
    pub(crate) const CONTINUATION: u8 = 0x0;
    pub(crate) const TEXT: u8 = 0x1;
    pub(crate) const BINARY: u8 = 0x2;
    pub(crate) const CLOSE: u8 = 0x8;
    pub(crate) const PING: u8 = 0x9;
    pub(crate) const PONG: u8 = 0xa;
}

/// The masking key the raw client uses unless told otherwise.
pub(crate) const MASK_KEY: [u8; 4] = [0x12, 0x34, 0x56, 0x78];

/// A frame to send, built field by field: [`Frame::new`] is a final,
/// masked frame without RSV1; the other methods change one field.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Frame<'a> {
    pub(crate) fin: bool,
    pub(crate) rsv1: bool,
    pub(crate) opcode: u8,
    pub(crate) mask: Option<[u8; 4]>,
    pub(crate) payload: &'a [u8],
}

impl<'a> Frame<'a> {
    /// A final frame masked with [`MASK_KEY`], as a client sends one.
    pub(crate) fn new(opcode: u8, payload: &'a [u8]) -> Self {
        Frame {
            fin: true,
            rsv1: false,
            opcode,
            mask: Some(MASK_KEY),
            payload,
        }
    }

    /// Not the last fragment of its message.
    pub(crate) fn not_final(self) -> Self {
        Frame { fin: false, ..self }
    }

    /// RSV1 set: the payload is a permessage-deflate message.
    pub(crate) fn compressed(self) -> Self {
        Frame { rsv1: true, ..self }
    }

    /// Not masked, which a server must refuse.
    pub(crate) fn unmasked(self) -> Self {
        Frame { mask: None, ..self }
    }

    /// The frame's bytes on the wire.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(self.payload.len() + 14);
        bytes.push((u8::from(self.fin) << 7) | (u8::from(self.rsv1) << 6) | self.opcode);
        let mask_bit = if self.mask.is_some() { 0x80 } else { 0 };
        match self.payload.len() {
            len @ 0..=125 => bytes.push(mask_bit | len as u8),
            len @ 126..=0xffff => {
                bytes.push(mask_bit | 126);
                bytes.extend_from_slice(&(len as u16).to_be_bytes());
            }
            len => {
                bytes.push(mask_bit | 127);
                bytes.extend_from_slice(&(len as u64).to_be_bytes());
            }
        }
        match self.mask {
            Some(key) => {
                bytes.extend_from_slice(&key);
                let masked = self.payload.iter().enumerate();
                bytes.extend(masked.map(|(i, byte)| byte ^ key[i % 4]));
            }
            None => bytes.extend_from_slice(self.payload),
        }
        bytes
    }
}

/// A close frame's payload: `code`, then `reason`.
pub(crate) fn close_payload(code: u16, reason: &[u8]) -> Vec<u8> {
    let mut payload = code.to_be_bytes().to_vec();
    payload.extend_from_slice(reason);
    payload
}

/// One frame the server sent.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct RawFrame {
    pub(crate) fin: bool,
    pub(crate) rsv1: bool,
    pub(crate) opcode: u8,
    pub(crate) payload: Vec<u8>,
}

impl RawFrame {
    /// The close code of a close frame.
    pub(crate) fn close_code(&self) -> u16 {
        assert_eq!(self.opcode, opcode::CLOSE, "not a close frame: {self:?}");
        assert!(self.payload.len() >= 2, "a close frame without a code");
        u16::from_be_bytes([self.payload[0], self.payload[1]])
    }

    /// The message's payload: inflated when RSV1 says it is compressed.
    pub(crate) fn message(&self) -> Vec<u8> {
        if self.rsv1 {
            inflate(&self.payload)
        } else {
            self.payload.clone()
        }
    }
}

/// A raw client: writes frames exactly as built (or any bytes), reads the
/// server's frames back one by one.
pub(crate) struct RawClient {
    pub(crate) stream: TcpStream,
}

impl RawClient {
    /// Connects and completes a plain upgrade.
    pub(crate) fn connect(addr: SocketAddr) -> RawClient {
        RawClient::connect_with(addr, "").0
    }

    /// Connects and upgrades with `extra_headers` in the request (see
    /// [`upgrade_request`]); returns the client and the 101 response head.
    pub(crate) fn connect_with(addr: SocketAddr, extra_headers: &str) -> (RawClient, String) {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        stream
            .write_all(upgrade_request(extra_headers).as_bytes())
            .unwrap();
        let head = read_head(&mut stream);
        assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
        (RawClient { stream }, head)
    }

    /// Takes over a stream whose upgrade the caller completed.
    pub(crate) fn from_upgraded(stream: TcpStream) -> RawClient {
        stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        RawClient { stream }
    }

    /// Writes one frame.
    pub(crate) fn send(&mut self, frame: Frame<'_>) {
        self.write(&frame.encode());
    }

    /// Writes `bytes` as they are: prepared frames, or anything at all.
    pub(crate) fn write(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    /// Reads one frame; checks it is not masked, as no server frame may be.
    pub(crate) fn read(&mut self) -> RawFrame {
        let mut head = [0; 2];
        self.stream.read_exact(&mut head).unwrap();
        assert_eq!(head[1] & 0x80, 0, "server frames are unmasked");
        let len = match head[1] & 0x7f {
            126 => {
                let mut len = [0; 2];
                self.stream.read_exact(&mut len).unwrap();
                u64::from(u16::from_be_bytes(len))
            }
            127 => {
                let mut len = [0; 8];
                self.stream.read_exact(&mut len).unwrap();
                u64::from_be_bytes(len)
            }
            len => u64::from(len),
        };
        let mut payload = vec![0; usize::try_from(len).unwrap()];
        self.stream.read_exact(&mut payload).unwrap();
        RawFrame {
            fin: head[0] & 0x80 != 0,
            rsv1: head[0] & 0x40 != 0,
            opcode: head[0] & 0x0f,
            payload,
        }
    }

    /// Reads one frame and returns its close code; fails on any other frame.
    pub(crate) fn read_close_code(&mut self) -> u16 {
        self.read().close_code()
    }

    /// Reads until the server closes the TCP connection; true if it did
    /// within the read timeout.
    pub(crate) fn closed_by_server(&mut self) -> bool {
        let mut rest = Vec::new();
        self.stream.read_to_end(&mut rest).is_ok()
    }
}

/// `len` binary bytes, a pattern that is neither constant nor UTF-8.
pub(crate) fn binary_payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

/// `len` bytes of ASCII text, words repeated: it compresses well.
pub(crate) fn text_payload(len: usize) -> String {
    "shardcast ".repeat(len / 10 + 1)[..len].to_owned()
}

/// `payload` as a permessage-deflate message (RSV1 payload), or `None`
/// when compression would not make it smaller.
pub(crate) fn compress(payload: &[u8]) -> Option<Vec<u8>> {
    Deflater::default().compress(payload).map(<[u8]>::to_vec)
}

/// The message a permessage-deflate payload inflates to.
pub(crate) fn inflate(compressed: &[u8]) -> Vec<u8> {
    let mut input = compressed.to_vec();
    Inflater::new()
        .inflate(&mut input, 1 << 30)
        .unwrap()
        .to_vec()
}
