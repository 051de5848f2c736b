use clap::Parser;

fn main() {
    let args = post::cli::Args::parse();
    if let Err(err) = post::cli::run(args) {
        // One line: the whole context chain, without the backtrace candle appends under RUST_BACKTRACE.
        let message = format!("{err:#}");
        eprintln!("Error: {}", message.lines().next().unwrap_or_default());
        std::process::exit(1);
    }
}
