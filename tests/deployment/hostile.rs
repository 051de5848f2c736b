//! Hostile traffic against `post serve` and `post dealer` running with keys: idle and stalled
//! connections, frame headers announcing gigabytes, garbage inside and outside the Noise
//! handshake, a trickled handshake, an oversized dealer request and a step near 2^64 from
//! parties that hold trusted keys; `--max-sessions` with concurrent clients; the dealer's
//! `--timeout`. Through all of it the daemons stay up, serve legitimate sessions with the
//! oracle's tokens, and give back every descriptor and thread.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Output, Stdio};
use std::time::{Duration, Instant};

use post::decoding::Verifier;
use post::deploy::client::ClientLinks;
use post::deploy::dealer::{connect_dealer, CLIENT_ROLE, SERVER_ROLE};
use post::link::{Identity, LinkConfig, PublicKey, Trust};
use post::model::Config;
use post::mpc::dealer_wire::DealerLink;
use post::mpc::{EngineConfig, LinkModel};
use post::secure::SecureVerifier;
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha12Rng;

use crate::common::{post, post_ok, temp_dir};

/// The daemons' handshake deadline in these tests (`--handshake-timeout`).
const HANDSHAKE_S: u64 = 2;
/// A generous bound on anything that should take a moment.
const PATIENCE: Duration = Duration::from_secs(20);

/// A daemon (`post serve` or `post dealer`) killed when dropped; its stderr goes to a log file.
struct Daemon {
    child: Child,
    addr: String,
    log: PathBuf,
    // Kept open: the daemon must never meet a closed stdout.
    _stdout: BufReader<ChildStdout>,
}

