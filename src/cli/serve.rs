//! `post serve` and `post dealer`: the server party and the dealer as processes of their own. The
//! client is `post verify --connect`. The same protocol code runs as in the simulator, over TCP.

use std::io::Write;
use std::net::TcpListener;
use std::path::Path;

use anyhow::{Context, Result};

use crate::model::loader::{load_model, Registry};
use crate::mpc::{EngineConfig, LinkModel};
use crate::secure::session::serve_remote;

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// The private model (a folder, a registry name or a hub-cache id); it never leaves this process.
    #[arg(long, value_name = "MODEL")]
    pub model: String,
    /// Address to listen on for clients, e.g. 0.0.0.0:7000 (port 0: any free port, printed).
    #[arg(long, value_name = "ADDR")]
    pub listen: String,
    /// The dealer process (`post dealer`).
    #[arg(long, value_name = "ADDR")]
    pub dealer: String,
    /// Serve this many sessions, then exit (default: serve until killed). Sessions are served one
    /// after the other; a client that arrives meanwhile waits.
    #[arg(long, value_name = "N")]
    pub sessions: Option<usize>,
    /// Also add a simulated link's latency and bandwidth to the virtual clock (default: none; the
    /// real network's time is what passes).
    #[arg(long, value_name = "NET", default_value = "ideal")]
    pub net: String,
    /// Seconds to wait for each message of a client before its session ends with an error naming
    /// the protocol phase (the server then takes the next client).
    #[arg(long, value_name = "SECS", default_value_t = 60.0, value_parser = parse_timeout)]
    pub timeout: f64,
    /// Shape the link to clients in real time as this profile (lan, wan, bw=...,rtt=...); the
    /// client must shape alike (`post verify --connect --shape`). For checking the virtual clock.
    #[arg(long, value_name = "NET")]
    pub shape: Option<String>,
}

/// A positive number of seconds, at most a day.
pub fn parse_timeout(s: &str) -> std::result::Result<f64, String> {
    let secs: f64 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    if !(secs > 0.0 && secs <= 86_400.0) {
        return Err(format!(
            "{s}: the timeout must be above 0 and at most 86400 seconds"
        ));
    }
    Ok(secs)
}

#[derive(Debug, clap::Args)]
pub struct DealerArgs {
    /// Address to listen on for both parties (port 0: any free port, printed).
    #[arg(long, value_name = "ADDR")]
    pub listen: String,
    /// Serve this many sessions, then exit (default: until killed).
    #[arg(long, value_name = "N")]
    pub sessions: Option<usize>,
}

fn bind(addr: &str, who: &str) -> Result<TcpListener> {
    let listener =
        TcpListener::bind(addr).with_context(|| format!("{who}: cannot listen on {addr}"))?;
    // The first line of stdout names the bound address (tests and scripts read the port from it).
    println!("{who} listening on {}", listener.local_addr()?);
    std::io::stdout().flush()?;
    Ok(listener)
}

pub fn run_serve(args: &ServeArgs, registry: Option<&Path>) -> Result<()> {
    let registry = Registry::locate(registry)?;
    let model = load_model(&args.model, &registry)?.model;
    let engine = EngineConfig {
        link: LinkModel::parse(&args.net)?,
        timeout: std::time::Duration::from_secs_f64(args.timeout),
        shape: args.shape.as_deref().map(LinkModel::parse).transpose()?,
        ..EngineConfig::default()
    };
    let listener = bind(&args.listen, "server")?;
    let mut served = 0usize;
    for stream in listener.incoming() {
        let stream = match stream {
            Ok(s) => s,
            Err(e) => {
                eprintln!("server: a connection failed: {e}");
                continue;
            }
        };
        let peer = stream
            .peer_addr()
            .map_or_else(|_| "?".to_string(), |a| a.to_string());
        match serve_remote(stream, &model, &args.dealer, &engine) {
            Ok(()) => eprintln!("server: session with {peer} done"),
            Err(e) => eprintln!("server: session with {peer} failed: {e:#}"),
        }
        served += 1;
        if args.sessions.is_some_and(|n| served >= n) {
            break;
        }
    }
    Ok(())
}

pub fn run_dealer(args: &DealerArgs) -> Result<()> {
    let listener = bind(&args.listen, "dealer")?;
    crate::mpc::remote::serve_dealer(listener, args.sessions)?;
    Ok(())
}
