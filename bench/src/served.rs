//! The shardcast server a command measures: a running one (`--url`) or one
//! it starts for the run (`--server`, pinned to `--server-cores`).

use std::path::Path;

use anyhow::bail;
use shardcast::CoreList;

use crate::servers::{RunningServer, ServerSpec, Speaks, free_port};

/// The command-line flags that name the server a command measures.
#[derive(clap::Args, Clone, Debug)]
pub(crate) struct Served {
    /// A running `shardcast serve`: ws://HOST:PORT/PATH, with what the
    /// command needs of it (hops: at least 2 shards; resume-storm: on this
    /// machine, as the clients connect from 127.0.0.x, with a room history
    /// that holds what a client misses during the storm). Give this or
    /// --server.
    #[arg(long, required_unless_present = "server", conflicts_with = "server")]
    pub(crate) url: Option<String>,
    /// The server's command line, `{port}` where its port goes (such as
    /// `shardcast serve --listen 127.0.0.1:{port} --shards 2 --cores 0,1`)
    /// and, for a command that writes a config file, optionally `{config}`
    /// where it goes (resume-storm writes there a `[rooms]` table whose
    /// history holds what the storm makes clients miss: add `--config
    /// {config}`). Started for the run on a free port, pinned with
    /// `taskset` to --server-cores, and killed at the end. Split on
    /// whitespace, without a shell.
    #[arg(long)]
    pub(crate) server: Option<String>,
    /// The cores a --server runs on (`taskset -c`).
    #[arg(long, default_value = "0,1")]
    pub(crate) server_cores: CoreList,
}

impl Served {
    /// The cores of the server the run starts; none for a running one,
    /// whose cores the run does not choose.
    pub(crate) fn started_cores(&self) -> Option<&CoreList> {
        self.server.as_ref().map(|_| &self.server_cores)
    }

    /// The URL to measure, and the server started for the run when
    /// `--server` gave one (killed when dropped). `config` is the file a
    /// `{config}` in the command stands for, if the caller wrote one.
    pub(crate) fn start(
        &self,
        config: Option<&Path>,
    ) -> anyhow::Result<(String, Option<RunningServer>)> {
        let command = match (&self.url, &self.server) {
            (Some(url), _) => return Ok((url.clone(), None)),
            (None, Some(command)) => command,
            (None, None) => bail!("give --url or --server"),
        };
        if !command.contains("{port}") {
            bail!("the --server command has no {{port}} to listen on");
        }
        let command = match config {
            Some(path) => command.replace("{config}", &path.to_string_lossy()),
            None => command.clone(),
        };
        let spec = ServerSpec {
            name: "shardcast".to_owned(),
            speaks: Speaks::ShardcastV1,
            command,
        };
        let port = free_port()?;
        let server = RunningServer::start(&spec, port, &self.server_cores)?;
        Ok((format!("ws://127.0.0.1:{port}/"), Some(server)))
    }
}
