//! Encrypted, authenticated frames over TCP: the Noise protocol's XX handshake (both sides prove a
//! long-term X25519 key; ephemeral keys give forward secrecy), then AES-256-GCM with a counter
//! nonce per direction, so a frame altered, dropped, replayed or reordered on the way fails its tag.
//!
//! On the wire each Noise message is a 2-byte big-endian length and at most 65,535 bytes. A frame
//! of the engine is one Noise message carrying its 8-byte length, then its bytes in messages of at
//! most [`CHUNK`] bytes; the receiver checks the length against the message it expects before it
//! reads on, and grows its buffer only as authenticated chunks arrive.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::mpsc::{channel, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use snow::{HandshakeState, StatelessTransportState};

use super::identity::{Identity, PublicKey};
use crate::mpc::net::{read_error, too_long, Transport};
use crate::mpc::MpcError;

type Result<T> = std::result::Result<T, MpcError>;

const PATTERN: &str = "Noise_XX_25519_AESGCM_SHA256";
/// The longest Noise message.
const MAX_MESSAGE: usize = 65_535;
/// Plaintext bytes a transport message carries (the tag takes 16).
pub const CHUNK: usize = MAX_MESSAGE - 16;

pub fn params() -> snow::params::NoiseParams {
    PATTERN.parse().expect("a valid Noise pattern name")
}

/// The public key of a private X25519 key (to check a key file's two halves).
pub fn public_of(private: &[u8; 32]) -> anyhow::Result<PublicKey> {
    Ok(PublicKey(
        curve25519_dalek::MontgomeryPoint::mul_base_clamped(*private).to_bytes(),
    ))
}

fn snow_error(what: &str, e: snow::Error) -> MpcError {
    match e {
        snow::Error::Decrypt => MpcError::AuthFailed(format!(
            "{what}: a message from the peer does not authenticate (altered, replayed or forged on the way)"
        )),
        other => MpcError::AuthFailed(format!("{what}: {other}")),
    }
}

/// Fills `buf` by `deadline`: each read waits only for what is left of it, so a peer that trickles
/// a byte at a time cannot stretch the wait (a read timeout alone restarts with every byte).
pub(super) fn read_exact_by(
    stream: &mut TcpStream,
    mut buf: &mut [u8],
    deadline: Instant,
    timeout: Duration,
) -> Result<()> {
    while !buf.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(MpcError::Timeout(timeout));
        }
        stream.set_read_timeout(Some(left))?;
        match stream.read(buf) {
            Ok(0) => return Err(MpcError::PeerClosed),
            Ok(n) => buf = &mut buf[n..],
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(read_error(e, timeout)),
        }
    }
    Ok(())
}

/// `timeout` from now (a century at most).
pub(super) fn deadline_after(timeout: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(timeout)
        .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 86_400))
}

/// Reads one Noise message (length-prefixed) into `buf`, all of it within `timeout`.
fn read_message(stream: &mut TcpStream, buf: &mut Vec<u8>, timeout: Duration) -> Result<()> {
    let deadline = deadline_after(timeout);
    let mut len = [0u8; 2];
    read_exact_by(stream, &mut len, deadline, timeout)?;
    let len = u16::from_be_bytes(len) as usize;
    buf.resize(len, 0);
    read_exact_by(stream, buf, deadline, timeout)
}

/// Writes one handshake message in one write: two small writes would meet Nagle's delay.
fn write_message(out: &mut impl Write, msg: &[u8]) -> std::io::Result<()> {
    let mut framed = Vec::with_capacity(2 + msg.len());
    framed.extend_from_slice(&(msg.len() as u16).to_be_bytes());
    framed.extend_from_slice(msg);
    out.write_all(&framed)
}

/// What a finished handshake gives: the peer's proven key and the handshake hash (unique to this
/// connection: the session binding derives from it).
pub struct Handshake {
    pub transport: NoiseTransport,
    pub peer: PublicKey,
    pub hash: [u8; 32],
}

