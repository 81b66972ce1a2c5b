//! One benchmark client connection on a monoio runtime: TCP connect, the
//! upgrade handshake with shardcast-proto, then the echo loop, checking
//! every echo against what was sent; plain WebSocket messages, or
//! Socket.IO "echo" events.

use std::cell::{Cell, RefCell};
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::TcpStream;
use shardcast_proto::Client;
use shardcast_proto::deflate::Inflater;
use shardcast_proto::frame::{Decoder, DecoderConfig, Encoder, Message, OpCode};
use shardcast_proto::handshake::{ClientHandshake, Progress, generate_key};

use crate::proc_stat::{self, CpuSpent, CpuTimes};
use crate::socket_io;

/// Phases of a run, shared by every connection of every thread.
pub(crate) mod phase {
    /// Connecting, then exchanging messages that are not counted.
    pub(crate) const WARMUP: u8 = 0;
    /// Echoes are counted.
    pub(crate) const MEASURING: u8 = 1;
    /// The run is over: connections stop sending.
    pub(crate) const DONE: u8 = 2;
}

/// What every connection of every thread shares with the thread that
/// runs the clock.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    /// The current phase (see [`phase`]).
    pub(crate) phase: AtomicU8,
    /// Connections whose handshake has completed.
    pub(crate) upgraded: AtomicUsize,
    /// Connections that failed before the run was over.
    pub(crate) failed: AtomicUsize,
}

/// How a closed-loop run is timed, for [`Shared::run_clock`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct Timing {
    /// Connections that must upgrade (or fail) before the clock starts.
    pub(crate) connections: usize,
    /// Seconds they may take.
    pub(crate) connect_timeout: f64,
    /// Seconds of warm-up, not measured.
    pub(crate) warmup: f64,
    /// Seconds measured.
    pub(crate) duration: f64,
    /// The server, to charge it the CPU time of the window.
    pub(crate) server_pid: Option<u32>,
}

/// What the clock of a run saw.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Window {
    /// Seconds from the start until every connection settled.
    pub(crate) connect_seconds: f64,
    /// Connections neither upgraded nor failed when the connect timeout
    /// ran out.
    pub(crate) stalled: u64,
    /// Length of the measured window, seconds.
    pub(crate) seconds: f64,
    /// This process's CPU time over the window.
    pub(crate) generator_cpu: CpuSpent,
    /// The server's CPU time over the window, when its pid was given.
    pub(crate) server_cpu: Option<CpuSpent>,
}

impl Window {
    /// `count` per second of the measured window.
    pub(crate) fn per_second(&self, count: u64) -> f64 {
        count as f64 / self.seconds
    }

    /// The server's CPU per unit of work, `count` of them in the window,
    /// microseconds: (user + system, user); `None` without its pid.
    pub(crate) fn server_micros_per(&self, count: u64) -> Option<(f64, f64)> {
        let cpu = self.server_cpu?;
        let per = 1e6 / count.max(1) as f64;
        Some((cpu.total * per, cpu.user * per))
    }

    /// Share of one core the server used, when its pid was given.
    pub(crate) fn server_core_share(&self) -> Option<f64> {
        self.server_cpu.map(|cpu| cpu.total / self.seconds)
    }

    /// Share of one core this generator used.
    pub(crate) fn generator_core_share(&self) -> f64 {
        self.generator_cpu.total / self.seconds
    }
}

