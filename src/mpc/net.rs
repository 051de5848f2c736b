//! The network between the two parties: a transport that moves byte buffers, wrapped in a
//! [`Channel`] that counts rounds and bytes per protocol label and keeps a virtual clock.
//!
//! Virtual clock: each party's clock advances by its measured local compute (wall time between
//! network events, minus time spent waiting or fetching dealer randomness); a message sent at clock t
//! leaves when its direction of the link is free, occupies it for bytes / bandwidth, and arrives one
//! one-way latency later; the receiver's clock becomes at least the arrival time. The channel never
//! knows what a message means.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use super::error::MpcError;

type Result<T> = std::result::Result<T, MpcError>;

/// Latency and bandwidth of the simulated link.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinkModel {
    /// Round-trip time in seconds (one way is half).
    pub rtt: f64,
    /// Bytes per second in each direction.
    pub bandwidth: f64,
}

impl LinkModel {
    /// 3 Gbps, 0.8 ms RTT.
    pub fn lan() -> Self {
        Self {
            rtt: 0.8e-3,
            bandwidth: 3e9 / 8.0,
        }
    }

    /// The POST paper's LAN: 1 Gbps, 20 ms RTT.
    pub fn paper_lan() -> Self {
        Self {
            rtt: 20e-3,
            bandwidth: 1e9 / 8.0,
        }
    }

    /// The POST paper's WAN: 400 Mbps, 80 ms RTT.
    pub fn paper_wan() -> Self {
        Self {
            rtt: 80e-3,
            bandwidth: 400e6 / 8.0,
        }
    }

    /// 100 Mbps, 80 ms RTT.
    pub fn wan() -> Self {
        Self {
            rtt: 80e-3,
            bandwidth: 100e6 / 8.0,
        }
    }

    /// No latency, unlimited bandwidth: pure compute.
    pub fn ideal() -> Self {
        Self {
            rtt: 0.0,
            bandwidth: f64::INFINITY,
        }
    }

    /// `lan`, `wan`, `paper-lan`, `paper-wan` (the POST paper's two settings), `ideal`, or
    /// `bw=200mbps,rtt=40ms` (units: bps/kbps/mbps/gbps, us/ms/s).
    pub fn parse(spec: &str) -> Result<Self> {
        match spec.trim() {
            "lan" => return Ok(Self::lan()),
            "wan" => return Ok(Self::wan()),
            "paper-lan" => return Ok(Self::paper_lan()),
            "paper-wan" => return Ok(Self::paper_wan()),
            "ideal" => return Ok(Self::ideal()),
            _ => {}
        }
        let bad = |why: &str| {
            MpcError::BadConfig(format!(
                "--net {spec:?}: {why} (expected lan, wan, paper-lan, paper-wan or bw=200mbps,rtt=40ms)"
            ))
        };
        let (mut rtt, mut bandwidth) = (None, None);
        for part in spec.split(',') {
            let (key, value) = part.split_once('=').ok_or_else(|| bad("missing '='"))?;
            let value = value.trim().to_ascii_lowercase();
            match key.trim() {
                "bw" => {
                    bandwidth = Some(
                        parse_unit(
                            &value,
                            &[("gbps", 1e9), ("mbps", 1e6), ("kbps", 1e3), ("bps", 1.0)],
                        )
                        .ok_or_else(|| bad("bad bandwidth"))?
                            / 8.0,
                    )
                }
                "rtt" => {
                    rtt = Some(
                        parse_unit(&value, &[("us", 1e-6), ("ms", 1e-3), ("s", 1.0)])
                            .ok_or_else(|| bad("bad rtt"))?,
                    )
                }
                other => return Err(bad(&format!("unknown key {other:?}"))),
            }
        }
        let link = Self {
            rtt: rtt.ok_or_else(|| bad("missing rtt"))?,
            bandwidth: bandwidth.ok_or_else(|| bad("missing bw"))?,
        };
        if !(link.rtt >= 0.0 && link.bandwidth > 0.0) {
            return Err(bad("rtt must be >= 0 and bw > 0"));
        }
        Ok(link)
    }

    /// Seconds one message of `bytes` occupies one direction of the link.
    pub fn transfer_time(&self, bytes: usize) -> f64 {
        bytes as f64 / self.bandwidth
    }
}

fn parse_unit(value: &str, units: &[(&str, f64)]) -> Option<f64> {
    units.iter().find_map(|(unit, factor)| {
        value
            .strip_suffix(unit)
            .and_then(|n| n.trim().parse::<f64>().ok())
            .map(|n| n * factor)
    })
}

