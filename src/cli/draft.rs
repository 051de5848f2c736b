//! `post draft`: plaintext draft-and-verify decoding over one or many prompts.

use std::path::Path;

use anyhow::{Context, Result};
use rand::SeedableRng;
use rand_chacha::ChaCha12Rng;
use serde_json::{json, Value};

use super::prompts::PromptArgs;
use super::{DecodeArgs, PairArgs};
use crate::model::loader::Registry;
use crate::spec::speculative_decode;

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
        let result = json!({
            "id": prompt.id,
            "prompt_ids": ids,
            "output_ids": decoded.output_ids,
            "text": text,
            "steps": decoded.steps,
            "mean_accepted": decoded.mean_accepted(),
            "acceptance_rate": decoded.acceptance_rate(),
            "tokens_per_step": decoded.tokens_per_step(),
            "accepted": decoded.accepted,
            "drafted": decoded.drafted,
        });
        if !decode.json {
            print_text(&result, &decoded);
        }
        results.push(result);
    }
    let summary = summarise(&results);
    if decode.json {
        println!("{}", json!({ "results": results, "summary": summary }));
    } else if results.len() > 1 {
        println!(
            "all {} prompts: tokens {} | steps {} | mean accepted {:.3} | acceptance {:.3}",
            results.len(),
            summary["tokens"],
            summary["steps"],
            summary["mean_accepted"].as_f64().unwrap_or_default(),
            summary["acceptance_rate"].as_f64().unwrap_or_default()
        );
    }
    Ok(())
}

/// Totals over all prompts: accepted drafts per step and per drafted token, pooled.
fn summarise(results: &[Value]) -> Value {
    let sum = |key: &str| {
        results
            .iter()
            .map(|r| r[key].as_u64().unwrap_or_default())
            .sum::<u64>()
    };
    let (steps, accepted, drafted) = (sum("steps"), sum("accepted"), sum("drafted"));
    let tokens: usize = results
        .iter()
        .map(|r| r["output_ids"].as_array().map_or(0, Vec::len))
        .sum();
    let ratio = |a: u64, b: u64| if b > 0 { a as f64 / b as f64 } else { 0.0 };
    json!({
        "prompts": results.len(),
        "tokens": tokens,
        "steps": steps,
        "accepted": accepted,
        "drafted": drafted,
        "mean_accepted": ratio(accepted, steps),
        "acceptance_rate": ratio(accepted, drafted),
        "tokens_per_step": ratio(tokens as u64, steps),
    })
}

fn print_text(result: &Value, decoded: &crate::spec::Decoded) {
    let shown = match result["text"].as_str() {
        Some(text) => text.to_string(),
        None => format!("{:?}", decoded.output_ids),
    };
    println!("[{}] {shown}", result["id"]);
    println!(
        "  tokens {} | steps {} | mean accepted {:.2} | acceptance {:.3}",
        decoded.output_ids.len(),
        decoded.steps,
        decoded.mean_accepted(),
        decoded.acceptance_rate()
    );
}