impl Daemon {
    /// Starts `post ARGS` and reads the address from its first stdout line.
    fn start(args: &[&str], log: PathBuf) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_post"))
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .stdout(Stdio::piped())
            .stderr(File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        assert!(
            line.contains("listening on"),
            "{args:?}: {line:?}; {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        let addr = line.trim().rsplit(' ').next().unwrap().to_string();
        Self {
            child,
            addr,
            log,
            _stdout: stdout,
        }
    }

    fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// (open descriptors, threads) from /proc.
    fn usage(&self) -> (usize, usize) {
        let pid = self.child.id();
        let count =
            |what: &str| std::fs::read_dir(format!("/proc/{pid}/{what}")).map_or(0, |d| d.count());
        (count("fd"), count("task"))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The key files of one deployment, written by `post keygen`.
struct Keys {
    dir: PathBuf,
}

impl Keys {
    fn new(dir: &Path) -> Self {
        for name in ["dealer", "server", "client"] {
            let out = dir.join(name);
            post_ok(&["keygen", "--out", out.to_str().unwrap()]);
        }
        Self {
            dir: dir.to_path_buf(),
        }
    }

    fn key(&self, name: &str) -> String {
        self.dir.join(format!("{name}.key")).display().to_string()
    }

    fn public(&self, name: &str) -> String {
        self.dir.join(format!("{name}.pub")).display().to_string()
    }

    fn identity(&self, name: &str) -> Identity {
        Identity::load(Path::new(&self.key(name))).unwrap()
    }

    fn public_key(&self, name: &str) -> PublicKey {
        PublicKey::load(Path::new(&self.public(name))).unwrap()
    }

    fn trust(&self, name: &str) -> Trust {
        Trust::load(&[PathBuf::from(self.public(name))]).unwrap()
    }

    fn link(&self, name: &str) -> LinkConfig {
        LinkConfig {
            identity: Some(self.identity(name)),
            handshake_timeout: Duration::from_secs(10),
            io_timeout: Duration::from_secs(30),
        }
    }

    /// `post dealer` with keys, serving this deployment's client and server.
    fn dealer(&self, extra: &[&str]) -> Daemon {
        let (key, client, server) = (
            self.key("dealer"),
            self.public("client"),
            self.public("server"),
        );
        let args = [
            &["dealer", "--listen", "127.0.0.1:0", "--key", &key][..],
            &["--trust", &client, "--trust-server", &server],
            extra,
        ]
        .concat();
        Daemon::start(&args, self.dir.join("dealer.log"))
    }

    /// `post serve` of the tiny private model with keys, serving this deployment's client.
    fn server(&self, dealer: &str, extra: &[&str]) -> Daemon {
        let (key, client, dealer_pub) = (
            self.key("server"),
            self.public("client"),
            self.public("dealer"),
        );
        let args = [
            &[
                "serve",
                "--model",
                "tiny-private",
                "--listen",
                "127.0.0.1:0",
            ][..],
            &[
                "--dealer",
                dealer,
                "--key",
                &key,
                "--dealer-key",
                &dealer_pub,
            ],
            &["--trust", &client],
            extra,
        ]
        .concat();
        Daemon::start(&args, self.dir.join("server.log"))
    }

    /// `post verify --connect` with the client's key.
    fn verify(&self, server: &str, dealer: &str, prompt: &str, tokens: usize) -> Output {
        let (key, server_pub, dealer_pub) = (
            self.key("client"),
            self.public("server"),
            self.public("dealer"),
        );
        let tokens = tokens.to_string();
        post(&[
            "verify",
            "--connect",
            server,
            "--dealer",
            dealer,
            "--public",
            "tiny-public",
            "--method",
            "post",
            "--prompt-ids",
            prompt,
            "--max-new-tokens",
            &tokens,
            "--ignore-eos",
            "--json",
            "--key",
            &key,
            "--trust",
            &server_pub,
            "--dealer-key",
            &dealer_pub,
        ])
    }

    /// The client's links, for a test client built on the library.
    fn client_links(&self) -> ClientLinks {
        ClientLinks {
            link: self.link("client"),
            server_key: self.trust("server"),
            dealer_key: self.trust("dealer"),
        }
    }
}

fn output_ids(out: &Output) -> Vec<u64> {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let results = v["results"].as_array().unwrap();
    assert_eq!(results.len(), 1, "{v}");
    results[0]["output_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap())
        .collect()
}

/// The plaintext oracle's greedy tokens (`post draft --pair tiny`).
fn oracle(prompt: &str, tokens: usize) -> Vec<u64> {
    let tokens = tokens.to_string();
    let out = post(&[
        "draft",
        "--pair",
        "tiny",
        "--prompt-ids",
        prompt,
        "--max-new-tokens",
        &tokens,
        "--ignore-eos",
        "--json",
    ]);
    output_ids(&out)
}

fn tiny_config() -> Config {
    let path = crate::common::models_dir().join("tiny-gpt2-ref/config.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn engine() -> EngineConfig {
    EngineConfig {
        link: LinkModel::ideal(),
        timeout: Duration::from_secs(30),
        ..EngineConfig::default()
    }
}

/// A client session held open through the library (counts as one of the server's sessions).
fn library_client(keys: &Keys, server: &str, dealer: &str) -> SecureVerifier {
    post::deploy::client::connect(server, dealer, &keys.client_links(), &engine(), 0.0, 1000)
        .unwrap()
}

/// Greedy decoding over a held session.
fn decode(verifier: &mut SecureVerifier, prompt: &[u32], tokens: usize) -> Vec<u64> {
    let registry = post::model::Registry::locate(None).unwrap();
    let public = post::model::load_model("tiny-public", &registry).unwrap();
    let opts = post::decoding::DecodeOptions {
        draft_len: 3,
        temperature: 0.0,
        max_new_tokens: tokens,
        stop_token: None,
    };
    let mut rng = ChaCha12Rng::seed_from_u64(0);
    post::decoding::decode_with(&public.model, verifier, prompt, &opts, &mut rng)
        .unwrap()
        .output_ids
        .into_iter()
        .map(u64::from)
        .collect()
}

/// Opens both dealer links of one session with keys the test holds (the server's and the
/// client's), each naming the other's key as its peer; returns (client link, server link).
fn pair_at_dealer(keys: &Keys, dealer: &str, timeout: Duration) -> (DealerLink, DealerLink) {
    let mut session = [0u8; 32];
    rand::rng().fill_bytes(&mut session);
    let party = |role: u8| {
        let (link, trust) = (
            keys.link(if role == SERVER_ROLE {
                "server"
            } else {
                "client"
            }),
            keys.trust("dealer"),
        );
        let peer = keys.public_key(if role == SERVER_ROLE {
            "client"
        } else {
            "server"
        });
        let shape = (role == SERVER_ROLE).then(tiny_config);
        let dealer = dealer.to_string();
        std::thread::spawn(move || {
            connect_dealer(
                &dealer,
                &link,
                &trust,
                role,
                &session,
                Some(&peer),
                shape.as_ref(),
                timeout,
            )
            .map(|(link, _seed)| link)
        })
    };
    let (client, server) = (party(CLIENT_ROLE), party(SERVER_ROLE));
    (
        client.join().unwrap().unwrap(),
        server.join().unwrap().unwrap(),
    )
}

/// Waits (bounded) until the daemon has closed `stream`: returns how long after `opened` it
/// saw the end, or None if it is still open at `opened + bound`.
fn closed_within(stream: &mut TcpStream, opened: Instant, bound: Duration) -> Option<Duration> {
    let mut buf = [0u8; 4096];
    loop {
        let left = (opened + bound).saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        stream.set_read_timeout(Some(left)).unwrap();
        match stream.read(&mut buf) {
            Ok(0) => return Some(opened.elapsed()),
            Ok(_) => continue, // the daemon's preamble or handshake message
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return None
            }
            Err(_) => return Some(opened.elapsed()), // reset
        }
    }
}

/// Waits (bounded) until both daemons use no more descriptors and threads than `baseline`.
fn settle(daemons: &[&Daemon], baseline: &[(usize, usize)]) -> Vec<(usize, usize)> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now: Vec<_> = daemons.iter().map(|d| d.usage()).collect();
        let back = now
            .iter()
            .zip(baseline)
            .all(|(n, b)| n.0 <= b.0 && n.1 <= b.1);
        if back || Instant::now() > deadline {
            return now;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The steady state after a session: usage once two readings 300 ms apart agree (bounded).
fn steady(daemon: &Daemon) -> (usize, usize) {
    let mut last = daemon.usage();
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(300));
        let now = daemon.usage();
        if now == last {
            return now;
        }
        last = now;
    }
    last
}

fn preamble(encrypted: bool, listener: u8) -> Vec<u8> {
    let mut p = if encrypted {
        b"POST2nxx".to_vec()
    } else {
        b"POST2pln".to_vec()
    };
    p.push(listener);
    p
}

/// One hostile connection: what it sent, to whom, and when it was opened.
struct Hostile {
    what: String,
    stream: TcpStream,
    opened: Instant,
}

fn hostile(addr: &str, what: impl Into<String>, bytes: &[u8]) -> Hostile {
    let opened = Instant::now();
    let mut stream = TcpStream::connect(addr).unwrap();
    if !bytes.is_empty() {
        // The daemon may close before it reads everything: a failed write is fine.
        let _ = stream.write_all(bytes);
    }
    Hostile {
        what: what.into(),
        stream,
        opened,
    }
}

#[test]
fn hostile_traffic_at_once_leaves_both_daemons_serving_and_leaks_nothing() {
    let started = Instant::now();
    let dir = temp_dir("hostile-at-once");
    let keys = Keys::new(&dir);
    let hs = HANDSHAKE_S.to_string();
    let mut dealer = keys.dealer(&["--handshake-timeout", &hs]);
    let mut server = keys.server(&dealer.addr, &["--handshake-timeout", &hs]);
    let want = oracle("5,6", 2);

    // One legitimate session, then the steady state of both daemons.
    assert_eq!(
        output_ids(&keys.verify(&server.addr, &dealer.addr, "5,6", 2)),
        want
    );
    let baseline = [steady(&server), steady(&dealer)];

    // Hostile connections, all opened before the next legitimate session and held through it.
    let mut held: Vec<Hostile> = Vec::new();
    for i in 0..100 {
        let (addr, who) = if i % 2 == 0 {
            (&server.addr, "server")
        } else {
            (&dealer.addr, "dealer")
        };
        held.push(hostile(
            addr,
            format!("idle connection {i} to the {who}"),
            &[],
        ));
    }
    let two_gib = (2u64 << 30).to_le_bytes();
    let mut garbage = vec![0u8; 4096];
    ChaCha12Rng::seed_from_u64(7).fill_bytes(&mut garbage);
    for (addr, who, listener) in [(&server.addr, "server", 1u8), (&dealer.addr, "dealer", 2u8)] {
        // Five frame headers announcing 2 GiB, then silence.
        for i in 0..2 {
            held.push(hostile(
                addr,
                format!("plaintext preamble + 2 GiB header {i} to the {who}"),
                &[preamble(false, listener), two_gib.to_vec()].concat(),
            ));
        }
        held.push(hostile(
            addr,
            format!("bare 2 GiB header to the {who}"),
            &two_gib,
        ));
        for i in 0..2 {
            // A valid Noise preamble, then a handshake message announcing 65,535 bytes, of which
            // only a few come.
            let msg = [
                preamble(true, listener),
                vec![0xff, 0xff],
                garbage[..40].to_vec(),
            ]
            .concat();
            held.push(hostile(
                addr,
                format!("Noise preamble + 65535-byte message {i} to the {who}"),
                &msg,
            ));
        }
        held.push(hostile(
            addr,
            format!("4 KiB of garbage to the {who}"),
            &garbage,
        ));
        // Garbage inside the handshake: a 32-byte "ephemeral key", then a third message that
        // cannot authenticate.
        let mut inside = hostile(
            addr,
            format!("garbage handshake messages to the {who}"),
            &[
                preamble(true, listener),
                vec![0, 32],
                garbage[..32].to_vec(),
            ]
            .concat(),
        );
        std::thread::sleep(Duration::from_millis(50));
        let _ = inside
            .stream
            .write_all(&[&[0u8, 96][..], &garbage[100..196]].concat());
        held.push(inside);
    }

    // A client that holds a trusted key: one honest step (4 cached positions), then a step whose
    // count is near 2^64.
    let mut rogue = library_client(&keys, &server.addr, &dealer.addr);
    rogue
        .verify(&[5, 6, 7, 8], &[], &[], &mut ChaCha12Rng::seed_from_u64(1))
        .unwrap();
    rogue.send_raw_step([1, 4, u64::MAX - 3, 3]).unwrap();

    // Parties with trusted keys at the dealer: a triple of 2^37 elements.
    let (mut dealer_client, mut dealer_server) = pair_at_dealer(&keys, &dealer.addr, PATIENCE);
    dealer_server
        .transport
        .send(br#"{"MulTriple":{"len":137438953472}}"#.to_vec())
        .unwrap();
    let t = Instant::now();
    let refused = dealer_server.transport.recv(PATIENCE, 1 << 20);
    assert!(
        refused.is_err(),
        "the dealer answered a request for 2^37 elements"
    );
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "the oversized request took {:?} to end",
        t.elapsed()
    );
    assert!(dealer_client.transport.recv(PATIENCE, 1 << 20).is_err());

    // While all of that is held open: a legitimate session gets the oracle's tokens.
    let t = Instant::now();
    let first_opened = held[0].opened;
    assert!(
        first_opened.elapsed() < Duration::from_secs(HANDSHAKE_S),
        "too slow to overlap: the idle connections reached their deadline ({:?}) before the session began",
        first_opened.elapsed()
    );
    assert_eq!(
        output_ids(&keys.verify(&server.addr, &dealer.addr, "5,6", 2)),
        want
    );
    let session_s = t.elapsed().as_secs_f64();
    assert!(server.alive(), "the server died: {}", server.log());
    assert!(dealer.alive(), "the dealer died: {}", dealer.log());

    // Every hostile connection is closed by the daemon by the handshake deadline (plus slack).
    let bound = Duration::from_secs(HANDSHAKE_S + 3);
    let mut latest = Duration::ZERO;
    for h in &mut held {
        match closed_within(&mut h.stream, h.opened, bound) {
            Some(at) => latest = latest.max(at),
            None => panic!("{} is still open after {bound:?}", h.what),
        }
    }
    drop(held);
    drop((rogue, dealer_client, dealer_server));

    let after = settle(&[&server, &dealer], &baseline);
    for ((who, b), a) in ["server", "dealer"].iter().zip(&baseline).zip(&after) {
        assert!(a.0 <= b.0, "{who}: descriptors {b:?} -> {a:?}");
        assert!(a.1 <= b.1, "{who}: threads {b:?} -> {a:?}");
    }

    // Both still serve.
    assert_eq!(
        output_ids(&keys.verify(&server.addr, &dealer.addr, "5,6", 2)),
        want
    );
    assert!(server.alive() && dealer.alive());

    let (server_log, dealer_log) = (server.log(), dealer.log());
    assert!(
        dealer_log.contains("larger than the served model's shape allows"),
        "{dealer_log}"
    );
    assert!(!dealer_log.contains("panicked"), "{dealer_log}");
    // The rogue step is refused with an error naming the field, never a panic.
    assert!(!server_log.contains("BUG:"), "{server_log}");
    assert!(
        server_log.contains("step: n_new 18446744073709551612"),
        "the step near 2^64 is not refused by name: {server_log}"
    );
    println!(
        "hostile at once: legitimate session under attack {session_s:.2} s, last hostile connection closed after {latest:?}, \
         baseline (fds, threads) server {:?} dealer {:?}, after {after:?}; total {:.1} s",
        baseline[0],
        baseline[1],
        started.elapsed().as_secs_f64()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn hostile_a_trickled_handshake_is_cut_at_the_deadline() {
    // A peer that sends a valid preamble, announces a 65,535-byte handshake message and then
    // sends one byte every 400 ms: every read makes progress, but the handshake must still end
    // at its deadline, or a few hundred such peers hold every connection slot for hours.
    let dir = temp_dir("hostile-trickle");
    let keys = Keys::new(&dir);
    let hs = HANDSHAKE_S.to_string();
    let dealer = keys.dealer(&["--handshake-timeout", &hs]);
    let server = keys.server(&dealer.addr, &["--handshake-timeout", &hs]);
    let bound = Duration::from_secs(HANDSHAKE_S + 2);
    let trickles: Vec<_> = [(server.addr.clone(), 1u8), (dealer.addr.clone(), 2u8)]
        .into_iter()
        .map(|(addr, listener)| {
            std::thread::spawn(move || {
                let opened = Instant::now();
                let mut stream = TcpStream::connect(&addr).unwrap();
                stream
                    .write_all(&[preamble(true, listener), vec![0xff, 0xff]].concat())
                    .unwrap();
                let mut reader = stream.try_clone().unwrap();
                let watcher = std::thread::spawn(move || {
                    closed_within(&mut reader, opened, bound + Duration::from_secs(2))
                });
                // Bounded: at most 20 bytes, 8 s.
                for _ in 0..20 {
                    if watcher.is_finished() || stream.write_all(&[0x42]).is_err() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(400));
                }
                (listener, watcher.join().unwrap())
            })
        })
        .collect();
    for t in trickles {
        let (listener, closed) = t.join().unwrap();
        let who = if listener == 1 { "server" } else { "dealer" };
        println!("trickled handshake to the {who}: closed after {closed:?}");
        match closed {
            Some(at) => assert!(
                at <= bound,
                "the {who} held a trickled handshake for {at:?}"
            ),
            None => panic!("the {who} still holds a trickled handshake after {bound:?}"),
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn hostile_max_sessions_two_serve_their_own_tokens_and_a_third_is_busy() {
    let started = Instant::now();
    let dir = temp_dir("hostile-busy");
    let keys = Keys::new(&dir);
    let mut dealer = keys.dealer(&[]);
    let mut server = keys.server(&dealer.addr, &["--max-sessions", "2"]);
    let (prompt_a, prompt_b, n) = ([5u32, 6, 7], [900u32, 11], 8);
    let (want_a, want_b) = (oracle("5,6,7", n), oracle("900,11", n));
    assert_ne!(
        want_a, want_b,
        "the two prompts must tell the sessions apart"
    );

    // Two sessions held open: the server's two places are taken.
    let a = library_client(&keys, &server.addr, &dealer.addr);
    let b = library_client(&keys, &server.addr, &dealer.addr);
    let third = keys.verify(&server.addr, &dealer.addr, "1,2", 2);
    let err = String::from_utf8_lossy(&third.stderr).to_string();
    assert!(!third.status.success(), "a third session ran beside two");
    assert!(err.contains("busy"), "{err}");
    assert!(!err.contains("panicked"), "{err}");

    // The two held sessions run at once, each to its own oracle.
    let ta = std::thread::spawn(move || {
        let mut a = a;
        let got = decode(&mut a, &prompt_a, n);
        a.finish().unwrap();
        got
    });
    let tb = std::thread::spawn(move || {
        let mut b = b;
        let got = decode(&mut b, &prompt_b, n);
        b.finish().unwrap();
        got
    });
    let (got_a, got_b) = (ta.join().unwrap(), tb.join().unwrap());
    assert_eq!(got_a, want_a, "session A got other tokens");
    assert_eq!(got_b, want_b, "session B got other tokens");

    // Their places are free again: two `post verify` processes at once, then both daemons up.
    let clients: Vec<_> = [("5,6,7", want_a.clone()), ("900,11", want_b.clone())]
        .into_iter()
        .map(|(prompt, want)| {
            let keys = Keys { dir: dir.clone() };
            let (s, d) = (server.addr.clone(), dealer.addr.clone());
            std::thread::spawn(move || (output_ids(&keys.verify(&s, &d, prompt, n)), want))
        })
        .collect();
    for c in clients {
        let (got, want) = c.join().unwrap();
        assert_eq!(got, want);
    }
    assert!(server.alive() && dealer.alive());
    println!(
        "max-sessions: total {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn hostile_the_dealer_drops_a_party_whose_partner_never_comes() {
    let dir = temp_dir("hostile-timeout");
    let keys = Keys::new(&dir);
    let mut dealer = keys.dealer(&["--timeout", "2"]);
    let tiny = tiny_config();
    let lonely = |role: u8| {
        let (link, trust) = (
            keys.link(if role == SERVER_ROLE {
                "server"
            } else {
                "client"
            }),
            keys.trust("dealer"),
        );
        let peer = keys.public_key(if role == SERVER_ROLE {
            "client"
        } else {
            "server"
        });
        let (shape, addr) = (
            (role == SERVER_ROLE).then(|| tiny.clone()),
            dealer.addr.clone(),
        );
        std::thread::spawn(move || {
            let mut session = [0u8; 32];
            rand::rng().fill_bytes(&mut session);
            let t = Instant::now();
            // The party itself would wait 60 s: the dealer's 2 s are what must end it.
            let got = connect_dealer(
                &addr,
                &link,
                &trust,
                role,
                &session,
                Some(&peer),
                shape.as_ref(),
                Duration::from_secs(60),
            );
            (got.map(|_| ()), t.elapsed())
        })
    };
    for (role, partner) in [(CLIENT_ROLE, "server"), (SERVER_ROLE, "client")] {
        let (got, took) = lonely(role).join().unwrap();
        let err = format!("{:#}", got.expect_err("paired with no one"));
        println!(
            "a lone {} party was dropped after {took:?}: {err}",
            if role == SERVER_ROLE {
                "server"
            } else {
                "client"
            }
        );
        assert!(err.contains(&format!("no {partner} joined")), "{err}");
        assert!(
            took >= Duration::from_millis(1500) && took <= Duration::from_secs(4),
            "dropped after {took:?} with --timeout 2"
        );
    }

    // A paired session whose server never asks for anything ends at the same timeout.
    let t = Instant::now();
    let (mut client, _server) = pair_at_dealer(&keys, &dealer.addr, Duration::from_secs(60));
    let ended = client.transport.recv(Duration::from_secs(30), 1 << 20);
    let took = t.elapsed();
    assert!(
        ended.is_err(),
        "the client received a frame from an idle session"
    );
    assert!(
        took <= Duration::from_secs(5),
        "an idle session held for {took:?} with --timeout 2"
    );
    assert!(dealer.alive());
    println!("an idle paired session ended after {took:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn hostile_the_dealer_binds_roles_to_keys_and_keeps_the_first_connection() {
    let dir = temp_dir("hostile-pairing");
    let keys = Keys::new(&dir);
    let mut dealer = keys.dealer(&["--timeout", "10"]);
    let tiny = tiny_config();
    let t = Duration::from_secs(20);
    // One party's dealer link: `key` is the identity used, `role` the role claimed, `peer` the key
    // it says it saw on its party link.
    let party = |key: &str, role: u8, peer: PublicKey, session: [u8; 32]| {
        let (link, trust, addr) = (keys.link(key), keys.trust("dealer"), dealer.addr.clone());
        let shape = (role == SERVER_ROLE).then(|| tiny.clone());
        std::thread::spawn(move || {
            connect_dealer(
                &addr,
                &link,
                &trust,
                role,
                &session,
                Some(&peer),
                shape.as_ref(),
                t,
            )
            .map(|(_, seed)| seed)
        })
    };
    let (client_key, server_key) = (keys.public_key("client"), keys.public_key("server"));
    let session = |b: u8| [b; 32];

    // The role comes from the key: a client's key claiming the server's role is refused.
    let err = party("client", SERVER_ROLE, client_key, session(1))
        .join()
        .unwrap()
        .expect_err("a client key served as a server");
    assert!(
        format!("{err:#}").contains("claims the other role"),
        "{err:#}"
    );

    // A second connection for a taken (session, role) is refused; the first is kept and pairs.
    let first = party("client", CLIENT_ROLE, server_key, session(2));
    std::thread::sleep(Duration::from_millis(500));
    let second = party("client", CLIENT_ROLE, server_key, session(2))
        .join()
        .unwrap()
        .expect_err("a second client for one session");
    assert!(
        format!("{second:#}").contains("has a client already; the first connection is kept"),
        "{second:#}"
    );
    let server = party("server", SERVER_ROLE, client_key, session(2));
    let (a, b) = (
        first.join().unwrap().unwrap(),
        server.join().unwrap().unwrap(),
    );
    assert_ne!(a, b, "each party has its own seed");

    // Two parties that did not see each other's keys on their own link are not paired: here the
    // server names another key than the client's as its peer.
    let stranger = Identity::generate().unwrap().public;
    let client = party("client", CLIENT_ROLE, server_key, session(3));
    let server = party("server", SERVER_ROLE, stranger, session(3));
    for got in [client.join().unwrap(), server.join().unwrap()] {
        let err = format!("{:#}", got.expect_err("paired across two links"));
        assert!(err.contains("did not see each other's keys"), "{err}");
    }
    assert!(dealer.alive());
    assert!(!dealer.log().contains("panicked"), "{}", dealer.log());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn hostile_an_idle_client_holds_its_slot_only_until_the_timeout() {
    let dir = temp_dir("hostile-idle-client");
    let keys = Keys::new(&dir);
    let dealer = keys.dealer(&[]);
    let mut server = keys.server(&dealer.addr, &["--max-sessions", "1", "--timeout", "2"]);
    // A client that completes its set-up, then sends nothing and reads nothing.
    let idle = library_client(&keys, &server.addr, &dealer.addr);
    let t = Instant::now();
    let busy = keys.verify(&server.addr, &dealer.addr, "5,6", 2);
    assert!(!busy.status.success());
    assert!(String::from_utf8_lossy(&busy.stderr).contains("busy"));
    // The server's wait for the idle client's next step ends at its --timeout, freeing the slot.
    let want = oracle("5,6", 2);
    loop {
        let out = keys.verify(&server.addr, &dealer.addr, "5,6", 2);
        if out.status.success() {
            assert_eq!(output_ids(&out), want);
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(8),
            "the idle client still holds the only slot after {:?}",
            t.elapsed()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    println!(
        "the idle client's slot was free again after {:?}",
        t.elapsed()
    );
    drop(idle);
    assert!(server.alive());
    let _ = std::fs::remove_dir_all(&dir);
}
