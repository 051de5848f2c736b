//! `post draft`: plaintext draft-and-verify decoding over one or many prompts.

use std::path::Path;

use anyhow::{Context, Result};
use rand::SeedableRng;
use rand_chacha::ChaCha12Rng;
use serde::Serialize;
use serde_json::Value;

use super::prompts::PromptArgs;
use super::{DecodeArgs, PairArgs};
use crate::decoding::speculative_decode;
use crate::model::loader::Registry;

#[derive(Debug, clap::Args)]
pub struct DraftArgs {
    #[command(flatten)]
    pub models: PairArgs,
    #[command(flatten)]
    pub input: PromptArgs,
    #[command(flatten)]
    pub decode: DecodeArgs,
}

pub fn run(args: &DraftArgs, registry: Option<&Path>) -> Result<()> {
    let decode = &args.decode;
    decode.validate()?;
    let prompts = args.input.prompts()?;
    let registry = Registry::locate(registry)?;
    let pair = args.models.load(&registry)?;
    let tokenizer = pair.tokenizer();
    let vocab = pair.private.config().vocab_size;
    let opts = decode.options(decode.draft_len, pair.private.config().end_of_text());
    let mut rng = ChaCha12Rng::seed_from_u64(decode.seed);
    let mut results = Vec::new();
    for prompt in &prompts {
        let ids = args
            .input
            .prepare(prompt, &pair, decode.max_new_tokens, vocab)?;
        let decoded = speculative_decode(
            &pair.public.model,
            &pair.private.model,
            &ids,
            &opts,
            &mut rng,
        )
        .with_context(|| format!("prompt {}", prompt.id))?;
        let text = match tokenizer {
            Some(tok) => Some(tok.decode(&decoded.output_ids)?),
            None => None,
        };
        let result = DraftResult {
            id: prompt.id.clone(),
            prompt_ids: ids,
            text,
            steps: decoded.steps,
            mean_accepted: decoded.mean_accepted(),
            acceptance_rate: decoded.acceptance_rate(),
            tokens_per_step: decoded.tokens_per_step(),
            accepted: decoded.accepted,
            drafted: decoded.drafted,
            output_ids: decoded.output_ids,
        };
        if !decode.json {
            print_text(&result);
        }
        results.push(result);
    }
    let summary = DraftSummary::of(&results);
    if decode.json {
        println!(
            "{}",
            serde_json::to_string(&DraftReport { results, summary })?
        );
    } else if results.len() > 1 {
        println!(
            "all {} prompts: tokens {} | steps {} | mean accepted {:.3} | acceptance {:.3}",
            summary.prompts,
            summary.tokens,
            summary.steps,
            summary.mean_accepted,
            summary.acceptance_rate
        );
    }
    Ok(())
}

/// One prompt's draft-and-verify decoding (`--json`'s `results`).
#[derive(Debug, Serialize)]
struct DraftResult {
    id: Value,
    prompt_ids: Vec<u32>,
    output_ids: Vec<u32>,
    text: Option<String>,
    steps: usize,
    mean_accepted: f64,
    acceptance_rate: f64,
    tokens_per_step: f64,
    accepted: usize,
    drafted: usize,
}

/// Totals over all prompts: accepted drafts per step and per drafted token, pooled.
#[derive(Debug, Serialize)]
struct DraftSummary {
    prompts: usize,
    tokens: usize,
    steps: usize,
    accepted: usize,
    drafted: usize,
    mean_accepted: f64,
    acceptance_rate: f64,
    tokens_per_step: f64,
}

impl DraftSummary {
    fn of(results: &[DraftResult]) -> Self {
        let steps = results.iter().map(|r| r.steps).sum();
        let accepted = results.iter().map(|r| r.accepted).sum();
        let drafted = results.iter().map(|r| r.drafted).sum();
        let tokens = results.iter().map(|r| r.output_ids.len()).sum();
        let ratio = |a: usize, b: usize| if b > 0 { a as f64 / b as f64 } else { 0.0 };
        Self {
            prompts: results.len(),
            tokens,
            steps,
            accepted,
            drafted,
            mean_accepted: ratio(accepted, steps),
            acceptance_rate: ratio(accepted, drafted),
            tokens_per_step: ratio(tokens, steps),
        }
    }
}

#[derive(Debug, Serialize)]
struct DraftReport {
    results: Vec<DraftResult>,
    summary: DraftSummary,
}

fn print_text(result: &DraftResult) {
    let shown = match &result.text {
        Some(text) => text.clone(),
        None => format!("{:?}", result.output_ids),
    };
    println!("[{}] {shown}", result.id);
    println!(
        "  tokens {} | steps {} | mean accepted {:.2} | acceptance {:.3}",
        result.output_ids.len(),
        result.steps,
        result.mean_accepted,
        result.acceptance_rate
    );
}
