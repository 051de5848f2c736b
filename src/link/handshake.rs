//! Opening a link between two processes: a short preamble says whether the link is encrypted and
//! what the listener is (a server or a dealer), then the Noise handshake proves both keys and the
//! listener says whether it trusts the connecting key. A mismatch ends the connection with an
//! error that says which side lacks what.
//!
//! Cost per link: the preamble rides with the first handshake message, so an encrypted link takes
//! 1.5 round trips (XX) plus the listener's verdict, and 8 + 9 + 32 + 96 + 64 + 17 bytes or so.

use std::io::Write;
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use super::identity::{Identity, PublicKey, Trust};
use super::noise;
use crate::mpc::net::{TcpTransport, Transport};
use crate::mpc::MpcError;

type Result<T> = std::result::Result<T, MpcError>;

const MAGIC_NOISE: &[u8; 8] = b"POST2nxx";
const MAGIC_PLAIN: &[u8; 8] = b"POST2pln";

/// Who listens at the other end: the preamble says it, so a client pointed at the dealer's port
/// fails at once with a clear line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    Server = 1,
    Dealer = 2,
}

impl Listener {
    fn name(self) -> &'static str {
        match self {
            Listener::Server => "a server (`post serve`)",
            Listener::Dealer => "a dealer (`post dealer`)",
        }
    }

    fn from_byte(b: u8) -> Option<Self> {
        match b {
            1 => Some(Listener::Server),
            2 => Some(Listener::Dealer),
            _ => None,
        }
    }
}

/// How this process opens its links.
#[derive(Debug, Clone)]
pub struct LinkConfig {
    /// This process's key; `None`: plaintext (loopback, or `--insecure-plaintext`).
    pub identity: Option<Identity>,
    /// The whole handshake must finish within this long.
    pub handshake_timeout: Duration,
    /// A write that makes no progress for this long fails (a peer that stops reading).
    pub io_timeout: Duration,
}

impl LinkConfig {
    pub fn plaintext(io_timeout: Duration) -> Self {
        Self {
            identity: None,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            io_timeout,
        }
    }

    pub fn encrypted(&self) -> bool {
        self.identity.is_some()
    }
}

pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// An open link.
pub struct Link {
    pub transport: Box<dyn Transport>,
    /// The peer's proven key (`None` over plaintext).
    pub peer: Option<PublicKey>,
    /// Unique to this connection: the Noise handshake hash (zeros over plaintext).
    pub hash: [u8; 32],
}

fn prologue(listener: Listener) -> Vec<u8> {
    let mut p = b"post link v2: ".to_vec();
    p.push(listener as u8);
    p
}

/// Readies a stream for the handshake: writes fail at `deadline` (reads take their timeout from
/// it one by one), and no Nagle delay on its small messages, answered at once.
fn for_handshake(stream: &TcpStream, deadline: Instant) -> Result<()> {
    stream.set_nodelay(true)?;
    stream.set_write_timeout(Some(noise::time_left(deadline)?))?;
    Ok(())
}

/// The link of a plaintext connection (no handshake beyond the preamble).
fn plaintext(stream: TcpStream, cfg: &LinkConfig) -> Result<Link> {
    Ok(Link {
        transport: Box::new(TcpTransport::new(stream, cfg.io_timeout)?),
        peer: None,
        hash: [0; 32],
    })
}

fn read_preamble(stream: &mut TcpStream, deadline: Instant) -> Result<(bool, u8)> {
    // The magic first: a peer that speaks something else is dropped at once, not at the deadline.
    let timeout = noise::time_left(deadline)?;
    let mut buf = [0u8; 9];
    noise::read_exact_by(stream, &mut buf[..8], deadline, timeout)?;
    let encrypted = match &buf[..8] {
        m if m == MAGIC_NOISE => true,
        m if m == MAGIC_PLAIN => false,
        _ => {
            return Err(MpcError::Malformed(
                "the peer does not speak post's link protocol (version 2)".into(),
            ))
        }
    };
    noise::read_exact_by(stream, &mut buf[8..], deadline, timeout)?;
    Ok((encrypted, buf[8]))
}

fn preamble(encrypted: bool, listener: Listener) -> [u8; 9] {
    let mut buf = [0u8; 9];
    buf[..8].copy_from_slice(if encrypted { MAGIC_NOISE } else { MAGIC_PLAIN });
    buf[8] = listener as u8;
    buf
}

