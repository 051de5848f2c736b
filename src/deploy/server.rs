//! `post serve` as a daemon: each client on its own thread with its own engine, at most
//! `--max-sessions` at once (one more is told "busy" and closed), the private model shared
//! read-only between them.
//!
//! A session: link (the server always proves its key; with `--trust` it serves only those client
//! keys), the client's hello, the server's answer with the model's public shape, then both open
//! their dealer links under the session id derived from this link, the weights are shared, and
//! steps run until the client stops.

use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use rand::SeedableRng;
use rand_chacha::ChaCha12Rng;
use serde::{Deserialize, Serialize};

use super::dealer::{connect_dealer, SERVER_ROLE};
use super::{serve_connections, Daemon};
use crate::link::{self, Link, LinkConfig, Listener, PublicKey, Trust};
use crate::model::{Config, Gpt2};
use crate::mpc::dealer_handle::DealerHandle;
use crate::mpc::dealer_wire::DealerLink;
use crate::mpc::net::{shaped, Channel, Transport};
use crate::mpc::{EngineConfig, Party, SERVER};
use crate::secure::session::serve_client;
use crate::secure::{SecureGpt2, SecureModel};

/// The protocol version both ends of a session must speak.
pub const PROTOCOL_VERSION: u32 = 2;

/// The longest hello either side sends.
pub(crate) const MAX_HELLO_BYTES: usize = 16 << 10;

/// What the client says first: its version, fixed-point format, its half of the session id, the
/// session's public temperature and its public model's vocabulary.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct ClientHello {
    pub version: u32,
    pub frac_bits: u32,
    /// 32 random bytes, hex.
    pub nonce: String,
    pub temperature: f64,
    pub vocab_size: usize,
    /// Real-time shaping of the link as (RTT s, bytes/s); both ends must shape alike.
    #[serde(default)]
    pub shape: Option<(f64, f64)>,
}

/// The server's answer: its version and format, its half of the session id and the private
/// model's public shape, or why it refuses the session.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct ServerHello {
    pub version: u32,
    pub frac_bits: u32,
    pub nonce: String,
    pub config: Option<Config>,
    pub refused: Option<String>,
}

/// How the server runs its sessions.
pub struct ServerPolicy {
    pub link: LinkConfig,
    /// Client keys served (empty: any client that proves a key).
    pub clients: Trust,
    /// The dealer process and its key.
    pub dealer: String,
    pub dealer_key: Trust,
    pub engine: EngineConfig,
    /// Sessions run at once.
    pub max_sessions: usize,
}

/// Serves clients until the listener fails, or `daemon.sessions` sessions have ended.
pub fn serve(
    listener: TcpListener,
    model: Arc<Gpt2>,
    policy: ServerPolicy,
    daemon: Daemon,
) -> Result<()> {
    if policy.max_sessions == 0 {
        bail!("--max-sessions must be at least 1")
    }
    let policy = Arc::new(policy);
    let active = Arc::new(AtomicUsize::new(0));
    let counter = daemon.clone();
    serve_connections(listener, "server", daemon, move |stream| {
        let peer = stream
            .peer_addr()
            .map_or_else(|_| "?".to_string(), |a| a.to_string());
        let ran = handle(stream, &model, &policy, &active, &counter);
        match &ran {
            Ok(true) => eprintln!("server: session with {peer} done"),
            Ok(false) => {}
            Err(e) => eprintln!("server: session with {peer} failed: {e:#}"),
        }
        Ok(matches!(ran, Ok(true)))
    })
}

/// A place among the sessions that run at once, given back when dropped.
struct Slot<'a>(&'a AtomicUsize);