/// Moves whole messages between the two parties.
pub trait Transport: Send {
    fn send(&mut self, msg: Vec<u8>) -> Result<()>;
    /// The next message, which must arrive within `timeout` and hold at most `limit` bytes: the
    /// receiver always knows the message it expects at that point, and a longer one is refused
    /// before anything is allocated for it.
    fn recv(&mut self, timeout: Duration, limit: usize) -> Result<Vec<u8>>;
}

/// The error for a frame longer than the message expected at that point.
pub fn too_long(len: u64, limit: usize) -> MpcError {
    MpcError::Malformed(format!(
        "a frame of {len} bytes where at most {limit} were expected"
    ))
}

/// Two threads in one process, joined by a pair of queues.
pub struct SimTransport {
    tx: Sender<Vec<u8>>,
    rx: Receiver<Vec<u8>>,
}

impl Transport for SimTransport {
    fn send(&mut self, msg: Vec<u8>) -> Result<()> {
        self.tx.send(msg).map_err(|_| MpcError::PeerClosed)
    }

    fn recv(&mut self, timeout: Duration, limit: usize) -> Result<Vec<u8>> {
        let msg = self.rx.recv_timeout(timeout).map_err(|e| match e {
            RecvTimeoutError::Timeout => MpcError::Timeout(timeout),
            RecvTimeoutError::Disconnected => MpcError::PeerClosed,
        })?;
        if msg.len() > limit {
            return Err(too_long(msg.len() as u64, limit));
        }
        Ok(msg)
    }
}

/// A TCP stream carrying length-prefixed frames in the clear (loopback, or `--insecure-plaintext`).
/// Sends go through a writer thread, so that two parties sending large messages at once never both
/// block on full socket buffers (each keeps reading while its writer drains); dropping the
/// transport flushes what was queued.
pub struct TcpTransport {
    stream: TcpStream,
    writer: Option<(Sender<Vec<u8>>, std::thread::JoinHandle<()>)>,
}

impl TcpTransport {
    /// A transport whose writes fail after `write_timeout` without progress (a peer that stops
    /// reading), so that dropping the transport, which waits for the writer, cannot hang on it.
    pub fn new(stream: TcpStream, write_timeout: Duration) -> Result<Self> {
        stream.set_nodelay(true)?;
        let mut out = stream.try_clone()?;
        out.set_write_timeout(Some(write_timeout))?;
        let (tx, rx) = channel::<Vec<u8>>();
        let writer = std::thread::spawn(move || {
            for msg in rx {
                let len = (msg.len() as u64).to_le_bytes();
                if out
                    .write_all(&len)
                    .and_then(|_| out.write_all(&msg))
                    .is_err()
                {
                    let _ = out.shutdown(std::net::Shutdown::Both);
                    return; // the peer is gone: the next send or receive reports it
                }
            }
            let _ = out.flush();
        });
        Ok(Self {
            stream,
            writer: Some((tx, writer)),
        })
    }
}

impl Drop for TcpTransport {
    fn drop(&mut self) {
        if let Some((tx, writer)) = self.writer.take() {
            drop(tx);
            let _ = writer.join();
        }
    }
}

/// Reads exactly `len` bytes, growing the buffer as they arrive: a length header alone never
/// allocates what it claims.
pub fn read_growing(stream: &mut impl Read, len: usize) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    let mut left = len;
    while left > 0 {
        let chunk = left.min(1 << 20);
        let start = buf.len();
        buf.resize(start + chunk, 0);
        stream.read_exact(&mut buf[start..])?;
        left -= chunk;
    }
    Ok(buf)
}

/// A read error as the engine reports it: a timeout, or the peer gone.
pub fn read_error(e: std::io::Error, timeout: Duration) -> MpcError {
    match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => MpcError::Timeout(timeout),
        _ => MpcError::PeerClosed,
    }
}

impl Transport for TcpTransport {
    fn send(&mut self, msg: Vec<u8>) -> Result<()> {
        match &self.writer {
            Some((tx, _)) => tx.send(msg).map_err(|_| MpcError::PeerClosed),
            None => Err(MpcError::PeerClosed),
        }
    }

    fn recv(&mut self, timeout: Duration, limit: usize) -> Result<Vec<u8>> {
        self.stream.set_read_timeout(Some(timeout))?;
        let mut len = [0u8; 8];
        self.stream
            .read_exact(&mut len)
            .map_err(|e| read_error(e, timeout))?;
        let len = u64::from_le_bytes(len);
        if len > limit as u64 {
            return Err(too_long(len, limit));
        }
        read_growing(&mut self.stream, len as usize).map_err(|e| read_error(e, timeout))
    }
}

