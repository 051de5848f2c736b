//! `post dealer` as a daemon, and a party's connection to it.
//!
//! A party opens a link (encrypted and authenticated by its key, see [`crate::link`]) and says
//! which session it belongs to: the id both parties derived from their own link, which no third
//! connection knows. Its role comes from its key (the dealer's `--trust-server` keys are servers,
//! its `--trust` keys clients), never from what it claims; over plaintext (loopback) the claim is
//! all there is. A party also names the key it saw at the other end of its party link, so the
//! dealer pairs only the two processes that talk to each other. The first connection for a
//! (session, role) is kept and a second refused; a party left alone longer than `--timeout` is
//! told so and dropped. The server names the model shape it serves, and every request of the
//! session is held to the limits that shape allows ([`limits_for`]).

use std::collections::HashMap;
use std::net::TcpListener;
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::{serve_connections, Daemon};
use crate::link::{self, Link, LinkConfig, Listener, PublicKey, Trust};
use crate::model::Config;
use crate::mpc::dealer_wire::{recv_seed, DealerLink};
use crate::mpc::net::Transport;
use crate::mpc::remote::{run_session, RequestLimits};

pub const CLIENT_ROLE: u8 = 0;
pub const SERVER_ROLE: u8 = 1;

/// The longest hello a party may send (JSON with a model shape).
const MAX_HELLO_BYTES: usize = 16 << 10;

/// What a party says first on its dealer link.
#[derive(Debug, Serialize, Deserialize)]
pub struct DealerHello {
    pub version: u32,
    /// The session id, hex (see [`crate::link::session_id`]).
    pub session: String,
    /// The role claimed; over an authenticated link it must match the key's.
    pub role: u8,
    /// The key this party saw at the other end of its party link (hex), over encrypted links.
    pub peer: Option<String>,
    /// The server's model shape: the dealer's limits for the session come from it.
    pub shape: Option<Config>,
}

/// The dealer's answer once both parties are there, or why it refuses.
#[derive(Debug, Serialize, Deserialize)]
struct DealerWelcome {
    refused: Option<String>,
}

pub const DEALER_PROTOCOL: u32 = 2;

/// The limits a session serving `cfg` needs: no component larger than the largest tensor its
/// forward over a full context makes, and no more fixed masks than a few copies of its weights.
pub fn limits_for(cfg: &Config, max_request_words: usize) -> RequestLimits {
    let (v, t, d, h) = (cfg.vocab_size, cfg.n_positions, cfg.n_embd, cfg.n_head);
    let widest = v.max(cfg.mlp_dim()).max(3 * d).max(h.saturating_mul(t));
    let activations = t.saturating_add(64).saturating_mul(widest);
    let weights = v
        .max(t)
        .saturating_mul(d)
        .max(d.saturating_mul(cfg.mlp_dim().max(3 * d)));
    let parameters = v.saturating_add(t).saturating_mul(d).saturating_add(
        cfg.n_layer
            .saturating_mul(4 * d * d + 2 * d * cfg.mlp_dim()),
    );
    let caches = cfg.n_layer.saturating_mul(2 * t * d);
    RequestLimits {
        // Comparison keys take 2 (bits + 1) + 1 words an element over up to 63 bits.
        max_elements: activations.max(weights).saturating_mul(256),
        max_request_words,
        max_mask_words: parameters.saturating_add(caches).saturating_mul(4),
    }
}

/// Who the dealer serves.
pub struct DealerPolicy {
    pub link: LinkConfig,
    /// Client keys (`--trust`).
    pub clients: Trust,
    /// Server keys (`--trust-server`).
    pub servers: Trust,
    /// How long a party waits for its partner, and the server's requests.
    pub timeout: Duration,
    /// The most words one request may make (`--max-request-mb`).
    pub max_request_words: usize,
}

struct Waiting {
    id: u64,
    key: Option<PublicKey>,
    peer: Option<PublicKey>,
    shape: Option<Config>,
    transport: Box<dyn Transport>,
    taken: Sender<()>,
}

/// Parties waiting for their partner: (session id, role) -> connection.
type Lobby = Arc<Mutex<HashMap<([u8; 32], u8), Waiting>>>;

