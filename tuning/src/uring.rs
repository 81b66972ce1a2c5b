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
    /// `Seccomp:` of `/proc/self/status`: 0 none, 1 strict, 2 filter (as
    /// container runtimes install; a filter may refuse `io_uring_setup`).
    #[serde(default)]
    pub seccomp: Option<u8>,
    /// How the facts were obtained: `live`, `captured` or `not probed (--root)`.
    pub source: String,
    /// Whether a ring could be set up; `None` when not probed.
    pub setup: Option<bool>,
    /// Why setup failed (EPERM: seccomp or the sysctl; ENOSYS: kernel without io_uring).
    pub setup_error: Option<String>,
    /// Feature name to whether the kernel has it. Empty when not probed.
    pub features: BTreeMap<String, bool>,
    /// Probes that could not run, with why (their features are absent from
    /// `features`).
    #[serde(default)]
    pub probe_errors: BTreeMap<String, String>,
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
    let seccomp = host
        .read("/proc/self/status")?
        .as_deref()
        .and_then(seccomp_mode);
    if host.is_live() {
        let (setup, setup_error, (features, probe_errors)) = match probe() {
            Ok(probed) => (true, None, probed),
            Err(e) => (false, Some(e.to_string()), Default::default()),
        };
        return Ok(UringReport {
            disabled_sysctl,
            seccomp,
            source: "live".into(),
            setup: Some(setup),
            setup_error,
            features,
            probe_errors,
        });
    }
    let Some(text) = host.read("io_uring.json")? else {
        return Ok(UringReport {
            disabled_sysctl,
            seccomp,
            source: "not probed (--root)".into(),
            setup: None,
            setup_error: None,
            features: BTreeMap::new(),
            probe_errors: BTreeMap::new(),
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
    report.disabled_sysctl = disabled_sysctl.or(report.disabled_sysctl);
    report.seccomp = seccomp.or(report.seccomp);
    Ok(report)
}

/// The `Seccomp:` mode of a `/proc/<pid>/status`.
fn seccomp_mode(status: &str) -> Option<u8> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("Seccomp:"))
        .and_then(|v| v.trim().parse().ok())
}

/// Features probed, and the probes that could not run (no loopback
/// networking, say) with their errors.
type Probed = (BTreeMap<String, bool>, BTreeMap<String, String>);

fn probe() -> std::io::Result<Probed> {
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
    let mut features: BTreeMap<String, bool> = features
        .into_iter()
        .map(|(name, on)| (name.to_owned(), on))
        .collect();
    let mut errors = BTreeMap::new();
    for (name, run) in [
        (
            "accept_multishot",
            accept_multishot as fn() -> std::io::Result<bool>,
        ),
        ("recv_multishot", recv_multishot),
    ] {
        match run() {
            Ok(on) => {
                features.insert(name.to_owned(), on);
            }
            Err(e) => {
                errors.insert(name.to_owned(), e.to_string());
            }
        }
    }
    Ok((features, errors))
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

/// Size and alignment of the memory a probe buffer ring is registered on.
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

/// A connected loopback pair: the listener, the client (one byte already
/// sent) and the accepted server side.
fn loopback_pair() -> std::io::Result<(TcpListener, TcpStream, TcpStream)> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let mut client = TcpStream::connect(listener.local_addr()?)?;
    client.write_all(b"x")?;
    let (server, _) = listener.accept()?;
    Ok((listener, client, server))
}

/// Submits `entries` and returns the first completion tagged `user_data`.
///
/// # Safety
/// Every buffer and descriptor the entries point at must outlive `ring`.
unsafe fn complete(
    ring: &mut IoUring,
    entries: &[io_uring::squeue::Entry],
    user_data: u64,
) -> std::io::Result<Option<io_uring::cqueue::Entry>> {
    for entry in entries {
        // SAFETY: the caller keeps what the entries point at alive.
        unsafe { ring.submission().push(entry) }.map_err(std::io::Error::other)?;
    }
    ring.submit_and_wait(entries.len())?;
    Ok(ring.completion().find(|c| c.user_data() == user_data))
}

/// Runs a multishot accept on a loopback listener with a client already
/// waiting. Supported when the first completion is a socket and says more
/// will follow; older kernels fail it with EINVAL.
fn accept_multishot() -> std::io::Result<bool> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let _client = TcpStream::connect(listener.local_addr()?)?;
    // Declared after the listener, so dropped (ending the accept) before it.
    let mut ring = IoUring::new(8)?;
    let accept = opcode::AcceptMulti::new(types::Fd(listener.as_raw_fd()))
        .build()
        .user_data(1);
    // SAFETY: the listener outlives the ring (declaration order).
    let cqe = unsafe { complete(&mut ring, &[accept], 1) }?;
    let Some(cqe) = cqe else {
        return Ok(false);
    };
    if cqe.result() < 0 {
        return Ok(false);
    }
    // SAFETY: a successful accept's result is a new socket nobody else owns;
    // wrapping it closes it.
    drop(unsafe { OwnedFd::from_raw_fd(cqe.result()) });
    Ok(cqueue::more(cqe.flags()))
}

/// Runs a multishot receive, with two provided buffers, on a socket with a
/// byte waiting. Supported when it completes with data; older kernels fail
/// it with EINVAL.
fn recv_multishot() -> std::io::Result<bool> {
    let (_listener, _client, server) = loopback_pair()?;
    let mut buffers = vec![0u8; 2 * 64];
    // Declared after the socket and the buffers, so dropped (ending the
    // receive) before them.
    let mut ring = IoUring::new(8)?;
    let provide = opcode::ProvideBuffers::new(buffers.as_mut_ptr(), 64, 2, 3, 0)
        .build()
        .user_data(2);
    let recv = opcode::RecvMulti::new(types::Fd(server.as_raw_fd()), 3)
        .build()
        .user_data(3);
    // SAFETY: `buffers` and `server` outlive the ring (declaration order).
    let cqe = unsafe { complete(&mut ring, &[provide, recv], 3) }?;
    Ok(cqe.is_some_and(|c| c.result() > 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_seccomp_mode() {
        assert_eq!(
            seccomp_mode("Name:\tx\nSeccomp:\t2\nSeccomp_filters:\t1\n"),
            Some(2)
        );
        assert_eq!(seccomp_mode("Name:\tx\n"), None);
    }
}
