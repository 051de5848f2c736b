//! Property tests of every decoder of what a peer sends: no input from the network may panic a
//! process, hang it, or make it allocate past what the protocol allows at that point.
//!
//! - The dealer's requests (`run_session`'s pipeline: JSON, `Correlation::check`,
//!   `Dealer::check_mask`, `RequestLimits::check`, then `Dealer::corrections`), one by one and as
//!   sessions of requests on one dealer; what is accepted stays within the limits of the served
//!   shape, and a party's `DealerHandle` expects exactly the frame an honest dealer sends.
//! - The dealer's frames (`decode_words`) and a party's handle fed any frame.
//! - The hellos (`ClientHello`, `ServerHello`, `DealerHello`) and the checks applied to them, and
//!   `Config::validate_public`.
//! - The link handshake (`link::accept`, `link::connect`) against peers that send anything, also a
//!   byte at a time, in both modes, and the frames of both transports (`TcpTransport`,
//!   `NoiseTransport`): a header past the limit is refused before the body is read.
//!
//! - The server's step requests (`Step::decode`, then `Step::committed_after`), one by one and as
//!   sessions of steps: nothing past the context window, no verified position replayed.
//!
//! Every case runs on a watchdog where the code under test could loop: a hang fails the case with
//! its input instead of stalling the suite.

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use proptest::collection::vec;
use proptest::prelude::*;
use rand::SeedableRng;
use rand_chacha::ChaCha12Rng;

use super::dealer::{limits_for, parse_hex32, DealerHello, DEALER_PROTOCOL, SERVER_ROLE};
use super::server::{check_hello, ClientHello, ServerHello, PROTOCOL_VERSION};
use crate::link::{self, noise, Identity, Link, LinkConfig, Listener, Trust};
use crate::model::Config;
use crate::mpc::correlation::Correlation;
use crate::mpc::dealer::Dealer;
use crate::mpc::dealer_handle::DealerHandle;
use crate::mpc::dealer_wire::{decode_words, encode_words, DealerLink};
use crate::mpc::net::{too_long, TcpTransport, Transport};
use crate::mpc::remote::{RequestLimits, MAX_REQUEST_BYTES};
use crate::mpc::{EngineConfig, MpcError};
use crate::secure::step::{Step, MAX_DRAFTS, STEP, STOP, WORDS};

// ---------------------------------------------------------------------------------------------
// Shared set-up
// ---------------------------------------------------------------------------------------------

/// `cases` cases (`PROPTEST_CASES` overrides, for a longer search), nothing written to disk,
/// shrinking bounded in time.
fn config(cases: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(cases);
    ProptestConfig {
        cases,
        failure_persistence: None,
        max_shrink_time: 30_000,
        ..ProptestConfig::default()
    }
}

/// A tiny GPT-2 shape: vocab 64, 16 positions, 16 dimensions, 2 layers, 2 heads.
fn tiny() -> Config {
    Config {
        vocab_size: 64,
        n_positions: 16,
        n_embd: 16,
        n_layer: 2,
        n_head: 2,
        n_inner: None,
        layer_norm_epsilon: 1e-5,
        activation_function: "gelu_new".into(),
        eos_token_id: None,
    }
}

fn tiny_limits() -> RequestLimits {
    limits_for(&tiny(), 1 << 24)
}

const SEED0: [u8; 32] = [1; 32];
const SEED1: [u8; 32] = [2; 32];

fn new_dealer() -> Dealer {
    Dealer::new(ChaCha12Rng::from_seed(SEED0), ChaCha12Rng::from_seed(SEED1))
}

/// How long one request (or one session of them) may take before it counts as a hang.
const WATCHDOG: Duration = Duration::from_secs(20);

/// Runs `f` on its own thread: a panic or a run past `limit` is an error naming it.
fn within<T: Send + 'static>(
    limit: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)));
    });
    match rx.recv_timeout(limit) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(panic)) => Err(format!(
            "panicked: {}",
            super::panic_message(panic.as_ref())
        )),
        Err(_) => Err(format!("did not finish within {limit:?}")),
    }
}

// ---------------------------------------------------------------------------------------------
// 1. Dealer requests
// ---------------------------------------------------------------------------------------------

/// `run_session`'s checks of a request, in its order.
fn admit(dealer: &Dealer, limits: &RequestLimits, corr: &Correlation) -> Result<(), MpcError> {
    corr.check()?;
    dealer.check_mask(corr)?;
    limits.check(dealer, corr)
}

type Made = (Vec<Vec<u64>>, Vec<Vec<u64>>);

/// The dealer's side of one request: `None` when refused, the corrections and public words when
/// made; an error when something the limits promise does not hold.
fn deal(
    dealer: &mut Dealer,
    limits: &RequestLimits,
    corr: &Correlation,
) -> Result<Option<Made>, String> {
    if admit(dealer, limits, corr).is_err() {
        return Ok(None);
    }
    let (largest, words) = dealer.request_size(corr);
    if largest > limits.max_elements || words > limits.max_request_words {
        return Err(format!(
            "{corr:?} was accepted at {largest} elements, {words} words: past {limits:?}"
        ));
    }
    let (corrections, public) = dealer.corrections(corr);
    for (what, parts) in [("corrections", &corrections), ("public words", &public)] {
        let total: usize = parts.iter().map(Vec::len).sum();
        if parts.iter().any(|p| p.len() > largest) || total > words {
            return Err(format!(
                "{corr:?} made {what} of {total} words (largest {:?}), past its measured {largest} elements, {words} words",
                parts.iter().map(Vec::len).max()
            ));
        }
    }
    if dealer.mask_words() > limits.max_mask_words {
        return Err(format!(
            "{corr:?} grew the masks to {} words, past {}",
            dealer.mask_words(),
            limits.max_mask_words
        ));
    }
    Ok(Some((corrections, public)))
}

/// Absurd sizes a peer may name.
const HUGE: [usize; 8] = [
    1 << 31,
    1 << 32,
    1 << 40,
    1 << 49,
    1 << 62,
    usize::MAX / 2 + 1,
    usize::MAX - 1,
    usize::MAX,
];

/// Sizes from a peer: mostly small, sometimes near or past any limit.
fn size() -> BoxedStrategy<usize> {
    prop_oneof![
        1 => Just(0usize),
        8 => 0usize..8,
        4 => 0usize..300,
        1 => 1000usize..5000,
        1 => (1usize << 20)..(1 << 21),
        2 => prop::sample::select(HUGE.to_vec()),
        1 => any::<usize>(),
    ]
    .boxed()
}

/// Sizes a party's own engine names (its requests to its handle are never absurd).
fn modest() -> BoxedStrategy<usize> {
    prop_oneof![3 => 0usize..8, 1 => 0usize..40].boxed()
}

fn id() -> BoxedStrategy<u64> {
    prop_oneof![4 => 0u64..4, 1 => any::<u64>()].boxed()
}

fn shift() -> BoxedStrategy<u32> {
    prop_oneof![4 => 0u32..64, 1 => 60u32..70, 1 => any::<u32>()].boxed()
}

/// Every kind of request, its sizes from `size`, small counts sometimes replaced by `size`'s.
fn correlation_of(size: fn() -> BoxedStrategy<usize>) -> BoxedStrategy<Correlation> {
    use Correlation::*;
    let or = move |small: std::ops::Range<usize>| -> BoxedStrategy<usize> {
        prop_oneof![3 => small, 1 => size()].boxed()
    };
    prop_oneof![
        size().prop_map(|len| MulTriple { len }),
        size().prop_map(|len| SquarePair { len }),
        (size(), size(), size(), size()).prop_map(|(batch, m, k, n)| MatmulTriple {
            batch,
            m,
            k,
            n
        }),
        (id(), size(), size()).prop_map(|(id, k, n)| WeightMask { id, k, n }),
        (id(), size()).prop_map(|(id, m)| WeightTriple { id, m }),
        (id(), size(), size()).prop_map(|(id, rows, width)| RowMask { id, rows, width }),
        (id(), size()).prop_map(|(id, rows)| RowTruncate { id, rows }),
        (size(), or(0..70), or(0..70)).prop_map(|(len, bits, skip)| Comparison { len, bits, skip }),
        (size(), or(0..12), or(0..70), or(0..70)).prop_map(|(len, operands, bits, skip)| {
            ComparisonProducts {
                len,
                operands,
                bits,
                skip,
            }
        }),
        (
            size(),
            vec(shift(), 0..20),
            vec((or(0..20), or(0..20)), 0..70)
        )
            .prop_map(|(len, shifts, pairs)| Masked { len, shifts, pairs }),
        (size(), vec(shift(), 0..4), or(0..6)).prop_map(|(len, shifts, per_row)| WideProduct {
            len,
            shifts,
            per_row
        }),
        (id(), size(), size()).prop_map(|(id, k, n)| WideWeightMask { id, k, n }),
        (id(), size()).prop_map(|(id, m)| WideWeightTriple { id, m }),
        (id(), or(0..6), size(), any::<bool>()).prop_map(|(id, heads, m, keys)| HeadTriple {
            id,
            heads,
            m,
            keys
        }),
    ]
    .boxed()
}

