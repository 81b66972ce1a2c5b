//! Allocations per echoed message in steady state, on both I/O drivers:
//! the goal is 0 (DESIGN.md: "No allocation per message in steady state").
//!
//! This binary's global allocator counts the allocations (`alloc`,
//! `alloc_zeroed`, `realloc`) made on a server's shard threads only: the
//! handler factory, which runs on each shard's thread, points the thread
//! at the server's [`Meter`]. Each test echoes one kind of message over
//! several connections: a warm-up, so that every buffer and pool reaches
//! its steady size, then [`MEASURED`] echoes between two readings of the
//! counter. The idle timeout and heartbeats are off, so no timer fires
//! meanwhile.
//!
//! When a case allocates, the test echoes a few messages more with a
//! backtrace taken at each allocation and names the call paths in its
//! failure message. Run with `--nocapture` (nextest: `--no-capture`) for
//! the table of allocations per message. With `SHARDCAST_ALLOCATIONS_OUT`
//! set to a file, each case also appends its result to it as one JSON
//! line, which `shardcast-bench allocations-report` turns into the
//! allocations section of BENCHMARKS.md.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::backtrace::Backtrace;
use std::cell::Cell;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use common::opcode::{BINARY, TEXT};
use common::{
    DEFLATE_OFFER, Driver, Frame, RawClient, RawFrame, TestServer, binary_payload, compress,
    on_both_drivers, start, text_payload,
};
use shardcast::{Echo, ShardId};

/// Connections per case: more than the two shards, so each shard serves
/// several.
const CONNECTIONS: usize = 4;

/// Echoes per connection before the count starts.
const WARM_UP: usize = 1_000;

/// Echoes counted, spread over the connections.
const MEASURED: usize = 10_000;

/// Echoes with a backtrace per allocation, when a case allocates.
const TRACED: usize = 20;

/// Frames of a backtrace kept per allocation path in a failure message.
const PATH_FRAMES: usize = 12;

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// What one server's shard threads allocate.
#[derive(Debug)]
struct Meter {
    allocations: AtomicU64,
    /// Take a backtrace at each allocation.
    tracing: AtomicBool,
    traces: Mutex<Vec<Backtrace>>,
}

impl Meter {
    /// A meter that lives as long as the process: shard threads may
    /// allocate until they exit, after their server's test has returned.
    fn leaked() -> &'static Meter {
        Box::leak(Box::new(Meter {
            allocations: AtomicU64::new(0),
            tracing: AtomicBool::new(false),
            traces: Mutex::new(Vec::new()),
        }))
    }

    fn allocations(&self) -> u64 {
        self.allocations.load(Ordering::SeqCst)
    }
}

thread_local! {
    /// The meter of the server whose shard this thread is, if any. A const
    /// initializer and no destructor: reading it never allocates.
    static METER: Cell<Option<&'static Meter>> = const { Cell::new(None) };
}

/// Counts an allocation if this thread is metered, and takes its backtrace
/// if the meter is tracing.
fn record() {
    let Some(meter) = METER.try_with(Cell::get).ok().flatten() else {
        return;
    };
    meter.allocations.fetch_add(1, Ordering::SeqCst);
    // A backtrace allocates: the thread is unmetered while it takes one, so
    // those allocations go straight to `System`. Not while panicking: the
    // panic message may hold the backtrace lock.
    if meter.tracing.load(Ordering::SeqCst) && !std::thread::panicking() {
        METER.set(None);
        let trace = Backtrace::force_capture();
        meter
            .traces
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(trace);
        METER.set(Some(meter));
    }
}

/// `System`, counting the allocations of metered threads.
struct CountingAllocator;

// SAFETY: every method hands its arguments unchanged to `System`, whose
// implementation meets the `GlobalAlloc` contract; `record` allocates only
// while the thread is unmetered, so it never recurses into itself.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        record();
        // SAFETY: the caller meets `alloc`'s contract, passed on as is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        record();
        // SAFETY: the caller meets `alloc_zeroed`'s contract, passed on as is.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        record();
        // SAFETY: `ptr` came from `System` (every allocation here does), and
        // the caller meets `realloc`'s contract, passed on as is.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System` with `layout`, as the caller
        // guarantees for this allocator.
        unsafe { System.dealloc(ptr, layout) }
    }
}

/// One kind of message echoed.
#[derive(Clone, Copy, Debug)]
struct Case {
    opcode: u8,
    len: usize,
    /// Negotiate permessage-deflate, and send the message compressed when
    /// that makes it smaller.
    deflate: bool,
}

impl std::fmt::Display for Case {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = if self.opcode == TEXT {
            "text"
        } else {
            "binary"
        };
        let size = match self.len {
            len if len >= 1024 => format!("{} KiB", len / 1024),
            len => format!("{len} B"),
        };
        let deflate = if self.deflate { "deflate" } else { "plain" };
        write!(f, "{kind:6} {size:>6} {deflate:7}")
    }
}