impl Shared {
    /// Runs the clock of a run that started at `start`, on the calling
    /// thread: waits until every connection has upgraded or failed (or
    /// the connect timeout passed), then the warm-up, then the measured
    /// window, moving [`Shared::phase`] along and reading CPU times at
    /// both ends of the window. Without every connection the run only
    /// collects what went wrong: no warm-up, an empty window.
    pub(crate) fn run_clock(&self, start: Instant, timing: &Timing) -> anyhow::Result<Window> {
        let ticks = proc_stat::ticks_per_second();
        let connect_deadline = start + Duration::from_secs_f64(timing.connect_timeout);
        let stalled = loop {
            let settled =
                self.upgraded.load(Ordering::Relaxed) + self.failed.load(Ordering::Relaxed);
            if settled >= timing.connections || Instant::now() > connect_deadline {
                break timing.connections.saturating_sub(settled) as u64;
            }
            thread::sleep(Duration::from_millis(5));
        };
        let connect_seconds = start.elapsed().as_secs_f64();
        let connected = stalled == 0 && self.failed.load(Ordering::Relaxed) == 0;
        let (warmup, duration) = if connected {
            (timing.warmup, timing.duration)
        } else {
            (0.0, 0.0)
        };
        thread::sleep(Duration::from_secs_f64(warmup));
        let server_before = timing
            .server_pid
            .map(|pid| CpuTimes::read(Some(pid)))
            .transpose()?;
        let generator_before = CpuTimes::read(None)?;
        let window_start = Instant::now();
        self.phase.store(phase::MEASURING, Ordering::Relaxed);
        thread::sleep(Duration::from_secs_f64(duration));
        self.phase.store(phase::DONE, Ordering::Relaxed);
        let seconds = window_start.elapsed().as_secs_f64();
        let generator_cpu = CpuTimes::read(None)?.since(&generator_before, ticks);
        let server_cpu = match (timing.server_pid, server_before) {
            (Some(pid), Some(before)) => Some(CpuTimes::read(Some(pid))?.since(&before, ticks)),
            _ => None,
        };
        Ok(Window {
            connect_seconds,
            stalled,
            seconds,
            generator_cpu,
            server_cpu,
        })
    }
}

/// Where the load goes: a `ws://` URL, resolved once.
#[derive(Clone, Debug)]
pub(crate) struct Target {
    /// The socket address connected to.
    pub(crate) addr: SocketAddr,
    /// The `Host` header: the URL's authority as written.
    pub(crate) host: String,
    /// The request target: the URL's path and query, `/` when absent.
    pub(crate) path: String,
}

impl Target {
    /// Parses `ws://HOST[:PORT][/PATH]` and resolves HOST.
    pub(crate) fn parse(url: &str) -> anyhow::Result<Target> {
        let Some(rest) = url.strip_prefix("ws://") else {
            bail!("{url}: only ws:// URLs are supported");
        };
        let (authority, path) = match rest.find('/') {
            Some(slash) => (&rest[..slash], &rest[slash..]),
            None => (rest, "/"),
        };
        if authority.is_empty() {
            bail!("{url}: no host");
        }
        let has_port = authority.rsplit_once(':').is_some_and(|(host, port)| {
            !port.contains(']') && (!host.contains(':') || host.ends_with(']'))
        });
        let with_port = if has_port {
            authority.to_owned()
        } else {
            format!("{authority}:80")
        };
        let addr = with_port
            .to_socket_addrs()
            .with_context(|| format!("resolving {with_port}"))?
            .next()
            .with_context(|| format!("{with_port} resolves to no address"))?;
        Ok(Target {
            addr,
            host: authority.to_owned(),
            path: path.to_owned(),
        })
    }
}

/// What each connection does, the same for all of them.
///
/// A connection writes what it has to send, then reads: keep
/// `in_flight × size` well below the socket buffers, or both ends can
/// wait on full buffers.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Load {
    /// Payload bytes per message.
    pub(crate) size: usize,
    /// Messages a connection keeps sent and not yet echoed.
    pub(crate) in_flight: usize,
    /// Text messages rather than binary.
    pub(crate) text: bool,
    /// How messages are wrapped.
    pub(crate) protocol: EchoProtocol,
}

/// What an echo server expects to echo.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum EchoProtocol {
    /// Plain WebSocket messages, echoed as they came.
    #[default]
    Raw,
    /// Socket.IO: each message is an "echo" event with the payload as its
    /// one string argument (text), and the server emits "echo" back with
    /// the same argument. Engine.IO's pings are answered.
    #[value(name = "socket.io")]
    SocketIo,
}