impl<'a> Slot<'a> {
    fn take(active: &'a AtomicUsize, max: usize) -> Option<Self> {
        active
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| Slot(active))
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// What is wrong with a client's hello, if anything.
pub(crate) fn check_hello(
    hello: &ClientHello,
    cfg: &Config,
    engine: &EngineConfig,
) -> Option<String> {
    if hello.version != PROTOCOL_VERSION {
        Some(format!(
            "protocol version {} (the server speaks {PROTOCOL_VERSION})",
            hello.version
        ))
    } else if hello.frac_bits != engine.fp.frac_bits {
        Some(format!(
            "{} fractional bits (the server uses {})",
            hello.frac_bits, engine.fp.frac_bits
        ))
    } else if hello.vocab_size != cfg.vocab_size {
        Some(format!(
            "a public model with {} tokens (the private model has {})",
            hello.vocab_size, cfg.vocab_size
        ))
    } else if hello.shape != engine.shape.map(|l| (l.rtt, l.bandwidth)) {
        Some(format!(
            "link shaping {:?} (the server shapes {:?}; give both ends the same --shape)",
            hello.shape,
            engine.shape.map(|l| (l.rtt, l.bandwidth))
        ))
    } else if let Err(why) = crate::secure::sampling::check_temperature(hello.temperature) {
        Some(why)
    } else if super::dealer::parse_hex32(&hello.nonce).is_none() {
        Some("a session nonce that is not 32 bytes of hex".into())
    } else {
        None
    }
}

/// One connection; returns whether a session ran (past the hello).
fn handle(
    stream: std::net::TcpStream,
    model: &Gpt2,
    policy: &ServerPolicy,
    active: &AtomicUsize,
    daemon: &Daemon,
) -> Result<bool> {
    let Link {
        mut transport,
        peer,
        hash,
    } = link::accept(stream, &policy.link, Listener::Server, |k| {
        policy.clients.admits(k)
    })?;
    if !policy.link.encrypted() {
        eprintln!("server: warning: this session runs over plaintext (no --key): anyone on the path reads the shares");
    }
    let hello: ClientHello =
        serde_json::from_slice(&transport.recv(policy.link.handshake_timeout, MAX_HELLO_BYTES)?)
            .context("handshake: the client's hello is malformed")?;
    let cfg = model.config().clone();
    let slot = Slot::take(active, policy.max_sessions);
    let problem = check_hello(&hello, &cfg, &policy.engine).or_else(|| {
        slot.is_none().then(|| {
            format!(
                "busy: {} sessions are running (--max-sessions {}); try again later",
                policy.max_sessions, policy.max_sessions
            )
        })
    });
    let nonce = link::random_bytes()?;
    transport.send(serde_json::to_vec(&ServerHello {
        version: PROTOCOL_VERSION,
        frac_bits: policy.engine.fp.frac_bits,
        nonce: hex::encode(nonce),
        config: problem.is_none().then(|| cfg.clone()),
        refused: problem.clone(),
    })?)?;
    if let Some(why) = problem {
        bail!("handshake: refused a client with {why}")
    }
    let client_nonce = super::dealer::parse_hex32(&hello.nonce).expect("checked above");
    let session = link::session_id(&hash, &client_nonce, &nonce);
    let result = (|| {
        let mut party = remote_party(
            SERVER,
            transport,
            RemoteDealer {
                addr: &policy.dealer,
                link: &policy.link,
                key: &policy.dealer_key,
                session: &session,
                peer: peer.as_ref(),
                shape: Some(&cfg),
            },
            &policy.engine,
        )?;
        let secure: SecureModel = SecureGpt2::setup(&mut party, &cfg, Some(model))
            .context("weight sharing")?
            .into();
        serve_client(&mut party, &secure, hello.temperature).context("serving steps")
    })();
    drop(slot);
    daemon.session_ended();
    result.map(|_| true)
}

/// Where a party finds the dealer for its session.
pub(crate) struct RemoteDealer<'a> {
    pub addr: &'a str,
    pub link: &'a LinkConfig,
    pub key: &'a Trust,
    pub session: &'a [u8; 32],
    /// The key at the other end of the party link.
    pub peer: Option<&'a PublicKey>,
    /// The server's model shape (the server names it; the client does not).
    pub shape: Option<&'a Config>,
}

/// A party of a TCP session: the link to its peer, its own seed from the dealer process, its own
/// private randomness from the OS.
pub(crate) fn remote_party(
    id: usize,
    peer: Box<dyn Transport>,
    dealer: RemoteDealer,
    engine: &EngineConfig,
) -> Result<Party> {
    let role = if id == SERVER { SERVER_ROLE } else { 0 };
    let (link, seed): (DealerLink, [u8; 32]) = connect_dealer(
        dealer.addr,
        dealer.link,
        dealer.key,
        role,
        dealer.session,
        dealer.peer,
        dealer.shape,
        engine.timeout,
    )?;
    let mut channel = Channel::new(shaped(peer, engine.shape), engine.link);
    channel.timeout = engine.timeout;
    Ok(Party::new(
        id,
        channel,
        DealerHandle::remote(link, seed, id as u64),
        engine.fp,
        engine.approx.clone(),
        ChaCha12Rng::from_os_rng(),
    ))
}
