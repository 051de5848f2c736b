//! Figures next to the CSV files (SVG, drawn with plotters): speedup bars per pair and network,
//! mean accepted drafts against draft length, secure-forward latency against new tokens.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Result};
use plotters::prelude::*;

use super::decoding::BenchRow;
use super::secure::LatencyRow;

const COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

fn svg_next_to(csv: &Path, suffix: &str) -> PathBuf {
    let stem = csv
        .file_stem()
        .map_or_else(|| "plot".into(), |s| s.to_string_lossy().to_string());
    csv.with_file_name(format!("{stem}-{suffix}.svg"))
}

fn err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("plotting failed: {e:?}")
}

/// Grouped bars: per (pair, dataset, T, net) one bar per draft length, height = speedup over
/// standard. Only rows with a measured speedup (trained weights) are drawn.
pub fn speedup_bars(rows: &[BenchRow], csv: &Path) -> Result<Option<PathBuf>> {
    let post: Vec<&BenchRow> = rows
        .iter()
        .filter(|r| r.method == "post" && r.speedup.is_some())
        .collect();
    if post.is_empty() {
        return Ok(None);
    }
    let mut groups: Vec<String> = Vec::new();
    let mut ks: Vec<String> = Vec::new();
    for r in &post {
        let g = format!("{} {} T={} {}", r.pair, r.dataset, r.temperature, r.net);
        if !groups.contains(&g) {
            groups.push(g);
        }
        if !ks.contains(&r.draft_len) {
            ks.push(r.draft_len.clone());
        }
    }
    // Fixed K in increasing order, then auto.
    ks.sort_by_key(|k| k.parse::<usize>().unwrap_or(usize::MAX));
    let top = post.iter().filter_map(|r| r.speedup).fold(1.0f64, f64::max) * 1.15;
    let path = svg_next_to(csv, "speedup");
    let width = (160 * groups.len() as u32).clamp(480, 1600);
    let root = SVGBackend::new(&path, (width, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "POST speedup over standard secure decoding",
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(70)
        .y_label_area_size(50)
        .build_cartesian_2d(0f64..groups.len() as f64, 0f64..top)
        .map_err(err)?;
    let labels = groups.clone();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(groups.len() * 2 + 1)
        .x_label_formatter(&|x| {
            let i = (x - 0.5).round();
            if (x - 0.5 - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < labels.len() {
                labels[i as usize].clone()
            } else {
                String::new()
            }
        })
        .y_desc("speedup (x)")
        .draw()
        .map_err(err)?;
    let slot = 0.8 / ks.len() as f64;
    for (ki, k) in ks.iter().enumerate() {
        let color = COLORS[ki % COLORS.len()];
        let bars: Vec<_> = post
            .iter()
            .filter(|r| r.draft_len == *k)
            .map(|r| {
                let g = format!("{} {} T={} {}", r.pair, r.dataset, r.temperature, r.net);
                let gi = groups.iter().position(|x| *x == g).unwrap_or(0) as f64;
                let x0 = gi + 0.1 + slot * ki as f64;
                Rectangle::new(
                    [(x0, 0.0), (x0 + slot * 0.9, r.speedup.unwrap_or(0.0))],
                    color.filled(),
                )
            })
            .collect();
        chart
            .draw_series(bars)
            .map_err(err)?
            .label(format!("K = {k}"))
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled()));
    }
    chart
        .draw_series(std::iter::once(PathElement::new(
            vec![(0.0, 1.0), (groups.len() as f64, 1.0)],
            BLACK.mix(0.5),
        )))
        .map_err(err)?;
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)?;
    drop(chart);
    drop(root);
    Ok(Some(path))
}

/// Lines of y against x, one per series label.
fn lines(
    path: &Path,
    title: &str,
    x_desc: &str,
    y_desc: &str,
    series: &BTreeMap<String, Vec<(f64, f64)>>,
) -> Result<()> {
    let (mut x_max, mut y_max) = (1.0f64, 1.0f64);
    for points in series.values() {
        for &(x, y) in points {
            x_max = x_max.max(x);
            y_max = y_max.max(y);
        }
    }
    let root = SVGBackend::new(path, (640, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(0f64..x_max * 1.05, 0f64..y_max * 1.15)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .draw()
        .map_err(err)?;
    for (i, (label, points)) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
            .map_err(err)?
            .label(label.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
        chart
            .draw_series(points.iter().map(|&p| Circle::new(p, 3, color.filled())))
            .map_err(err)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}

/// Mean accepted drafts per secure step against the draft length, per (pair, dataset, T); one
/// network's rows suffice (acceptance does not depend on the link).
pub fn accepted_vs_draft_len(rows: &[BenchRow], csv: &Path) -> Result<Option<PathBuf>> {
    let mut series: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    let first_net = rows.first().map(|r| r.net.clone()).unwrap_or_default();
    for r in rows
        .iter()
        .filter(|r| r.method == "post" && r.net == first_net)
    {
        let Ok(k) = r.draft_len.parse::<usize>() else {
            continue; // auto has no place on the K axis
        };
        if let Some(m) = r.mean_accepted {
            series
                .entry(format!("{} {} T={}", r.pair, r.dataset, r.temperature))
                .or_default()
                .push((k as f64, m));
        }
    }
    if series.values().all(|p| p.len() < 2) {
        return Ok(None);
    }
    for points in series.values_mut() {
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    let path = svg_next_to(csv, "accepted");
    lines(
        &path,
        "Accepted drafts per secure forward",
        "draft length K",
        "mean accepted",
        &series,
    )?;
    Ok(Some(path))
}

/// Latency of one secure forward over N new tokens relative to one token, per (model, net).
pub fn latency_lines(rows: &[LatencyRow], csv: &Path) -> Result<Option<PathBuf>> {
    let mut series: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    for r in rows {
        series
            .entry(format!("{} ({}) {}", r.model, r.weights, r.net))
            .or_default()
            .push((r.n_tokens as f64, r.ratio_to_1));
    }
    if series.is_empty() {
        return Ok(None);
    }
    for points in series.values_mut() {
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    let path = svg_next_to(csv, "latency");
    lines(
        &path,
        "Secure forward over N new tokens, relative to one",
        "new tokens N",
        "latency / latency(1)",
        &series,
    )?;
    Ok(Some(path))
}
