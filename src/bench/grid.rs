//! Parameter grids of the speedup table, from `post bench --mode secure` flags or a `post sweep`
//! TOML file, run as cells appended to one CSV file.
//!
//! Resumable: a cell whose rows are already in the file is skipped, and a cell's rows are appended
//! in one write when the cell ends, so a killed sweep loses at most the cell it was running.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use super::decoding::{load_pair, run_cell, BenchRow, Cell, DraftLen, Weights};
use crate::model::loader::{ModelPair, Registry};
use crate::mpc::LinkModel;

fn default_prompts() -> usize {
    5
}
fn default_max_new() -> usize {
    32
}
fn default_weights() -> Weights {
    Weights::Trained
}

/// A grid: pairs x aligned-or-not x datasets x nets x temperatures, each cell with every draft length.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Grid {
    /// Registry pair names.
    pub pairs: Vec<String>,
    /// With `[false, true]`, each pair P also runs as `P-aligned` (the registry pair of its
    /// distilled public model).
    #[serde(default)]
    pub aligned: Option<Vec<bool>>,
    /// Prompt sets (JSON lines).
    pub datasets: Vec<PathBuf>,
    /// Links: lan, wan or bw=..,rtt=...
    pub nets: Vec<String>,
    /// Fixed K (at least 1) or "auto".
    pub draft_lens: Vec<DraftLen>,
    pub temperatures: Vec<f64>,
    /// The first N prompts of each dataset.
    #[serde(default = "default_prompts")]
    pub prompts: usize,
    #[serde(default = "default_max_new")]
    pub max_new_tokens: usize,
    #[serde(default)]
    pub seed: u64,
    /// Reproducible engine randomness (not secure); default: OS seeds per party.
    #[serde(default)]
    pub sim_seed: Option<u64>,
    #[serde(default = "default_weights")]
    pub weights: Weights,
    #[serde(default)]
    pub ignore_eos: bool,
    /// The CSV file (a path from where `post` runs); `post sweep --out` overrides it.
    #[serde(default)]
    pub out: Option<PathBuf>,
}

impl Grid {
    pub fn from_toml(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read grid {}", path.display()))?;
        let grid: Grid = toml::from_str(&text).map_err(|e| {
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].lines().count().max(1));
            anyhow::anyhow!(
                "malformed grid {}{}: {}",
                path.display(),
                line.map_or_else(String::new, |l| format!(", line {l}")),
                e.message().trim().replace('\n', " ")
            )
        })?;
        grid.validate()
            .with_context(|| format!("bad grid {}", path.display()))?;
        Ok(grid)
    }

    pub fn validate(&self) -> Result<()> {
        let empty = [
            ("pairs", self.pairs.is_empty()),
            ("datasets", self.datasets.is_empty()),
            ("nets", self.nets.is_empty()),
            ("draft_lens", self.draft_lens.is_empty()),
            ("temperatures", self.temperatures.is_empty()),
            ("aligned", self.aligned.as_ref().is_some_and(Vec::is_empty)),
        ];
        if let Some((axis, _)) = empty.iter().find(|(_, e)| *e) {
            bail!("the axis {axis:?} is empty: give it at least one value")
        }
        if self.draft_lens.contains(&DraftLen::Fixed(0)) {
            bail!("draft_lens must be at least 1 (standard decoding runs in every cell anyway)")
        }
        if let Some(t) = self
            .temperatures
            .iter()
            .find(|t| !t.is_finite() || **t < 0.0)
        {
            bail!("temperature {t} must be a finite number >= 0")
        }
        if self.prompts == 0 || self.max_new_tokens == 0 {
            bail!("prompts and max_new_tokens must be at least 1")
        }
        for net in &self.nets {
            LinkModel::parse(net)?;
        }
        for d in &self.datasets {
            if !d.is_file() {
                bail!("dataset {} does not exist", d.display())
            }
        }
        Ok(())
    }

    /// The pair names after the aligned axis.
    fn pair_names(&self) -> Vec<String> {
        let mut out = Vec::new();
        for p in &self.pairs {
            let base = p.strip_suffix("-aligned").unwrap_or(p);
            let variants: Vec<String> = match &self.aligned {
                None => vec![p.clone()],
                Some(axis) => axis
                    .iter()
                    .map(|&a| {
                        if a {
                            format!("{base}-aligned")
                        } else {
                            base.to_string()
                        }
                    })
                    .collect(),
            };
            for v in variants {
                if !out.contains(&v) {
                    out.push(v);
                }
            }
        }
        out
    }

    /// Cells in run order: (pair, dataset, net, temperature).
    fn cells(&self) -> Vec<(String, PathBuf, String, f64)> {
        let mut out = Vec::new();
        for pair in self.pair_names() {
            for dataset in &self.datasets {
                for net in &self.nets {
                    for &t in &self.temperatures {
                        out.push((pair.clone(), dataset.clone(), net.clone(), t));
                    }
                }
            }
        }
        out
    }
}

/// A dataset's label in the rows: its file stem.
pub fn dataset_label(path: &Path) -> String {
    path.file_stem().map_or_else(
        || path.display().to_string(),
        |s| s.to_string_lossy().into(),
    )
}