/// Connects to `addr`, where `listener` is expected, and opens the link; over an encrypted link
/// the listener's key must be in `trust` (which must not be empty).
pub fn connect(addr: &str, cfg: &LinkConfig, listener: Listener, trust: &Trust) -> Result<Link> {
    let deadline = Instant::now() + cfg.handshake_timeout;
    let target = addr
        .to_socket_addrs()
        .map_err(|e| MpcError::BadConfig(format!("{addr}: {e}")))?
        .next()
        .ok_or_else(|| MpcError::BadConfig(format!("{addr} resolves to no address")))?;
    let mut stream = TcpStream::connect_timeout(&target, cfg.handshake_timeout).map_err(|e| {
        MpcError::BadConfig(format!("cannot reach {} at {addr}: {e}", listener.name()))
    })?;
    for_handshake(&stream, deadline)?;
    stream.write_all(&preamble(cfg.encrypted(), listener))?;
    let (theirs, role) = read_preamble(&mut stream, deadline)?;
    if Listener::from_byte(role) != Some(listener) {
        return Err(MpcError::BadConfig(format!(
            "{addr} is not {}",
            listener.name()
        )));
    }
    match (cfg.encrypted(), theirs) {
        (true, false) => {
            return Err(MpcError::Refused(format!(
                "{addr} runs without encryption (--insecure-plaintext); this process has a --key and will not send in the clear"
            )))
        }
        (false, true) => {
            return Err(MpcError::Refused(format!(
                "{addr} requires an encrypted, authenticated link: give --key (see `post keygen`) and --trust for its key"
            )))
        }
        _ => {}
    }
    let Some(me) = &cfg.identity else {
        return plaintext(stream, cfg);
    };
    if trust.is_open() {
        return Err(MpcError::BadConfig(format!(
            "no key to check {} at {addr} against: give its public key",
            listener.name()
        )));
    }
    let hs = noise::initiate(
        stream,
        me,
        &prologue(listener),
        deadline,
        cfg.io_timeout,
        |peer| {
            if trust.contains(peer) {
                Ok(())
            } else {
                Err(MpcError::Untrusted(format!(
                    "{addr} proved key {}, which is not among the trusted keys",
                    peer.fingerprint()
                )))
            }
        },
    )?;
    let mut transport = hs.transport;
    let left = deadline.saturating_duration_since(Instant::now());
    let verdict = transport.recv(left.max(Duration::from_millis(1)), 1024)?;
    match verdict.split_first() {
        Some((0, _)) => Ok(Link {
            transport: Box::new(transport),
            peer: Some(hs.peer),
            hash: hs.hash,
        }),
        Some((1, why)) => Err(MpcError::Untrusted(format!(
            "{addr} does not trust this key ({}): {}",
            me.public.fingerprint(),
            String::from_utf8_lossy(why)
        ))),
        _ => Err(MpcError::Malformed("a handshake verdict".into())),
    }
}

/// Opens the link of a connection accepted by `listener`; `admits` says which keys it serves.
/// Runs on the connection's own thread, within the handshake deadline.
pub fn accept(
    mut stream: TcpStream,
    cfg: &LinkConfig,
    listener: Listener,
    admits: impl Fn(&PublicKey) -> bool,
) -> Result<Link> {
    let deadline = Instant::now() + cfg.handshake_timeout;
    for_handshake(&stream, deadline)?;
    let (theirs, role) = read_preamble(&mut stream, deadline)?;
    stream.write_all(&preamble(cfg.encrypted(), listener))?;
    if Listener::from_byte(role) != Some(listener) {
        return Err(MpcError::BadConfig(format!(
            "a peer looking for another kind of process (role byte {role})"
        )));
    }
    match (cfg.encrypted(), theirs) {
        (true, false) => {
            return Err(MpcError::Refused(
                "a peer without a key asked for a plaintext link; refused".into(),
            ))
        }
        (false, true) => {
            return Err(MpcError::Refused(
                "a peer asked for an encrypted link, but this process runs without --key".into(),
            ))
        }
        _ => {}
    }
    let Some(me) = &cfg.identity else {
        return plaintext(stream, cfg);
    };
    let hs = noise::respond(stream, me, &prologue(listener), deadline, cfg.io_timeout)?;
    let mut transport = hs.transport;
    if !admits(&hs.peer) {
        let mut refusal = vec![1u8];
        refusal.extend_from_slice(b"the key is not among the trusted keys");
        let _ = transport.send(refusal);
        return Err(MpcError::Untrusted(format!(
            "key {} is not among the trusted keys",
            hs.peer.fingerprint()
        )));
    }
    transport.send(vec![0])?;
    Ok(Link {
        transport: Box::new(transport),
        peer: Some(hs.peer),
        hash: hs.hash,
    })
}

