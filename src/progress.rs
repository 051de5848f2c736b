//! Progress bars for long work (training, grids, secure runs), shared by the library and the
//! command line.

/// One progress bar for long work; hidden when stderr is not a terminal.
pub fn progress(len: usize, prefix: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(len as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{prefix} [{bar:30}] {pos}/{len} {msg} ({elapsed})",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar.set_prefix(prefix.to_string());
    bar
}
