//! Runs the two parties as two threads of this process, over simulated or loopback-TCP links.

use rand::SeedableRng;
use rand_chacha::ChaCha12Rng;

use super::dealer_handle::start_dealer;
use super::error::MpcError;
use super::fixed::FixedPoint;
use super::net::{sim_pair, tcp_pair, Channel, LinkModel};
use super::party::{ApproxConfig, Party, Result};

/// Which transport carries the messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportKind {
    /// In-memory queues with the virtual clock.
    Sim,
    /// Real TCP sockets on 127.0.0.1 (same bytes, same virtual clock).
    Tcp,
}

#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub fp: FixedPoint,
    pub approx: ApproxConfig,
    pub link: LinkModel,
    pub transport: TransportKind,
    /// `None` (the default): the dealer's two streams and each party's private randomness come
    /// from separate 256-bit seeds drawn from the OS, so no party can recompute the other's shares.
    /// `Some(n)`: everything derives from `n`, for reproducible simulation only (not secure).
    pub seed: Option<u64>,
    /// How long a party waits for each message of its peer before it gives up.
    pub timeout: std::time::Duration,
    /// Real-time shaping of a TCP link ([`super::net::ShapedTransport`]); `link` then usually
    /// stays ideal, so that the virtual clock counts only what really passes.
    pub shape: Option<LinkModel>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            fp: FixedPoint::default(),
            approx: ApproxConfig::default(),
            link: LinkModel::lan(),
            transport: TransportKind::Sim,
            seed: None,
            timeout: std::time::Duration::from_secs(60),
            shape: None,
        }
    }
}

/// The client and the server, joined by a link and a dealer thread, ready to run on two threads.
pub fn make_parties(cfg: &EngineConfig) -> Result<(Party, Party)> {
    let (c0, c1): (Channel, Channel) = match cfg.transport {
        TransportKind::Sim => sim_pair(cfg.link),
        TransportKind::Tcp => tcp_pair(cfg.link, cfg.shape)?,
    };
    let (d0, d1) = start_dealer(cfg.seed);
    let party = |id: usize, net: Channel, dealer| {
        let seed = match cfg.seed {
            Some(seed) => ChaCha12Rng::seed_from_u64(seed ^ (0xC0FFEE + id as u64)),
            None => ChaCha12Rng::from_os_rng(),
        };
        let mut net = net;
        net.timeout = cfg.timeout;
        Party::new(id, net, dealer, cfg.fp, cfg.approx.clone(), seed)
    };
    Ok((party(0, c0, d0), party(1, c1, d1)))
}

/// Runs `f` once as each party on its own thread and returns (client's result, server's result).
pub fn run_two_party<T, F>(cfg: &EngineConfig, f: F) -> Result<(T, T)>
where
    T: Send + 'static,
    F: Fn(&mut Party) -> Result<T> + Send + Sync + 'static,
{
    let (client, server) = make_parties(cfg)?;
    let f = std::sync::Arc::new(f);
    let spawn = |mut party: Party| {
        let f = f.clone();
        std::thread::spawn(move || f(&mut party))
    };
    let h0 = spawn(client);
    let h1 = spawn(server);
    let r0 = h0
        .join()
        .map_err(|_| MpcError::Malformed("party 0 panicked".into()))?;
    let r1 = h1
        .join()
        .map_err(|_| MpcError::Malformed("party 1 panicked".into()))?;
    Ok((r0?, r1?))
}