/// A transport that delivers each message when a link of the given latency and bandwidth would,
/// in real time (`--shape`): the sender stamps the wall-clock instant the message arrives (after
/// the messages before it have drained at the link's bandwidth, plus half the RTT) and the receiver
/// holds it until then, exactly as the virtual clock models the link. Both ends must shape, on one
/// host or on hosts with synchronised clocks; `tc netem` is the independent check.
pub struct ShapedTransport<T: Transport> {
    inner: T,
    link: LinkModel,
    /// Wall-clock seconds at which this direction of the link is free again.
    free_at: f64,
}

impl<T: Transport> ShapedTransport<T> {
    pub fn new(inner: T, link: LinkModel) -> Self {
        Self {
            inner,
            link,
            free_at: 0.0,
        }
    }
}

fn wall_seconds() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

impl<T: Transport> Transport for ShapedTransport<T> {
    fn send(&mut self, msg: Vec<u8>) -> Result<()> {
        let depart = wall_seconds().max(self.free_at);
        self.free_at = depart + self.link.transfer_time(msg.len());
        let arrival = self.free_at + self.link.rtt / 2.0;
        let mut stamped = Vec::with_capacity(msg.len() + 8);
        stamped.extend_from_slice(&arrival.to_le_bytes());
        stamped.extend_from_slice(&msg);
        self.inner.send(stamped)
    }

    fn recv(&mut self, timeout: Duration, limit: usize) -> Result<Vec<u8>> {
        let msg = self.inner.recv(timeout, limit.saturating_add(8))?;
        if msg.len() < 8 {
            return Err(MpcError::Malformed(
                "a shaped message without its arrival time (is the peer shaping too?)".into(),
            ));
        }
        let arrival = f64::from_le_bytes(msg[..8].try_into().expect("8 bytes"));
        let wait = arrival - wall_seconds();
        if wait > 0.0 {
            if wait > timeout.as_secs_f64() {
                return Err(MpcError::Malformed(format!(
                    "a message stamped to arrive in {wait:.0} s (is the peer shaping the same link?)"
                )));
            }
            std::thread::sleep(Duration::from_secs_f64(wait));
        }
        Ok(msg[8..].to_vec())
    }
}

/// Counts of one protocol label (inclusive of the labels nested inside it).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Counters {
    /// Message flights this party waited for.
    pub rounds: u64,
    pub bytes_sent: u64,
    pub bytes_recv: u64,
    /// Virtual seconds spent inside the label.
    pub sim_time: f64,
    /// Measured local compute seconds inside the label.
    pub compute_time: f64,
    /// Bytes of dealer corrections received (offline).
    pub dealer_bytes: u64,
    /// Seconds spent getting dealer material: expanding this party's seed and, for the server,
    /// waiting for the dealer to derive its corrections (offline, left out of the clock).
    pub dealer_time: f64,
}

impl Counters {
    /// The counts accumulated since `before` was taken.
    pub fn since(&self, before: &Counters) -> Counters {
        Counters {
            rounds: self.rounds - before.rounds,
            bytes_sent: self.bytes_sent - before.bytes_sent,
            bytes_recv: self.bytes_recv - before.bytes_recv,
            sim_time: self.sim_time - before.sim_time,
            compute_time: self.compute_time - before.compute_time,
            dealer_bytes: self.dealer_bytes - before.dealer_bytes,
            dealer_time: self.dealer_time - before.dealer_time,
        }
    }
}

/// One party's end of the link: transport + link model + virtual clock + counters.
pub struct Channel {
    transport: Box<dyn Transport>,
    pub link: LinkModel,
    pub timeout: Duration,
    /// Virtual time of this party, seconds.
    clock: f64,
    /// When this direction of the link is free again (virtual seconds).
    link_free_at: f64,
    /// Start of the current stretch of local compute.
    mark: Instant,
    /// Labels open now, outermost first, with the clock and compute total when each opened.
    labels: Vec<(String, f64, f64)>,
    compute_total: f64,
    counters: BTreeMap<String, Counters>,
    total: Counters,
    /// Every payload received, when recording (for the leakage tests).
    transcript: Option<Vec<u8>>,
    /// Public announcements received while recording (shapes, cache lengths), kept apart.
    public_log: Vec<Vec<u64>>,
}

