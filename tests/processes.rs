//! The parties and the dealer as real processes on 127.0.0.1 (`post dealer`, `post serve`,
//! `post verify --connect`): greedy generation equals the plaintext oracle, and a client whose
//! model does not match is refused with one clear line while the server goes on serving.

mod common;

use common::post;

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Output, Stdio};

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `post ARGS` and returns it with the address printed on its first stdout line.
fn start(args: &[&str]) -> (Killed, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_post"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .rsplit(' ')
        .next()
        .expect("an address on the first line")
        .to_string();
    assert!(line.contains("listening on"), "{line}");
    (Killed(child), addr)
}

/// `post serve` with the tiny private model for `sessions` sessions, using the dealer at `dealer`.
fn serve_tiny(dealer: &str, sessions: usize) -> (Killed, String) {
    let sessions = sessions.to_string();
    start(&[
        "serve",
        "--model",
        "tiny-private",
        "--listen",
        "127.0.0.1:0",
        "--dealer",
        dealer,
        "--sessions",
        &sessions,
    ])
}

/// `post verify --connect` with the tiny public model and `method`, then `rest`.
fn verify_tiny(server: &str, dealer: &str, method: &str, rest: &[&str]) -> Output {
    let head = [
        "verify",
        "--connect",
        server,
        "--dealer",
        dealer,
        "--public",
        "tiny-public",
        "--method",
        method,
    ];
    post(&[&head[..], rest].concat())
}

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

#[test]
fn three_processes_generate_what_the_plaintext_oracle_generates() {
    let (_dealer, dealer) = start(&["dealer", "--listen", "127.0.0.1:0", "--sessions", "2"]);
    // Garbage to the dealer: the connection is dropped, the dealer goes on.
    {
        let mut s = std::net::TcpStream::connect(&dealer).unwrap();
        s.write_all(&u64::MAX.to_le_bytes()).unwrap();
    }
    let (_server, server) = serve_tiny(&dealer, 3);
    // A frame header claiming 2^64 - 1 bytes: the session ends with an error (no allocation, no
    // panic) and the server goes on.
    {
        let mut s = std::net::TcpStream::connect(&server).unwrap();
        s.write_all(&u64::MAX.to_le_bytes()).unwrap();
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest); // the server closes the connection
    }
    // A client whose public model has another vocabulary: refused at the handshake, one line.
    let refused = post(&[
        "verify",
        "--connect",
        &server,
        "--dealer",
        &dealer,
        "--public",
        "default-public",
        "--prompt-ids",
        "1,2,3",
    ]);
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(
        err.contains("refused") && err.contains("4096") && err.contains("1000"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");

    // The server is still serving: the next session runs both methods.
    let common = [
        "--prompt-ids",
        "7,42,3,99",
        "--max-new-tokens",
        "10",
        "--draft-len",
        "3",
        "--ignore-eos",
        "--json",
    ];
    let remote = verify_tiny(&server, &dealer, "both", &common);
    let oracle = post(&[&["draft", "--pair", "tiny"][..], &common].concat());
    let want = outputs(&oracle)[0].1.clone();
    let got = outputs(&remote);
    assert_eq!(got.len(), 2);
    for (method, ids) in got {
        assert_eq!(ids, want, "{method} over TCP");
    }
}

fn count(dir: String) -> usize {
    std::fs::read_dir(dir).map_or(0, |d| d.count())
}

#[test]
fn fifty_sessions_some_broken_leak_no_descriptor_or_thread() {
    let (_dealer, dealer) = start(&["dealer", "--listen", "127.0.0.1:0"]);
    let (server_proc, server) = serve_tiny(&dealer, 51);
    let pid = server_proc.0.id();
    let valid = || {
        let out = verify_tiny(
            &server,
            &dealer,
            "post",
            &["--prompt-ids", "5,6", "--max-new-tokens", "2", "--json"],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let (mut broken, mut before) = (0, None);
    for i in 0..50 {
        match i % 5 {
            // Connect and leave before the handshake.
            0 => drop(std::net::TcpStream::connect(&server).unwrap()),
            // A frame that claims more than the limit.
            1 => {
                let mut s = std::net::TcpStream::connect(&server).unwrap();
                s.write_all(&u64::MAX.to_le_bytes()).unwrap();
                let _ = s.read_to_end(&mut Vec::new());
            }
            _ => valid(),
        }
        if i % 5 < 2 {
            broken += 1;
        }
        if i == 2 {
            // After one session of each kind: the server's steady state.
            std::thread::sleep(std::time::Duration::from_millis(300));
            before = Some((
                count(format!("/proc/{pid}/fd")),
                count(format!("/proc/{pid}/task")),
            ));
        }
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    let after = (
        count(format!("/proc/{pid}/fd")),
        count(format!("/proc/{pid}/task")),
    );
    valid(); // the 51st session: the server still serves
    println!("{broken} broken sessions; server (fds, threads) after 3 sessions {before:?}, after 50 {after:?}");
    if cfg!(target_os = "linux") {
        let before = before.unwrap();
        assert!(before.0 > 0, "no /proc");
        assert!(after.0 <= before.0, "descriptors {before:?} -> {after:?}");
        assert!(after.1 <= before.1, "threads {before:?} -> {after:?}");
    }
}

#[test]
fn two_clients_at_once_are_queued_never_mixed() {
    let (_dealer, dealer) = start(&["dealer", "--listen", "127.0.0.1:0", "--sessions", "2"]);
    let (_server, server) = serve_tiny(&dealer, 2);
    let args = |prompt: &'static str| -> Vec<String> {
        [
            "--prompt-ids",
            prompt,
            "--max-new-tokens",
            "8",
            "--ignore-eos",
            "--json",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let clients: Vec<_> = ["5,6,7", "900,11"]
        .into_iter()
        .map(|prompt| {
            let (server, dealer) = (server.clone(), dealer.clone());
            std::thread::spawn(move || {
                let rest = args(prompt);
                let refs: Vec<&str> = rest.iter().map(String::as_str).collect();
                (
                    prompt,
                    outputs(&verify_tiny(&server, &dealer, "post", &refs)),
                )
            })
        })
        .collect();
    for client in clients {
        let (prompt, got) = client.join().unwrap();
        let mut oracle: Vec<String> = ["draft", "--pair", "tiny"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        oracle.extend(args(prompt));
        let refs: Vec<&str> = oracle.iter().map(String::as_str).collect();
        let want = outputs(&post(&refs))[0].1.clone();
        assert_eq!(
            got[0].1, want,
            "prompt {prompt}: a session got another's tokens"
        );
    }
}