/// The clients of one case, and what they send and expect back.
struct Echoes {
    clients: Vec<RawClient>,
    /// The message's frame, masked, built once.
    frame: Vec<u8>,
    /// The payload the reply must carry, inflated if it came compressed.
    payload: Vec<u8>,
    /// The first reply: every later one must be the same frame.
    reply: Option<RawFrame>,
    opcode: u8,
}

impl Echoes {
    fn connect(server: &TestServer, case: Case) -> Echoes {
        let payload = match case.opcode {
            TEXT => text_payload(case.len).into_bytes(),
            _ => binary_payload(case.len),
        };
        let compressed = compress(&payload).filter(|_| case.deflate);
        let frame = match &compressed {
            Some(compressed) => Frame::new(case.opcode, compressed).compressed(),
            None => Frame::new(case.opcode, &payload),
        }
        .encode();
        let offer = if case.deflate { DEFLATE_OFFER } else { "" };
        let clients = (0..CONNECTIONS)
            .map(|_| {
                let (client, head) = RawClient::connect_with(server.addr(), offer);
                assert_eq!(head.contains("permessage-deflate"), case.deflate, "{head}");
                client
            })
            .collect();
        Echoes {
            clients,
            frame,
            payload,
            reply: None,
            opcode: case.opcode,
        }
    }

    /// Sends the message `count` times over the connections in turn, one
    /// message in flight per connection, and checks every reply.
    fn run(&mut self, count: usize) {
        for round in (0..count).step_by(self.clients.len()) {
            let active = self.clients.len().min(count - round);
            for client in &mut self.clients[..active] {
                client.write(&self.frame);
            }
            for client in &mut self.clients[..active] {
                let reply = client.read();
                match &self.reply {
                    Some(first) => assert_eq!(&reply, first, "a reply differs from the first"),
                    None => {
                        assert_eq!(reply.opcode, self.opcode, "{reply:?}");
                        assert!(reply.message() == self.payload, "the echo differs");
                        self.reply = Some(reply);
                    }
                }
            }
        }
    }
}

/// Echoes `case` over [`CONNECTIONS`] connections on `driver`, and checks
/// that the shards allocate nothing for the [`MEASURED`] echoes after the
/// warm-up.
fn echoes_without_allocating(driver: Driver, case: Case) {
    let meter = Meter::leaked();
    let server = start(
        driver,
        |b| b.idle_timeout(None).heartbeat(None),
        move |_: ShardId| {
            METER.set(Some(meter));
            Echo
        },
    );
    let mut echoes = Echoes::connect(&server, case);
    echoes.run(WARM_UP * CONNECTIONS);
    let before = meter.allocations();
    echoes.run(MEASURED);
    let allocations = meter.allocations() - before;
    let per_message = allocations as f64 / MEASURED as f64;
    eprintln!(
        "| {case} | {driver:8} | {MEASURED:>8} echoes | {allocations:>8} allocations | \
         {per_message:>6.2} per message |"
    );
    write_result(case, driver, allocations);
    let paths = if allocations == 0 {
        String::new()
    } else {
        meter.tracing.store(true, Ordering::SeqCst);
        echoes.run(TRACED);
        meter.tracing.store(false, Ordering::SeqCst);
        let traces = std::mem::take(&mut *meter.traces.lock().unwrap());
        allocation_paths(&traces, TRACED)
    };
    drop(echoes);
    server.shutdown();
    assert!(
        allocations == 0,
        "{case} on {driver}: {allocations} allocations in {MEASURED} echoes \
         ({per_message:.2} per message), goal 0; allocation paths:\n{paths}"
    );
}

/// Appends a case's result as one JSON line to the file named by
/// `SHARDCAST_ALLOCATIONS_OUT`, if it is set.
fn write_result(case: Case, driver: Driver, allocations: u64) {
    let Some(path) = std::env::var_os("SHARDCAST_ALLOCATIONS_OUT") else {
        return;
    };
    let message = if case.opcode == TEXT {
        "text"
    } else {
        "binary"
    };
    let line = format!(
        "{{\"message\":\"{message}\",\"bytes\":{},\"deflate\":{},\"driver\":\"{driver}\",\
         \"connections\":{CONNECTIONS},\"warm_up\":{WARM_UP},\"echoes\":{MEASURED},\
         \"allocations\":{allocations}}}\n",
        case.len, case.deflate
    );
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .unwrap_or_else(|error| panic!("cannot open {:?}: {error}", path));
    std::io::Write::write_all(&mut file, line.as_bytes()).unwrap();
}

