//! Where measurements go: typed rows (any `Serialize` struct) written as CSV, read back, printed as a
//! terminal table. Measuring code builds rows; only this module knows the formats (the way
//! hyperfine keeps `export/` apart from its benchmarks).
//!
//! Appends are made for long sweeps: a file's header must match the row type (a CSV of another
//! schema is refused, never mixed), each call writes its rows in one `write` and syncs them, and a
//! line left half-written by a killed run is cut off before the next append.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// The CSV header of a row type, from one row.
pub fn header_of<T: Serialize>(row: &T) -> Result<Vec<String>> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    writer.serialize(row)?;
    let bytes = writer.into_inner().context("csv buffer")?;
    let mut reader = csv::Reader::from_reader(bytes.as_slice());
    Ok(reader.headers()?.iter().map(str::to_string).collect())
}

fn encode<T: Serialize>(rows: &[T], with_header: bool) -> Result<Vec<u8>> {
    let mut writer = csv::WriterBuilder::new()
        .has_headers(with_header)
        .from_writer(Vec::new());
    for row in rows {
        writer.serialize(row)?;
    }
    writer.into_inner().context("csv buffer")
}

fn create_parent(path: &Path) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    Ok(())
}

/// Writes rows as a new CSV file (header from the row type), replacing the file atomically.
pub fn write_csv<T: Serialize>(path: &Path, rows: &[T]) -> Result<()> {
    create_parent(path)?;
    let tmp = path.with_extension("csv.tmp");
    std::fs::write(&tmp, encode(rows, true)?)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
}

/// The header line of an existing CSV file, if it has one.
fn existing_header(path: &Path) -> Result<Option<Vec<String>>> {
    match std::fs::metadata(path) {
        Ok(m) if m.len() > 0 => {}
        _ => return Ok(None),
    }
    let mut reader =
        csv::Reader::from_path(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(Some(reader.headers()?.iter().map(str::to_string).collect()))
}

/// Refuses an existing non-empty file whose header is not that of `sample`'s type.
pub fn ensure_schema<T: Serialize>(path: &Path, sample: &T) -> Result<()> {
    if let Some(found) = existing_header(path)? {
        let expected = header_of(sample)?;
        if found != expected {
            bail!(
                "{} holds rows of another schema (columns: {}); expected: {}. Write to a new file or move the old one away",
                path.display(),
                found.join(","),
                expected.join(",")
            )
        }
    }
    Ok(())
}

/// Appends rows to a CSV file in one write, with the header when the file is new. Refuses a file
/// whose header is not this row type's; cuts a trailing partial line (a killed writer's) first.
/// With no rows it only checks that the file can be written.
pub fn append_csv<T: Serialize>(path: &Path, rows: &[T]) -> Result<()> {
    create_parent(path)?;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .read(true)
        .append(true)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    let Some(first) = rows.first() else {
        return Ok(());
    };
    ensure_schema(path, first)?;
    let header = existing_header(path)?;
    if header.is_some() {
        cut_partial_line(&mut file, path)?;
    }
    file.write_all(&encode(rows, header.is_none())?)
        .and_then(|_| file.sync_data())
        .with_context(|| format!("cannot append to {}", path.display()))
}

/// Truncates the file after its last newline.
fn cut_partial_line(file: &mut std::fs::File, path: &Path) -> Result<()> {
    let len = file.metadata()?.len();
    let mut contents = Vec::with_capacity(len as usize);
    file.seek(SeekFrom::Start(0))?;
    file.read_to_end(&mut contents)?;
    let keep = contents
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    if (keep as u64) < len {
        eprintln!(
            "{}: cut a partial last line ({} bytes) left by an interrupted run",
            path.display(),
            len - keep as u64
        );
        file.set_len(keep as u64)?;
    }
    Ok(())
}

/// All rows of a CSV file (none when it does not exist).
pub fn read_csv<T: DeserializeOwned>(path: &Path) -> Result<Vec<T>> {
    if !path.exists() {
        return Ok(Vec::new());
    }
    let mut reader =
        csv::Reader::from_path(path).with_context(|| format!("cannot read {}", path.display()))?;
    reader
        .deserialize()
        .enumerate()
        .map(|(i, r)| r.with_context(|| format!("{}: row {}", path.display(), i + 2)))
        .collect()
}

/// Prints the named columns of rows as an aligned table (numbers right-aligned, 3 decimals).
pub fn print_table<T: Serialize>(rows: &[T], columns: &[&str]) -> Result<()> {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            let value = serde_json::to_value(row)?;
            Ok(columns
                .iter()
                .map(|c| match &value[*c] {
                    serde_json::Value::Null => "-".to_string(),
                    serde_json::Value::String(s) => s.clone(),
                    serde_json::Value::Number(n) if n.is_f64() => {
                        format!("{:.3}", n.as_f64().unwrap_or(f64::NAN))
                    }
                    other => other.to_string(),
                })
                .collect())
        })
        .collect::<Result<_>>()?;
    let widths: Vec<usize> = (0..columns.len())
        .map(|i| {
            cells
                .iter()
                .map(|r| r[i].len())
                .chain([columns[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |fields: Vec<&str>| {
        fields
            .iter()
            .zip(&widths)
            .map(|(f, w)| format!("{f:>w$}"))
            .collect::<Vec<_>>()
            .join("  ")
    };
    println!("{}", line(columns.to_vec()));
    for row in &cells {
        println!("{}", line(row.iter().map(String::as_str).collect()));
    }
    Ok(())
}