impl Channel {
    pub fn new(transport: Box<dyn Transport>, link: LinkModel) -> Self {
        Self {
            transport,
            link,
            timeout: Duration::from_secs(60),
            clock: 0.0,
            link_free_at: 0.0,
            mark: Instant::now(),
            labels: Vec::new(),
            compute_total: 0.0,
            counters: BTreeMap::new(),
            total: Counters::default(),
            transcript: None,
            public_log: Vec::new(),
        }
    }

    /// Charges the compute since the last mark to the clock.
    fn tick(&mut self) {
        let now = Instant::now();
        let spent = now.duration_since(self.mark).as_secs_f64();
        self.clock += spent;
        self.compute_total += spent;
        self.mark = now;
    }

    /// Restarts the compute stretch without charging the time since the mark (waiting, dealer).
    pub fn skip_time(&mut self) {
        self.mark = Instant::now();
    }

    /// The virtual clock now, seconds.
    pub fn clock(&mut self) -> f64 {
        self.tick();
        self.clock
    }

    fn record(&mut self, f: impl Fn(&mut Counters)) {
        f(&mut self.total);
        let mut path = String::new();
        for (label, _, _) in &self.labels {
            if !path.is_empty() {
                path.push('/');
            }
            path.push_str(label);
            f(self.counters.entry(path.clone()).or_default());
        }
    }

    pub fn record_dealer_bytes(&mut self, bytes: usize) {
        self.record(|c| c.dealer_bytes += bytes as u64);
    }

    /// Counts `seconds` spent getting dealer material (not on the clock).
    pub fn record_dealer_time(&mut self, seconds: f64) {
        self.record(|c| c.dealer_time += seconds);
    }

    pub fn push_label(&mut self, label: &str) {
        self.tick();
        self.labels
            .push((label.to_string(), self.clock, self.compute_total));
    }

    pub fn pop_label(&mut self) {
        self.tick();
        let path: Vec<String> = self.labels.iter().map(|(l, _, _)| l.clone()).collect();
        if let Some((_, start, compute_start)) = self.labels.pop() {
            let (sim, compute) = (self.clock - start, self.compute_total - compute_start);
            let key = path.join("/");
            let c = self.counters.entry(key).or_default();
            c.sim_time += sim;
            c.compute_time += compute;
        }
    }

    /// Sends one message; it arrives at the peer after queueing, transfer and one-way latency.
    pub fn send_bytes(&mut self, payload: &[u8]) -> Result<()> {
        self.tick();
        let depart = self.clock.max(self.link_free_at);
        let transfer = self.link.transfer_time(payload.len());
        self.link_free_at = depart + transfer;
        let arrival = depart + transfer + self.link.rtt / 2.0;
        let mut msg = Vec::with_capacity(payload.len() + 8);
        msg.extend_from_slice(&arrival.to_le_bytes());
        msg.extend_from_slice(payload);
        self.transport.send(msg).map_err(|e| self.in_phase(e))?;
        let n = payload.len() as u64;
        self.record(|c| c.bytes_sent += n);
        Ok(())
    }

    /// `error` with the protocol phase it happened in, when a label is open.
    fn in_phase(&self, error: MpcError) -> MpcError {
        if self.labels.is_empty() {
            return error;
        }
        let phase: Vec<&str> = self.labels.iter().map(|(l, _, _)| l.as_str()).collect();
        MpcError::During {
            phase: phase.join("/"),
            source: Box::new(error),
        }
    }

    /// Waits for one message of at most `limit` bytes; the clock moves to its arrival time if that
    /// is later.
    pub fn recv_bytes(&mut self, limit: usize) -> Result<Vec<u8>> {
        self.tick();
        let msg = self
            .transport
            .recv(self.timeout, limit.saturating_add(8))
            .map_err(|e| self.in_phase(e))?;
        self.skip_time();
        if msg.len() < 8 {
            return Err(MpcError::Malformed(format!(
                "message of {} bytes has no header",
                msg.len()
            )));
        }
        let arrival = f64::from_le_bytes(msg[..8].try_into().expect("8 bytes"));
        self.clock = self.clock.max(arrival);
        let n = (msg.len() - 8) as u64;
        if let Some(t) = self.transcript.as_mut() {
            t.extend_from_slice(&msg[8..]);
        }
        self.record(|c| {
            c.bytes_recv += n;
            c.rounds += 1;
        });
        Ok(msg[8..].to_vec())
    }

    /// Sends values that are public by design (not shares): a shape, a cache length.
    pub fn send_public(&mut self, values: &[u64]) -> Result<()> {
        self.send_u64s(values)
    }

