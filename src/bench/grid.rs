//! Parameter grids of the speedup table, from `post bench --mode secure` flags or a `post sweep`
//! TOML file, run as cells appended to one CSV file.
//!
//! Resumable: a cell whose rows are already in the file is skipped, and a cell's rows are appended
//! in one write when the cell ends, so a killed sweep loses at most the cell it was running.
//!
//! Shardable: `post sweep --shard I/N` runs the cells whose key ([`BenchRow::cell_key`], the
//! resume key without method and draft length) hashes (SHA-256) to I mod N, so N independent
//! processes cover the grid once, and a cell keeps its shard when other cells join the grid;
//! [`merge_csv`] joins their files.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use sha2::{Digest, Sha256};

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

    /// The row of a cell that the resume logic and the shards key on: its cell columns, with
    /// method and draft length left empty.
    fn probe(&self, pair_name: &str, dataset: &Path, net: &str, temperature: f64) -> BenchRow {
        BenchRow {
            pair: pair_name.to_string(),
            weights: self.weights.name().to_string(),
            dataset: dataset_label(dataset),
            net: net.to_string(),
            temperature,
            max_new_tokens: self.max_new_tokens,
            prompts: self.prompts,
            seed: self.seed,
            ..BenchRow::default()
        }
    }

    /// The key of each cell ([`BenchRow::cell_key`]), in run order.
    pub fn cell_keys(&self) -> Vec<String> {
        self.cells()
            .iter()
            .map(|(pair, dataset, net, t)| self.probe(pair, dataset, net, *t).cell_key())
            .collect()
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

/// Part I of N of a grid (`post sweep --shard I/N`): the cells whose key hashes to I mod N.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: u64,
    pub count: u64,
}

impl std::str::FromStr for Shard {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let (i, n) = s
            .trim()
            .split_once('/')
            .ok_or_else(|| format!("shard {s:?}: expected I/N, such as 0/4 (I in 0..N)"))?;
        let number = |x: &str, what: &str| {
            x.trim().parse::<u64>().map_err(|_| {
                format!(
                    "shard {s:?}: {what} {x:?} is not a whole number (expected I/N, such as 0/4)"
                )
            })
        };
        let (index, count) = (number(i, "I")?, number(n, "N")?);
        if count == 0 {
            return Err(format!("shard {s:?}: N must be at least 1"));
        }
        if index >= count {
            return Err(format!(
                "shard {s:?}: I must be below N (shards of {count} are 0/{count} to {}/{count})",
                count - 1
            ));
        }
        Ok(Self { index, count })
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// A stable hash of a cell key: the first 8 bytes (big-endian) of the SHA-256 of its text. Never
/// std's `DefaultHasher`, whose output may change between Rust versions.
pub fn cell_hash(cell_key: &str) -> u64 {
    let digest = Sha256::digest(cell_key.as_bytes());
    u64::from_be_bytes(digest[..8].try_into().expect("8 bytes"))
}

impl Shard {
    /// The shard (0..count) of a cell key.
    pub fn of(cell_key: &str, count: u64) -> u64 {
        cell_hash(cell_key) % count
    }

    pub fn owns(&self, cell_key: &str) -> bool {
        Self::of(cell_key, self.count) == self.index
    }

