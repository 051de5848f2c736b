//! The client's end of a deployment (`post verify --connect`): its link to the server (whose key
//! it pins), the handshake, its dealer link, then a [`SecureVerifier`] for the decoding loop.
//! Everything the server announces is checked before it is used.

use anyhow::{anyhow, bail, Context, Result};

use super::server::{
    remote_party, ClientHello, RemoteDealer, ServerHello, MAX_HELLO_BYTES, PROTOCOL_VERSION,
};
use crate::link::{self, Link, LinkConfig, Listener, Trust};
use crate::mpc::{EngineConfig, CLIENT};
use crate::secure::sampling::check_temperature;
use crate::secure::SecureVerifier;

/// How the client reaches the server and the dealer.
pub struct ClientLinks {
    pub link: LinkConfig,
    /// The server's key (`--trust`).
    pub server_key: Trust,
    /// The dealer's key (`--dealer-key`).
    pub dealer_key: Trust,
}

/// Connects to the server at `addr` (which holds the private model) and to the dealer at
/// `dealer`; `vocab_size` is the public model's, checked against the private one's.
pub fn connect(
    addr: &str,
    dealer: &str,
    links: &ClientLinks,
    engine: &EngineConfig,
    temperature: f64,
    vocab_size: usize,
) -> Result<SecureVerifier> {
    check_temperature(temperature).map_err(|why| anyhow!(why))?;
    let Link {
        mut transport,
        peer,
        hash,
    } = link::connect(addr, &links.link, Listener::Server, &links.server_key)
        .with_context(|| format!("the server at {addr}"))?;
    if !links.link.encrypted() {
        eprintln!("warning: the session with {addr} runs over plaintext (no --key): anyone on the path reads the shares");
    }
    let nonce = link::random_bytes()?;
    transport.send(serde_json::to_vec(&ClientHello {
        version: PROTOCOL_VERSION,
        frac_bits: engine.fp.frac_bits,
        nonce: hex::encode(nonce),
        temperature,
        vocab_size,
        shape: engine.shape.map(|l| (l.rtt, l.bandwidth)),
    })?)?;
    let hello: ServerHello = serde_json::from_slice(
        &transport
            .recv(links.link.handshake_timeout, MAX_HELLO_BYTES)
            .context("handshake: no answer from the server")?,
    )
    .context("handshake: the server's hello is malformed")?;
    if let Some(why) = hello.refused {
        bail!("handshake: the server refused the session: {why}")
    }
    if hello.version != PROTOCOL_VERSION || hello.frac_bits != engine.fp.frac_bits {
        bail!(
            "handshake: the server speaks version {} with {} fractional bits (this client: {PROTOCOL_VERSION}, {})",
            hello.version,
            hello.frac_bits,
            engine.fp.frac_bits
        )
    }
    let cfg = hello
        .config
        .ok_or_else(|| anyhow!("handshake: the server sent no model shape"))?;
    cfg.validate_public()
        .context("handshake: the server announced a model shape this client will not run")?;
    if cfg.vocab_size != vocab_size {
        bail!(
            "handshake: the server's model has {} tokens, the public model {vocab_size}",
            cfg.vocab_size
        )
    }
    let server_nonce = super::dealer::parse_hex32(&hello.nonce)
        .ok_or_else(|| anyhow!("handshake: the server's nonce is not 32 bytes of hex"))?;
    let session = link::session_id(&hash, &nonce, &server_nonce);
    let client = remote_party(
        CLIENT,
        transport,
        RemoteDealer {
            addr: dealer,
            link: &links.link,
            key: &links.dealer_key,
            session: &session,
            peer: peer.as_ref(),
            shape: None,
        },
        engine,
    )?;
    SecureVerifier::from_remote(client, &cfg, temperature)
}
