//! Measurements behind `post bench`: each mode returns rows that the CLI prints and writes as CSV.

pub mod engine;
pub mod secure;

use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;

/// Writes rows as CSV (header from the struct's fields), creating the folder if needed.
pub fn write_csv<T: Serialize>(path: &Path, rows: &[T]) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let mut writer =
        csv::Writer::from_path(path).with_context(|| format!("cannot write {}", path.display()))?;
    for row in rows {
        writer.serialize(row)?;
    }
    writer.flush()?;
    Ok(())
}
