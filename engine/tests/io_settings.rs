//! The io_uring knobs against real sockets: a tiny ring and tiny receive
//! buffers still carry every byte of many connections, SQPOLL rings are
//! set up for real (their kernel threads are seen in /proc, pinned where
//! asked), and settings the kernel would refuse are refused by name.

mod common;

use std::fs;
use std::net::TcpStream;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use common::{Driver, connect_tungstenite, on_both_drivers, start};
use shardcast::{Echo, Error, Server, ServerBuilder};
use tungstenite::Message as WsMessage;
use tungstenite::WebSocket;

/// Connections opened at once: far more than a 16-entry ring holds.
const CONNECTIONS: usize = 200;

/// A message larger than several 512-byte receive buffers.
const MESSAGE: usize = 5_000;

/// Opens [`CONNECTIONS`] connections, then has each send a message and
/// checks every echo, byte for byte.
fn echo_on_many_connections(addr: std::net::SocketAddr) {
    let mut sockets: Vec<WebSocket<TcpStream>> = (0..CONNECTIONS)
        .map(|_| connect_tungstenite(addr))
        .collect();
    for (index, socket) in sockets.iter_mut().enumerate() {
        let payload: Vec<u8> = (0..MESSAGE).map(|i| (i + index) as u8).collect();
        socket.send(WsMessage::binary(payload)).unwrap();
    }
    for (index, socket) in sockets.iter_mut().enumerate() {
        let expected: Vec<u8> = (0..MESSAGE).map(|i| (i + index) as u8).collect();
        assert_eq!(
            socket.read().unwrap(),
            WsMessage::binary(expected),
            "connection {index}"
        );
    }
}

on_both_drivers!(a_tiny_ring_and_tiny_buffers_carry_every_byte);
fn a_tiny_ring_and_tiny_buffers_carry_every_byte(driver: Driver) {
    let server = start(
        driver,
        |b| b.ring_entries(16).receive_buffers(2, 512),
        |_| Echo,
    );
    echo_on_many_connections(server.addr());
    server.shutdown();
}

/// The kernel's SQPOLL threads of this process (`iou-sqp-<pid>`), with
/// the cores each may run on.
fn sqpoll_threads() -> Vec<String> {
    let mut threads = Vec::new();
    for task in fs::read_dir("/proc/self/task").unwrap() {
        let task = task.unwrap().path();
        let Ok(comm) = fs::read_to_string(task.join("comm")) else {
            continue;
        };
        if !comm.starts_with("iou-sqp") {
            continue;
        }
        let status = fs::read_to_string(task.join("status")).unwrap_or_default();
        let cores = status
            .lines()
            .find_map(|line| line.strip_prefix("Cpus_allowed_list:"))
            .unwrap_or("?")
            .trim()
            .to_owned();
        threads.push(cores);
    }
    threads
}

/// Waits until the SQPOLL threads of this process, with their cores, are
/// `expected` (in any order), and returns what was last seen. A poller
/// names itself `iou-sqp-<pid>` and pins itself once it first runs, which
/// on a busy host may be a moment after its ring was set up.
fn sqpoll_threads_become(expected: impl Fn(&[String]) -> bool) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut threads = sqpoll_threads();
        threads.sort();
        if expected(&threads) || Instant::now() >= deadline {
            return threads;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// Both SQPOLL tests look for their threads in this process's /proc, so
/// they must not overlap.
static SQPOLL: Mutex<()> = Mutex::new(());

/// Waits for the other SQPOLL test, and for the kernel to end its polling
/// threads, which outlive their rings by a moment.
fn alone_with_sqpoll() -> MutexGuard<'static, ()> {
    let guard = SQPOLL.lock().unwrap_or_else(PoisonError::into_inner);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !sqpoll_threads().is_empty() {
        assert!(Instant::now() < deadline, "SQPOLL threads linger");
        thread::sleep(Duration::from_millis(10));
    }
    guard
}

#[test]
fn sqpoll_rings_serve_with_their_polling_threads_pinned_where_asked() {
    let _alone = alone_with_sqpoll();
    let server = start(
        Driver::IoUring,
        |b| {
            b.ring_entries(16)
                .receive_buffers(2, 512)
                .sqpoll(Some(Duration::from_millis(20)))
                .sqpoll_cores(vec![1, 0])
        },
        |_| Echo,
    );
    let threads = sqpoll_threads_become(|threads| threads == ["0", "1"]);
    assert_eq!(threads, ["0", "1"], "one polling thread per shard");
    echo_on_many_connections(server.addr());
    server.shutdown();
}

#[test]
fn an_sqpoll_thread_without_cores_may_run_on_any_core() {
    let _alone = alone_with_sqpoll();
    let allowed: usize = std::thread::available_parallelism().unwrap().into();
    let server = start(
        Driver::IoUring,
        |b| {
            b.shards(1)
                .cores(vec![0])
                .sqpoll(Some(Duration::from_millis(20)))
        },
        |_| Echo,
    );
    let threads = sqpoll_threads_become(|threads| threads.len() == 1);
    assert_eq!(threads.len(), 1, "{threads:?}");
    if allowed > 1 {
        assert_ne!(
            threads[0], "0",
            "the poller was set up after its shard pinned itself to core 0"
        );
    }
    echo_on_many_connections(server.addr());
    server.shutdown();
}

/// A change to a server's settings.
type Configure = fn(ServerBuilder) -> ServerBuilder;

#[test]
fn settings_the_kernel_would_refuse_are_refused_by_name() {
    let cases: [(&str, Configure); 7] = [
        ("ring_entries", |b| b.ring_entries(0)),
        ("ring_entries", |b| b.ring_entries(65_536)),
        ("receive_buffers", |b| b.receive_buffers(3, 4096)),
        ("receive_buffer_size", |b| b.receive_buffers(4, 100)),
        ("receive_buffers", |b| b.receive_buffers(1 << 15, 1 << 20)),
        ("sqpoll", |b| {
            b.sqpoll(Some(Duration::from_millis(10))).force_epoll(true)
        }),
        ("sqpoll_cores", |b| {
            b.sqpoll(Some(Duration::from_millis(10)))
                .sqpoll_cores(Vec::new())
        }),
    ];
    for (expected, configure) in cases {
        let builder = Server::builder().listen("127.0.0.1:0".parse().unwrap());
        match configure(builder).build(|_| Echo).start() {
            Err(Error::Setting { setting, reason }) => {
                assert_eq!(setting, expected, "{reason}");
            }
            Err(other) => panic!("{expected}: another error: {other}"),
            Ok(handle) => {
                handle.shutdown(Instant::now());
                panic!("{expected}: the server started");
            }
        }
    }
}