/// The counters of one generator thread, updated by its connections.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    /// Echoes received while measuring.
    pub(crate) echoes: Cell<u64>,
    /// Echoes, in any phase, that differ from the message sent.
    pub(crate) mismatches: Cell<u64>,
    /// Connections that failed (connect, handshake, I/O or protocol error).
    pub(crate) failed: Cell<u64>,
    /// The first failure's description.
    pub(crate) first_error: RefCell<Option<String>>,
}

impl Counters {
    fn fail(&self, error: &anyhow::Error) {
        self.failed.set(self.failed.get() + 1);
        self.first_error
            .borrow_mut()
            .get_or_insert_with(|| format!("{error:#}"));
    }
}

/// A small xorshift generator for masking keys and handshake keys: these
/// are benchmark connections, not a security boundary.
#[derive(Clone, Copy, Debug)]
pub(crate) struct XorShift(u64);

impl XorShift {
    /// A generator from `seed`; any seed works, zero included.
    pub(crate) fn new(seed: u64) -> XorShift {
        XorShift(seed | 1)
    }

    /// The next 64 pseudo-random bits.
    pub(crate) fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A masking key for one client frame.
    pub(crate) fn mask_key(&mut self) -> [u8; 4] {
        (self.next() as u32).to_le_bytes()
    }
}

/// The messages of one connection: message `seq` is a fixed ASCII pattern
/// with the low hex digits of `seq` over its first bytes, so an echo that
/// is stale, repeated, reordered or altered does not compare equal. ASCII
/// keeps it valid as a text message.
#[derive(Debug)]
pub(crate) struct Payloads {
    message: Vec<u8>,
    stamp: usize,
}

impl Payloads {
    /// Messages of `size` bytes, their pattern varied by `salt`.
    pub(crate) fn new(size: usize, salt: u64) -> Payloads {
        let message = (0..size as u64)
            .map(|i| b'a' + ((i * 7 + salt) % 26) as u8)
            .collect();
        Payloads {
            message,
            stamp: size.min(16),
        }
    }

    /// Message `seq`.
    pub(crate) fn get(&mut self, seq: u64) -> &[u8] {
        let digits = hex_digits(seq);
        self.message[..self.stamp].copy_from_slice(&digits[16 - self.stamp..]);
        &self.message
    }

    /// Whether `echoed` is message `seq`.
    pub(crate) fn matches(&self, seq: u64, echoed: &[u8]) -> bool {
        let digits = hex_digits(seq);
        echoed.len() == self.message.len()
            && echoed[..self.stamp] == digits[16 - self.stamp..]
            && echoed[self.stamp..] == self.message[self.stamp..]
    }
}

fn hex_digits(value: u64) -> [u8; 16] {
    let mut digits = [0; 16];
    for (i, digit) in digits.iter_mut().enumerate() {
        let nibble = (value >> (60 - 4 * i)) & 0xf;
        *digit = b"0123456789abcdef"[nibble as usize];
    }
    digits
}