/// Serves dealer sessions until the listener fails, or `sessions` of them have ended.
pub fn serve_dealer(listener: TcpListener, policy: DealerPolicy, daemon: Daemon) -> Result<()> {
    if policy.link.encrypted() && policy.clients.is_open() {
        bail!("the dealer serves only keys it trusts: give --trust CLIENT.pub (one per client)")
    }
    if policy.link.encrypted() && policy.servers.is_open() {
        bail!("the dealer serves only keys it trusts: give --trust-server SERVER.pub")
    }
    let policy = Arc::new(policy);
    let lobby: Lobby = Arc::default();
    let next_id = Arc::new(std::sync::atomic::AtomicU64::new(0));
    serve_connections(listener, "dealer", daemon, move |stream| {
        let (policy, lobby) = (policy.clone(), lobby.clone());
        let id = next_id.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        handle(stream, &policy, &lobby, id)
    })
}

/// One connection: link, hello, then either the lobby or the session with its partner. Returns
/// whether a session ran on this thread.
fn handle(
    stream: std::net::TcpStream,
    policy: &DealerPolicy,
    lobby: &Lobby,
    id: u64,
) -> Result<bool> {
    let role_of = |key: &PublicKey| {
        if policy.servers.contains(key) {
            Some(SERVER_ROLE)
        } else if policy.clients.contains(key) {
            Some(CLIENT_ROLE)
        } else {
            None
        }
    };
    let Link {
        mut transport,
        peer: key,
        ..
    } = link::accept(stream, &policy.link, Listener::Dealer, |k| {
        role_of(k).is_some()
    })?;
    if !policy.link.encrypted() {
        eprintln!("dealer: warning: a party connected over plaintext (no --key): anyone on the path reads its shares");
    }
    let hello: DealerHello =
        serde_json::from_slice(&transport.recv(policy.link.handshake_timeout, MAX_HELLO_BYTES)?)
            .context("a party's hello is malformed")?;
    let refuse = |mut transport: Box<dyn Transport>, why: String| -> Result<bool> {
        let _ = transport.send(welcome(Some(why.clone())));
        Err(anyhow!(why))
    };
    if hello.version != DEALER_PROTOCOL {
        return refuse(
            transport,
            format!(
                "dealer protocol {} (this dealer speaks {DEALER_PROTOCOL})",
                hello.version
            ),
        );
    }
    let session = match parse_hex32(&hello.session) {
        Some(s) => s,
        None => return refuse(transport, "a session id that is not 32 bytes of hex".into()),
    };
    let role = match key.as_ref().map(role_of) {
        Some(Some(role)) if role == hello.role => role,
        Some(Some(role)) => {
            return refuse(
                transport,
                format!(
                    "this key is a {}'s, but it claims the other role",
                    name(role)
                ),
            )
        }
        Some(None) => return refuse(transport, "an untrusted key".into()),
        None if hello.role <= SERVER_ROLE => hello.role,
        None => return refuse(transport, format!("role {}", hello.role)),
    };
    let peer = match (&hello.peer, key.is_some()) {
        (Some(p), true) => match parse_hex32(p) {
            Some(p) => Some(PublicKey(p)),
            None => return refuse(transport, "a peer key that is not 32 bytes of hex".into()),
        },
        (None, true) => {
            return refuse(transport, "no peer key named over an encrypted link".into())
        }
        (_, false) => None,
    };
    if role == SERVER_ROLE {
        match &hello.shape {
            Some(cfg) => {
                if let Err(e) = cfg.validate_public() {
                    return refuse(transport, format!("the served shape: {e:#}"));
                }
            }
            None => return refuse(transport, "a server that names no model shape".into()),
        }
    }
    let (taken_tx, taken_rx) = channel();
    let me = Waiting {
        id,
        key,
        peer,
        shape: hello.shape,
        transport,
        taken: taken_tx,
    };
    let partner = {
        let mut waiting = lobby
            .lock()
            .map_err(|_| anyhow!("the lobby lock is poisoned"))?;
        if waiting.contains_key(&(session, role)) {
            drop(waiting);
            return refuse(
                me.transport,
                format!(
                    "session {} has a {} already; the first connection is kept",
                    short(&session),
                    name(role)
                ),
            );
        }
        match waiting.remove(&(session, 1 - role)) {
            Some(other) => other,
            None => {
                waiting.insert((session, role), me);
                drop(waiting);
                return wait_for_partner(lobby, session, role, id, policy.timeout, taken_rx);
            }
        }
    };
    // The partner's thread may stop waiting: this one runs the session.
    let _ = partner.taken.send(());
    run_pair(me, partner, role, policy)?;
    Ok(true)
}