/// What is left before `deadline` (each read sets its own timeout from it: [`read_exact_by`]).
pub(super) fn time_left(deadline: Instant) -> Result<Duration> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(MpcError::Timeout(Duration::ZERO));
    }
    Ok(left)
}

/// Runs XX as the initiator (the connecting side). `check` sees the responder's key after the
/// second message, before this side proves its own, and may refuse it.
pub fn initiate(
    mut stream: TcpStream,
    me: &Identity,
    prologue: &[u8],
    deadline: Instant,
    write_timeout: Duration,
    check: impl FnOnce(&PublicKey) -> Result<()>,
) -> Result<Handshake> {
    let mut hs = builder(me, prologue)?
        .build_initiator()
        .map_err(|e| snow_error("handshake", e))?;
    let mut out = vec![0u8; MAX_MESSAGE];
    let mut msg = Vec::new();
    let n = hs
        .write_message(&[], &mut out)
        .map_err(|e| snow_error("handshake", e))?;
    write_message(&mut stream, &out[..n])?;
    let timeout = time_left(deadline)?;
    read_message(&mut stream, &mut msg, timeout)?;
    hs.read_message(&msg, &mut out)
        .map_err(|e| snow_error("handshake", e))?;
    let peer = remote_key(&hs)?;
    check(&peer)?;
    let n = hs
        .write_message(&[], &mut out)
        .map_err(|e| snow_error("handshake", e))?;
    write_message(&mut stream, &out[..n])?;
    finish(stream, hs, peer, write_timeout)
}

/// Runs XX as the responder (the listening side); the caller checks the initiator's key, which is
/// proven only once this returns.
pub fn respond(
    mut stream: TcpStream,
    me: &Identity,
    prologue: &[u8],
    deadline: Instant,
    write_timeout: Duration,
) -> Result<Handshake> {
    let mut hs = builder(me, prologue)?
        .build_responder()
        .map_err(|e| snow_error("handshake", e))?;
    let mut out = vec![0u8; MAX_MESSAGE];
    let mut msg = Vec::new();
    let timeout = time_left(deadline)?;
    read_message(&mut stream, &mut msg, timeout)?;
    hs.read_message(&msg, &mut out)
        .map_err(|e| snow_error("handshake", e))?;
    let n = hs
        .write_message(&[], &mut out)
        .map_err(|e| snow_error("handshake", e))?;
    write_message(&mut stream, &out[..n])?;
    let timeout = time_left(deadline)?;
    read_message(&mut stream, &mut msg, timeout)?;
    hs.read_message(&msg, &mut out)
        .map_err(|e| snow_error("handshake", e))?;
    let peer = remote_key(&hs)?;
    finish(stream, hs, peer, write_timeout)
}

fn builder<'a>(me: &'a Identity, prologue: &'a [u8]) -> Result<snow::Builder<'a>> {
    snow::Builder::new(params())
        .local_private_key(&me.private)
        .and_then(|b| b.prologue(prologue))
        .map_err(|e| snow_error("handshake set-up", e))
}

fn remote_key(hs: &HandshakeState) -> Result<PublicKey> {
    let key: [u8; 32] = hs
        .get_remote_static()
        .and_then(|k| k.try_into().ok())
        .ok_or_else(|| MpcError::AuthFailed("the peer proved no static key".into()))?;
    Ok(PublicKey(key))
}

fn finish(
    stream: TcpStream,
    hs: HandshakeState,
    peer: PublicKey,
    write_timeout: Duration,
) -> Result<Handshake> {
    let hash: [u8; 32] = hs
        .get_handshake_hash()
        .try_into()
        .map_err(|_| MpcError::AuthFailed("a handshake hash of another length".into()))?;
    let state = Arc::new(
        hs.into_stateless_transport_mode()
            .map_err(|e| snow_error("handshake", e))?,
    );
    Ok(Handshake {
        transport: NoiseTransport::new(stream, state, write_timeout)?,
        peer,
        hash,
    })
}

