//! shardcast-bench: benchmarks of shardcast against its peers, and the
//! generator of BENCHMARKS.md.
//!
//! Today it turns criterion results of the protocol codec into their
//! section of BENCHMARKS.md; the load generator and the peer servers arrive
//! with the benchmark issue.

mod codec_report;
mod machine;
mod report_file;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Command line of shardcast-bench.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Writes the protocol codec section of BENCHMARKS.md from criterion's
    /// results (`cargo bench -p shardcast-proto --bench codec`).
    CodecReport {
        /// criterion's output folder.
        #[arg(long, default_value = "target/criterion")]
        criterion: PathBuf,
        /// The report to update; only the codec section is replaced.
        #[arg(long, default_value = "BENCHMARKS.md")]
        out: PathBuf,
        /// The command that produced the results, printed above the tables.
        #[arg(long)]
        command: String,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::CodecReport {
            criterion,
            out,
            command,
        } => {
            let section = codec_report::render(&criterion, &command, &machine::Machine::read())?;
            report_file::replace_section(&out, codec_report::SECTION, &section)?;
            println!(
                "wrote the {} section of {}",
                codec_report::SECTION,
                out.display()
            );
            Ok(())
        }
    }
}
