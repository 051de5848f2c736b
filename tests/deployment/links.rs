//! Attacks on the links between the three processes (`post verify --connect`, `post serve`,
//! `post dealer`), all on 127.0.0.1, with keys made by `post keygen`:
//!
//! - with keys, the three processes still generate the plaintext oracle's tokens;
//! - a relay that flips one bit of one frame (client-server, or server-dealer) ends the session
//!   with an authentication error and no token;
//! - a key the server or the dealer does not trust is refused, and the error says so;
//! - a capture of all three links: over plaintext the server's token table is rebuilt from the
//!   dealer seeds and the masked openings of the weight sharing (the control: the attack works);
//!   over Noise the same reconstruction, fed the bytes at the same places, recovers nothing.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha12Rng;

use crate::common::{post, post_ok, temp_dir};

// ---------------------------------------------------------------------------------------------
// Processes and keys

/// A daemon (`post serve` / `post dealer`) killed when dropped; its stderr goes to a file.
struct Daemon {
    child: Child,
    log: PathBuf,
    addr: String,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Daemon {
    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Its stderr once it contains `needle` (or after `secs`, whatever it holds then).
    fn stderr_with(&self, needle: &str, secs: u64) -> String {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let text = self.stderr();
            if text.contains(needle) || Instant::now() > deadline {
                return text;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Starts `post ARGS` and reads the address from its first stdout line (`... listening on ADDR`).
fn start(dir: &Path, name: &str, args: &[String]) -> Daemon {
    let log = dir.join(format!("{name}.stderr"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_post"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    // Drain the rest, so that the daemon never writes into a closed pipe.
    std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
    let daemon = Daemon {
        child,
        log,
        addr: line
            .trim()
            .rsplit(' ')
            .next()
            .unwrap_or_default()
            .to_string(),
    };
    assert!(
        line.contains("listening on"),
        "{name}: {line:?}; stderr: {}",
        daemon.stderr()
    );
    daemon
}

/// Key pairs made by `post keygen` in a folder of their own.
struct Keys {
    dir: PathBuf,
}

impl Keys {
    fn new(dir: &Path, names: &[&str]) -> Self {
        for name in names {
            let out = post_ok(&["keygen", "--out", dir.join(name).to_str().unwrap()]);
            assert!(out.contains("fingerprint"), "{out}");
        }
        Keys {
            dir: dir.to_path_buf(),
        }
    }

    fn key(&self, name: &str) -> String {
        self.dir.join(format!("{name}.key")).display().to_string()
    }

    fn public(&self, name: &str) -> String {
        self.dir.join(format!("{name}.pub")).display().to_string()
    }

    /// The fingerprint a log line names a key by: the first 8 bytes in hex.
    fn fingerprint(&self, name: &str) -> String {
        let text = std::fs::read_to_string(self.public(name)).unwrap();
        let hex = text.split_whitespace().nth(1).unwrap();
        hex[..16].to_string()
    }
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

/// `post dealer`; with keys, it holds `dealer.key` and trusts the named clients and servers.
fn start_dealer(dir: &Path, keys: Option<&Keys>, clients: &[&str], servers: &[&str]) -> Daemon {
    let mut args = strings(&["dealer", "--listen", "127.0.0.1:0", "--timeout", "30"]);
    if let Some(k) = keys {
        args.extend(["--key".into(), k.key("dealer")]);
        for c in clients {
            args.extend(["--trust".into(), k.public(c)]);
        }
        for s in servers {
            args.extend(["--trust-server".into(), k.public(s)]);
        }
    }
    start(dir, "dealer", &args)
}

/// `post serve` of tiny-private with the dealer at `dealer`; with keys, it holds `server.key`,
/// pins `dealer.pub` and serves the clients named in `trust` (none: any client with a key).
fn start_server(dir: &Path, dealer: &str, keys: Option<&Keys>, trust: &[&str]) -> Daemon {
    let mut args = strings(&[
        "serve",
        "--model",
        "tiny-private",
        "--listen",
        "127.0.0.1:0",
        "--dealer",
        dealer,
        "--timeout",
        "20",
    ]);
    if let Some(k) = keys {
        args.extend([
            "--key".into(),
            k.key("server"),
            "--dealer-key".into(),
            k.public("dealer"),
        ]);
        for c in trust {
            args.extend(["--trust".into(), k.public(c)]);
        }
    }
    start(dir, "server", &args)
}

/// The decoding of the acceptance test (as tests/processes.rs runs it).
const DECODE: [&str; 8] = [
    "--prompt-ids",
    "7,42,3,99",
    "--max-new-tokens",
    "10",
    "--draft-len",
    "3",
    "--ignore-eos",
    "--json",
];

/// A shorter one, for the sessions that only need to run.
const SHORT: [&str; 8] = [
    "--prompt-ids",
    "7,42,3,99",
    "--max-new-tokens",
    "3",
    "--draft-len",
    "3",
    "--ignore-eos",
    "--json",
];

/// The client's key arguments: its own key `name`, the server key it pins and the dealer's.
fn client_keys(k: &Keys, name: &str, server: &str) -> Vec<String> {
    vec![
        "--key".into(),
        k.key(name),
        "--trust".into(),
        k.public(server),
        "--dealer-key".into(),
        k.public("dealer"),
    ]
}

/// `post verify --connect` with tiny-public.
fn verify(server: &str, dealer: &str, method: &str, decode: &[&str], keys: &[String]) -> Output {
    let mut args = strings(&[
        "verify",
        "--connect",
        server,
        "--dealer",
        dealer,
        "--public",
        "tiny-public",
        "--method",
        method,
    ]);
    args.extend(strings(decode));
    args.extend(keys.iter().cloned());
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    post(&refs)
}

/// The (method, tokens) of each result of a `--json` run that succeeded.
fn outputs(out: &Output) -> Vec<(String, Vec<u64>)> {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let ids = r["output_ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap())
                .collect();
            (r["method"].as_str().unwrap_or("draft").to_string(), ids)
        })
        .collect()
}

/// The plaintext oracle's tokens for `decode`.
fn oracle(decode: &[&str]) -> Vec<u64> {
    outputs(&post(&[&["draft", "--pair", "tiny"][..], decode].concat()))[0]
        .1
        .clone()
}

/// A run that failed with one clear error line (returned) and printed no token.
fn failed(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "the client succeeded: {stdout}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        stdout.trim().is_empty() && !stdout.contains("output_ids"),
        "a failed session printed {stdout}"
    );
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("Error: "))
        .collect();
    assert_eq!(errors.len(), 1, "one error line: {stderr}");
    assert_eq!(
        stderr.lines().last(),
        Some(errors[0]),
        "the error comes last: {stderr}"
    );
    errors[0].to_string()
}

// ---------------------------------------------------------------------------------------------
// The relay: a man in the middle on 127.0.0.1 that records (and may alter) every byte

/// What the relay does to the bytes from the listener to the connecting side.
#[derive(Clone, Copy)]
enum Tamper {
    Nothing,
    /// Flips one bit in the middle of the body of the `message`-th Noise message (counted from 0
    /// after the 9-byte preamble: 0 is the handshake's second message).
    FlipDown {
        message: usize,
    },
}

/// Both directions of one relayed connection, as they went by.
#[derive(Default)]
struct Recording {
    /// From the connecting side to the listener.
    up: Mutex<Vec<u8>>,
    /// From the listener to the connecting side.
    down: Mutex<Vec<u8>>,
}

struct Relay {
    addr: String,
    conns: Arc<Mutex<Vec<Arc<Recording>>>>,
    flipped: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Where the bytes of a Noise stream fall: the preamble, then messages of a 2-byte big-endian
/// length and a body.
#[derive(Default)]
struct NoiseFraming {
    preamble: usize,
    header: Vec<u8>,
    len: usize,
    left: usize,
    index: usize,
}

impl NoiseFraming {
    /// The next byte's (message index, offset in the body, body length), if it is in a body.
    fn feed(&mut self, byte: u8) -> Option<(usize, usize, usize)> {
        if self.preamble < 9 {
            self.preamble += 1;
            return None;
        }
        if self.left == 0 {
            self.header.push(byte);
            if self.header.len() == 2 {
                self.len = u16::from_be_bytes([self.header[0], self.header[1]]) as usize;
                self.left = self.len;
                self.header.clear();
                if self.len == 0 {
                    self.index += 1;
                }
            }
            return None;
        }
        let at = (self.index, self.len - self.left, self.len);
        self.left -= 1;
        if self.left == 0 {
            self.index += 1;
        }
        Some(at)
    }
}

/// Copies `from` to `to`, recording what passes; with `flip`, alters one bit on the way.
fn pump(
    mut from: TcpStream,
    mut to: TcpStream,
    log: Arc<Recording>,
    down: bool,
    flip: Option<(usize, Arc<AtomicBool>)>,
) {
    std::thread::spawn(move || {
        let _ = from.set_read_timeout(Some(Duration::from_secs(60)));
        let _ = to.set_write_timeout(Some(Duration::from_secs(60)));
        let mut framing = NoiseFraming::default();
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            {
                let mut side = if down { log.down.lock() } else { log.up.lock() }.unwrap();
                side.extend_from_slice(&buf[..n]);
            }
            if let Some((message, flipped)) = &flip {
                for byte in buf[..n].iter_mut() {
                    if let Some((index, offset, len)) = framing.feed(*byte) {
                        if index == *message && offset == len / 2 {
                            *byte ^= 0x08;
                            flipped.store(true, Ordering::SeqCst);
                        }
                    }
                }
            }
            if to.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Write);
        let _ = from.shutdown(Shutdown::Read);
    });
}

impl Relay {
    /// Listens on 127.0.0.1 and forwards each connection to `target` (for two minutes at most).
    fn start(target: &str, tamper: Tamper) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let relay = Relay {
            addr: listener.local_addr().unwrap().to_string(),
            conns: Arc::default(),
            flipped: Arc::default(),
            stop: Arc::default(),
        };
        let (conns, flipped, stop) = (
            relay.conns.clone(),
            relay.flipped.clone(),
            relay.stop.clone(),
        );
        let target = target.to_string();
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(120);
            while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
                let inbound = match listener.accept() {
                    Ok((s, _)) => s,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(5));
                        continue;
                    }
                    Err(_) => break,
                };
                let _ = inbound.set_nonblocking(false);
                let Ok(outbound) = TcpStream::connect(&target) else {
                    continue;
                };
                let _ = inbound.set_nodelay(true);
                let _ = outbound.set_nodelay(true);
                let log = Arc::new(Recording::default());
                conns.lock().unwrap().push(log.clone());
                let flip = match tamper {
                    Tamper::Nothing => None,
                    Tamper::FlipDown { message } => Some((message, flipped.clone())),
                };
                pump(
                    inbound.try_clone().unwrap(),
                    outbound.try_clone().unwrap(),
                    log.clone(),
                    false,
                    None,
                );
                pump(outbound, inbound, log, true, flip);
            }
        });
        relay
    }

    /// The relayed connection that carried the most bytes from the listener (the session's).
    fn busiest(&self) -> Arc<Recording> {
        self.conns
            .lock()
            .unwrap()
            .iter()
            .max_by_key(|c| c.down.lock().unwrap().len())
            .expect("a connection went through the relay")
            .clone()
    }
}