fn correlation() -> BoxedStrategy<Correlation> {
    correlation_of(size)
}

/// A few requests that belong together: masks made, then used, grown and cut.
fn scenario(size: fn() -> BoxedStrategy<usize>) -> BoxedStrategy<Vec<Correlation>> {
    use Correlation::*;
    let dim = move || -> BoxedStrategy<usize> { prop_oneof![4 => 0usize..9, 1 => size()].boxed() };
    prop_oneof![
        3 => correlation_of(size).prop_map(|c| vec![c]),
        1 => (id(), dim(), dim(), dim())
            .prop_map(|(id, k, n, m)| vec![WeightMask { id, k, n }, WeightTriple { id, m }]),
        1 => (id(), dim(), dim(), dim()).prop_map(|(id, k, n, m)| vec![
            WideWeightMask { id, k, n },
            WideWeightTriple { id, m },
        ]),
        1 => (id(), (dim(), dim(), dim()), 0usize..5, dim(), any::<bool>()).prop_map(
            |(id, (r1, width, r2), heads, m, keys)| vec![
                RowMask { id, rows: r1, width },
                RowMask { id, rows: r2, width },
                HeadTriple { id, heads, m, keys },
                RowTruncate { id, rows: r1 },
                HeadTriple { id, heads, m, keys },
            ]
        ),
        // A mask grown at another width than it was made with.
        1 => (id(), (dim(), dim(), dim(), dim()), dim(), any::<bool>()).prop_map(
            |(id, (r1, w1, r2, w2), m, keys)| vec![
                RowMask { id, rows: r1, width: w1 },
                RowMask { id, rows: r2, width: w2 },
                HeadTriple { id, heads: 1, m, keys },
                RowTruncate { id, rows: usize::MAX },
                HeadTriple { id, heads: 1, m: 0, keys },
            ]
        ),
    ]
    .boxed()
}

fn session_of(size: fn() -> BoxedStrategy<usize>) -> impl Strategy<Value = Vec<Correlation>> {
    vec(scenario(size), 1..6).prop_map(|v| v.concat())
}

/// One request on a fresh dealer, on the watchdog.
fn deal_fresh(corr: &Correlation) -> Result<(), TestCaseError> {
    let c = corr.clone();
    within(WATCHDOG, move || {
        deal(&mut new_dealer(), &tiny_limits(), &c)
    })
    .and_then(|r| r.map(drop))
    .map_err(|e| TestCaseError::fail(format!("{corr:?}: {e}")))
}

/// Strings of JSON values where a request has numbers, lists or flags.
fn json_value() -> BoxedStrategy<String> {
    prop_oneof![
        3 => prop::sample::select(vec![
            "0", "1", "-1", "7", "63", "64", "1e3", "1.5", "-0", "18446744073709551615",
            "18446744073709551616", "340282366920938463463374607431768211456", "1e400", "null",
            "true", "[]", "{}", "\"3\"", "[1,2]", "[[0,1],[2,3]]", "[[0,99]]", "[64,65,4294967295]",
            "[4294967296]", "[[18446744073709551615,0]]", "[-1]", "[[1]]",
        ])
        .prop_map(String::from),
        1 => any::<u64>().prop_map(|v| v.to_string()),
        1 => (0u64..300).prop_map(|v| v.to_string()),
    ]
    .boxed()
}

/// `json` with some of its numbers replaced by other JSON values (picked by index, modulo).
fn replace_numbers(json: &str, swaps: &[(usize, String)]) -> String {
    let bytes = json.as_bytes();
    let mut runs = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i].is_ascii_digit() {
            let start = i;
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                i += 1;
            }
            runs.push((start, i));
        } else {
            i += 1;
        }
    }
    if runs.is_empty() {
        return json.to_string();
    }
    let mut picked: Vec<(usize, usize, &str)> = swaps
        .iter()
        .map(|(k, v)| {
            let (s, e) = runs[k % runs.len()];
            (s, e, v.as_str())
        })
        .collect();
    picked.sort_by_key(|p| p.0);
    picked.dedup_by_key(|p| p.0);
    let mut out = String::new();
    let mut at = 0;
    for (s, e, v) in picked {
        out.push_str(&json[at..s]);
        out.push_str(v);
        at = e;
    }
    out.push_str(&json[at..]);
    out
}

const VARIANTS: [&str; 16] = [
    "MulTriple",
    "SquarePair",
    "MatmulTriple",
    "WeightMask",
    "WeightTriple",
    "RowMask",
    "RowTruncate",
    "Comparison",
    "ComparisonProducts",
    "Masked",
    "WideProduct",
    "WideWeightMask",
    "WideWeightTriple",
    "HeadTriple",
    "Unknown",
    "",
];
const FIELDS: [&str; 17] = [
    "len", "batch", "m", "k", "n", "id", "rows", "width", "bits", "skip", "operands", "shifts",
    "pairs", "per_row", "heads", "keys", "extra",
];

/// Request bodies as a peer may send them: anything, nested without end, hand-made objects, and
/// honest requests with numbers swapped for other values.
fn request_bytes() -> BoxedStrategy<Vec<u8>> {
    prop_oneof![
        1 => vec(any::<u8>(), 0..256),
        1 => (0usize..60_000, prop::sample::select(vec!["[", "{\"MulTriple\":", "{\"a\":[", "\""]))
            .prop_map(|(n, open)| open.repeat(n).into_bytes()),
        1 => (
            prop::sample::select(VARIANTS.to_vec()),
            vec((prop::sample::select(FIELDS.to_vec()), json_value()), 0..6),
            any::<bool>()
        )
            .prop_map(|(v, fields, wrapped)| {
                let body: Vec<String> = fields.iter().map(|(f, x)| format!("\"{f}\":{x}")).collect();
                let text = if wrapped {
                    format!("{{\"{v}\":{{{}}}}}", body.join(","))
                } else {
                    format!("\"{v}\"")
                };
                text.into_bytes()
            }),
        2 => (correlation(), vec((any::<usize>(), json_value()), 0..3)).prop_map(|(c, swaps)| {
            replace_numbers(&serde_json::to_string(&c).unwrap(), &swaps).into_bytes()
        }),
    ]
    .boxed()
}

proptest! {
    #![proptest_config(config(256))]

    /// Any request, however absurd, is refused or made within the served shape's limits.
    #[test]
    fn any_request_is_refused_or_made_within_the_limits(corr in correlation()) {
        deal_fresh(&corr)?;
    }

    /// Any bytes a server sends as a request: undecodable, refused, or made within the limits.
    #[test]
    fn any_request_bytes_are_refused_or_made_within_the_limits(bytes in request_bytes()) {
        if bytes.len() <= MAX_REQUEST_BYTES {
            if let Ok(corr) = serde_json::from_slice::<Correlation>(&bytes) {
                deal_fresh(&corr)?;
            }
        }
    }
}

proptest! {
    #![proptest_config(config(128))]

    /// Sessions of requests on one dealer (masks made, used, grown at other widths, cut), going on
    /// past refusals: each request refused or made within the limits, the masks too.
    #[test]
    fn a_session_of_requests_stays_within_the_limits(session in session_of(size)) {
        let s = session.clone();
        let outcome = within(WATCHDOG, move || -> Result<(), String> {
            let (mut dealer, limits) = (new_dealer(), tiny_limits());
            for corr in &s {
                deal(&mut dealer, &limits, corr)?;
            }
            Ok(())
        });
        if let Err(e) = outcome.and_then(|r| r) {
            return Err(TestCaseError::fail(format!("{session:?}: {e}")));
        }
    }

    /// Both parties' handles against the dealer of `run_session` (over in-memory links): each
    /// frame the dealer sends has exactly the length the handle expects before reading it, both
    /// parties get components of the same shapes, and triples combine.
    #[test]
    fn handles_expect_exactly_the_frames_the_dealer_sends(session in session_of(modest)) {
        let s = session.clone();
        let outcome = within(WATCHDOG, move || paired(&s));
        if let Err(e) = outcome.and_then(|r| r) {
            return Err(TestCaseError::fail(format!("{session:?}: {e}")));
        }
    }
}