/// Frames over an established Noise session. Sends go through a writer thread (as the plaintext
/// transport's do), which encrypts with its own nonce counter; receives decrypt with theirs.
pub struct NoiseTransport {
    stream: TcpStream,
    state: Arc<StatelessTransportState>,
    recv_nonce: u64,
    message: Vec<u8>,
    plain: Vec<u8>,
    writer: Option<(Sender<Vec<u8>>, std::thread::JoinHandle<()>)>,
}

impl NoiseTransport {
    fn new(
        stream: TcpStream,
        state: Arc<StatelessTransportState>,
        write_timeout: Duration,
    ) -> Result<Self> {
        stream.set_nodelay(true)?;
        let out = stream.try_clone()?;
        out.set_write_timeout(Some(write_timeout))?;
        let (tx, rx) = channel::<Vec<u8>>();
        let sealer = state.clone();
        let writer = std::thread::spawn(move || {
            let mut out = out;
            let mut nonce = 0u64;
            // Messages are sealed straight into the outgoing buffer (no copy), which goes out in
            // writes of about 256 KiB and at the end of each frame.
            let mut pending: Vec<u8> = Vec::with_capacity(1 << 18);
            for frame in rx {
                let header = (frame.len() as u64).to_le_bytes();
                let ok = std::iter::once(&header[..])
                    .chain(frame.chunks(CHUNK))
                    .try_for_each(|part| {
                        let start = pending.len();
                        pending.resize(start + 2 + part.len() + 16, 0);
                        let n = sealer
                            .write_message(nonce, part, &mut pending[start + 2..])
                            .map_err(|_| std::io::Error::other("encryption failed"))?;
                        nonce += 1;
                        pending[start..start + 2].copy_from_slice(&(n as u16).to_be_bytes());
                        pending.truncate(start + 2 + n);
                        if pending.len() >= 1 << 18 {
                            out.write_all(&pending)?;
                            pending.clear();
                        }
                        Ok(())
                    })
                    .and_then(|_| out.write_all(&pending));
                pending.clear();
                if ok.is_err() {
                    let _ = out.shutdown(std::net::Shutdown::Both);
                    return; // the peer is gone: the next send or receive reports it
                }
            }
        });
        Ok(Self {
            stream,
            state,
            recv_nonce: 0,
            message: Vec::with_capacity(MAX_MESSAGE),
            plain: vec![0u8; MAX_MESSAGE],
            writer: Some((tx, writer)),
        })
    }

    /// The next transport message's plaintext, authenticated.
    fn open_next(&mut self, timeout: Duration) -> Result<&[u8]> {
        read_message(&mut self.stream, &mut self.message, timeout)?;
        let n = self
            .state
            .read_message(self.recv_nonce, &self.message, &mut self.plain)
            .map_err(|e| snow_error("a frame", e))?;
        self.recv_nonce += 1;
        Ok(&self.plain[..n])
    }
}

impl Drop for NoiseTransport {
    fn drop(&mut self) {
        if let Some((tx, writer)) = self.writer.take() {
            drop(tx);
            let _ = writer.join();
        }
    }
}

impl Transport for NoiseTransport {
    fn send(&mut self, msg: Vec<u8>) -> Result<()> {
        match &self.writer {
            Some((tx, _)) => tx.send(msg).map_err(|_| MpcError::PeerClosed),
            None => Err(MpcError::PeerClosed),
        }
    }

