//! The command line: one clap-derive `Args` with a subcommand each, and `run` dispatching to them.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::{Parser, Subcommand};

use crate::model::loader::{load_named_pair, load_pair, ModelPair, Registry};

pub mod bench;
pub mod draft;
pub mod prompts;
pub mod serve;
pub mod sweep;
pub mod train;
pub mod verify;

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
    /// Secure generation: the private model runs on secret shares, standard or POST decoding.
    Verify(verify::VerifyArgs),
    /// Align the public model to the private one by knowledge distillation.
    Distill(train::DistillArgs),
    /// Train a GPT-2 from scratch on text files (checkpoints in the Hugging Face layout).
    Train(train::TrainArgs),
    /// Measurements: the speedup table (`--mode secure`), secure-forward latency, plaintext speed, perplexity, engine.
    Bench(bench::BenchArgs),
    /// Scripted, resumable grids of `bench --mode secure` cells appended to one CSV.
    Sweep(sweep::SweepArgs),
    /// The server party as a process: holds the private model, serves `post verify --connect`.
    Serve(serve::ServeArgs),
    /// The dealer as a process: correlated randomness for both parties of each session.
    Dealer(serve::DealerArgs),
    /// A key pair for serve, dealer or verify --connect: NAME.key (private) and NAME.pub.
    Keygen(serve::KeygenArgs),
}

/// The public/private pair: `--pair NAME`, or `--public MODEL --private MODEL`.
#[derive(Debug, clap::Args)]
pub struct PairArgs {
    /// A named public/private pair from the model registry.
    #[arg(long, conflicts_with_all = ["public", "private"])]
    pub pair: Option<String>,
    /// The public (drafting) model: a folder, a registry name or a Hugging Face repo id in the local cache.
    #[arg(long, value_name = "MODEL")]
    pub public: Option<String>,
    /// The private (verifying) model, referenced like --public.
    #[arg(long, value_name = "MODEL")]
    pub private: Option<String>,
}

impl PairArgs {
    pub fn load(&self, registry: &Registry) -> Result<ModelPair> {
        match (&self.pair, &self.public, &self.private) {
            (Some(name), _, _) => load_named_pair(name, registry),
            (None, Some(public), Some(private)) => load_pair(public, private, registry),
            _ => bail!("give --pair NAME, or both --public MODEL and --private MODEL"),
        }
    }
}

/// The decoding flags `draft` and `verify` share.
#[derive(Debug, clap::Args)]
pub struct DecodeArgs {
    /// Drafts per verification step (K, at least 1).
    #[arg(long, short = 'k', default_value_t = 4, value_name = "K")]
    pub draft_len: usize,
    /// Sampling temperature (public); 0 is greedy, where a draft is accepted when it is the private argmax.
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    pub temperature: f64,
    #[arg(long, default_value_t = 32, value_name = "N")]
    pub max_new_tokens: usize,
    /// Seed of the client's sampling (drafts and the rule's uniforms).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Do not stop at the private model's end-of-text token.
    #[arg(long)]
    pub ignore_eos: bool,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

impl DecodeArgs {
    /// Checks K and the temperature once, naming the flag at fault.
    pub fn validate(&self) -> Result<()> {
        if self.draft_len == 0 {
            bail!("--draft-len must be at least 1 (plain decoding is `post verify --method standard`)")
        }
        if !self.temperature.is_finite() || self.temperature < 0.0 {
            bail!(
                "--temperature must be a finite number >= 0, got {}",
                self.temperature
            )
        }
        Ok(())
    }

    /// Options of the decoding loop with `draft_len` drafts per step, stopping at `eos` unless
    /// --ignore-eos.
    pub fn options(&self, draft_len: usize, eos: Option<u32>) -> crate::decoding::DecodeOptions {
        crate::decoding::DecodeOptions {
            draft_len,
            temperature: self.temperature,
            max_new_tokens: self.max_new_tokens,
            stop_token: if self.ignore_eos { None } else { eos },
        }
    }
}

pub fn run(args: Args) -> Result<()> {
    match args.command {
        Command::Draft(draft) => draft::run(&draft, args.registry.as_deref()),
        Command::Bench(bench) => bench::run(&bench, args.registry.as_deref()),
        Command::Verify(verify) => verify::run(&verify, args.registry.as_deref()),
        Command::Distill(distill) => train::run_distill(&distill, args.registry.as_deref()),
        Command::Train(train_args) => train::run_train(&train_args),
        Command::Sweep(sweep) => sweep::run(&sweep, args.registry.as_deref()),
        Command::Serve(serve_args) => serve::run_serve(&serve_args, args.registry.as_deref()),
        Command::Dealer(dealer) => serve::run_dealer(&dealer),
        Command::Keygen(keygen) => serve::run_keygen(&keygen),
    }
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
