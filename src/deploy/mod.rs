//! The processes of a deployment: `post serve` ([`server`]), `post dealer` ([`dealer`]) and the
//! client's end of `post verify --connect` ([`client`]), over the links of [`crate::link`].
//!
//! Both daemons accept on one thread and handle each connection on its own, so a slow or idle
//! peer delays no one: its handshake has a deadline, and at most [`Daemon::max_connections`]
//! connections are handled at once (one past that is closed at once). A panic inside a
//! connection's thread (a bug) is caught there and logged, and the daemon goes on.

pub mod client;
pub mod dealer;
pub mod server;

#[cfg(test)]
mod fuzz;

use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Result};

/// How a daemon runs.
#[derive(Debug, Clone)]
pub struct Daemon {
    /// Stop after this many sessions have ended (default: serve until killed).
    pub sessions: Option<usize>,
    /// Connections handled at once (handshakes, waiting parties and sessions together).
    pub max_connections: usize,
    /// Sessions that have ended, good or bad.
    pub ended: Arc<AtomicUsize>,
}

impl Daemon {
    pub fn new(sessions: Option<usize>) -> Self {
        Self {
            sessions,
            max_connections: 256,
            ended: Arc::default(),
        }
    }

    /// Counts one ended session.
    pub fn session_ended(&self) {
        self.ended.fetch_add(1, Ordering::SeqCst);
    }

    fn done(&self) -> bool {
        self.sessions
            .is_some_and(|n| self.ended.load(Ordering::SeqCst) >= n)
    }
}

/// Refuses to listen beyond loopback in the clear unless the operator said so.
pub fn check_listen(addr: &str, encrypted: bool, insecure: bool, who: &str) -> Result<()> {
    if !encrypted && !insecure && !crate::link::is_loopback(addr) {
        bail!(
            "{who}: listening on {addr} without --key would carry shares in the clear to anyone on the network; \
             give --key (see `post keygen`), or --insecure-plaintext if the network is private"
        )
    }
    Ok(())
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

/// Accepts connections until the listener fails or the daemon is done; `handle` runs on each
/// connection's own thread. Waits for every thread before it returns.
pub fn serve_connections(
    listener: TcpListener,
    who: &'static str,
    daemon: Daemon,
    handle: impl Fn(TcpStream) -> Result<bool> + Send + Sync + 'static,
) -> Result<()> {
    listener.set_nonblocking(true)?;
    let handle = Arc::new(handle);
    let in_flight = Arc::new(AtomicUsize::new(0));
    let mut threads: Vec<std::thread::JoinHandle<()>> = Vec::new();
    while !daemon.done() {
        let (stream, peer) = match listener.accept() {
            Ok(s) => s,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(20));
                threads.retain(|t| !t.is_finished());
                continue;
            }
            Err(e) => {
                eprintln!("{who}: accepting a connection failed: {e}");
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
        };
        if in_flight.load(Ordering::SeqCst) >= daemon.max_connections {
            eprintln!(
                "{who}: {peer}: closed at once ({} connections are being handled)",
                daemon.max_connections
            );
            drop(stream);
            continue;
        }
        let _ = stream.set_nonblocking(false);
        in_flight.fetch_add(1, Ordering::SeqCst);
        let (handle, count) = (handle.clone(), in_flight.clone());
        let spawned = std::thread::Builder::new()
            .name(format!("{who} {peer}"))
            .spawn(move || {
                let outcome =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| handle(stream)));
                match outcome {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => eprintln!("{who}: {peer}: {e:#}"),
                    Err(panic) => eprintln!(
                        "{who}: BUG: the thread of {peer} panicked ({}); the {who} goes on",
                        panic_message(panic.as_ref())
                    ),
                }
                count.fetch_sub(1, Ordering::SeqCst);
            });
        match spawned {
            Ok(t) => threads.push(t),
            Err(e) => {
                in_flight.fetch_sub(1, Ordering::SeqCst);
                eprintln!("{who}: {peer}: no thread for it: {e}");
            }
        }
    }
    for t in threads {
        let _ = t.join();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn a_panic_in_one_connection_ends_only_that_connection() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let daemon = Daemon::new(Some(1));
        let (counter, seen) = (daemon.clone(), Arc::new(AtomicUsize::new(0)));
        let handled = seen.clone();
        let accept = std::thread::spawn(move || {
            serve_connections(listener, "test", daemon, move |mut stream| {
                if handled.fetch_add(1, Ordering::SeqCst) == 0 {
                    panic!("a bug in the first connection");
                }
                stream.write_all(b"ok")?;
                counter.session_ended();
                Ok(true)
            })
        });
        let mut first = TcpStream::connect(addr).unwrap();
        let mut buf = Vec::new();
        // The panicking thread drops its stream: the first client sees the end, nothing else.
        first.read_to_end(&mut buf).unwrap();
        assert!(buf.is_empty());
        let mut second = TcpStream::connect(addr).unwrap();
        second.read_to_end(&mut buf).unwrap();
        assert_eq!(buf, b"ok");
        // The daemon served its one session and returned.
        accept.join().unwrap().unwrap();
        assert_eq!(seen.load(Ordering::SeqCst), 2);
    }
}