/// Waits up to `timeout` for the partner to take this connection over; a party left alone is
/// told so and dropped.
fn wait_for_partner(
    lobby: &Lobby,
    session: [u8; 32],
    role: u8,
    id: u64,
    timeout: Duration,
    taken: std::sync::mpsc::Receiver<()>,
) -> Result<bool> {
    if taken.recv_timeout(timeout).is_ok() {
        return Ok(false);
    }
    let mine = {
        let mut waiting = lobby
            .lock()
            .map_err(|_| anyhow!("the lobby lock is poisoned"))?;
        match waiting.get(&(session, role)) {
            Some(w) if w.id == id => waiting.remove(&(session, role)),
            _ => None,
        }
    };
    match mine {
        Some(mut w) => {
            let why = format!(
                "no {} joined session {} within {:.0} s",
                name(1 - role),
                short(&session),
                timeout.as_secs_f64()
            );
            let _ = w.transport.send(welcome(Some(why.clone())));
            Err(anyhow!(why))
        }
        // Taken just as the wait ended.
        None => Ok(false),
    }
}

/// Checks that the two connections are the two ends of one party link, then runs the session.
fn run_pair(me: Waiting, partner: Waiting, role: u8, policy: &DealerPolicy) -> Result<()> {
    let (mut client, mut server) = if role == CLIENT_ROLE {
        (me, partner)
    } else {
        (partner, me)
    };
    if policy.link.encrypted() && (server.peer != client.key || client.peer != server.key) {
        let why = "the two parties of this session did not see each other's keys on their own link"
            .to_string();
        let _ = client.transport.send(welcome(Some(why.clone())));
        let _ = server.transport.send(welcome(Some(why.clone())));
        bail!(why)
    }
    let shape = server
        .shape
        .as_ref()
        .ok_or_else(|| anyhow!("a server with no shape"))?;
    let limits = limits_for(shape, policy.max_request_words);
    client.transport.send(welcome(None))?;
    server.transport.send(welcome(None))?;
    run_session(
        client.transport.as_mut(),
        server.transport.as_mut(),
        policy.timeout,
        &limits,
    )?;
    Ok(())
}

/// A party's end: opens its link to the dealer at `addr`, says which session it belongs to, and
/// waits for its partner; returns the link and this party's seed.
#[allow(clippy::too_many_arguments)]
pub fn connect_dealer(
    addr: &str,
    link_cfg: &LinkConfig,
    dealer_key: &Trust,
    role: u8,
    session: &[u8; 32],
    peer: Option<&PublicKey>,
    shape: Option<&Config>,
    timeout: Duration,
) -> Result<(DealerLink, [u8; 32])> {
    let Link { mut transport, .. } = link::connect(addr, link_cfg, Listener::Dealer, dealer_key)
        .with_context(|| format!("the dealer at {addr}"))?;
    let hello = DealerHello {
        version: DEALER_PROTOCOL,
        session: hex::encode(session),
        role,
        peer: peer.map(PublicKey::to_hex),
        shape: shape.cloned(),
    };
    transport.send(serde_json::to_vec(&hello)?)?;
    let answer: DealerWelcome = serde_json::from_slice(
        &transport
            .recv(timeout, 4096)
            .context("waiting for the dealer to pair this session")?,
    )
    .context("the dealer's answer is malformed")?;
    if let Some(why) = answer.refused {
        bail!("the dealer refused the session: {why}")
    }
    let seed = recv_seed(transport.as_mut(), timeout)?;
    Ok((DealerLink { transport, timeout }, seed))
}

fn name(role: u8) -> &'static str {
    if role == SERVER_ROLE {
        "server"
    } else {
        "client"
    }
}

fn short(session: &[u8; 32]) -> String {
    hex::encode(&session[..6])
}

fn welcome(refused: Option<String>) -> Vec<u8> {
    serde_json::to_vec(&DealerWelcome { refused }).expect("a welcome serialises")
}

pub(crate) fn parse_hex32(text: &str) -> Option<[u8; 32]> {
    hex::decode(text).ok()?.try_into().ok()
}
