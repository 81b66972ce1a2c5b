//! io_uring: whether a ring can be set up here and which of the features the
//! engine uses the kernel has, found by probing (setting up rings, asking the
//! kernel's opcode probe, registering resources, running multishot
//! operations on a loopback socket pair), never by kernel version.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use io_uring::{IoUring, Probe, cqueue, opcode, types};
use serde::{Deserialize, Serialize};

use crate::InspectError;
use crate::host::Host;

/// What the io_uring probe found. Serialized into `inspect --json` and read
/// back from a captured `io_uring.json` under `--root`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct UringReport {
    /// `kernel.io_uring_disabled`: 0 allowed, 1 only for `io_uring_group`, 2 off.
    pub disabled_sysctl: Option<u8>,
    /// How the facts were obtained: `live`, `captured` or `not probed (--root)`.
    pub source: String,
    /// Whether a ring could be set up; `None` when not probed.
    pub setup: Option<bool>,
    /// Why setup failed (EPERM: seccomp or the sysctl; ENOSYS: kernel without io_uring).
    pub setup_error: Option<String>,
    /// Feature name to whether the kernel has it. Empty when not probed.
    pub features: BTreeMap<String, bool>,
}

impl UringReport {
    /// Whether `feature` was probed and found; `None` when not probed.
    pub fn has(&self, feature: &str) -> Option<bool> {
        self.features.get(feature).copied()
    }
}

/// Probes the live kernel, or reads `io_uring.json` under a `--root`
/// (either the `io_uring` object or a whole `inspect --json` report).
pub fn read(host: &Host) -> Result<UringReport, InspectError> {
    let disabled_sysctl = host
        .read_trimmed("/proc/sys/kernel/io_uring_disabled")?
        .and_then(|t| t.parse().ok());
    if host.is_live() {
        let (setup, setup_error, features) = match probe() {
            Ok(features) => (true, None, features),
            Err(e) => (false, Some(e.to_string()), BTreeMap::new()),
        };
        return Ok(UringReport {
            disabled_sysctl,
            source: "live".into(),
            setup: Some(setup),
            setup_error,
            features,
        });
    }
    let Some(text) = host.read("io_uring.json")? else {
        return Ok(UringReport {
            disabled_sysctl,
            source: "not probed (--root)".into(),
            setup: None,
            setup_error: None,
            features: BTreeMap::new(),
        });
    };
    let path = host.root().join("io_uring.json").display().to_string();
    let mut value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| InspectError::Json {
            path: path.clone(),
            source: e,
        })?;
    if let Some(section) = value.get_mut("io_uring") {
        value = section.take();
    }
    let mut report: UringReport =
        serde_json::from_value(value).map_err(|e| InspectError::Json { path, source: e })?;
    report.source = "captured".into();
    Ok(report)
}

fn probe() -> std::io::Result<BTreeMap<String, bool>> {
    let ring = IoUring::new(8)?;
    let params = ring.params();
    let mut features = vec![
        ("feat_nodrop", params.is_feature_nodrop()),
        ("feat_fast_poll", params.is_feature_fast_poll()),
        ("feat_ext_arg", params.is_feature_ext_arg()),
        ("feat_native_workers", params.is_feature_native_workers()),
        ("feat_cqe_skip", params.is_feature_skip_cqe_on_success()),
        ("feat_recvsend_bundle", params.is_feature_recvsend_bundle()),
    ];
    let mut probe = Probe::new();
    let probed = ring.submitter().register_probe(&mut probe).is_ok();
    for (name, code) in [
        ("op_accept", opcode::Accept::CODE),
        ("op_recv", opcode::Recv::CODE),
        ("op_send", opcode::Send::CODE),
        ("op_writev", opcode::Writev::CODE),
        ("op_send_zc", opcode::SendZc::CODE),
        ("op_provide_buffers", opcode::ProvideBuffers::CODE),
        ("op_async_cancel", opcode::AsyncCancel::CODE),
        ("op_close", opcode::Close::CODE),
        ("op_timeout", opcode::Timeout::CODE),
        ("op_msg_ring", opcode::MsgRingData::CODE),
    ] {
        features.push((name, probed && probe.is_supported(code)));
    }
    features.push((
        "sqpoll",
        IoUring::<io_uring::squeue::Entry>::builder()
            .setup_sqpoll(1000)
            .build(8)
            .is_ok(),
    ));
    features.push(("registered_files", registered_files(&ring)));
    features.push(("registered_buffers", registered_buffers(&ring)));
    features.push(("buffer_ring", buffer_ring(&ring)));
    let (accept_multi, recv_multi) = multishot().unwrap_or((false, false));
    features.push(("accept_multishot", accept_multi));
    features.push(("recv_multishot", recv_multi));
    Ok(features
        .into_iter()
        .map(|(name, on)| (name.to_owned(), on))
        .collect())
}