/// The first `n` prompts of a dataset as ids, cut to leave room for `max_new` tokens.
fn prepare_prompts(
    path: &Path,
    pair: &ModelPair,
    n: usize,
    max_new: usize,
) -> Result<Vec<(String, Vec<u32>)>> {
    let window = pair
        .private
        .config()
        .n_positions
        .min(pair.public.config().n_positions);
    if max_new >= window {
        bail!("max_new_tokens {max_new} leaves no room for a prompt in the context window of {window}")
    }
    let vocab = pair.private.config().vocab_size;
    crate::prompts::read_jsonl(path)?
        .iter()
        .take(n)
        .map(|p| {
            let mut ids = p.token_ids(pair.tokenizer())?;
            ids.drain(..ids.len().saturating_sub(window - max_new));
            if ids.is_empty() {
                bail!("prompt {} of {} is empty", p.id, path.display())
            }
            if let Some(bad) = ids.iter().find(|&&id| id as usize >= vocab) {
                bail!(
                    "prompt {}: token id {bad} is outside the vocabulary of {vocab}",
                    p.id
                )
            }
            let id = match &p.id {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            Ok((id, ids))
        })
        .collect()
}

/// Runs every cell of the grid whose rows are not yet in `out`, appending each cell's rows when it
/// ends. Returns the grid's rows (old and new) in cell order.
pub fn run_grid(grid: &Grid, registry: &Registry, out: &Path) -> Result<Vec<BenchRow>> {
    grid.validate()?;
    crate::report::ensure_schema(out, &BenchRow::default())?;
    let existing: Vec<BenchRow> = crate::report::read_csv(out)?;
    let done: HashSet<String> = existing.iter().map(BenchRow::key).collect();
    let cells = grid.cells();
    let multi = indicatif::MultiProgress::new();
    let overall = multi.add(crate::progress::progress(cells.len(), "cells"));
    overall.set_style(
        indicatif::ProgressStyle::with_template(
            "{prefix} [{bar:30}] {pos}/{len} cells, eta {eta} ({elapsed}) {msg}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    let mut pairs: BTreeMap<String, ModelPair> = BTreeMap::new();
    let mut rows_of_grid = Vec::new();
    for (pair_name, dataset, net, t) in cells {
        let label = dataset_label(&dataset);
        if !pairs.contains_key(&pair_name) {
            pairs.insert(
                pair_name.clone(),
                load_pair(&pair_name, grid.weights, registry)?,
            );
        }
        let pair = &pairs[&pair_name];
        let probe = |method: &str, k: DraftLen| BenchRow {
            pair: pair_name.clone(),
            weights: grid.weights.name().to_string(),
            dataset: label.clone(),
            net: net.clone(),
            temperature: t,
            max_new_tokens: grid.max_new_tokens,
            prompts: grid.prompts,
            seed: grid.seed,
            method: method.to_string(),
            draft_len: k.to_string(),
            ..BenchRow::default()
        };
        let missing: Vec<DraftLen> = grid
            .draft_lens
            .iter()
            .copied()
            .filter(|&k| !done.contains(&probe("post", k).key()))
            .collect();
        let standard = probe("standard", DraftLen::Fixed(0)).key();
        let have_standard = done.contains(&standard);
        let cell_keys: Vec<String> = std::iter::once(standard)
            .chain(grid.draft_lens.iter().map(|&k| probe("post", k).key()))
            .collect();
        if missing.is_empty() && have_standard {
            overall.set_message(format!(
                "{pair_name} {label} {net} T={t}: already in the file"
            ));
            rows_of_grid.extend(
                existing
                    .iter()
                    .filter(|r| cell_keys.contains(&r.key()))
                    .cloned(),
            );
            overall.inc(1);
            continue;
        }
        let prompts = prepare_prompts(&dataset, pair, grid.prompts, grid.max_new_tokens)?;
        let draft_lens = if missing.is_empty() {
            vec![grid.draft_lens[0]]
        } else {
            missing
        };
        let bar = multi.add(crate::progress::progress(
            prompts.len() * (1 + draft_lens.len()),
            "prompts",
        ));
        bar.set_message(format!("{pair_name} {label} {net} T={t}"));
        let cell = Cell {
            pair_name: &pair_name,
            pair,
            weights: grid.weights,
            dataset: &label,
            prompts: &prompts,
            net: &net,
            link: LinkModel::parse(&net)?,
            draft_lens: &draft_lens,
            temperature: t,
            max_new_tokens: grid.max_new_tokens,
            seed: grid.seed,
            sim_seed: grid.sim_seed,
            ignore_eos: grid.ignore_eos,
        };
        let new_rows: Vec<BenchRow> = run_cell(&cell, |_| bar.inc(1))?
            .into_iter()
            .filter(|r| !done.contains(&r.key()))
            .collect();
        bar.finish_and_clear();
        crate::report::append_csv(out, &new_rows)?;
        rows_of_grid.extend(
            existing
                .iter()
                .filter(|r| cell_keys.contains(&r.key()))
                .cloned(),
        );
        rows_of_grid.extend(new_rows);
        overall.inc(1);
    }
    overall.finish_and_clear();
    Ok(rows_of_grid)
}
