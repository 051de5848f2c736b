//! `post sweep GRID.toml`: a scripted grid of `post bench --mode secure` cells appended to one CSV
//! file, resumable (cells already in the file are skipped). Example grids: `results/grids/`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::bench::grid::Grid;
use crate::model::loader::Registry;

#[derive(Debug, clap::Args)]
pub struct SweepArgs {
    /// The grid (TOML): pairs, datasets, nets, draft_lens, temperatures, and optionally aligned,
    /// prompts, max_new_tokens, seed, sim_seed, weights, ignore_eos, out.
    #[arg(value_name = "GRID.toml")]
    pub grid: PathBuf,
    /// The CSV file (overrides the grid's `out`).
    #[arg(long, value_name = "PATH")]
    pub out: Option<PathBuf>,
    /// Draw figures (SVG) next to the CSV file.
    #[arg(long)]
    pub plot: bool,
}

pub fn run(args: &SweepArgs, registry: Option<&Path>) -> Result<()> {
    let grid = Grid::from_toml(&args.grid)?;
    let out = args
        .out
        .clone()
        .or_else(|| grid.out.clone())
        .with_context(|| {
            format!(
                "{} names no `out` file: add out = \"results/NAME.csv\" or pass --out",
                args.grid.display()
            )
        })?;
    super::bench::run_and_report(&grid, &Registry::locate(registry)?, &out, args.plot)
}
