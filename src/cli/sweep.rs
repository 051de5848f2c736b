//! `post sweep GRID.toml`: a scripted grid of `post bench --mode secure` cells appended to one CSV
//! file, resumable (cells already in the file are skipped). Example grids: `results/grids/`.
//!
//! Over a cluster: `--shard I/N` runs a deterministic 1/N of the cells (into the grid's file with
//! `.shard-I-of-N` before `.csv`), and `--merge OUT.csv PART.csv...` joins the shards' files
//! (`scripts/slurm/`, and "Sweeps over a cluster" in `docs/guide.md`).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::bench::grid::{merge_csv, Grid, Shard};
use crate::bench::plot;
use crate::model::loader::Registry;

#[derive(Debug, clap::Args)]
pub struct SweepArgs {
    /// The grid (TOML): pairs, datasets, nets, draft_lens, temperatures, and optionally aligned,
    /// prompts, max_new_tokens, seed, sim_seed, weights, ignore_eos, out (none with --merge).
    #[arg(
        value_name = "GRID.toml",
        required_unless_present = "merge",
        conflicts_with = "merge"
    )]
    pub grid: Option<PathBuf>,
    /// The CSV file (overrides the grid's `out`, also with --shard).
    #[arg(long, value_name = "PATH", conflicts_with = "merge")]
    pub out: Option<PathBuf>,
    /// Run only shard I of N (I in 0..N): the cells whose key hashes to I mod N. Without --out
    /// the rows go to the grid's `out` with `.shard-I-of-N` before `.csv`.
    #[arg(long, value_name = "I/N", conflicts_with = "merge")]
    pub shard: Option<Shard>,
    /// Merge the CSV files of shards into OUT.csv (its own rows first, when it exists), each row
    /// once, in the order of the files; refuses files of another header.
    #[arg(long, num_args = 2.., value_names = ["OUT.csv", "PART.csv"])]
    pub merge: Option<Vec<PathBuf>>,
    /// Draw figures (SVG) next to the CSV file.
    #[arg(long)]
    pub plot: bool,
}

pub fn run(args: &SweepArgs, registry: Option<&Path>) -> Result<()> {
    if let Some(files) = &args.merge {
        return merge(&files[0], &files[1..], args.plot);
    }
    let path = args
        .grid
        .as_ref()
        .context("give GRID.toml, or --merge OUT.csv PART.csv...")?;
    let grid = Grid::from_toml(path)?;
    let out = match (&args.out, &grid.out, args.shard) {
        (Some(out), _, _) => out.clone(),
        (None, Some(out), Some(shard)) => shard.out_path(out),
        (None, Some(out), None) => out.clone(),
        (None, None, _) => anyhow::bail!(
            "{} names no `out` file: add out = \"results/NAME.csv\" or pass --out",
            path.display()
        ),
    };
    super::bench::run_and_report_sharded(
        &grid,
        &Registry::locate(registry)?,
        &out,
        args.plot,
        args.shard,
    )
}

fn merge(out: &Path, parts: &[PathBuf], plot: bool) -> Result<()> {
    let merged = merge_csv(out, parts)?;
    println!(
        "{} rows in {} ({} new from {} file(s), {} duplicate(s) left out)",
        merged.rows.len(),
        out.display(),
        merged.added,
        parts.len(),
        merged.duplicates
    );
    if plot {
        for figure in [
            plot::speedup_bars(&merged.rows, out)?,
            plot::accepted_vs_draft_len(&merged.rows, out)?,
        ]
        .into_iter()
        .flatten()
        {
            println!("figure {}", figure.display());
        }
    }
    Ok(())
}
