//! `post serve`, `post dealer` and `post keygen`: the server party and the dealer as processes of
//! their own, and the keys that authenticate them. The client is `post verify --connect`. The
//! same protocol code runs as in the simulator, over encrypted TCP links ([`crate::link`]).

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::deploy::dealer::{serve_dealer, DealerPolicy};
use crate::deploy::server::{serve, ServerPolicy};
use crate::deploy::{check_listen, Daemon};
use crate::link::{Identity, LinkConfig, Trust};
use crate::model::loader::{load_model, Registry};
use crate::mpc::{EngineConfig, LinkModel};

/// This process's identity on the network, shared by serve, dealer and verify --connect.
#[derive(Debug, Clone, clap::Args)]
pub struct KeyArgs {
    /// This process's private key (`post keygen --out NAME` writes NAME.key): every link is then
    /// encrypted and authenticated (Noise XX). Without it links are plaintext, allowed only on
    /// loopback unless --insecure-plaintext.
    #[arg(long, value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// Allow plaintext links beyond loopback (a private network only); warns on every session.
    #[arg(long)]
    pub insecure_plaintext: bool,
    /// Seconds a peer has to finish its handshake and hello.
    #[arg(long, value_name = "SECS", default_value_t = 10.0, value_parser = parse_timeout)]
    pub handshake_timeout: f64,
}

impl KeyArgs {
    /// The link configuration, with writes failing after `io_timeout` without progress.
    pub fn link_config(&self, io_timeout: Duration) -> Result<LinkConfig> {
        let identity = self.key.as_deref().map(Identity::load).transpose()?;
        Ok(LinkConfig {
            identity,
            handshake_timeout: Duration::from_secs_f64(self.handshake_timeout),
            io_timeout,
        })
    }
}

/// Checks that a key-less process was allowed to run in the clear towards `addr`.
pub fn check_plaintext_peer(keys: &KeyArgs, addr: &str, who: &str) -> Result<()> {
    if keys.key.is_none() && !keys.insecure_plaintext && !crate::link::is_loopback(addr) {
        bail!(
            "{who} at {addr} is not on loopback: give --key (see `post keygen`) and the peers' public keys, \
             or --insecure-plaintext if the network is private"
        )
    }
    Ok(())
}

#[derive(Debug, clap::Args)]
pub struct KeygenArgs {
    /// Writes NAME.key (private, mode 0600) and NAME.pub (give this one to the other hosts).
    #[arg(long, value_name = "NAME")]
    pub out: PathBuf,
}

pub fn run_keygen(args: &KeygenArgs) -> Result<()> {
    let identity = Identity::generate()?;
    let (key, public) = identity.save(&args.out)?;
    println!(
        "wrote {} (keep it on this host) and {} (fingerprint {})",
        key.display(),
        public.display(),
        identity.public.fingerprint()
    );
    Ok(())
}

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
    /// The dealer's public key (required with --key).
    #[arg(long, value_name = "FILE")]
    pub dealer_key: Option<PathBuf>,
    /// A client's public key to serve (repeatable); none: any client that proves a key of its own.
    #[arg(long, value_name = "FILE")]
    pub trust: Vec<PathBuf>,
    #[command(flatten)]
    pub keys: KeyArgs,
    /// Serve this many sessions, then exit (default: serve until killed).
    #[arg(long, value_name = "N")]
    pub sessions: Option<usize>,
    /// Sessions run at once, each on its own thread with its own engine; a client beyond them is
    /// refused with "busy".
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub max_sessions: usize,
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
    /// A client's public key (repeatable): only these clients are served.
    #[arg(long, value_name = "FILE")]
    pub trust: Vec<PathBuf>,
    /// A server's public key (repeatable): only these servers are served; a party's role comes
    /// from its key.
    #[arg(long, value_name = "FILE")]
    pub trust_server: Vec<PathBuf>,
    #[command(flatten)]
    pub keys: KeyArgs,
    /// Seconds a party waits for its partner, and the dealer for each request of a session.
    #[arg(long, value_name = "SECS", default_value_t = 60.0, value_parser = parse_timeout)]
    pub timeout: f64,
    /// The most megabytes of correlated randomness one request may make.
    #[arg(long, value_name = "MB", default_value_t = 4096)]
    pub max_request_mb: usize,
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
    let timeout = Duration::from_secs_f64(args.timeout);
    let link = args.keys.link_config(timeout)?;
    check_listen(
        &args.listen,
        link.encrypted(),
        args.keys.insecure_plaintext,
        "server",
    )?;
    check_plaintext_peer(&args.keys, &args.dealer, "the dealer")?;
    let dealer_key = match (&args.dealer_key, link.encrypted()) {
        (Some(path), _) => Trust::load(std::slice::from_ref(path))?,
        (None, true) => bail!("--key needs --dealer-key DEALER.pub (the dealer's public key)"),
        (None, false) => Trust::default(),
    };
    let registry = Registry::locate(registry)?;
    let model = load_model(&args.model, &registry)?.model.into_gpt2()?;
    let engine = EngineConfig {
        link: LinkModel::parse(&args.net)?,
        timeout,
        shape: args.shape.as_deref().map(LinkModel::parse).transpose()?,
        ..EngineConfig::default()
    };
    let policy = ServerPolicy {
        link,
        clients: Trust::load(&args.trust)?,
        dealer: args.dealer.clone(),
        dealer_key,
        engine,
        max_sessions: args.max_sessions,
    };
    let listener = bind(&args.listen, "server")?;
    serve(
        listener,
        std::sync::Arc::new(model),
        policy,
        Daemon::new(args.sessions),
    )
}

pub fn run_dealer(args: &DealerArgs) -> Result<()> {
    let timeout = Duration::from_secs_f64(args.timeout);
    let link = args.keys.link_config(timeout)?;
    check_listen(
        &args.listen,
        link.encrypted(),
        args.keys.insecure_plaintext,
        "dealer",
    )?;
    let policy = DealerPolicy {
        link,
        clients: Trust::load(&args.trust)?,
        servers: Trust::load(&args.trust_server)?,
        timeout,
        max_request_words: args.max_request_mb.saturating_mul(1 << 17),
    };
    let listener = bind(&args.listen, "dealer")?;
    serve_dealer(listener, policy, Daemon::new(args.sessions))
}