/// The dealer's end of both parties' links, in memory: it runs `run_session`'s pipeline on what the
/// server sends and queues the frames for each party.
struct Wire {
    dealer: Dealer,
    limits: RequestLimits,
    to_server: VecDeque<Vec<u8>>,
    to_client: VecDeque<Vec<u8>>,
    broken: Vec<String>,
}

struct WireEnd {
    wire: Arc<Mutex<Wire>>,
    server: bool,
}

impl Transport for WireEnd {
    fn send(&mut self, msg: Vec<u8>) -> Result<(), MpcError> {
        let mut guard = self.wire.lock().map_err(|_| MpcError::PeerClosed)?;
        let w = &mut *guard;
        if !self.server {
            w.broken.push("the client sent its dealer a message".into());
            return Ok(());
        }
        if msg.len() > MAX_REQUEST_BYTES {
            w.broken.push(format!("a request of {} bytes", msg.len()));
            return Ok(());
        }
        let corr: Correlation = match serde_json::from_slice(&msg) {
            Ok(c) => c,
            Err(e) => {
                w.broken
                    .push(format!("the dealer cannot decode a handle's request: {e}"));
                return Ok(());
            }
        };
        match deal(&mut w.dealer, &w.limits, &corr) {
            Err(e) => w.broken.push(e),
            // Refused: the session ends, so no frame follows.
            Ok(None) => {}
            Ok(Some((corrections, public))) => {
                if !public.is_empty() {
                    w.to_client.push_back(encode_words(&public));
                }
                w.to_server.push_back(encode_words(&corrections));
            }
        }
        Ok(())
    }

    fn recv(&mut self, _timeout: Duration, limit: usize) -> Result<Vec<u8>, MpcError> {
        let mut guard = self.wire.lock().map_err(|_| MpcError::PeerClosed)?;
        let w = &mut *guard;
        let frame = if self.server {
            w.to_server.pop_front()
        } else {
            w.to_client.pop_front()
        }
        .ok_or(MpcError::PeerClosed)?;
        if frame.len() != limit {
            w.broken.push(format!(
                "the {} expected a dealer frame of {limit} bytes, the dealer sent {}",
                if self.server { "server" } else { "client" },
                frame.len()
            ));
        }
        if frame.len() > limit {
            return Err(too_long(frame.len() as u64, limit));
        }
        Ok(frame)
    }
}