    fn recv(&mut self, timeout: Duration, limit: usize) -> Result<Vec<u8>> {
        self.stream.set_read_timeout(Some(timeout))?;
        let header = self.open_next(timeout)?;
        let len: [u8; 8] = header
            .try_into()
            .map_err(|_| MpcError::Malformed("a frame header that is not 8 bytes".into()))?;
        let len = u64::from_le_bytes(len);
        if len > limit as u64 {
            return Err(too_long(len, limit));
        }
        let len = len as usize;
        let mut frame = Vec::new();
        while frame.len() < len {
            let want = (len - frame.len()).min(CHUNK);
            read_message(&mut self.stream, &mut self.message, timeout)?;
            // Opened straight into the frame: the buffer grows only by authenticated bytes.
            let start = frame.len();
            frame.resize(start + self.message.len(), 0);
            let n = self
                .state
                .read_message(self.recv_nonce, &self.message, &mut frame[start..])
                .map_err(|e| snow_error("a frame", e))?;
            self.recv_nonce += 1;
            frame.truncate(start + n);
            if n != want {
                return Err(MpcError::Malformed(format!(
                    "a frame chunk of {n} bytes where {want} were due"
                )));
            }
        }
        Ok(frame)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mpc::net::TcpTransport;
    use std::net::TcpListener;

    /// A pair of transports over loopback: Noise (after a real handshake) or plaintext.
    fn pair(encrypted: bool) -> (Box<dyn Transport>, Box<dyn Transport>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let t = Duration::from_secs(30);
        let (a, b) = (Identity::generate().unwrap(), Identity::generate().unwrap());
        let responder = std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            if encrypted {
                let deadline = Instant::now() + t;
                Box::new(respond(stream, &b, b"test", deadline, t).unwrap().transport)
                    as Box<dyn Transport>
            } else {
                Box::new(TcpTransport::new(stream, t).unwrap())
            }
        });
        let stream = TcpStream::connect(addr).unwrap();
        let initiator: Box<dyn Transport> = if encrypted {
            let deadline = Instant::now() + t;
            Box::new(
                initiate(stream, &a, b"test", deadline, t, |_| Ok(()))
                    .unwrap()
                    .transport,
            )
        } else {
            Box::new(TcpTransport::new(stream, t).unwrap())
        };
        (initiator, responder.join().unwrap())
    }

    #[test]
    fn frames_of_every_size_arrive_whole_and_long_ones_are_refused() {
        let (mut a, mut b) = pair(true);
        let t = Duration::from_secs(10);
        for len in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 7] {
            let frame: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
            a.send(frame.clone()).unwrap();
            assert_eq!(b.recv(t, len).unwrap(), frame, "{len} bytes");
        }
        // A frame longer than expected is refused before its body is read.
        a.send(vec![7; 100]).unwrap();
        assert!(b
            .recv(t, 99)
            .unwrap_err()
            .to_string()
            .contains("at most 99"));
    }

    #[test]
    fn a_replayed_frame_fails_authentication() {
        // A relay between the two ends: after the handshake it forwards the initiator's first
        // frame, then sends the same bytes again.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let relay = TcpListener::bind("127.0.0.1:0").unwrap();
        let (addr, relay_addr) = (listener.local_addr().unwrap(), relay.local_addr().unwrap());
        let t = Duration::from_secs(10);
        let (a, b) = (Identity::generate().unwrap(), Identity::generate().unwrap());
        let responder = std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            respond(stream, &b, b"test", Instant::now() + t, t)
                .unwrap()
                .transport
        });
        std::thread::spawn(move || {
            let (mut front, _) = relay.accept().unwrap();
            let mut back = TcpStream::connect(addr).unwrap();
            let mut message = Vec::new();
            // Handshake: e from the initiator, e, ee, s, es back, s, se on.
            read_message(&mut front, &mut message, t).unwrap();
            write_message(&mut back, &message).unwrap();
            read_message(&mut back, &mut message, t).unwrap();
            write_message(&mut front, &message).unwrap();
            read_message(&mut front, &mut message, t).unwrap();
            write_message(&mut back, &message).unwrap();
            // The first frame: a header message and one chunk, forwarded twice.
            let mut frame = Vec::new();
            for _ in 0..2 {
                read_message(&mut front, &mut message, t).unwrap();
                frame.extend_from_slice(&(message.len() as u16).to_be_bytes());
                frame.extend_from_slice(&message);
            }
            back.write_all(&frame).unwrap();
            back.write_all(&frame).unwrap();
            std::thread::sleep(Duration::from_secs(2));
        });
        let stream = TcpStream::connect(relay_addr).unwrap();
        let mut initiator = initiate(stream, &a, b"test", Instant::now() + t, t, |_| Ok(()))
            .unwrap()
            .transport;
        let mut responder = responder.join().unwrap();
        initiator.send(b"pay 10".to_vec()).unwrap();
        assert_eq!(responder.recv(t, 100).unwrap(), b"pay 10");
        let replay = responder.recv(t, 100).unwrap_err().to_string();
        assert!(replay.contains("authentication failed"), "{replay}");
    }

    /// `cargo test --release --lib link::noise::tests::throughput -- --ignored --nocapture`:
    /// MB/s one way over loopback, plaintext and encrypted, in one run.
    #[test]
    #[ignore]
    fn throughput() {
        let frame = vec![0x5au8; 64 << 20];
        for encrypted in [false, true] {
            let (mut a, mut b) = pair(encrypted);
            let n = 8;
            let start = Instant::now();
            let sender = {
                let frame = frame.clone();
                std::thread::spawn(move || {
                    for _ in 0..n {
                        a.send(frame.clone()).unwrap();
                    }
                    a
                })
            };
            for _ in 0..n {
                b.recv(Duration::from_secs(60), frame.len()).unwrap();
            }
            drop(sender.join().unwrap());
            let secs = start.elapsed().as_secs_f64();
            let mb = (n * frame.len()) as f64 / 1e6;
            println!(
                "{}: {mb:.0} MB in {secs:.2} s, {:.0} MB/s",
                if encrypted { "noise" } else { "plaintext" },
                mb / secs
            );
        }
    }
}

