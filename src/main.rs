use clap::Parser;

fn main() {
    let args = post::cli::Args::parse();
    if matches!(
        args.command,
        post::cli::Command::Train(_) | post::cli::Command::Distill(_)
    ) {
        keep_freed_memory();
    }
    if let Err(err) = post::cli::run(args) {
        // One line: the whole context chain, without the backtrace candle appends under RUST_BACKTRACE.
        let message = format!("{err:#}");
        eprintln!("Error: {}", message.lines().next().unwrap_or_default());
        std::process::exit(1);
    }
}

/// Tensors of tens of megabytes are allocated and freed every training step; glibc would map and
/// zero fresh pages for each (a third of the time went to the kernel). Keep freed memory instead.
/// Training only: in a secure session the parties, the dealer and rayon's workers allocate from
/// arenas of their own, so memory one of them keeps is lost to the others (the plaintext model
/// and the weight sharing's buffers stayed resident through every forward).
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only tunes the allocator; it is called before any other thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_MAX, 0);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}
