//! The command line: one clap-derive `Args` with a subcommand each, and `run` dispatching to them.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::{Parser, Subcommand};

pub mod bench;
pub mod draft;
pub mod prompts;
pub mod train;

#[derive(Debug, Parser)]
#[command(
    name = "post",
    version,
    about = "Private GPT inference that never decodes autoregressively: public drafting, secure verification."
)]
pub struct Args {
    /// The model registry to use (default: $POST_REGISTRY, else models/registry.json).
    #[arg(long, global = true, value_name = "FILE")]
    pub registry: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Plaintext draft-and-verify decoding: the public model drafts, the private model verifies.
    Draft(draft::DraftArgs),
    /// Secure verification of drafts with the private model under two-party computation.
    Verify(NotBuilt),
    /// Align the public model to the private one by knowledge distillation.
    Distill(train::DistillArgs),
    /// Train a GPT-2 from scratch on text files (checkpoints in the Hugging Face layout).
    Train(train::TrainArgs),
    /// Measurements: `--mode forward` times the plaintext candle forward.
    Bench(bench::BenchArgs),
    /// Scripted parameter grids over `bench`.
    Sweep(NotBuilt),
}

/// Arguments of a subcommand that a later issue builds: accepted, then refused in one line.
#[derive(Debug, clap::Args)]
pub struct NotBuilt {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
    rest: Vec<String>,
}

pub fn run(args: Args) -> Result<()> {
    match args.command {
        Command::Draft(draft) => draft::run(&draft, args.registry.as_deref()),
        Command::Bench(bench) => bench::run(&bench, args.registry.as_deref()),
        Command::Verify(_) => not_built("verify", "secure verification"),
        Command::Distill(distill) => train::run_distill(&distill, args.registry.as_deref()),
        Command::Train(train_args) => train::run_train(&train_args),
        Command::Sweep(_) => not_built("sweep", "parameter sweeps"),
    }
}

/// One progress bar for long work; hidden when stderr is not a terminal.
pub fn progress(len: usize, prefix: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(len as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{prefix} [{bar:30}] {pos}/{len} {msg} ({elapsed})",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar.set_prefix(prefix.to_string());
    bar
}

fn not_built(command: &str, what: &str) -> Result<()> {
    bail!("`post {command}` ({what}) is not built yet: it comes with a later issue")
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Args::command().debug_assert();
    }
}