#[cfg(test)]
mod cipher_speed {
    use super::*;

    /// `cargo test --release --lib link::noise::cipher_speed -- --ignored --nocapture`: the AEAD
    /// alone, sealing and opening 64 KiB messages on one core.
    #[test]
    #[ignore]
    fn seal_and_open() {
        let (a, b) = (Identity::generate().unwrap(), Identity::generate().unwrap());
        let mut i = builder(&a, b"x").unwrap().build_initiator().unwrap();
        let mut r = builder(&b, b"x").unwrap().build_responder().unwrap();
        let (mut m, mut p) = (vec![0u8; MAX_MESSAGE], vec![0u8; MAX_MESSAGE]);
        let n = i.write_message(&[], &mut m).unwrap();
        r.read_message(&m[..n], &mut p).unwrap();
        let n = r.write_message(&[], &mut m).unwrap();
        i.read_message(&m[..n], &mut p).unwrap();
        let n = i.write_message(&[], &mut m).unwrap();
        r.read_message(&m[..n], &mut p).unwrap();
        let (i, r) = (
            i.into_stateless_transport_mode().unwrap(),
            r.into_stateless_transport_mode().unwrap(),
        );
        let chunk = vec![7u8; CHUNK];
        let count = 8192u64; // 512 MiB
        let start = Instant::now();
        for nonce in 0..count {
            i.write_message(nonce, &chunk, &mut m).unwrap();
        }
        let seal = start.elapsed().as_secs_f64();
        let n = i.write_message(0, &chunk, &mut m).unwrap();
        let start = Instant::now();
        for _ in 0..count {
            r.read_message(0, &m[..n], &mut p).unwrap();
        }
        let open = start.elapsed().as_secs_f64();
        let mb = (count as usize * CHUNK) as f64 / 1e6;
        println!(
            "{PATTERN}: seal {:.0} MB/s, open {:.0} MB/s",
            mb / seal,
            mb / open
        );
    }
}
