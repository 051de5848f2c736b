//! The parties and the dealer as real processes on 127.0.0.1 (`post dealer`, `post serve`,
//! `post verify --connect`): greedy generation equals the plaintext oracle, and a client whose
//! model does not match is refused with one clear line while the server goes on serving.

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

fn post(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_post"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap()
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
    let (_server, server) = start(&[
        "serve",
        "--model",
        "tiny-private",
        "--listen",
        "127.0.0.1:0",
        "--dealer",
        &dealer,
        "--sessions",
        "3",
    ]);
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
    let remote = post(
        &[
            &[
                "verify",
                "--connect",
                &server,
                "--dealer",
                &dealer,
                "--public",
                "tiny-public",
                "--method",
                "both",
            ][..],
            &common,
        ]
        .concat(),
    );
    let oracle = post(&[&["draft", "--pair", "tiny"][..], &common].concat());
    let want = outputs(&oracle)[0].1.clone();
    let got = outputs(&remote);
    assert_eq!(got.len(), 2);
    for (method, ids) in got {
        assert_eq!(ids, want, "{method} over TCP");
    }
}