/// Runs `session` through both parties' handles and the dealer, until the first refusal (which
/// ends a real session).
fn paired(session: &[Correlation]) -> Result<(), String> {
    let wire = Arc::new(Mutex::new(Wire {
        dealer: new_dealer(),
        limits: tiny_limits(),
        to_server: VecDeque::new(),
        to_client: VecDeque::new(),
        broken: Vec::new(),
    }));
    let link = |server| DealerLink {
        transport: Box::new(WireEnd {
            wire: wire.clone(),
            server,
        }),
        timeout: Duration::from_secs(1),
    };
    let mut client = DealerHandle::remote(link(false), SEED0, 0);
    let mut server = DealerHandle::remote(link(true), SEED1, 1);
    let broken = |when: &Correlation| -> Result<(), String> {
        let w = wire.lock().map_err(|_| "poisoned".to_string())?;
        if w.broken.is_empty() {
            Ok(())
        } else {
            Err(format!("at {when:?}: {}", w.broken.join("; ")))
        }
    };
    // Rows of each mask, as the dealer keeps them.
    let mut rows = std::collections::HashMap::<u64, usize>::new();
    for corr in session {
        match *corr {
            Correlation::WeightMask { id, k, .. } | Correlation::WideWeightMask { id, k, .. } => {
                rows.insert(id, k);
            }
            Correlation::RowMask { id, rows: r, .. } => {
                let e = rows.entry(id).or_insert(0);
                *e = e.saturating_add(r);
            }
            Correlation::RowTruncate { id, rows: r } => {
                if let Some(e) = rows.get_mut(&id) {
                    *e = (*e).min(r);
                }
            }
            // Known, not a hazard: against a mask of no rows, `head_matmul` takes the width
            // as 0 / 0 = 0 and makes C empty where both parties expect m * dh zeros; they refuse
            // the frame (its length, then `RingTensor::new`). The engine never multiplies an
            // empty cache.
            Correlation::HeadTriple {
                id, keys: false, ..
            } if rows.get(&id) == Some(&0) => break,
            _ => {}
        }
        let s = server.get(corr);
        broken(corr)?;
        let Ok(s) = s else { break };
        let c = client.get(corr).map_err(|e| {
            format!("{corr:?}: the server's handle got it, the client's failed: {e}")
        })?;
        broken(corr)?;
        {
            let w = wire.lock().map_err(|_| "poisoned".to_string())?;
            if !w.to_server.is_empty() || !w.to_client.is_empty() {
                return Err(format!("{corr:?}: a dealer frame was left unread"));
            }
        }
        let shapes = |p: &[Vec<u64>]| p.iter().map(Vec::len).collect::<Vec<_>>();
        if shapes(&s) != shapes(&c) {
            return Err(format!(
                "{corr:?}: the server's components {:?}, the client's {:?}",
                shapes(&s),
                shapes(&c)
            ));
        }
        let sum = |i: usize, j: usize| c[i][j].wrapping_add(s[i][j]);
        let triple = match corr {
            Correlation::MulTriple { len } => {
                (0..*len).all(|j| sum(0, j).wrapping_mul(sum(1, j)) == sum(2, j))
            }
            Correlation::SquarePair { len } => {
                (0..*len).all(|j| sum(0, j).wrapping_mul(sum(0, j)) == sum(1, j))
            }
            _ => true,
        };
        if !triple {
            return Err(format!("{corr:?}: the shares do not combine"));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 2. Dealer frames
// ---------------------------------------------------------------------------------------------

/// Frames a dealer may send: anything, honest encodings, and honest headers that lie.
fn dealer_frame() -> BoxedStrategy<Vec<u8>> {
    prop_oneof![
        vec(any::<u8>(), 0..200),
        vec(vec(any::<u64>(), 0..30), 0..6).prop_map(|parts| encode_words(&parts)),
        (
            prop_oneof![0u64..8, any::<u64>()],
            vec(prop_oneof![0u64..8, any::<u64>(), Just(u64::MAX)], 0..12)
        )
            .prop_map(|(count, words)| {
                std::iter::once(count)
                    .chain(words)
                    .flat_map(u64::to_le_bytes)
                    .collect()
            }),
        (vec(vec(any::<u64>(), 0..10), 1..4), 0usize..80, any::<u8>()).prop_map(
            |(parts, at, byte)| {
                let mut bytes = encode_words(&parts);
                let at = at % bytes.len();
                bytes[at] = byte;
                bytes
            }
        ),
    ]
    .boxed()
}

/// A link whose dealer answers each wait with the next canned frame, refusing any frame past the
/// limit as both real transports do.
struct Canned {
    replies: VecDeque<Vec<u8>>,
}

impl Transport for Canned {
    fn send(&mut self, _msg: Vec<u8>) -> Result<(), MpcError> {
        Ok(())
    }

    fn recv(&mut self, _timeout: Duration, limit: usize) -> Result<Vec<u8>, MpcError> {
        let frame = self.replies.pop_front().ok_or(MpcError::PeerClosed)?;
        if frame.len() > limit {
            return Err(too_long(frame.len() as u64, limit));
        }
        Ok(frame)
    }
}

proptest! {
    #![proptest_config(config(256))]

    /// `decode_words` never panics, and what it accepts accounts for every byte of the frame.
    #[test]
    fn decode_words_accounts_for_every_byte(bytes in dealer_frame()) {
        if let Ok(parts) = decode_words(&bytes) {
            let words: usize = parts.iter().map(Vec::len).sum();
            prop_assert_eq!(8 * (1 + parts.len() + words), bytes.len());
            prop_assert_eq!(encode_words(&parts), bytes);
        }
    }

    #[test]
    fn dealer_frames_round_trip(parts in vec(vec(any::<u64>(), 0..40), 0..8)) {
        prop_assert_eq!(decode_words(&encode_words(&parts)).unwrap(), parts);
    }

    /// A party's handle survives whatever its dealer sends for its own requests.
    #[test]
    fn a_party_survives_any_dealer_frame(
        role in 0u64..2,
        steps in vec((correlation_of(modest), dealer_frame()), 1..6),
    ) {
        let replies = steps.iter().map(|s| s.1.clone()).collect();
        let mut h = DealerHandle::remote(
            DealerLink { transport: Box::new(Canned { replies }), timeout: Duration::from_secs(1) },
            [7; 32],
            role,
        );
        for (corr, _) in &steps {
            let _ = h.get(corr);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 3. Hellos and model shapes
// ---------------------------------------------------------------------------------------------

fn eps() -> BoxedStrategy<f64> {
    prop_oneof![
        2 => Just(1e-5),
        1 => any::<f64>(),
        1 => prop::sample::select(vec![
            0.0, -0.0, -1e-5, f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 1e308, f64::MIN_POSITIVE,
        ]),
    ]
    .boxed()
}

/// Model shapes a peer may announce: fields at random, or heads that divide the width.
fn any_config() -> BoxedStrategy<Config> {
    (
        (size(), size(), size(), size()),
        (1usize..40, size(), any::<bool>(), prop::option::of(size())),
        (
            eps(),
            prop::sample::select(vec![
                "gelu_new",
                "gelu_pytorch_tanh",
                "gelu_fast",
                "relu",
                "",
            ]),
            prop::option::of(any::<u32>()),
        ),
    )
        .prop_map(
            |((v, t, raw_embd, l), (h, dh, consistent, n_inner), (eps, act, eos))| Config {
                vocab_size: v,
                n_positions: t,
                n_embd: if consistent {
                    h.saturating_mul(dh)
                } else {
                    raw_embd
                },
                n_layer: l,
                n_head: if consistent { h } else { dh },
                n_inner,
                layer_norm_epsilon: eps,
                activation_function: act.into(),
                eos_token_id: eos,
            },
        )
        .boxed()
}

/// What a shape that `validate_public` accepts must give: every dimension positive (the engine
/// divides by them) and none of the products the engine and the dealer's limits form overflowing.
fn check_public_shape(cfg: &Config, max_request_words: usize) -> Result<(), TestCaseError> {
    let (v, t, d, l, h, mlp) = (
        cfg.vocab_size,
        cfg.n_positions,
        cfg.n_embd,
        cfg.n_layer,
        cfg.n_head,
        cfg.mlp_dim(),
    );
    prop_assert!(
        [v, t, d, l, h, mlp].iter().all(|&x| x >= 1) && cfg.head_dim() >= 1,
        "{:?} was accepted with a zero dimension",
        cfg
    );
    let layer = d
        .checked_mul(d)
        .and_then(|dd| dd.checked_mul(4))
        .and_then(|a| d.checked_mul(mlp)?.checked_mul(2)?.checked_add(a));
    let products = [
        ("vocab * n_embd", v.checked_mul(d)),
        ("n_positions * n_inner", t.checked_mul(mlp)),
        ("n_positions * n_embd", t.checked_mul(d)),
        ("n_embd * n_inner", d.checked_mul(mlp)),
        ("a layer's weights", layer),
        ("all weights", layer.and_then(|w| w.checked_mul(l))),
        (
            "the caches",
            t.checked_mul(d)
                .and_then(|x| x.checked_mul(l)?.checked_mul(2)),
        ),
        (
            "attention scores",
            h.checked_mul(t).and_then(|x| x.checked_mul(t)),
        ),
        ("logits", t.checked_mul(v)),
    ];
    for (what, p) in products {
        prop_assert!(
            p.is_some(),
            "{:?} was accepted, but {} overflows",
            cfg,
            what
        );
    }
    let limits = limits_for(cfg, max_request_words);
    prop_assert!(limits.max_elements >= 1 && limits.max_mask_words >= 1);
    Ok(())
}

/// Strings where a peer puts 32 bytes of hex.
fn hex_like() -> BoxedStrategy<String> {
    prop_oneof![
        vec(any::<u8>(), 0..40).prop_map(hex::encode),
        prop::array::uniform32(any::<u8>()).prop_map(hex::encode),
        prop::array::uniform32(any::<u8>()).prop_map(|b| hex::encode(b).to_uppercase()),
        "[0-9a-fA-FgG é]{60,68}",
        any::<String>(),
    ]
    .boxed()
}

fn temperature() -> BoxedStrategy<f64> {
    prop_oneof![
        Just(0.0),
        Just(1.0),
        any::<f64>(),
        prop::sample::select(vec![
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            0.01,
            0.0099,
            -0.0,
            -1.0,
            f64::MIN_POSITIVE,
            1e308,
        ]),
    ]
    .boxed()
}

fn client_hello() -> BoxedStrategy<ClientHello> {
    (
        prop_oneof![Just(PROTOCOL_VERSION), any::<u32>()],
        prop_oneof![Just(16u32), any::<u32>()],
        hex_like(),
        temperature(),
        prop_oneof![Just(64usize), size()],
        prop::option::of((any::<f64>(), any::<f64>())),
    )
        .prop_map(
            |(version, frac_bits, nonce, temperature, vocab_size, shape)| ClientHello {
                version,
                frac_bits,
                nonce,
                temperature,
                vocab_size,
                shape,
            },
        )
        .boxed()
}

fn server_hello() -> BoxedStrategy<ServerHello> {
    (
        prop_oneof![Just(PROTOCOL_VERSION), any::<u32>()],
        prop_oneof![Just(16u32), any::<u32>()],
        hex_like(),
        prop::option::of(prop_oneof![Just(tiny()), any_config()]),
        prop::option::of(any::<String>()),
    )
        .prop_map(|(version, frac_bits, nonce, config, refused)| ServerHello {
            version,
            frac_bits,
            nonce,
            config,
            refused,
        })
        .boxed()
}

fn dealer_hello() -> BoxedStrategy<DealerHello> {
    (
        prop_oneof![Just(DEALER_PROTOCOL), any::<u32>()],
        hex_like(),
        prop_oneof![0u8..3, any::<u8>()],
        prop::option::of(hex_like()),
        prop::option::of(prop_oneof![Just(tiny()), any_config()]),
    )
        .prop_map(|(version, session, role, peer, shape)| DealerHello {
            version,
            session,
            role,
            peer,
            shape,
        })
        .boxed()
}

/// The server's checks of a client's hello (`server::handle`): whatever it lets through, the
/// server then unwraps the nonce of.
fn server_checks(hello: &ClientHello) -> Result<(), TestCaseError> {
    let engine = EngineConfig::default();
    if check_hello(hello, &tiny(), &engine).is_none() {
        prop_assert!(
            parse_hex32(&hello.nonce).is_some(),
            "accepted a bad nonce: {:?}",
            hello
        );
        prop_assert!(hello.version == PROTOCOL_VERSION && hello.vocab_size == 64);
        prop_assert!(crate::secure::check_temperature(hello.temperature).is_ok());
    }
    Ok(())
}

/// The client's checks of the server's hello (`client::connect`).
fn client_checks(hello: &ServerHello) -> Result<(), TestCaseError> {
    if hello.refused.is_some() || hello.version != PROTOCOL_VERSION || hello.frac_bits != 16 {
        return Ok(());
    }
    let Some(cfg) = &hello.config else {
        return Ok(());
    };
    if cfg.validate_public().is_err() || cfg.vocab_size != 64 {
        return Ok(());
    }
    let _ = parse_hex32(&hello.nonce);
    check_public_shape(cfg, 1 << 24)
}

/// The dealer's checks of a party's hello (`dealer::handle` and `run_pair`, over plaintext).
fn dealer_checks(hello: &DealerHello, max_request_words: usize) -> Result<(), TestCaseError> {
    if hello.version != DEALER_PROTOCOL || parse_hex32(&hello.session).is_none() {
        return Ok(());
    }
    if hello.role > SERVER_ROLE {
        return Ok(());
    }
    if let Some(p) = &hello.peer {
        let _ = parse_hex32(p);
    }
    if hello.role == SERVER_ROLE {
        if let Some(cfg) = &hello.shape {
            if cfg.validate_public().is_ok() {
                check_public_shape(cfg, max_request_words)?;
            }
        }
    }
    Ok(())
}

/// Hello bytes: anything, nested without end, and honest hellos with numbers swapped.
fn hello_bytes() -> BoxedStrategy<Vec<u8>> {
    let swaps = || vec((any::<usize>(), json_value()), 0..3);
    prop_oneof![
        vec(any::<u8>(), 0..300),
        (
            0usize..20_000,
            prop::sample::select(vec!["[", "{\"shape\":", "{\"a\":[", "\""])
        )
            .prop_map(|(n, open)| open.repeat(n).into_bytes()),
        (client_hello(), swaps()).prop_map(|(h, s)| {
            replace_numbers(&serde_json::to_string(&h).unwrap(), &s).into_bytes()
        }),
        (server_hello(), swaps()).prop_map(|(h, s)| {
            replace_numbers(&serde_json::to_string(&h).unwrap(), &s).into_bytes()
        }),
        (dealer_hello(), swaps()).prop_map(|(h, s)| {
            replace_numbers(&serde_json::to_string(&h).unwrap(), &s).into_bytes()
        }),
    ]
    .boxed()
}

proptest! {
    #![proptest_config(config(256))]

    /// Any hello bytes decode to an error or to a hello whose checks do not panic.
    #[test]
    fn any_hello_bytes_are_refused_or_checked(bytes in hello_bytes()) {
        if let Ok(h) = serde_json::from_slice::<ClientHello>(&bytes) {
            server_checks(&h)?;
        }
        if let Ok(h) = serde_json::from_slice::<ServerHello>(&bytes) {
            client_checks(&h)?;
        }
        if let Ok(h) = serde_json::from_slice::<DealerHello>(&bytes) {
            dealer_checks(&h, 1 << 24)?;
        }
        let _ = serde_json::from_slice::<Config>(&bytes).map(|c| c.validate_public());
    }

    /// Hellos with any field values, as values and through their JSON.
    #[test]
    fn hellos_with_any_fields_are_refused_or_checked(
        c in client_hello(),
        s in server_hello(),
        d in dealer_hello(),
        words in size(),
    ) {
        server_checks(&c)?;
        client_checks(&s)?;
        dealer_checks(&d, words)?;
        if let Ok(h) = serde_json::from_slice::<ClientHello>(&serde_json::to_vec(&c).unwrap()) {
            server_checks(&h)?;
        }
        if let Ok(h) = serde_json::from_slice::<ServerHello>(&serde_json::to_vec(&s).unwrap()) {
            client_checks(&h)?;
        }
        if let Ok(h) = serde_json::from_slice::<DealerHello>(&serde_json::to_vec(&d).unwrap()) {
            dealer_checks(&h, words)?;
        }
    }

    /// A shape `validate_public` accepts has no zero dimension and no overflowing product, and
    /// the dealer's limits for it are made without a panic.
    #[test]
    fn validate_public_accepts_only_shapes_the_engine_can_size(cfg in any_config(), words in size()) {
        if cfg.validate_public().is_ok() {
            check_public_shape(&cfg, words)?;
        }
    }

    /// Only 32 bytes of hex pass as a nonce, session id or key.
    #[test]
    fn only_32_bytes_of_hex_parse(text in hex_like()) {
        match parse_hex32(&text) {
            Some(bytes) => prop_assert_eq!(hex::encode(bytes), text.to_lowercase()),
            None => prop_assert!(hex::decode(&text).map_or(true, |b| b.len() != 32)),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 4. Handshakes and frames
// ---------------------------------------------------------------------------------------------

const HANDSHAKE: Duration = Duration::from_millis(250);
/// What a loaded machine may add to a deadline.
const SLACK: Duration = Duration::from_millis(1500);
const MAGIC_NOISE: &[u8; 8] = b"POST2nxx";
const MAGIC_PLAIN: &[u8; 8] = b"POST2pln";

fn link_config(encrypted: bool) -> LinkConfig {
    LinkConfig {
        identity: encrypted.then(|| Identity::generate().unwrap()),
        handshake_timeout: HANDSHAKE,
        io_timeout: Duration::from_secs(2),
    }
}

fn listener_kind() -> BoxedStrategy<Listener> {
    prop_oneof![Just(Listener::Server), Just(Listener::Dealer)].boxed()
}

/// A Noise message as a peer may frame it: an honest length, or any length over the bytes that
/// follow (truncated, or claiming up to 65,535 bytes that never come).
fn noise_message() -> BoxedStrategy<Vec<u8>> {
    prop_oneof![
        // An honest first XX message: an ephemeral key, which any 32 bytes are.
        3 => prop::array::uniform32(any::<u8>()).prop_map(|e| [&[0u8, 32][..], &e].concat()),
        2 => vec(any::<u8>(), 0..150).prop_map(|b| {
            [&(b.len() as u16).to_be_bytes()[..], &b].concat()
        }),
        2 => (
            prop_oneof![0u16..100, Just(48u16), Just(96), Just(65_535), any::<u16>()],
            vec(any::<u8>(), 0..150),
        )
            .prop_map(|(len, b)| [&len.to_be_bytes()[..], &b].concat()),
        1 => vec(any::<u8>(), 0..3),
    ]
    .boxed()
}

/// What a peer sends when a link opens: anything, or a preamble (right, wrong or cut short)
/// followed by Noise messages.
fn opening() -> BoxedStrategy<Vec<u8>> {
    let magic = prop::sample::select(vec![
        MAGIC_NOISE.to_vec(),
        MAGIC_PLAIN.to_vec(),
        b"POST1nxx".to_vec(),
        b"POST2nx".to_vec(),
        Vec::new(),
    ]);
    prop_oneof![
        1 => vec(any::<u8>(), 0..40),
        4 => (magic, prop_oneof![1u8..3, any::<u8>()], vec(noise_message(), 0..4)).prop_map(
            |(magic, role, messages)| [magic, vec![role], messages.concat()].concat()
        ),
    ]
    .boxed()
}

/// Whether `bytes` open with the plaintext preamble for `listener`.
fn plain_preamble(bytes: &[u8], listener: Listener) -> bool {
    bytes.len() >= 9 && &bytes[..8] == MAGIC_PLAIN && bytes[8] == listener as u8
}

/// The far end of a connection: writes `script`, then closes its sending half (unless `hold`),
/// and drains what it is sent until `done` or until the other side closes.
fn peer_end(mut s: TcpStream, script: Vec<u8>, hold: bool, done: mpsc::Receiver<()>) {
    let _ = s.write_all(&script);
    if !hold {
        let _ = s.shutdown(Shutdown::Write);
    }
    let _ = s.set_read_timeout(Some(Duration::from_millis(20)));
    let mut buf = [0u8; 4096];
    loop {
        if !matches!(done.try_recv(), Err(mpsc::TryRecvError::Empty)) {
            return;
        }
        match s.read(&mut buf) {
            Ok(0) if !hold => return,
            Ok(0) => thread::sleep(Duration::from_millis(5)),
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return,
        }
    }
}

fn loopback() -> (TcpListener, SocketAddr) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    (l, addr)
}

/// `link::accept` of a connection whose peer sends `script`; the outcome and how long it took.
fn accept_from(
    encrypted: bool,
    listener: Listener,
    script: Vec<u8>,
    hold: bool,
    admits: bool,
) -> (Result<Link, MpcError>, Duration) {
    let (l, addr) = loopback();
    let (done, wait) = mpsc::channel();
    let peer = thread::spawn(move || {
        let s = TcpStream::connect(addr).unwrap();
        peer_end(s, script, hold, wait)
    });
    let (stream, _) = l.accept().unwrap();
    let cfg = link_config(encrypted);
    let start = Instant::now();
    let result = link::accept(stream, &cfg, listener, |_| admits);
    let elapsed = start.elapsed();
    drop(done);
    peer.join().unwrap();
    (result, elapsed)
}

/// `link::connect` to a listener that answers `script`; the outcome and how long it took.
fn connect_to(
    encrypted: bool,
    listener: Listener,
    script: Vec<u8>,
    hold: bool,
) -> (Result<Link, MpcError>, Duration) {
    let (l, addr) = loopback();
    let (done, wait) = mpsc::channel();
    let answer = thread::spawn(move || {
        let (s, _) = l.accept().unwrap();
        peer_end(s, script, hold, wait)
    });
    let cfg = link_config(encrypted);
    let trust = Trust::of(vec![Identity::generate().unwrap().public]);
    let start = Instant::now();
    let result = link::connect(&addr.to_string(), &cfg, listener, &trust);
    let elapsed = start.elapsed();
    drop(done);
    answer.join().unwrap();
    (result, elapsed)
}

fn hold() -> BoxedStrategy<bool> {
    prop_oneof![7 => Just(false), 1 => Just(true)].boxed()
}

proptest! {
    #![proptest_config(ProptestConfig { max_shrink_iters: 64, ..config(48) })]

    /// `accept` against any opening: an error within the deadline, or a link only for the
    /// plaintext preamble of this listener on a plaintext listener.
    #[test]
    fn accept_refuses_any_opening_within_its_deadline(
        encrypted in any::<bool>(),
        listener in listener_kind(),
        script in opening(),
        hold in hold(),
        admits in any::<bool>(),
    ) {
        let valid = !encrypted && plain_preamble(&script, listener);
        let (result, elapsed) = accept_from(encrypted, listener, script, hold, admits);
        prop_assert!(elapsed <= HANDSHAKE + SLACK, "accept took {:?}", elapsed);
        prop_assert_eq!(result.is_ok(), valid, "{:?}", result.err());
    }

    /// `connect` against a listener that answers anything: an error within the deadline, or a
    /// link only for a plaintext listener's right preamble.
    #[test]
    fn connect_refuses_any_answer_within_its_deadline(
        encrypted in any::<bool>(),
        listener in listener_kind(),
        script in opening(),
        hold in hold(),
    ) {
        let valid = !encrypted && plain_preamble(&script, listener);
        let (result, elapsed) = connect_to(encrypted, listener, script, hold);
        prop_assert!(elapsed <= HANDSHAKE + SLACK, "connect took {:?}", elapsed);
        prop_assert_eq!(result.is_ok(), valid, "{:?}", result.err());
    }
}

/// A peer that sends `head` at once, then `trickle` a byte every 40 ms (3 s in all at most).
fn trickler(mut s: TcpStream, head: Vec<u8>, trickle: Vec<u8>, done: mpsc::Receiver<()>) {
    let _ = s.write_all(&head);
    for b in trickle {
        if !matches!(done.try_recv(), Err(mpsc::TryRecvError::Empty)) {
            return;
        }
        if s.write_all(&[b]).is_err() {
            return;
        }
        thread::sleep(Duration::from_millis(40));
    }
}

/// A peer that trickles its opening a byte at a time must not stretch the handshake past its
/// deadline (a read timeout alone restarts with every byte).
#[test]
fn a_trickling_peer_cannot_stretch_the_handshake() {
    let noise_head = [&MAGIC_NOISE[..], &[Listener::Server as u8]].concat();
    let cases: Vec<(bool, Vec<u8>, Vec<u8>)> = vec![
        // The preamble itself, a byte at a time.
        (false, Vec::new(), [&MAGIC_PLAIN[..], &[1]].concat()),
        (true, Vec::new(), noise_head.clone()),
        // A first message that claims 65,535 bytes and trickles them.
        (true, noise_head, [&[0xff, 0xff][..], &[7; 70]].concat()),
    ];
    for (encrypted, head, trickle) in cases {
        let (l, addr) = loopback();
        let (done, wait) = mpsc::channel();
        let (h, t) = (head.clone(), trickle.clone());
        let peer = thread::spawn(move || trickler(TcpStream::connect(addr).unwrap(), h, t, wait));
        let (stream, _) = l.accept().unwrap();
        let cfg = link_config(encrypted);
        let start = Instant::now();
        let result = link::accept(stream, &cfg, Listener::Server, |_| true);
        let elapsed = start.elapsed();
        drop(done);
        peer.join().unwrap();
        assert!(result.is_err(), "accept of a trickled {head:?} {trickle:?}");
        assert!(
            elapsed <= HANDSHAKE + Duration::from_millis(700),
            "accept of a trickled opening took {elapsed:?} (deadline {HANDSHAKE:?})"
        );
    }
    // A listener that trickles its preamble.
    let (l, addr) = loopback();
    let (done, wait) = mpsc::channel();
    let answer = thread::spawn(move || {
        let (s, _) = l.accept().unwrap();
        trickler(
            s,
            Vec::new(),
            [&MAGIC_NOISE[..], &[1], &[0, 200], &[5; 60]].concat(),
            wait,
        )
    });
    let cfg = link_config(true);
    let trust = Trust::of(vec![Identity::generate().unwrap().public]);
    let start = Instant::now();
    let result = link::connect(&addr.to_string(), &cfg, Listener::Server, &trust);
    let elapsed = start.elapsed();
    drop(done);
    answer.join().unwrap();
    assert!(result.is_err());
    assert!(
        elapsed <= HANDSHAKE + Duration::from_millis(700),
        "connect to a trickling listener took {elapsed:?}"
    );
}

/// The bytes of a plaintext frame: its 8-byte length (which may lie) and `sent` bytes of body.
fn plain_frame(claimed: u64, sent: usize) -> Vec<u8> {
    let body = (0..sent).map(|i| (i * 7 + 3) as u8);
    claimed.to_le_bytes().into_iter().chain(body).collect()
}

proptest! {
    #![proptest_config(ProptestConfig { max_shrink_iters: 64, ..config(64) })]

    /// `TcpTransport::recv`: a header past the limit is refused at once, before any body (which
    /// here never comes); an honest frame within the limit arrives whole; a cut one is an error.
    #[test]
    fn a_plaintext_frame_past_its_limit_is_refused_at_its_header(
        limit in prop_oneof![0usize..3000, Just(usize::MAX)],
        claimed in prop_oneof![0u64..4000, any::<u64>(), Just(u64::MAX)],
        sent in 0usize..4000,
        hold in any::<bool>(),
    ) {
        let over = claimed > limit as u64;
        let sent = if over { 0 } else { sent.min(claimed as usize) };
        // Held open only where the receiver must decide without waiting.
        let hold = hold && (over || sent as u64 == claimed);
        let (l, addr) = loopback();
        let (done, wait) = mpsc::channel();
        let script = plain_frame(claimed, sent);
        let peer = thread::spawn(move || {
            peer_end(TcpStream::connect(addr).unwrap(), script, hold, wait)
        });
        let (stream, _) = l.accept().unwrap();
        let mut t = TcpTransport::new(stream, Duration::from_secs(2)).unwrap();
        let start = Instant::now();
        let got = t.recv(Duration::from_secs(3), limit);
        let elapsed = start.elapsed();
        drop(done);
        drop(t);
        peer.join().unwrap();
        prop_assert!(elapsed < Duration::from_secs(2), "recv took {:?}", elapsed);
        if over {
            prop_assert!(matches!(got, Err(MpcError::Malformed(_))), "{:?}", got);
        } else if sent as u64 == claimed {
            prop_assert_eq!(got.unwrap(), plain_frame(claimed, sent)[8..].to_vec());
        } else {
            prop_assert!(got.is_err());
        }
    }
}

/// Opens an encrypted link to `addr` as a raw Noise initiator, so that what follows the handshake
/// can be anything: the stream and the transport state.
fn raw_initiator(addr: SocketAddr, me: &Identity) -> (TcpStream, snow::TransportState) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_nodelay(true).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(&[&MAGIC_NOISE[..], &[Listener::Server as u8]].concat())
        .unwrap();
    let mut preamble = [0u8; 9];
    s.read_exact(&mut preamble).unwrap();
    let prologue = [&b"post link v2: "[..], &[Listener::Server as u8]].concat();
    let mut hs = snow::Builder::new(noise::params())
        .local_private_key(&me.private)
        .unwrap()
        .prologue(&prologue)
        .unwrap()
        .build_initiator()
        .unwrap();
    let mut buf = vec![0u8; 65_535];
    let n = hs.write_message(&[], &mut buf).unwrap();
    send_raw(&mut s, &buf[..n]);
    let msg = recv_raw(&mut s);
    hs.read_message(&msg, &mut buf).unwrap();
    let n = hs.write_message(&[], &mut buf).unwrap();
    send_raw(&mut s, &buf[..n]);
    let mut ts = hs.into_transport_mode().unwrap();
    // The listener's verdict: a frame of one byte, 0 (a header message, then the byte).
    let header = recv_raw(&mut s);
    assert_eq!(ts.read_message(&header, &mut buf).unwrap(), 8);
    let verdict = recv_raw(&mut s);
    assert_eq!(ts.read_message(&verdict, &mut buf).unwrap(), 1);
    assert_eq!(buf[0], 0, "the listener admits the key");
    (s, ts)
}

fn send_raw(s: &mut TcpStream, msg: &[u8]) {
    s.write_all(&[&(msg.len() as u16).to_be_bytes()[..], msg].concat())
        .unwrap();
}

fn recv_raw(s: &mut TcpStream) -> Vec<u8> {
    let mut len = [0u8; 2];
    s.read_exact(&mut len).unwrap();
    let mut msg = vec![0u8; u16::from_be_bytes(len) as usize];
    s.read_exact(&mut msg).unwrap();
    msg
}

/// How a Noise frame may be sent wrong.
#[derive(Debug, Clone)]
enum Mangle {
    Honest,
    /// The header claims another length.
    Claim(u64),
    /// A header of another size than 8 bytes.
    HeaderSize(usize),
    /// Chunk `i` (modulo) of another size.
    ChunkSize(usize, usize),
    /// Byte `j` of sealed message `i` (modulo) flipped.
    Tamper(usize, usize),
    /// Only the first `i` sealed messages, then the sending half closed.
    Cut(usize),
    /// Raw bytes instead of any sealed message.
    Garbage(Vec<u8>),
}

fn mangle() -> BoxedStrategy<Mangle> {
    prop_oneof![
        3 => Just(Mangle::Honest),
        2 => prop_oneof![0u64..200_000, any::<u64>()].prop_map(Mangle::Claim),
        1 => (0usize..20).prop_filter("not 8", |&n| n != 8).prop_map(Mangle::HeaderSize),
        1 => (any::<usize>(), 0usize..70_000).prop_map(|(i, n)| Mangle::ChunkSize(i, n)),
        1 => (any::<usize>(), any::<usize>()).prop_map(|(i, j)| Mangle::Tamper(i, j)),
        1 => (0usize..3).prop_map(Mangle::Cut),
        1 => vec(any::<u8>(), 0..100).prop_map(Mangle::Garbage),
    ]
    .boxed()
}

/// The plaintexts of the messages that carry a frame of `len` bytes (header, then chunks).
fn frame_plaintexts(len: usize, mangle: &Mangle) -> Vec<Vec<u8>> {
    let body: Vec<u8> = (0..len).map(|i| (i * 13 + 1) as u8).collect();
    let claimed = match mangle {
        Mangle::Claim(c) => *c,
        _ => len as u64,
    };
    let mut header = claimed.to_le_bytes().to_vec();
    if let Mangle::HeaderSize(n) = mangle {
        header.resize(*n, 0);
    }
    let mut out = vec![header];
    out.extend(body.chunks(noise::CHUNK).map(<[u8]>::to_vec));
    if let Mangle::ChunkSize(i, n) = mangle {
        if out.len() > 1 {
            let i = 1 + i % (out.len() - 1);
            out[i].resize((*n).min(noise::CHUNK), 9);
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { max_shrink_iters: 64, ..config(48) })]

    /// `NoiseTransport::recv` after a real handshake, against a peer whose frames may lie: a frame
    /// arrives only when it is honest and within the limit; a header past the limit is refused at
    /// once, before any chunk (which here never comes); nothing panics.
    #[test]
    fn a_noise_frame_is_taken_only_whole_and_within_its_limit(
        len in prop_oneof![0usize..200, (noise::CHUNK - 2)..(noise::CHUNK + 2), Just(2 * noise::CHUNK + 5)],
        limit_delta in prop_oneof![Just(0i64), -3i64..3, any::<i64>()],
        mangle in mangle(),
    ) {
        let limit = (len as i64).saturating_add(limit_delta).max(0) as usize;
        let plaintexts = frame_plaintexts(len, &mangle);
        let claimed = u64::from_le_bytes(
            plaintexts[0].clone().try_into().unwrap_or([0xff; 8]),
        );
        let header_ok = plaintexts[0].len() == 8;
        let refused_at_header = header_ok && claimed > limit as u64;
        let honest = matches!(mangle, Mangle::Honest) && len <= limit;
        let (l, addr) = loopback();
        let me = Identity::generate().unwrap();
        let (done, wait) = mpsc::channel::<()>();
        let script = mangle.clone();
        let peer = thread::spawn(move || {
            let (s, mut ts) = raw_initiator(addr, &me);
            let mut sealed: Vec<Vec<u8>> = Vec::new();
            let mut buf = vec![0u8; 65_535];
            for p in &plaintexts {
                let n = ts.write_message(p, &mut buf).unwrap();
                sealed.push([&(n as u16).to_be_bytes()[..], &buf[..n]].concat());
            }
            let (bytes, hold): (Vec<u8>, bool) = match &script {
                Mangle::Tamper(i, j) => {
                    let i = i % sealed.len();
                    let j = 2 + j % (sealed[i].len() - 2);
                    sealed[i][j] ^= 0x40;
                    (sealed.concat(), false)
                }
                Mangle::Cut(i) => (sealed[..(*i).min(sealed.len())].concat(), false),
                Mangle::Garbage(g) => (g.clone(), false),
                // Past the limit: the header alone, and the link held open.
                _ if refused_at_header => (sealed[0].clone(), true),
                _ => (sealed.concat(), false),
            };
            peer_end(s.try_clone().unwrap(), bytes, hold, wait);
            let _ = s.shutdown(Shutdown::Both);
        });
        let (stream, _) = l.accept().unwrap();
        let cfg = link_config(true);
        let mut link = link::accept(stream, &cfg, Listener::Server, |_| true).unwrap();
        let start = Instant::now();
        let got = link.transport.recv(Duration::from_secs(3), limit);
        let elapsed = start.elapsed();
        drop(done);
        drop(link);
        peer.join().unwrap();
        prop_assert!(elapsed < Duration::from_secs(2), "recv took {:?}", elapsed);
        let body: Vec<u8> = (0..len).map(|i| (i * 13 + 1) as u8).collect();
        match got {
            // Whatever is taken is what the (authenticated) header announced, within the limit,
            // and the bytes the peer sealed.
            Ok(frame) => {
                prop_assert!(header_ok && claimed <= limit as u64, "took {:?} at limit {}", mangle, limit);
                prop_assert_eq!(frame.len() as u64, claimed);
                prop_assert!(frame.len() <= body.len() && frame[..] == body[..frame.len()], "{:?}", mangle);
            }
            Err(e) => {
                prop_assert!(!honest, "refused an honest frame of {} bytes (limit {}): {}", len, limit, e);
                if refused_at_header && matches!(mangle, Mangle::Honest | Mangle::Claim(_)) {
                    prop_assert!(matches!(e, MpcError::Malformed(_)), "{}", e);
                }
            }
        }
    }
}

/// What these properties found, pinned: each refused, also where only a debug build would have
/// panicked (release wraps or masks the arithmetic).
#[test]
fn what_these_properties_found_is_refused() {
    use Correlation::*;
    let (dealer, limits) = (new_dealer(), tiny_limits());
    // A payload of the comparison bit and 1 to 3 products (dcf::MAX_WIDTH): 4 to 8 operands
    // indexed past it (a panic), 0 made a frame the parties do not expect.
    let products = |operands, bits, skip| ComparisonProducts {
        len: 1,
        operands,
        bits,
        skip,
    };
    for corr in [products(0, 63, 0), products(4, 63, 0), products(8, 63, 0)] {
        assert!(admit(&dealer, &limits, &corr).is_err(), "{corr:?}");
    }
    // Keys over 1 to 63 bits, skipping fewer than they cover.
    for corr in [products(1, 0, 0), products(1, 64, 0), products(1, 20, 20)] {
        assert!(admit(&dealer, &limits, &corr).is_err(), "{corr:?}");
    }
    for corr in [products(1, 63, 0), products(3, 63, 0), products(1, 40, 20)] {
        assert!(admit(&dealer, &limits, &corr).is_ok(), "{corr:?}");
    }
    // Shifts of a 64-bit mask by 64 or more (a debug build's panic).
    for shifts in [vec![64], vec![0, 200]] {
        let corr = WideProduct {
            len: 2,
            shifts,
            per_row: 1,
        };
        assert!(admit(&dealer, &limits, &corr).is_err(), "{corr:?}");
    }
    assert!(admit(
        &dealer,
        &limits,
        &WideProduct {
            len: 2,
            shifts: vec![63],
            per_row: 1
        }
    )
    .is_ok());
    // A mask whose rows times width wraps to its words: not a mask made for a head product.
    let mut grown = new_dealer();
    grown.corrections(&RowMask {
        id: 1,
        rows: 1,
        width: 1 << 15,
    });
    grown.corrections(&RowMask {
        id: 1,
        rows: 1 << 49,
        width: 0,
    });
    assert!(grown
        .check_mask(&HeadTriple {
            id: 1,
            heads: 1,
            m: 0,
            keys: true
        })
        .is_err());
    // Shapes: no width at all; a width whose 4 * n_embd overflowed before its bound was checked.
    let no_width = Config {
        n_embd: 0,
        n_inner: Some(4),
        ..tiny()
    };
    let huge = Config {
        n_embd: 1 << 62,
        n_head: 1,
        n_inner: None,
        ..tiny()
    };
    assert!(no_width.validate_public().is_err() && huge.validate_public().is_err());
    assert!(tiny().validate_public().is_ok());
}

/// Sessions a random search rarely meets: huge counts over zero-sized operands (nothing to make,
/// so every size check passes), masks grown at width 0, and mask shapes whose product wraps.
#[test]
fn absurd_sessions_are_refused_or_made_at_once() {
    use Correlation::*;
    let huge = usize::MAX;
    let sessions: Vec<Vec<Correlation>> = vec![
        vec![MatmulTriple {
            batch: huge,
            m: 0,
            k: 0,
            n: 0,
        }],
        vec![MatmulTriple {
            batch: huge,
            m: 0,
            k: 0,
            n: 5,
        }],
        vec![MatmulTriple {
            batch: huge,
            m: 5,
            k: 0,
            n: 0,
        }],
        vec![MatmulTriple {
            batch: 1 << 40,
            m: 0,
            k: 7,
            n: 0,
        }],
        vec![
            RowMask {
                id: 1,
                rows: 0,
                width: 0,
            },
            HeadTriple {
                id: 1,
                heads: huge,
                m: huge,
                keys: true,
            },
        ],
        vec![
            RowMask {
                id: 1,
                rows: 0,
                width: 0,
            },
            HeadTriple {
                id: 1,
                heads: 1 << 40,
                m: 3,
                keys: false,
            },
        ],
        vec![
            RowMask {
                id: 1,
                rows: 1,
                width: 1 << 15,
            },
            RowMask {
                id: 1,
                rows: 1 << 49,
                width: 0,
            },
            HeadTriple {
                id: 1,
                heads: 1,
                m: 0,
                keys: true,
            },
            HeadTriple {
                id: 1,
                heads: 1,
                m: 0,
                keys: false,
            },
            RowTruncate { id: 1, rows: huge },
        ],
        vec![
            RowMask {
                id: 1,
                rows: huge,
                width: 0,
            },
            RowMask {
                id: 1,
                rows: huge,
                width: 0,
            },
            RowTruncate { id: 1, rows: 3 },
            HeadTriple {
                id: 1,
                heads: 1,
                m: 1,
                keys: true,
            },
        ],
        vec![
            WideWeightMask {
                id: 2,
                k: 1 << 63,
                n: 0,
            },
            WideWeightTriple { id: 2, m: 0 },
            WideWeightTriple { id: 2, m: huge },
        ],
        // Masks of no words whose other side is huge, then products of nothing against them.
        vec![
            WideWeightMask {
                id: 4,
                k: 0,
                n: huge,
            },
            WideWeightTriple { id: 4, m: 0 },
        ],
        vec![
            WeightMask { id: 5, k: 0, n: 0 },
            WeightTriple { id: 5, m: huge },
        ],
        vec![
            RowMask {
                id: 6,
                rows: 0,
                width: 0,
            },
            HeadTriple {
                id: 6,
                heads: 1,
                m: huge,
                keys: true,
            },
            HeadTriple {
                id: 6,
                heads: 1,
                m: huge,
                keys: false,
            },
        ],
        vec![MatmulTriple {
            batch: 1,
            m: huge,
            k: 0,
            n: 0,
        }],
        // Within the named-size bound, but each a loop of a million empty products.
        vec![MatmulTriple {
            batch: 1 << 20,
            m: 1 << 20,
            k: 0,
            n: 0,
        }],
        vec![
            RowMask {
                id: 7,
                rows: 0,
                width: 0,
            },
            HeadTriple {
                id: 7,
                heads: 1 << 20,
                m: 1 << 20,
                keys: true,
            },
        ],
        vec![MatmulTriple {
            batch: 1,
            m: 0,
            k: 0,
            n: huge,
        }],
        vec![
            WeightMask {
                id: 3,
                k: huge,
                n: 0,
            },
            WeightTriple { id: 3, m: huge },
            WeightMask {
                id: 3,
                k: 0,
                n: huge,
            },
            WeightTriple { id: 3, m: huge },
        ],
    ];
    for session in sessions {
        let s = session.clone();
        let outcome = within(Duration::from_secs(5), move || -> Result<(), String> {
            let (mut dealer, limits) = (new_dealer(), tiny_limits());
            for corr in &s {
                deal(&mut dealer, &limits, corr)?;
            }
            Ok(())
        });
        if let Err(e) = outcome.and_then(|r| r) {
            panic!("{session:?}: {e}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 5. Server steps
// ---------------------------------------------------------------------------------------------

/// Words where a client puts a count: small, near a window's edge, near 2^64, anything.
fn step_count() -> BoxedStrategy<u64> {
    prop_oneof![
        4 => 0u64..70,
        1 => prop::sample::select(vec![
            127, 128, 129, 1023, 1024, 1025, 65_535, 65_536, 65_537, u64::MAX / 2, u64::MAX - 4,
            u64::MAX - 1, u64::MAX,
        ]),
        1 => any::<u64>(),
    ]
    .boxed()
}

fn step_kind() -> BoxedStrategy<u64> {
    prop_oneof![6 => Just(STEP), 2 => Just(STOP), 1 => any::<u64>()].boxed()
}

/// Context windows: a tiny model's, GPT-2's, the largest a shape may announce, anything.
fn window() -> BoxedStrategy<usize> {
    prop_oneof![
        3 => 1usize..200,
        1 => prop::sample::select(vec![16usize, 1024, 1 << 16]),
        1 => any::<usize>(),
    ]
    .boxed()
}

/// What `decode` promises of a step it lets through (and of the stop).
fn check_step(msg: &[u64], committed: usize, window: usize) -> Result<Option<Step>, TestCaseError> {
    let got = Step::decode(msg, committed, window);
    match &got {
        Ok(None) => prop_assert_eq!(msg, &Step::stop()[..]),
        Ok(Some(s)) => {
            prop_assert_eq!(msg, &s.encode()[..]);
            prop_assert!(
                s.n_new >= 1 && s.k < s.n_new && s.k <= MAX_DRAFTS,
                "{:?}",
                s
            );
            prop_assert!(
                s.keep.checked_add(s.n_new).is_some_and(|end| end <= window),
                "{:?} past the window of {}",
                s,
                window
            );
            prop_assert!(
                s.keep == 0 || s.keep == committed,
                "{:?} after {}",
                s,
                committed
            );
            let mut last = 0;
            for accepted in 0..=s.k {
                let c = s.committed_after(accepted);
                prop_assert!(
                    c.is_ok(),
                    "{:?} with {} accepted: {:?}",
                    s,
                    accepted,
                    c.err()
                );
                let c = c.unwrap();
                prop_assert!(c <= window && c >= last, "{:?}: {} committed", s, c);
                last = c;
            }
            prop_assert!(s.committed_after(s.k + 1).is_err());
        }
        Err(_) => {}
    }
    Ok(got.ok().flatten())
}

/// Which `keep` a client names: none, the verified positions, or a raw word.
#[derive(Debug, Clone)]
enum Keep {
    Zero,
    Committed,
    Off(i64),
    Raw(u64),
}

proptest! {
    #![proptest_config(config(256))]

    /// Any words as a step request: refused, the stop, or a step within the window.
    #[test]
    fn any_step_request_is_refused_or_fits_the_window(
        msg in prop_oneof![
            4 => (step_kind(), step_count(), step_count(), step_count())
                .prop_map(|(a, b, c, d)| vec![a, b, c, d]),
            1 => vec(step_count(), 0..7),
        ],
        committed in prop_oneof![0usize..200, any::<usize>()],
        window in window(),
    ) {
        prop_assert_eq!(Step::stop().len(), WORDS);
        check_step(&msg, committed, window)?;
    }

    /// Sessions of step requests as `serve` runs them (decode, then the accepted count the
    /// protocol opens): the verified positions never pass the window, whatever the client asks.
    #[test]
    fn a_session_of_steps_never_passes_the_window(
        window in window(),
        steps in vec(
            (
                step_kind(),
                prop_oneof![
                    Just(Keep::Zero),
                    Just(Keep::Committed),
                    (-3i64..4).prop_map(Keep::Off),
                    step_count().prop_map(Keep::Raw),
                ],
                step_count(),
                step_count(),
                any::<usize>(),
            ),
            1..24,
        ),
    ) {
        let mut committed = 0usize;
        for (kind, keep, n_new, k, accepted) in steps {
            let keep = match keep {
                Keep::Zero => 0,
                Keep::Committed => committed as u64,
                Keep::Off(d) => (committed as u64).wrapping_add(d as u64),
                Keep::Raw(w) => w,
            };
            let msg = [kind, keep, n_new, k];
            let Some(step) = check_step(&msg, committed, window)? else { break };
            committed = step.committed_after(accepted % (step.k + 1)).unwrap();
            prop_assert!(committed <= window);
        }
    }
}
