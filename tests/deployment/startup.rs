//! What a process refuses before it opens any link: plaintext beyond loopback, a key without the
//! peer keys to pin, a key file others can read.

use crate::common::post;

fn keygen(dir: &std::path::Path, name: &str) -> String {
    let prefix = dir.join(name);
    let out = post(&["keygen", "--out", prefix.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    prefix.to_str().unwrap().to_string()
}

fn refused(args: &[&str], want: &[&str]) {
    let out = post(args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{args:?} started");
    for w in want {
        assert!(err.contains(w), "{args:?}: {err}");
    }
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn processes_refuse_to_run_in_the_clear_or_unpinned() {
    let dir = std::env::temp_dir().join(format!("post-startup-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    // 0.0.0.0 is not loopback: without --key both daemons refuse to start (no socket is opened
    // towards anyone: the check comes first).
    refused(
        &["dealer", "--listen", "0.0.0.0:0"],
        &["without --key", "--insecure-plaintext"],
    );
    refused(
        &[
            "serve",
            "--model",
            "tiny-private",
            "--listen",
            "0.0.0.0:0",
            "--dealer",
            "127.0.0.1:9",
        ],
        &["without --key", "--insecure-plaintext"],
    );
    // A client pointed beyond loopback without a key.
    refused(
        &[
            "verify",
            "--connect",
            "0.0.0.0:9",
            "--dealer",
            "127.0.0.1:9",
            "--public",
            "tiny-public",
            "--prompt-ids",
            "1,2",
        ],
        &["not on loopback", "--key"],
    );
    let server = keygen(&dir, "server");
    let client = keygen(&dir, "client");
    // A key without the dealer's key to pin, on the server and on the client.
    refused(
        &[
            "serve",
            "--model",
            "tiny-private",
            "--listen",
            "127.0.0.1:0",
            "--dealer",
            "127.0.0.1:9",
            "--key",
            &format!("{server}.key"),
        ],
        &["--dealer-key"],
    );
    refused(
        &[
            "verify",
            "--connect",
            "127.0.0.1:9",
            "--dealer",
            "127.0.0.1:9",
            "--public",
            "tiny-public",
            "--prompt-ids",
            "1,2",
            "--key",
            &format!("{client}.key"),
        ],
        &["--trust", "--dealer-key"],
    );
    // A dealer with a key serves only keys it trusts: it needs both lists.
    let dealer = keygen(&dir, "dealer");
    refused(
        &[
            "dealer",
            "--listen",
            "127.0.0.1:0",
            "--key",
            &format!("{dealer}.key"),
        ],
        &["--trust"],
    );
    // A key file others can read.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let key = format!("{client}.key");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        refused(
            &[
                "dealer",
                "--listen",
                "127.0.0.1:0",
                "--key",
                &key,
                "--trust",
                &format!("{server}.pub"),
                "--trust-server",
                &format!("{server}.pub"),
            ],
            &["other users", "chmod 600"],
        );
    }
    // keygen never overwrites a key.
    refused(&["keygen", "--out", &server], &["exists already"]);
    std::fs::remove_dir_all(&dir).unwrap();
}