    /// Receives public values; while recording they go to the public log, not the transcript.
    pub fn recv_public(&mut self, expected: usize) -> Result<Vec<u64>> {
        let recording = self.transcript.take();
        let values = self.recv_u64s(expected);
        self.transcript = recording;
        let values = values?;
        if self.transcript.is_some() {
            self.public_log.push(values.clone());
        }
        Ok(values)
    }

    /// The public announcements received since recording started.
    pub fn take_public_log(&mut self) -> Vec<Vec<u64>> {
        std::mem::take(&mut self.public_log)
    }

    /// Starts keeping every received payload.
    pub fn record_transcript(&mut self) {
        self.transcript = Some(Vec::new());
    }

    /// The payloads received since recording started.
    pub fn take_transcript(&mut self) -> Vec<u8> {
        self.transcript.take().unwrap_or_default()
    }

    pub fn send_u64s(&mut self, values: &[u64]) -> Result<()> {
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.send_bytes(&bytes)
    }

    pub fn recv_u64s(&mut self, expected: usize) -> Result<Vec<u64>> {
        let bytes = self.recv_bytes(expected.saturating_mul(8))?;
        if bytes.len() != expected * 8 {
            return Err(MpcError::Malformed(format!(
                "expected {} values, got {} bytes",
                expected,
                bytes.len()
            )));
        }
        Ok(bytes
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect())
    }

    /// Both parties send, then both receive: one round.
    pub fn exchange_u64s(&mut self, values: &[u64]) -> Result<Vec<u64>> {
        self.send_u64s(values)?;
        self.recv_u64s(values.len())
    }

    /// Totals since the channel was made.
    pub fn total(&mut self) -> Counters {
        self.tick();
        let mut t = self.total;
        t.sim_time = self.clock;
        t.compute_time = self.compute_total;
        t
    }

    /// Inclusive counters per label path (`softmax`, `softmax/max`, ...).
    pub fn counters(&self) -> &BTreeMap<String, Counters> {
        &self.counters
    }
}

/// Two channels joined in memory, for two threads of one process.
pub fn sim_pair(link: LinkModel) -> (Channel, Channel) {
    let (tx0, rx1) = channel();
    let (tx1, rx0) = channel();
    (
        Channel::new(Box::new(SimTransport { tx: tx0, rx: rx0 }), link),
        Channel::new(Box::new(SimTransport { tx: tx1, rx: rx1 }), link),
    )
}

/// Two channels joined by a real TCP connection on loopback.
pub fn tcp_pair(link: LinkModel, shape: Option<LinkModel>) -> Result<(Channel, Channel)> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let client = std::thread::spawn(move || TcpStream::connect(addr));
    let (server, _) = listener.accept()?;
    let client = client.join().map_err(|_| MpcError::PeerClosed)??;
    let timeout = Duration::from_secs(120);
    Ok((
        Channel::new(
            shaped(Box::new(TcpTransport::new(client, timeout)?), shape),
            link,
        ),
        Channel::new(
            shaped(Box::new(TcpTransport::new(server, timeout)?), shape),
            link,
        ),
    ))
}

/// A transport, shaped in real time if `shape` is set.
pub fn shaped(transport: Box<dyn Transport>, shape: Option<LinkModel>) -> Box<dyn Transport> {
    match shape {
        Some(link) => Box::new(ShapedTransport::new(transport, link)),
        None => transport,
    }
}

impl Transport for Box<dyn Transport> {
    fn send(&mut self, msg: Vec<u8>) -> Result<()> {
        (**self).send(msg)
    }

    fn recv(&mut self, timeout: Duration, limit: usize) -> Result<Vec<u8>> {
        (**self).recv(timeout, limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_papers_profiles_are_named_and_equal_their_custom_spelling() {
        let lan = LinkModel::parse("paper-lan").unwrap();
        let wan = LinkModel::parse("paper-wan").unwrap();
        assert_eq!(lan, LinkModel::parse("bw=1gbps,rtt=20ms").unwrap());
        assert_eq!(wan, LinkModel::parse("bw=400mbps,rtt=80ms").unwrap());
        assert_eq!((lan.rtt, lan.bandwidth), (0.02, 125e6));
        assert_eq!((wan.rtt, wan.bandwidth), (0.08, 50e6));
        let err = LinkModel::parse("paper").unwrap_err().to_string();
        assert!(err.contains("paper-wan"), "{err}");
    }
}
