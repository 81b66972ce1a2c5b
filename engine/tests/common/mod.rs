//! Helpers shared by the integration tests: a server on 127.0.0.1 port 0,
//! a tungstenite client, and a raw client that writes hand-built frames.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use shardcast::{Handler, Server, ServerBuilder, ServerHandle, ShardId};

/// The I/O drivers every echo test runs on.
pub(crate) const DRIVERS: [bool; 2] = [false, true];

/// Starts a server on a free loopback port with `handler`, on io_uring or
/// (with `force_epoll`) epoll, after `configure` adjusts the builder.
pub(crate) fn start<H, F>(
    force_epoll: bool,
    configure: impl FnOnce(ServerBuilder) -> ServerBuilder,
    factory: F,
) -> ServerHandle
where
    H: Handler,
    F: Fn(ShardId) -> H + Send + Sync + 'static,
{
    let builder = Server::builder()
        .listen("127.0.0.1:0".parse().unwrap())
        .shards(2)
        .pin_cores(false)
        .force_epoll(force_epoll);
    configure(builder).build(factory).start().unwrap()
}

/// The server's one address.
pub(crate) fn addr(handle: &ServerHandle) -> SocketAddr {
    handle.local_addrs()[0]
}

/// A tungstenite client connected and upgraded.
pub(crate) fn client(addr: SocketAddr) -> tungstenite::WebSocket<TcpStream> {
    let stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let (socket, response) = tungstenite::client(format!("ws://{addr}/"), stream).unwrap();
    assert_eq!(response.status(), 101);
    socket
}

/// A raw client: writes frames byte by byte as given, reads frames back.
pub(crate) struct RawClient {
    pub(crate) stream: TcpStream,
}

/// One frame the server sent.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct RawFrame {
    pub(crate) fin: bool,
    pub(crate) opcode: u8,
    pub(crate) payload: Vec<u8>,
}

impl RawFrame {
    /// The close code of a close frame.
    pub(crate) fn close_code(&self) -> u16 {
        assert_eq!(self.opcode, 8, "not a close frame: {self:?}");
        u16::from_be_bytes([self.payload[0], self.payload[1]])
    }
}

impl RawClient {
    /// Connects and completes the upgrade.
    pub(crate) fn connect(addr: SocketAddr) -> RawClient {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream
            .write_all(
                b"GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n\
                  Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
                  Sec-WebSocket-Version: 13\r\n\r\n",
            )
            .unwrap();
        let head = read_head(&mut stream);
        assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
        RawClient { stream }
    }

    /// Writes one frame; masked with a fixed key when `masked`.
    pub(crate) fn send(&mut self, fin: bool, opcode: u8, payload: &[u8], masked: bool) {
        let mut frame = vec![(u8::from(fin) << 7) | opcode];
        let mask_bit = if masked { 0x80 } else { 0 };
        match payload.len() {
            len @ 0..=125 => frame.push(mask_bit | len as u8),
            len @ 126..=0xffff => {
                frame.push(mask_bit | 126);
                frame.extend_from_slice(&(len as u16).to_be_bytes());
            }
            len => {
                frame.push(mask_bit | 127);
                frame.extend_from_slice(&(len as u64).to_be_bytes());
            }
        }
        let key = [0x12, 0x34, 0x56, 0x78];
        if masked {
            frame.extend_from_slice(&key);
            frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        } else {
            frame.extend_from_slice(payload);
        }
        self.stream.write_all(&frame).unwrap();
    }

    /// Reads one frame (the server never masks).
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
        let mut payload = vec![0; len as usize];
        self.stream.read_exact(&mut payload).unwrap();
        RawFrame {
            fin: head[0] & 0x80 != 0,
            opcode: head[0] & 0x0f,
            payload,
        }
    }

    /// Reads until the server closes the TCP connection; true if it did
    /// within the read timeout.
    pub(crate) fn closed_by_server(&mut self) -> bool {
        let mut rest = Vec::new();
        self.stream.read_to_end(&mut rest).is_ok()
    }
}

/// Reads an HTTP head, byte by byte, up to the blank line.
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
