//! Links between the processes of a deployment (`post serve`, `post dealer`, `post verify
//! --connect`): long-term keys ([`identity`]), the Noise XX channel ([`noise`]) and how a link is
//! opened and refused ([`handshake`]). The engine sees a link only as a [`crate::mpc::net::Transport`].

pub mod handshake;
pub mod identity;
pub mod noise;

pub use handshake::{accept, connect, is_loopback, Link, LinkConfig, Listener};
pub use identity::{Identity, PublicKey, Trust};

use sha2::{Digest, Sha256};

/// The session id both parties give the dealer: bound to their own link (its handshake hash) and
/// to a nonce from each side sent inside it, so no third connection can name it.
pub fn session_id(
    link_hash: &[u8; 32],
    client_nonce: &[u8; 32],
    server_nonce: &[u8; 32],
) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"post session id v1");
    h.update(link_hash);
    h.update(client_nonce);
    h.update(server_nonce);
    h.finalize().into()
}

/// 32 bytes from the OS.
pub fn random_bytes() -> anyhow::Result<[u8; 32]> {
    use rand::TryRngCore;
    let mut out = [0u8; 32];
    rand::rngs::OsRng
        .try_fill_bytes(&mut out)
        .map_err(|e| anyhow::anyhow!("OS randomness: {e}"))?;
    Ok(out)
}