/// The allocation paths in `traces`, most frequent first, each with how
/// often it allocated per echo: the allocating frame, then the frames of
/// shardcast that led to it.
fn allocation_paths(traces: &[Backtrace], echoes: usize) -> String {
    let mut paths: BTreeMap<String, usize> = BTreeMap::new();
    for trace in traces {
        *paths.entry(allocation_path(trace)).or_default() += 1;
    }
    let mut paths: Vec<_> = paths.into_iter().collect();
    paths.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let mut report = String::new();
    for (path, count) in paths {
        let per_echo = count as f64 / echoes as f64;
        let _ = writeln!(report, "{per_echo:.2} per message:\n{path}");
    }
    report
}

/// One backtrace as a path: the first frame after the allocator's own,
/// then up to [`PATH_FRAMES`] frames in shardcast code, each
/// with its source line.
fn allocation_path(trace: &Backtrace) -> String {
    let text = trace.to_string();
    let mut frames: Vec<(&str, &str)> = Vec::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let Some((_, symbol)) = line.trim_start().split_once(": ") else {
            continue;
        };
        let location = match lines.peek() {
            Some(next) if next.trim_start().starts_with("at ") => {
                lines.next().map_or("", |at| at.trim_start())
            }
            _ => "",
        };
        frames.push((symbol, location));
    }
    let inside_allocator = |symbol: &str| {
        symbol.starts_with("std::backtrace")
            || symbol.contains("allocations::")
            || symbol.contains("__rust")
            || symbol.contains("__rdl")
    };
    let first = frames
        .iter()
        .position(|(symbol, _)| !inside_allocator(symbol));
    let Some(first) = first else {
        return text;
    };
    let ours = |symbol: &str| symbol.contains("shardcast");
    let mut path = String::new();
    let kept = std::iter::once(&frames[first])
        .chain(
            frames[first + 1..]
                .iter()
                .filter(|(symbol, _)| ours(symbol)),
        )
        .take(PATH_FRAMES);
    for (symbol, location) in kept {
        let _ = writeln!(path, "    {symbol}\n        {location}");
    }
    path
}

const fn case(opcode: u8, len: usize, deflate: bool) -> Case {
    Case {
        opcode,
        len,
        deflate,
    }
}

on_both_drivers!(echoes_16_b_binary_without_allocating);
fn echoes_16_b_binary_without_allocating(driver: Driver) {
    echoes_without_allocating(driver, case(BINARY, 16, false));
}

on_both_drivers!(echoes_16_b_text_without_allocating);
fn echoes_16_b_text_without_allocating(driver: Driver) {
    echoes_without_allocating(driver, case(TEXT, 16, false));
}

on_both_drivers!(echoes_1_kib_binary_without_allocating);
fn echoes_1_kib_binary_without_allocating(driver: Driver) {
    echoes_without_allocating(driver, case(BINARY, 1024, false));
}

on_both_drivers!(echoes_1_kib_text_without_allocating);
fn echoes_1_kib_text_without_allocating(driver: Driver) {
    echoes_without_allocating(driver, case(TEXT, 1024, false));
}

on_both_drivers!(echoes_64_kib_binary_without_allocating);
fn echoes_64_kib_binary_without_allocating(driver: Driver) {
    echoes_without_allocating(driver, case(BINARY, 64 * 1024, false));
}

on_both_drivers!(echoes_64_kib_text_without_allocating);
fn echoes_64_kib_text_without_allocating(driver: Driver) {
    echoes_without_allocating(driver, case(TEXT, 64 * 1024, false));
}

on_both_drivers!(echoes_16_b_binary_with_deflate_without_allocating);
fn echoes_16_b_binary_with_deflate_without_allocating(driver: Driver) {
    echoes_without_allocating(driver, case(BINARY, 16, true));
}

on_both_drivers!(echoes_16_b_text_with_deflate_without_allocating);
fn echoes_16_b_text_with_deflate_without_allocating(driver: Driver) {
    echoes_without_allocating(driver, case(TEXT, 16, true));
}

on_both_drivers!(echoes_1_kib_binary_with_deflate_without_allocating);
fn echoes_1_kib_binary_with_deflate_without_allocating(driver: Driver) {
    echoes_without_allocating(driver, case(BINARY, 1024, true));
}

on_both_drivers!(echoes_1_kib_text_with_deflate_without_allocating);
fn echoes_1_kib_text_with_deflate_without_allocating(driver: Driver) {
    echoes_without_allocating(driver, case(TEXT, 1024, true));
}

on_both_drivers!(echoes_64_kib_binary_with_deflate_without_allocating);
fn echoes_64_kib_binary_with_deflate_without_allocating(driver: Driver) {
    echoes_without_allocating(driver, case(BINARY, 64 * 1024, true));
}

on_both_drivers!(echoes_64_kib_text_with_deflate_without_allocating);
fn echoes_64_kib_text_with_deflate_without_allocating(driver: Driver) {
    echoes_without_allocating(driver, case(TEXT, 64 * 1024, true));
}