// ---------------------------------------------------------------------------------------------
// 1. The deployment with keys

#[test]
fn three_processes_with_keys_generate_the_plaintext_oracles_tokens() {
    let started = Instant::now();
    let dir = temp_dir("links-keys");
    let k = Keys::new(&dir, &["dealer", "server", "client"]);
    let dealer = start_dealer(&dir, Some(&k), &["client"], &["server"]);
    let server = start_server(&dir, &dealer.addr, Some(&k), &["client"]);
    let out = verify(
        &server.addr,
        &dealer.addr,
        "both",
        &DECODE,
        &client_keys(&k, "client", "server"),
    );
    let got = outputs(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("plaintext"),
        "an encrypted session warned: {stderr}"
    );
    let want = oracle(&DECODE);
    assert_eq!(want.len(), 10, "the oracle's 10 new tokens");
    assert_eq!(got.len(), 2, "both methods ran");
    for (method, ids) in got {
        assert_eq!(ids, want, "{method} over encrypted links");
    }
    assert!(
        !server.stderr().contains("plaintext") && !dealer.stderr().contains("plaintext"),
        "server: {}\ndealer: {}",
        server.stderr(),
        dealer.stderr()
    );
    println!(
        "three processes with keys: {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

// ---------------------------------------------------------------------------------------------
// 2. A relay that flips one bit

#[test]
fn a_bit_flipped_between_client_and_server_fails_authentication() {
    let started = Instant::now();
    let dir = temp_dir("links-flip-party");
    let k = Keys::new(&dir, &["dealer", "server", "client"]);
    let dealer = start_dealer(&dir, Some(&k), &["client"], &["server"]);
    let server = start_server(&dir, &dealer.addr, Some(&k), &["client"]);
    // Server to client: 0 the handshake's second message, 1-2 the verdict, 3-4 the hello, 5-6
    // the first engine frame (the masked opening of the first weight): its first chunk.
    let relay = Relay::start(&server.addr, Tamper::FlipDown { message: 6 });
    let out = verify(
        &relay.addr,
        &dealer.addr,
        "both",
        &DECODE,
        &client_keys(&k, "client", "server"),
    );
    let err = failed(&out);
    assert!(
        relay.flipped.load(Ordering::SeqCst),
        "the relay flipped nothing"
    );
    assert!(err.contains("authentication failed"), "{err}");
    // The server's session ends too (the client hung up), and the server goes on.
    let log = server.stderr_with("failed", 10);
    assert!(log.contains("failed"), "{log}");
    assert!(!log.contains("panicked"), "{log}");
    println!(
        "client-server flip: {err:?} in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn a_bit_flipped_between_server_and_dealer_fails_authentication() {
    let started = Instant::now();
    let dir = temp_dir("links-flip-dealer");
    let k = Keys::new(&dir, &["dealer", "server", "client"]);
    let dealer = start_dealer(&dir, Some(&k), &["client"], &["server"]);
    // Dealer to server: 0 the handshake, 1-2 the verdict, 3-4 the welcome, 5-6 the seed, then a
    // header and a body per correction frame (one per request of the server); message 40 is
    // the body of the 17th frame of corrections.
    let relay = Relay::start(&dealer.addr, Tamper::FlipDown { message: 40 });
    let server = start_server(&dir, &relay.addr, Some(&k), &["client"]);
    let out = verify(
        &server.addr,
        &dealer.addr,
        "both",
        &DECODE,
        &client_keys(&k, "client", "server"),
    );
    let err = failed(&out);
    assert!(
        relay.flipped.load(Ordering::SeqCst),
        "the relay flipped nothing"
    );
    let log = server.stderr_with("authentication failed", 10);
    assert!(
        log.contains("failed") && log.contains("authentication failed"),
        "server: {log}\nclient: {err}"
    );
    assert!(!log.contains("panicked"), "{log}");
    println!(
        "server-dealer flip: server {:?}, client {err:?} in {:.1} s",
        log.lines()
            .find(|l| l.contains("authentication"))
            .unwrap_or_default(),
        started.elapsed().as_secs_f64()
    );
}

// ---------------------------------------------------------------------------------------------
// 3. Keys that are not trusted

#[test]
fn keys_the_server_or_the_dealer_do_not_trust_are_refused() {
    let started = Instant::now();
    let dir = temp_dir("links-untrusted");
    let k = Keys::new(&dir, &["dealer", "server", "a", "b"]);

    // The server serves a only (and so does the dealer).
    {
        let dealer = start_dealer(&dir, Some(&k), &["a"], &["server"]);
        let server = start_server(&dir, &dealer.addr, Some(&k), &["a"]);
        let out = verify(
            &server.addr,
            &dealer.addr,
            "post",
            &SHORT,
            &client_keys(&k, "b", "server"),
        );
        let err = failed(&out);
        assert!(
            err.contains("untrusted") && err.contains("does not trust this key"),
            "{err}"
        );
        assert!(
            err.contains(&k.fingerprint("b")),
            "the error names the key: {err}"
        );
        assert!(
            err.contains("the server at"),
            "the error names who refused: {err}"
        );
        let log = server.stderr_with("not among the trusted keys", 10);
        assert!(
            log.contains(&k.fingerprint("b")) && log.contains("not among the trusted keys"),
            "{log}"
        );
        // The same server serves a: the refusal was about the key.
        let fine = verify(
            &server.addr,
            &dealer.addr,
            "post",
            &SHORT,
            &client_keys(&k, "a", "server"),
        );
        assert_eq!(outputs(&fine)[0].1, oracle(&SHORT));
    }

    // A server open to any client key, a dealer that trusts a only: b gets past the server and
    // is refused by the dealer.
    {
        let dealer = start_dealer(&dir, Some(&k), &["a"], &["server"]);
        let server = start_server(&dir, &dealer.addr, Some(&k), &[]);
        let out = verify(
            &server.addr,
            &dealer.addr,
            "post",
            &SHORT,
            &client_keys(&k, "b", "server"),
        );
        let err = failed(&out);
        assert!(
            err.contains("the dealer at") && err.contains("does not trust this key"),
            "{err}"
        );
        assert!(err.contains(&k.fingerprint("b")), "{err}");
        let log = dealer.stderr_with("not among the trusted keys", 10);
        assert!(log.contains(&k.fingerprint("b")), "{log}");
    }

    // A client that pins another key than the server's: it refuses the server.
    {
        let dealer = start_dealer(&dir, Some(&k), &["a"], &["server"]);
        let server = start_server(&dir, &dealer.addr, Some(&k), &["a"]);
        let out = verify(
            &server.addr,
            &dealer.addr,
            "post",
            &SHORT,
            &client_keys(&k, "a", "b"),
        );
        let err = failed(&out);
        assert!(
            err.contains("untrusted") && err.contains("not among the trusted keys"),
            "{err}"
        );
        assert!(
            err.contains(&k.fingerprint("server")),
            "the error names the key: {err}"
        );
    }
    println!("untrusted keys: {:.1} s", started.elapsed().as_secs_f64());
}

// ---------------------------------------------------------------------------------------------
// 4. A recorded capture of the three links

/// What an eavesdropper on the three links recorded.
struct Capture {
    /// Client to server, and server to client.
    client_up: Vec<u8>,
    server_down: Vec<u8>,
    /// Dealer to client, and dealer to server.
    client_dealer_down: Vec<u8>,
    server_dealer_down: Vec<u8>,
}

/// Runs one short session with every link through a recording relay; returns the capture and
/// the tokens the client printed.
fn record_session(dir: &Path, keys: Option<&Keys>) -> (Capture, Vec<u64>) {
    let dealer = start_dealer(dir, keys, &["client"], &["server"]);
    let server_to_dealer = Relay::start(&dealer.addr, Tamper::Nothing);
    let client_to_dealer = Relay::start(&dealer.addr, Tamper::Nothing);
    let server = start_server(dir, &server_to_dealer.addr, keys, &["client"]);
    let client_to_server = Relay::start(&server.addr, Tamper::Nothing);
    let key_args = keys.map_or_else(Vec::new, |k| client_keys(k, "client", "server"));
    let out = verify(
        &client_to_server.addr,
        &client_to_dealer.addr,
        "post",
        &SHORT,
        &key_args,
    );
    let tokens = outputs(&out)[0].1.clone();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        keys.is_none(),
        stderr.contains("plaintext"),
        "the client warns over plaintext only: {stderr}"
    );
    let (party, to_client, to_server) = (
        client_to_server.busiest(),
        client_to_dealer.busiest(),
        server_to_dealer.busiest(),
    );
    let capture = Capture {
        client_up: party.up.lock().unwrap().clone(),
        server_down: party.down.lock().unwrap().clone(),
        client_dealer_down: to_client.down.lock().unwrap().clone(),
        server_dealer_down: to_server.down.lock().unwrap().clone(),
    };
    (capture, tokens)
}

/// The frames of a recorded plaintext link (9-byte preamble, then 8-byte little-endian length
/// and payload): each payload's offset in the stream and its length.
fn plaintext_frames(stream: &[u8]) -> Result<Vec<(usize, usize)>, String> {
    if stream.len() < 9 || &stream[..8] != b"POST2pln" {
        return Err(format!(
            "not a plaintext link (it starts {:?})",
            String::from_utf8_lossy(&stream[..stream.len().min(8)])
        ));
    }
    let (mut at, mut frames) = (9, Vec::new());
    while at + 8 <= stream.len() {
        let len = u64::from_le_bytes(stream[at..at + 8].try_into().unwrap());
        if len > (stream.len() - at - 8) as u64 {
            break; // cut off where the recording stops
        }
        frames.push((at + 8, len as usize));
        at += 8 + len as usize;
    }
    Ok(frames)
}

/// Where the attack reads, in bytes from the start of each recorded stream.
#[derive(Debug, Clone, Copy)]
struct Positions {
    client_seed: usize,
    server_seed: usize,
    /// The server's and the client's shares of the token table's opening, W - B (after the
    /// 8-byte arrival stamp of the engine message).
    server_share: usize,
    client_share: usize,
}

/// Finds the seeds and the token table's opening in a plaintext capture of a model with a
/// [vocab, d] token table. On each dealer link the dealer sends its welcome, then the 32-byte
/// seed. On the party link each side sends its hello, then the engine messages of the weight
/// sharing: the first opening is of the LM head (wte^T with ln_f's gain, [d, vocab]), the second
/// of the token table itself (SecureGpt2::setup, prepare_weight: each party sends its share of
/// W - B for the dealer's fixed mask B).
fn locate(c: &Capture, v: usize, d: usize) -> Result<Positions, String> {
    let seed = |stream: &[u8]| -> Result<usize, String> {
        match plaintext_frames(stream)?.get(1) {
            Some(&(at, 32)) => Ok(at),
            other => Err(format!("no 32-byte seed after the welcome: {other:?}")),
        }
    };
    let opening = |stream: &[u8]| -> Result<usize, String> {
        let frames = plaintext_frames(stream)?;
        let want = 8 + 8 * v * d;
        match (frames.get(1), frames.get(2)) {
            (Some(&(_, a)), Some(&(at, b))) if a == want && b == want => Ok(at + 8),
            other => Err(format!(
                "no two openings of {want} bytes after the hello: {other:?}"
            )),
        }
    };
    Ok(Positions {
        client_seed: seed(&c.client_dealer_down)?,
        server_seed: seed(&c.server_dealer_down)?,
        server_share: opening(&c.server_down)?,
        client_share: opening(&c.client_up)?,
    })
}

/// `len` bytes of `stream` from `at`, zeros past its end.
fn bytes_at(stream: &[u8], at: usize, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    if at < stream.len() {
        let end = (at + len).min(stream.len());
        out[..end - at].copy_from_slice(&stream[at..end]);
    }
    out
}

fn words(bytes: &[u8]) -> Vec<u64> {
    bytes
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

/// A party's share of the token table's mask B, from its seed: each party draws the free
/// components of its requests from ChaCha12(seed) in order (mpc/correlation.rs `draw`); a weight
/// mask's component is the 2-word key of its stream (mpc/seeded_mask.rs, an open algorithm). The
/// first request is the LM head's mask, the second the token table's [vocab, d].
fn mask_share(seed: [u8; 32], v: usize, d: usize) -> Vec<u64> {
    let mut rng = ChaCha12Rng::from_seed(seed);
    let _lm_head = [rng.next_u64(), rng.next_u64()];
    let key = [rng.next_u64(), rng.next_u64()];
    post::mpc::seeded_mask::SeededMask::new(key, v, d).full()
}

/// The token table rebuilt from a capture: W = (W - B1) + (-B0) + B0 + B1, each share of the
/// opening read off the party link and each share of B expanded from a seed read off a dealer
/// link; decoded from fixed point with 16 fractional bits.
fn rebuild(c: &Capture, at: Positions, v: usize, d: usize) -> Vec<f64> {
    let seed =
        |stream: &[u8], at: usize| -> [u8; 32] { bytes_at(stream, at, 32).try_into().unwrap() };
    let b0 = mask_share(seed(&c.client_dealer_down, at.client_seed), v, d);
    let b1 = mask_share(seed(&c.server_dealer_down, at.server_seed), v, d);
    let server = words(&bytes_at(&c.server_down, at.server_share, 8 * v * d));
    let client = words(&bytes_at(&c.client_up, at.client_share, 8 * v * d));
    (0..v * d)
        .map(|i| {
            let w = server[i]
                .wrapping_add(client[i])
                .wrapping_add(b0[i])
                .wrapping_add(b1[i]);
            w as i64 as f64 / 65536.0
        })
        .collect()
}

/// (max |error|, fraction of entries within 1e-3) of a rebuilt table against the truth.
fn compare(rebuilt: &[f64], truth: &[f64]) -> (f64, f64) {
    let max = rebuilt
        .iter()
        .zip(truth)
        .map(|(r, t)| (r - t).abs())
        .fold(0.0, f64::max);
    let close = rebuilt
        .iter()
        .zip(truth)
        .filter(|(r, t)| (*r - *t).abs() < 1e-3)
        .count();
    (max, close as f64 / truth.len() as f64)
}

#[test]
fn a_capture_of_all_three_links_rebuilds_the_token_table_over_plaintext_only() {
    let started = Instant::now();
    let registry = post::model::Registry::locate(None).unwrap();
    let loaded = post::model::load_model("tiny-private", &registry).unwrap();
    let private = loaded.model.gpt2().unwrap();
    let cfg = private.config().clone();
    let (v, d) = (cfg.vocab_size, cfg.n_embd);
    let truth: Vec<f64> = private
        .wte()
        .flatten_all()
        .unwrap()
        .to_dtype(candle_core::DType::F64)
        .unwrap()
        .to_vec1()
        .unwrap();
    assert_eq!(truth.len(), v * d);
    let scale = truth.iter().fold(0.0f64, |m, w| m.max(w.abs()));
    let want = oracle(&SHORT);

    // The control: over plaintext the capture gives the token table.
    let dir = temp_dir("links-capture-plain");
    let (plain, tokens) = record_session(&dir, None);
    assert_eq!(tokens, want, "the relays are transparent");
    let at = locate(&plain, v, d).unwrap();
    let (plain_error, plain_close) = compare(&rebuild(&plain, at, v, d), &truth);
    assert!(
        plain_error < 1e-4 && plain_close == 1.0,
        "the attack fails on plaintext: max error {plain_error:e} ({:.1}% within 1e-3)",
        100.0 * plain_close
    );
    // Neither the seeds alone nor the openings alone give it: the control rebuild needs both.
    let mut no_seeds = at;
    no_seeds.client_seed = usize::MAX;
    no_seeds.server_seed = usize::MAX;
    let (blind_error, _) = compare(&rebuild(&plain, no_seeds, v, d), &truth);
    assert!(blind_error > 0.5 * scale, "{blind_error}");

    // With keys: the same attack on the encrypted capture.
    let dir = temp_dir("links-capture-noise");
    let k = Keys::new(&dir, &["dealer", "server", "client"]);
    let (noise, tokens) = record_session(&dir, Some(&k));
    assert_eq!(tokens, want, "the relays are transparent");
    for (name, stream) in [
        ("client to server", &noise.client_up),
        ("server to client", &noise.server_down),
        ("dealer to client", &noise.client_dealer_down),
        ("dealer to server", &noise.server_dealer_down),
    ] {
        assert!(&stream[..8] == b"POST2nxx", "{name}: {:?}", &stream[..8]);
        assert!(
            stream.len() > 32 + 8 * 4,
            "{name}: only {} bytes recorded",
            stream.len()
        );
    }
    // The framing does not parse, so the attacker reads at the plaintext run's positions.
    let parse = locate(&noise, v, d).unwrap_err();
    assert!(parse.contains("not a plaintext link"), "{parse}");
    let rebuilt = rebuild(&noise, at, v, d);
    let (noise_error, noise_close) = compare(&rebuilt, &truth);
    assert!(
        noise_error > 0.5 * scale && noise_close < 0.01,
        "the encrypted capture leaks the token table: max error {noise_error:e} against weights up to {scale:e}, {:.2}% of entries within 1e-3",
        100.0 * noise_close
    );
    // And at any other alignment of the same streams (a frame's first bytes anywhere up to 4 KB
    // later, in 8-byte steps): nothing either.
    let mut best: f64 = 0.0;
    for shift in (8..4096).step_by(8) {
        let moved = Positions {
            client_seed: at.client_seed + shift,
            server_seed: at.server_seed + shift,
            server_share: at.server_share + shift,
            client_share: at.client_share + shift,
        };
        best = best.max(compare(&rebuild(&noise, moved, v, d), &truth).1);
    }
    assert!(
        best < 0.01,
        "an alignment recovers {:.2}% of the table",
        100.0 * best
    );
    println!(
        "capture of a {v}x{d} token table (|w| <= {scale:.3}): plaintext max error {plain_error:.2e}; \
         encrypted max error {noise_error:.2e}, {:.3}% within 1e-3 (best of 512 alignments {:.3}%); {:.1} s",
        100.0 * noise_close,
        100.0 * best,
        started.elapsed().as_secs_f64()
    );
}