    /// The shard's default file: `out` with `.shard-I-of-N` before its `.csv`.
    pub fn out_path(&self, out: &Path) -> PathBuf {
        let tag = format!("shard-{}-of-{}", self.index, self.count);
        let name = match (out.file_stem(), out.extension()) {
            (Some(stem), Some(ext)) if ext == "csv" => {
                format!("{}.{tag}.csv", stem.to_string_lossy())
            }
            _ => format!(
                "{}.{tag}",
                out.file_name()
                    .map_or_else(String::new, |n| n.to_string_lossy().into())
            ),
        };
        out.with_file_name(name)
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
    run_grid_sharded(grid, registry, out, None)
}

/// [`run_grid`] over the cells of one shard (all cells with `None`). A shard's file is created
/// even when it owns no cell, so that every shard leaves a file to merge.
pub fn run_grid_sharded(
    grid: &Grid,
    registry: &Registry,
    out: &Path,
    shard: Option<Shard>,
) -> Result<Vec<BenchRow>> {
    grid.validate()?;
    crate::report::ensure_schema(out, &BenchRow::default())?;
    let existing: Vec<BenchRow> = crate::report::read_csv(out)?;
    let done: HashSet<String> = existing.iter().map(BenchRow::key).collect();
    let mut cells = grid.cells();
    if let Some(shard) = shard {
        let all = cells.len();
        cells.retain(|(pair, dataset, net, t)| {
            shard.owns(&grid.probe(pair, dataset, net, *t).cell_key())
        });
        crate::report::append_csv::<BenchRow>(out, &[])?;
        eprintln!("shard {shard}: {} of the grid's {all} cells", cells.len());
    }
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
        let cell_row = grid.probe(&pair_name, &dataset, &net, t);
        let probe = |method: &str, k: DraftLen| BenchRow {
            method: method.to_string(),
            draft_len: k.to_string(),
            ..cell_row.clone()
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

/// What [`merge_csv`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct Merged {
    /// The merged rows, as written: `out`'s first, then each part's new rows in the order given.
    pub rows: Vec<BenchRow>,
    /// Rows taken from the parts (not already in `out`).
    pub added: usize,
    /// Rows left out because an earlier file held their key.
    pub duplicates: usize,
}

/// The header of a CSV file; `None` for an empty file.
fn csv_header(path: &Path) -> Result<Option<Vec<String>>> {
    let meta =
        std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    if meta.len() == 0 {
        return Ok(None);
    }
    let mut reader =
        csv::Reader::from_path(path).with_context(|| format!("cannot read {}", path.display()))?;
    let header = reader
        .headers()
        .with_context(|| format!("cannot read the header of {}", path.display()))?;
    Ok(Some(header.iter().map(str::to_string).collect()))
}

/// Merges the CSV files of shards (`post sweep --merge OUT PART...`) into `out`: `out`'s rows
/// first when it exists, then each part's in the order given, each row key
/// ([`BenchRow::key`]) once (the first file's row is kept; a duplicate is reported on stderr).
/// Every file must have the header of the bench rows, else nothing is written and the error names
/// the file. `out` is replaced in one rename.
pub fn merge_csv(out: &Path, parts: &[PathBuf]) -> Result<Merged> {
    if parts.is_empty() {
        bail!(
            "nothing to merge into {}: name at least one part",
            out.display()
        )
    }
    let expected = crate::report::header_of(&BenchRow::default())?;
    let out_exists = out.exists();
    let mut inputs: Vec<&Path> = Vec::new();
    if out_exists {
        inputs.push(out);
    }
    inputs.extend(parts.iter().map(PathBuf::as_path));
    let mut reference: Option<(&Path, Vec<String>)> = None;
    for &path in &inputs {
        let Some(header) = csv_header(path)? else {
            continue;
        };
        match &reference {
            None => reference = Some((path, header)),
            Some((first, columns)) if *columns != header => bail!(
                "cannot merge {}: its CSV header differs from that of {} (columns: {}; {} has: {})",
                path.display(),
                first.display(),
                header.join(","),
                first.display(),
                columns.join(",")
            ),
            Some(_) => {}
        }
    }
    if let Some((first, columns)) = &reference {
        if *columns != expected {
            bail!(
                "cannot merge {}: it holds rows of another schema (columns: {}); expected the \
                 columns of `post sweep`: {}",
                first.display(),
                columns.join(","),
                expected.join(",")
            )
        }
    }
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut rows = Vec::new();
    let (mut added, mut duplicates) = (0, 0);
    for (i, &path) in inputs.iter().enumerate() {
        let is_out = i == 0 && out_exists;
        // Per earlier file: rows of this one already there, and the first such key.
        let mut repeated: BTreeMap<usize, (usize, String)> = BTreeMap::new();
        for row in crate::report::read_csv::<BenchRow>(path)? {
            let key = row.key();
            if let Some(&from) = seen.get(&key) {
                let entry = repeated.entry(from).or_insert((0, key));
                entry.0 += 1;
                duplicates += 1;
                continue;
            }
            seen.insert(key, i);
            if !is_out {
                added += 1;
            }
            rows.push(row);
        }
        for (from, (n, key)) in repeated {
            eprintln!(
                "warning: {}: {n} row(s) already in {} (the first: {key}); kept those of {}",
                path.display(),
                inputs[from].display(),
                inputs[from].display()
            );
        }
    }
    crate::report::write_csv(out, &rows)?;
    Ok(Merged {
        rows,
        added,
        duplicates,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grid(pairs: &[&str], nets: &[&str], temperatures: &[f64]) -> Grid {
        Grid {
            pairs: pairs.iter().map(|p| p.to_string()).collect(),
            aligned: Some(vec![false, true]),
            datasets: vec![
                "datasets/code-completion.jsonl".into(),
                "datasets/text-continuation.jsonl".into(),
            ],
            nets: nets.iter().map(|n| n.to_string()).collect(),
            draft_lens: vec![DraftLen::Fixed(2), DraftLen::Auto],
            temperatures: temperatures.to_vec(),
            prompts: 5,
            max_new_tokens: 32,
            seed: 0,
            sim_seed: None,
            weights: Weights::Trained,
            ignore_eos: false,
            out: None,
        }
    }

    #[test]
    fn the_cell_key_is_the_resume_key_without_method_and_draft_len() {
        let g = grid(&["tiny"], &["lan"], &[0.7]);
        let keys = g.cell_keys();
        assert_eq!(keys[0], "tiny|trained|code-completion|lan|0.7|32|5|0");
        let row = BenchRow {
            method: "post".into(),
            draft_len: "auto".into(),
            ..g.probe(
                "tiny",
                Path::new("datasets/code-completion.jsonl"),
                "lan",
                0.7,
            )
        };
        assert_eq!(row.key(), format!("{}|post|auto", keys[0]));
        assert_eq!(row.cell_key(), keys[0]);
    }

    #[test]
    fn the_hash_is_pinned() {
        // The first 8 bytes of SHA-256("") and SHA-256("abc"): a changed hash would move cells
        // between the shards of sweeps already under way.
        assert_eq!(cell_hash(""), 0xe3b0_c442_98fc_1c14);
        assert_eq!(cell_hash("abc"), 0xba78_16bf_8f01_cfea);
    }

    #[test]
    fn shards_cover_every_cell_once() {
        let g = grid(
            &["tiny", "default"],
            &["lan", "wan", "bw=100,rtt=10"],
            &[0.0, 0.5, 0.7, 1.0],
        );
        let keys = g.cell_keys();
        assert_eq!(keys.len(), 2 * 2 * 2 * 3 * 4);
        for count in 1..=7 {
            let mut union: Vec<&String> = Vec::new();
            for index in 0..count {
                let shard = Shard { index, count };
                union.extend(keys.iter().filter(|k| shard.owns(k)));
            }
            assert_eq!(
                union.len(),
                keys.len(),
                "no cell twice, none lost (N = {count})"
            );
            let mut a: Vec<&String> = union.clone();
            a.sort();
            a.dedup();
            assert_eq!(a.len(), keys.len());
        }
        // 96 cells over 4 shards: none is empty (a hash that spreads the cells).
        for index in 0..4 {
            let shard = Shard { index, count: 4 };
            assert!(keys.iter().filter(|k| shard.owns(k)).count() >= 12);
        }
    }

    #[test]
    fn a_cell_keeps_its_shard_when_cells_are_added() {
        let old = grid(&["tiny"], &["lan", "wan"], &[0.0, 1.0]);
        let new = grid(
            &["tiny", "default"],
            &["lan", "wan", "bw=10,rtt=50"],
            &[0.0, 0.3, 1.0],
        );
        let new_keys = new.cell_keys();
        for count in 1..=5 {
            for key in old.cell_keys() {
                assert!(new_keys.contains(&key));
                let home = Shard::of(&key, count);
                // The new grid runs the old cell in the same shard.
                assert!(Shard { index: home, count }.owns(&key));
                assert_eq!(
                    (0..count)
                        .filter(|&i| Shard { index: i, count }.owns(&key))
                        .count(),
                    1
                );
            }
        }
    }

    #[test]
    fn shard_strings_parse_or_say_why_not() {
        assert_eq!("0/1".parse(), Ok(Shard { index: 0, count: 1 }));
        assert_eq!("3/4".parse(), Ok(Shard { index: 3, count: 4 }));
        assert_eq!(Shard { index: 3, count: 4 }.to_string(), "3/4");
        for (bad, why) in [
            ("1/0", "N must be at least 1"),
            ("0/0", "N must be at least 1"),
            ("2/2", "I must be below N"),
            ("5/3", "I must be below N"),
            ("3", "expected I/N"),
            ("", "expected I/N"),
            ("a/2", "not a whole number"),
            ("-1/2", "not a whole number"),
            ("1/2/3", "not a whole number"),
            ("0.5/2", "not a whole number"),
        ] {
            let err = bad.parse::<Shard>().unwrap_err();
            assert!(err.contains(why), "{bad:?}: {err}");
        }
    }

    #[test]
    fn a_shard_file_is_named_after_the_grid_file() {
        let s = Shard { index: 1, count: 4 };
        assert_eq!(
            s.out_path(Path::new("results/speedup.csv")),
            PathBuf::from("results/speedup.shard-1-of-4.csv")
        );
        assert_eq!(
            s.out_path(Path::new("rows")),
            PathBuf::from("rows.shard-1-of-4")
        );
        assert_eq!(
            s.out_path(Path::new("a.b.tsv")),
            PathBuf::from("a.b.tsv.shard-1-of-4")
        );
    }

    fn row(net: &str, method: &str, k: &str, tokens: usize) -> BenchRow {
        BenchRow {
            pair: "tiny".into(),
            weights: "trained".into(),
            dataset: "code-completion".into(),
            net: net.into(),
            method: method.into(),
            draft_len: k.into(),
            tokens,
            speedup: Some(1.5),
            ..BenchRow::default()
        }
    }

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("post-grid-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn merge_keeps_the_first_of_each_key_in_file_order() {
        let dir = scratch("merge");
        let (out, a, b, empty) = (
            dir.join("all.csv"),
            dir.join("a.csv"),
            dir.join("b.csv"),
            dir.join("empty.csv"),
        );
        crate::report::write_csv(
            &a,
            &[row("lan", "standard", "0", 1), row("lan", "post", "2", 1)],
        )
        .unwrap();
        crate::report::write_csv(
            &b,
            &[row("wan", "standard", "0", 2), row("lan", "post", "2", 2)],
        )
        .unwrap();
        std::fs::write(&empty, "").unwrap();
        let merged = merge_csv(&out, &[a.clone(), empty.clone(), b.clone()]).unwrap();
        assert_eq!((merged.added, merged.duplicates), (3, 1));
        let got: Vec<BenchRow> = crate::report::read_csv(&out).unwrap();
        assert_eq!(got, merged.rows);
        let summary: Vec<(&str, &str, usize)> = got
            .iter()
            .map(|r| (r.net.as_str(), r.method.as_str(), r.tokens))
            .collect();
        assert_eq!(
            summary,
            [
                ("lan", "standard", 1),
                ("lan", "post", 1),
                ("wan", "standard", 2)
            ],
            "a's duplicate is kept, in file order"
        );
        // OUT's rows come first and win; merging again adds nothing.
        crate::report::write_csv(&out, &[row("wan", "standard", "0", 9)]).unwrap();
        let merged = merge_csv(&out, &[a.clone(), b.clone()]).unwrap();
        assert_eq!((merged.added, merged.duplicates), (2, 2));
        assert_eq!(merged.rows[0].tokens, 9);
        let again = merge_csv(&out, &[a, b]).unwrap();
        assert_eq!((again.added, again.rows), (0, merged.rows));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn merge_refuses_mixed_schemas_and_missing_parts_by_name() {
        let dir = scratch("schemas");
        let (out, good, odd) = (
            dir.join("all.csv"),
            dir.join("good.csv"),
            dir.join("odd.csv"),
        );
        crate::report::write_csv(&good, &[row("lan", "standard", "0", 1)]).unwrap();
        std::fs::write(&odd, "pair,net,speedup\ntiny,lan,2.0\n").unwrap();
        let err = format!(
            "{:#}",
            merge_csv(&out, &[good.clone(), odd.clone()]).unwrap_err()
        );
        assert!(
            err.contains("odd.csv") && err.contains("header differs"),
            "{err}"
        );
        assert!(!out.exists(), "nothing written");
        let err = format!("{:#}", merge_csv(&out, &[odd.clone()]).unwrap_err());
        assert!(
            err.contains("odd.csv") && err.contains("another schema"),
            "{err}"
        );
        let err = format!(
            "{:#}",
            merge_csv(&out, &[good, dir.join("gone.csv")]).unwrap_err()
        );
        assert!(err.contains("gone.csv"), "{err}");
        assert!(!out.exists());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
