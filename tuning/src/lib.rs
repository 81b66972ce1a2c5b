//! shardcast-tune: inspects a Linux host, plans shards per core and proves
//! the plan with a sweep.
//!
//! [`inspect`] reads CPU topology, network queues and IRQs, io_uring support,
//! limits and sysctls through a [`Host`] (the live machine or a captured
//! tree), and judges each fact for a server holding N connections
//! ([`findings`]). It reads only; it changes nothing on the host.
//!
//! [`plan::plan`] turns a report into shards per physical core, engine
//! settings and the files that carry them (a `shardcast serve` config, a
//! sysctl.d file, a systemd drop-in), each choice with its reason; it is
//! pure. [`plan::apply`] writes those files under a root with a backup, and
//! reverts them; only there, and only with `--apply` or `--revert`, does
//! the crate change a host.
//!
//! [`sweep`] runs `shardcast serve` under candidate plans, measures each
//! with shardcast-bench and names the best; it runs programs and loads the
//! machine (on loopback), but changes no setting of the host.

pub mod cpulist;
pub mod findings;
pub mod host;
pub mod limits;
pub mod network;
pub mod plan;
pub mod report;
pub mod serve_config;
pub mod sweep;
pub mod topology;
pub mod uring;

use std::path::PathBuf;

pub use host::{Host, HostError};
pub use report::Report;

/// Why inspecting a host failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InspectError {
    /// A host file exists but could not be read.
    #[error(transparent)]
    Host(#[from] HostError),
    /// A required file is missing (e.g. `/sys/devices/system/cpu/online`).
    #[error("missing {0}")]
    Missing(String),
    /// A file's content is not in the kernel's format.
    #[error("cannot parse {path}: {text:?}")]
    Parse {
        /// The file, relative to the root.
        path: String,
        /// Its content.
        text: String,
    },
    /// A CPU list or mask is malformed.
    #[error(transparent)]
    CpuList(#[from] cpulist::CpuListError),
    /// A captured JSON fixture is malformed.
    #[error("cannot parse {path}: {source}")]
    Json {
        /// The fixture file.
        path: String,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
}

/// Reads everything about `host` and judges it for `connections` connections.
pub fn inspect(host: &Host, connections: u64) -> Result<Report, InspectError> {
    let topology = topology::Topology::read(host)?;
    let network = network::read(host)?;
    let io_uring = uring::read(host)?;
    let limits = limits::Limits::read(host)?;
    let findings = findings::evaluate(&topology, &network, &io_uring, &limits, connections);
    Ok(Report {
        root: if host.is_live() {
            None
        } else {
            Some(PathBuf::from(host.root()))
        },
        connections,
        topology,
        network,
        io_uring,
        limits,
        findings,
    })
}