fn registered_files(ring: &IoUring) -> bool {
    let Ok(file) = std::fs::File::open("/dev/null") else {
        return false;
    };
    let ok = ring.submitter().register_files(&[file.as_raw_fd()]).is_ok();
    ok && ring.submitter().unregister_files().is_ok()
}

fn registered_buffers(ring: &IoUring) -> bool {
    let mut buf = vec![0u8; 4096];
    let iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: `buf` outlives the registration, which is removed before it drops.
    let ok = unsafe { ring.submitter().register_buffers(&[iov]) }.is_ok();
    ok && ring.submitter().unregister_buffers().is_ok()
}

/// A page-aligned, zeroed allocation of `PAGE` bytes for a buffer ring.
const PAGE: usize = 4096;

fn buffer_ring(ring: &IoUring) -> bool {
    let Ok(layout) = std::alloc::Layout::from_size_align(PAGE, PAGE) else {
        return false;
    };
    // SAFETY: the layout has non-zero size.
    let memory = unsafe { std::alloc::alloc_zeroed(layout) };
    if memory.is_null() {
        return false;
    }
    // SAFETY: `memory` holds PAGE bytes, room for 8 16-byte ring entries, and
    // stays allocated until after the ring is unregistered below.
    let ok = unsafe {
        ring.submitter()
            .register_buf_ring_with_flags(memory as u64, 8, 7, 0)
    }
    .is_ok();
    let ok = ok && ring.submitter().unregister_buf_ring(7).is_ok();
    // SAFETY: allocated above with this layout; the kernel no longer uses it.
    unsafe { std::alloc::dealloc(memory, layout) };
    ok
}

/// Runs a multishot accept on a loopback listener with a client already
/// connected, then a multishot receive (with provided buffers) on the
/// accepted socket with a byte already sent. Each is supported when its
/// first completion succeeds; older kernels fail it with EINVAL.
fn multishot() -> std::io::Result<(bool, bool)> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let mut client = TcpStream::connect(listener.local_addr()?)?;
    client.write_all(b"x")?;
    let mut buffers = vec![0u8; 2 * 64];
    // Declared after the listener and the buffers, so dropped before them:
    // closing the ring ends every operation that points at them.
    let mut ring = IoUring::new(8)?;
    let accept = opcode::AcceptMulti::new(types::Fd(listener.as_raw_fd()))
        .build()
        .user_data(1);
    // SAFETY: the listener outlives the ring (see the declaration order).
    unsafe { ring.submission().push(&accept) }.map_err(std::io::Error::other)?;
    ring.submit_and_wait(1)?;
    let Some(cqe) = ring.completion().next() else {
        return Ok((false, false));
    };
    if cqe.result() < 0 {
        return Ok((false, false));
    }
    // SAFETY: a successful accept's result is a new socket nobody else owns.
    let accepted = unsafe { OwnedFd::from_raw_fd(cqe.result()) };
    let accept_multi = cqueue::more(cqe.flags());
    let provide = opcode::ProvideBuffers::new(buffers.as_mut_ptr(), 64, 2, 3, 0)
        .build()
        .user_data(2);
    let recv = opcode::RecvMulti::new(types::Fd(accepted.as_raw_fd()), 3)
        .build()
        .user_data(3);
    // SAFETY: `buffers` outlives the ring (see the declaration order), and
    // `accepted` is dropped after the ring: the explicit drop below.
    unsafe {
        ring.submission()
            .push(&provide)
            .map_err(std::io::Error::other)?;
        ring.submission()
            .push(&recv)
            .map_err(std::io::Error::other)?;
    }
    ring.submit_and_wait(2)?;
    let recv_multi = ring
        .completion()
        .any(|c| c.user_data() == 3 && c.result() > 0);
    drop(ring);
    drop(accepted);
    Ok((accept_multi, recv_multi))
}