/// Whether every address `addr` names is a loopback one (plaintext is allowed only there).
pub fn is_loopback(addr: &str) -> bool {
    match addr.to_socket_addrs() {
        Ok(addrs) => {
            let addrs: Vec<_> = addrs.collect();
            !addrs.is_empty() && addrs.iter().all(|a| a.ip().is_loopback())
        }
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::net::TcpListener;
    use std::sync::{Arc, Mutex};

    /// Opens one link through a relay that counts the bytes each way until the link is open, and
    /// returns (initiator -> listener, listener -> initiator) bytes.
    fn handshake_bytes(encrypted: bool) -> (usize, usize) {
        let (a, b) = (Identity::generate().unwrap(), Identity::generate().unwrap());
        let config = |id: &Identity| LinkConfig {
            identity: encrypted.then(|| id.clone()),
            handshake_timeout: Duration::from_secs(10),
            io_timeout: Duration::from_secs(10),
        };
        let (ca, cb) = (config(&a), config(&b));
        let server = TcpListener::bind("127.0.0.1:0").unwrap();
        let server_addr = server.local_addr().unwrap();
        let relay = TcpListener::bind("127.0.0.1:0").unwrap();
        let relay_addr = relay.local_addr().unwrap().to_string();
        let counts = Arc::new(Mutex::new((0usize, 0usize)));
        let counted = counts.clone();
        std::thread::spawn(move || {
            let (front, _) = relay.accept().unwrap();
            let back = TcpStream::connect(server_addr).unwrap();
            let pump = |mut from: TcpStream,
                        mut to: TcpStream,
                        up: bool,
                        counts: Arc<Mutex<(usize, usize)>>| {
                std::thread::spawn(move || {
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = from.read(&mut buf) {
                        if n == 0 || to.write_all(&buf[..n]).is_err() {
                            break;
                        }
                        let mut c = counts.lock().unwrap();
                        if up {
                            c.0 += n
                        } else {
                            c.1 += n
                        }
                    }
                    let _ = to.shutdown(std::net::Shutdown::Write);
                })
            };
            pump(
                front.try_clone().unwrap(),
                back.try_clone().unwrap(),
                true,
                counted.clone(),
            );
            pump(back, front, false, counted);
        });
        let trusted = Trust::of(vec![b.public]);
        let listener = std::thread::spawn(move || {
            let (stream, _) = server.accept().unwrap();
            accept(stream, &cb, Listener::Server, |_| true).map(|l| l.peer)
        });
        let link = connect(&relay_addr, &ca, Listener::Server, &trusted).unwrap();
        let seen = listener.join().unwrap().unwrap();
        assert_eq!(seen, encrypted.then_some(a.public));
        assert_eq!(link.peer, encrypted.then_some(b.public));
        drop(link);
        std::thread::sleep(Duration::from_millis(100));
        let c = *counts.lock().unwrap();
        c
    }

    #[test]
    fn an_encrypted_link_costs_two_round_trips_and_a_few_hundred_bytes() {
        // Plaintext: the 9-byte preamble each way, one round trip.
        assert_eq!(handshake_bytes(false), (9, 9));
        // Noise XX: preamble + e (32) and s, se (48 + 16 tag) from the initiator; preamble + e, ee,
        // s, es (32 + 48 + 16 tag) and the verdict (a header message and a 1-byte one, 16-byte
        // tags) from the listener; every Noise message carries a 2-byte length.
        let (up, down) = handshake_bytes(true);
        assert_eq!(up, 9 + (2 + 32) + (2 + 48 + 16));
        assert_eq!(down, 9 + (2 + 32 + 48 + 16) + (2 + 8 + 16) + (2 + 1 + 16));
    }
}