/// Runs one connection until the run is over, recording what happened in
/// `counters`.
pub(crate) async fn run(
    target: &Target,
    load: Load,
    shared: &Shared,
    counters: &Counters,
    seed: u64,
) {
    if let Err(error) = connect_and_echo(target, load, shared, counters, seed).await {
        // Connections torn down once the run is over are not failures.
        if shared.phase.load(Ordering::Relaxed) != phase::DONE {
            counters.fail(&error);
            shared.failed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

async fn connect_and_echo(
    target: &Target,
    load: Load,
    shared: &Shared,
    counters: &Counters,
    seed: u64,
) -> anyhow::Result<()> {
    let mut rng = XorShift::new(seed);
    let mut stream = TcpStream::connect_addr(target.addr)
        .await
        .with_context(|| format!("connecting to {}", target.addr))?;
    stream.set_nodelay(true)?;
    let mut leftover = handshake(&mut stream, target, None, &mut rng).await?;
    if load.protocol == EchoProtocol::SocketIo {
        leftover = socket_io::connect(&mut stream, leftover, &mut rng).await?;
    }
    shared.upgraded.fetch_add(1, Ordering::Relaxed);

    let encoder = Encoder::<Client>::new();
    let opcode = if load.text {
        OpCode::Text
    } else {
        OpCode::Binary
    };
    let mut payloads = Payloads::new(load.size, seed);
    let mut decoder = Decoder::<Client>::new(DecoderConfig::DEFAULT);
    let mut inflater = Inflater::new();
    let frame_len = load.size + 14;
    let mut outgoing = Vec::with_capacity(frame_len * load.in_flight);
    let mut incoming = Vec::with_capacity((frame_len * load.in_flight).clamp(4096, 256 * 1024));
    // Socket.IO's event around the payload, reused for every message.
    let mut event = Vec::new();
    let mut sent = 0u64;
    let mut received = 0u64;
    for _ in 0..load.in_flight {
        let payload = payloads.get(sent);
        push_message(
            &mut outgoing,
            &mut event,
            load.protocol,
            opcode,
            payload,
            &mut rng,
        );
        sent += 1;
    }
    incoming.extend_from_slice(&leftover);
    let mut filled = incoming.len();
    loop {
        let mut offset = 0;
        while offset < filled {
            let (used, message) = decoder.decode(&mut incoming[offset..filled], &mut inflater)?;
            offset += used;
            let Some(message) = message else {
                continue;
            };
            let (echoed, right_kind) = match message {
                Message::Binary(bytes) => (bytes, !load.text),
                Message::Text(text) if load.protocol == EchoProtocol::SocketIo => {
                    match socket_io::parse(text.as_bytes()) {
                        socket_io::Inbound::Ping => {
                            let (pong, key) = (socket_io::PONG, rng.mask_key());
                            encoder.frame(&mut outgoing, OpCode::Text, true, pong, key);
                            continue;
                        }
                        socket_io::Inbound::Event { name: b"echo", arg } => (arg, true),
                        other => bail!("unexpected Socket.IO packet {other:?}"),
                    }
                }
                Message::Text(text) => (text.as_bytes(), load.text),
                Message::Ping(payload) => {
                    encoder.pong(&mut outgoing, payload, rng.mask_key())?;
                    continue;
                }
                Message::Pong(_) => continue,
                Message::Close(frame) => bail!("the server closed the connection: {frame:?}"),
            };
            if !right_kind || !payloads.matches(received, echoed) {
                counters.mismatches.set(counters.mismatches.get() + 1);
            }
            received += 1;
            match shared.phase.load(Ordering::Relaxed) {
                phase::WARMUP => {}
                phase::MEASURING => counters.echoes.set(counters.echoes.get() + 1),
                _ => return Ok(()),
            }
            let payload = payloads.get(sent);
            push_message(
                &mut outgoing,
                &mut event,
                load.protocol,
                opcode,
                payload,
                &mut rng,
            );
            sent += 1;
        }
        if !outgoing.is_empty() {
            let (result, buf) = stream.write_all(outgoing).await;
            result.context("sending")?;
            outgoing = buf;
            outgoing.clear();
        }
        let (result, buf) = stream.read(incoming).await;
        incoming = buf;
        filled = result.context("receiving")?;
        if filled == 0 {
            bail!("the server closed the TCP connection");
        }
    }
}

/// Appends message `payload` to `outgoing` as one frame: as it is, or
/// inside a Socket.IO "echo" event built in `event`.
fn push_message(
    outgoing: &mut Vec<u8>,
    event: &mut Vec<u8>,
    protocol: EchoProtocol,
    opcode: OpCode,
    payload: &[u8],
    rng: &mut XorShift,
) {
    let encoder = Encoder::<Client>::new();
    match protocol {
        EchoProtocol::Raw => encoder.frame(outgoing, opcode, true, payload, rng.mask_key()),
        EchoProtocol::SocketIo => {
            event.clear();
            socket_io::event(event, None, b"echo", &[payload]);
            encoder.frame(outgoing, OpCode::Text, true, event, rng.mask_key());
        }
    }
}

/// Sends the upgrade request, offering `subprotocol` if given, and reads
/// the response; returns the bytes that followed the response head
/// (already WebSocket frames). A server that does not accept the offered
/// subprotocol fails the handshake: it would take the connection's
/// messages for another protocol's.
pub(crate) async fn handshake(
    stream: &mut TcpStream,
    target: &Target,
    subprotocol: Option<&str>,
    rng: &mut XorShift,
) -> anyhow::Result<Vec<u8>> {
    let mut random = [0; 16];
    random[..8].copy_from_slice(&rng.next().to_le_bytes());
    random[8..].copy_from_slice(&rng.next().to_le_bytes());
    let mut handshake = ClientHandshake::new(&target.host, &target.path, generate_key(random));
    handshake.offer_deflate = false;
    handshake.subprotocols = subprotocol.as_slice();
    let mut request = Vec::with_capacity(256);
    handshake.write_request(&mut request)?;
    let (result, _) = stream.write_all(request).await;
    result.context("sending the upgrade request")?;

    let mut response = Vec::new();
    let mut chunk = Vec::with_capacity(4096);
    loop {
        let (result, buf) = stream.read(chunk).await;
        chunk = buf;
        if result.context("receiving the upgrade response")? == 0 {
            bail!("the server closed the connection during the handshake");
        }
        response.extend_from_slice(&chunk);
        match handshake.parse_response(&response)? {
            Progress::NeedMore => {}
            Progress::Done { value, head_len } => {
                if value.subprotocol != subprotocol {
                    bail!(
                        "the server did not accept the subprotocol {}",
                        subprotocol.unwrap_or_default()
                    );
                }
                return Ok(response.split_off(head_len));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_give_address_host_header_and_target() {
        let target = Target::parse("ws://127.0.0.1:9001/echo?x=1").unwrap();
        assert_eq!(target.addr, "127.0.0.1:9001".parse().unwrap());
        assert_eq!(target.host, "127.0.0.1:9001");
        assert_eq!(target.path, "/echo?x=1");
        let target = Target::parse("ws://127.0.0.1").unwrap();
        assert_eq!(target.addr.port(), 80);
        assert_eq!(target.path, "/");
        let target = Target::parse("ws://[::1]:7000/").unwrap();
        assert_eq!(target.addr, "[::1]:7000".parse().unwrap());
        assert_eq!(Target::parse("ws://[::1]").unwrap().addr.port(), 80);
        assert!(Target::parse("wss://127.0.0.1/").is_err());
        assert!(Target::parse("http://127.0.0.1/").is_err());
        assert!(Target::parse("ws:///path").is_err());
    }

    #[test]
    fn each_message_matches_only_its_own_echo() {
        for size in [0, 1, 5, 16, 32, 1024] {
            let mut payloads = Payloads::new(size, 3);
            let first = payloads.get(7).to_vec();
            let second = payloads.get(8).to_vec();
            assert!(payloads.matches(7, &first));
            assert!(payloads.matches(8, &second));
            if size > 0 {
                assert!(!payloads.matches(8, &first), "size {size}");
                let mut altered = second.clone();
                *altered.last_mut().unwrap() ^= 1;
                assert!(!payloads.matches(8, &altered), "size {size}");
            }
            assert!(!payloads.matches(8, &second[..size.saturating_sub(1)]) || size == 0);
            assert!(first.is_ascii());
        }
    }

    #[test]
    fn xorshift_never_sticks_at_zero() {
        let mut rng = XorShift::new(0);
        assert_ne!(rng.next(), 0);
        assert_ne!(rng.next(), rng.next());
    }
}
