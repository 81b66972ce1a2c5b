//! Servers under test, as the comparing commands start them: a name and a
//! command line with `{port}`, run pinned with `taskset` on a free port,
//! waited for until the port accepts, and killed when dropped. Also the
//! command line of a run as the reports quote it.

use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use shardcast::CoreList;

/// How long a server may take to open its port.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// A server under test: its name in the report, the protocol it speaks
/// and how to start it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ServerSpec {
    /// Name in the report.
    pub(crate) name: String,
    /// What the load speaks to it.
    pub(crate) speaks: Speaks,
    /// Command line, with `{port}` where its port goes.
    pub(crate) command: String,
}

/// The protocol a server under test speaks, which decides the scenarios
/// it can run and how the load talks to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Speaks {
    /// Plain WebSocket messages, echoed back: echo, latency, storm and
    /// connections.
    Raw,
    /// Socket.IO events (`bench/peers/socket.io`): echo and fanout.
    SocketIo,
    /// uWebSockets.js topics (`bench/peers/uwebsockets-js/fanout.js`):
    /// fanout.
    UwsTopics,
    /// shardcast's own rooms, the `shardcast.v1` subprotocol (`shardcast
    /// serve` without `--echo`): fanout.
    ShardcastV1,
}

impl Speaks {
    const ALL: [Speaks; 4] = [
        Speaks::Raw,
        Speaks::SocketIo,
        Speaks::UwsTopics,
        Speaks::ShardcastV1,
    ];

    /// The name written before a command: `raw`, `socket.io`,
    /// `uws-topics`, `shardcast-v1`; for a room protocol, also its
    /// `fanout --protocol` name.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Speaks::Raw => "raw",
            Speaks::SocketIo => "socket.io",
            Speaks::UwsTopics => "uws-topics",
            Speaks::ShardcastV1 => "shardcast-v1",
        }
    }
}

impl FromStr for ServerSpec {
    type Err = anyhow::Error;

    /// Parses `NAME=COMMAND` (a plain WebSocket server) or
    /// `NAME=PROTOCOL:COMMAND`, PROTOCOL one of `raw`, `socket.io`,
    /// `uws-topics`, `shardcast-v1`.
    fn from_str(text: &str) -> anyhow::Result<ServerSpec> {
        let Some((name, rest)) = text.split_once('=') else {
            bail!("expected NAME=[PROTOCOL:]COMMAND, got {text:?}");
        };
        let (speaks, command) = Speaks::ALL
            .iter()
            .find_map(|speaks| {
                let command = rest.trim_start().strip_prefix(speaks.name())?;
                Some((*speaks, command.strip_prefix(':')?))
            })
            .unwrap_or((Speaks::Raw, rest));
        let (name, command) = (name.trim(), command.trim());
        if name.is_empty() || command.is_empty() {
            bail!("expected NAME=[PROTOCOL:]COMMAND, got {text:?}");
        }
        if !command.contains("{port}") {
            bail!("the command of {name} has no {{port}} to listen on");
        }
        Ok(ServerSpec {
            name: name.to_owned(),
            speaks,
            command: command.to_owned(),
        })
    }
}

/// A started server, killed when dropped, with every process it started:
/// it leads its own process group, which is also what its CPU time is
/// read over.
///
/// It runs with this process's resource limits: raise RLIMIT_NOFILE here
/// before starting it to give it more file descriptors.
pub(crate) struct RunningServer {
    child: Child,
}

impl RunningServer {
    /// Starts `spec` on `port`, pinned to `cores`, and waits until the
    /// port accepts connections. `taskset` execs the command, so the
    /// child's process id is the server's.
    pub(crate) fn start(
        spec: &ServerSpec,
        port: u16,
        cores: &CoreList,
    ) -> anyhow::Result<RunningServer> {
        let command = spec.command.replace("{port}", &port.to_string());
        let cores = cores.to_string();
        let child = Command::new("taskset")
            .args(["-c", &cores])
            .args(command.split_whitespace())
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}: taskset -c {cores} {command}", spec.name))?;
        let mut server = RunningServer { child };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = server.child.try_wait()? {
                bail!("{} exited before opening its port: {status}", spec.name);
            }
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(server);
            }
            if Instant::now() > deadline {
                bail!(
                    "{} did not open port {port} within {START_TIMEOUT:?}",
                    spec.name
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// The server's process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails if the server has exited.
    pub(crate) fn check_running(&mut self) -> anyhow::Result<()> {
        match self.child.try_wait()? {
            Some(status) => bail!("the server exited: {status}"),
            None => Ok(()),
        }
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        // It may have exited already; either way neither it nor any process
        // it started (its group) may outlive the run.
        if let Ok(group) = i32::try_from(self.child.id()) {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{group}")])
                .stderr(Stdio::null())
                .status();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port nobody listens on now, for the next server.
pub(crate) fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr()?.port())
}

/// The command line as a shell would take it back: arguments holding
/// anything but plain characters are single-quoted.
pub(crate) fn shell_command_line(args: impl IntoIterator<Item = String>) -> String {
    args.into_iter()
        .map(|arg| {
            let plain = !arg.is_empty()
                && arg
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,@+".contains(&b));
            if plain {
                arg
            } else {
                format!("'{}'", arg.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_need_a_name_and_a_port_placeholder() {
        let spec: ServerSpec = "peer=bin/echo --listen 127.0.0.1:{port}".parse().unwrap();
        assert_eq!(spec.name, "peer");
        assert_eq!(spec.command, "bin/echo --listen 127.0.0.1:{port}");
        assert_eq!(spec.speaks, Speaks::Raw);
        let spec: ServerSpec = "io=socket.io:node server.js {port}".parse().unwrap();
        assert_eq!(
            (spec.speaks, spec.command.as_str()),
            (Speaks::SocketIo, "node server.js {port}")
        );
        let spec: ServerSpec = "uws=uws-topics:node fanout.js {port}".parse().unwrap();
        assert_eq!(spec.speaks, Speaks::UwsTopics);
        let spec: ServerSpec = "shardcast=shardcast-v1:shardcast serve --listen 127.0.0.1:{port}"
            .parse()
            .unwrap();
        assert_eq!(
            (spec.speaks, spec.command.as_str()),
            (
                Speaks::ShardcastV1,
                "shardcast serve --listen 127.0.0.1:{port}"
            )
        );
        assert!("io=socket.io:".parse::<ServerSpec>().is_err());
        assert!("peer".parse::<ServerSpec>().is_err());
        assert!("=bin/echo {port}".parse::<ServerSpec>().is_err());
        assert!(
            "peer=bin/echo --listen 127.0.0.1:9000"
                .parse::<ServerSpec>()
                .is_err()
        );
    }

    #[test]
    fn command_lines_are_quoted_only_where_needed() {
        let args = [
            "shardcast-bench",
            "compare",
            "--server",
            "peer=bin/echo --listen 127.0.0.1:{port}",
            "--scenario",
            "100x32",
            "it's",
        ]
        .map(str::to_owned);
        assert_eq!(
            shell_command_line(args),
            r"shardcast-bench compare --server 'peer=bin/echo --listen 127.0.0.1:{port}' --scenario 100x32 'it'\''s'"
        );
    }
}
