//! Runs a protocol on secret-shared inputs with both parties as threads and opens the result.
#![allow(dead_code)]

use std::sync::Arc;

use post::mpc::net::Counters;
use post::mpc::party::Result;
use post::mpc::{run_two_party, EngineConfig, FixedPoint, Party, RingTensor};
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha12Rng;

pub struct Outcome {
    /// Opened outputs as raw ring values.
    pub outputs: Vec<RingTensor>,
    /// Traffic of the protocol itself (opening the outputs excluded), client and server.
    pub client: Counters,
    pub server: Counters,
}

/// Splits ring tensors into two additive shares with a fixed seed.
pub fn split(inputs: &[RingTensor], seed: u64) -> (Vec<RingTensor>, Vec<RingTensor>) {
    let mut rng = ChaCha12Rng::seed_from_u64(seed);
    let mut s0 = Vec::new();
    let mut s1 = Vec::new();
    for x in inputs {
        let r: Vec<u64> = (0..x.len()).map(|_| rng.next_u64()).collect();
        let r = RingTensor::new(x.shape(), r).unwrap();
        s1.push(x.sub(&r).unwrap());
        s0.push(r);
    }
    (s0, s1)
}

pub fn run<F>(cfg: &EngineConfig, inputs: Vec<RingTensor>, f: F) -> Outcome
where
    F: Fn(&mut Party, &[RingTensor]) -> Result<Vec<RingTensor>> + Send + Sync + 'static,
{
    let shares = Arc::new(split(&inputs, 99));
    let ((out0, c0), (_, c1)) = run_two_party(cfg, move |p| {
        let mine = if p.id == 0 { &shares.0 } else { &shares.1 };
        let before = p.net.total();
        let outs = f(p, mine)?;
        let after = p.net.total();
        let opened = p.open_many(&outs.iter().collect::<Vec<_>>())?;
        Ok((opened, after.since(&before)))
    })
    .expect("protocol run");
    Outcome {
        outputs: out0,
        client: c0,
        server: c1,
    }
}

pub fn encode(fp: FixedPoint, shape: &[usize], xs: &[f64]) -> RingTensor {
    fp.encode(shape, xs).expect("in range")
}

pub fn decode_at(t: &RingTensor, frac_bits: u32) -> Vec<f64> {
    t.data()
        .iter()
        .map(|&v| v as i64 as f64 / 2f64.powi(frac_bits as i32))
        .collect()
}

pub fn uniform(rng: &mut ChaCha12Rng, n: usize, lo: f64, hi: f64) -> Vec<f64> {
    (0..n).map(|_| rng.random_range(lo..hi)).collect()
}

/// Largest absolute and relative errors; asserts each element is within abs OR rel (CrypTen's rule).
pub fn assert_close(name: &str, got: &[f64], want: &[f64], abs: f64, rel: f64) -> (f64, f64) {
    assert_eq!(got.len(), want.len(), "{name}: lengths");
    let (mut max_abs, mut max_rel) = (0.0f64, 0.0f64);
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let a = (g - w).abs();
        let r = a / w.abs().max(1e-12);
        assert!(
            a <= abs || r <= rel,
            "{name}[{i}]: got {g}, want {w} (abs {a:.3e}, rel {r:.3e})"
        );
        max_abs = max_abs.max(a);
        max_rel = max_rel.max(if w.abs() > 1e-3 { r } else { 0.0 });
    }
    println!("{name}: max abs error {max_abs:.3e}, max rel error (|want| > 1e-3) {max_rel:.3e}");
    (max_abs, max_rel)
}

/// Pins a protocol's cost: rounds, bytes the client sends, dealer bytes to the server, so that a
/// change in cost shows as a test change.
pub fn assert_costs(out: &Outcome, rounds: u64, client_bytes: u64, dealer_bytes: u64) {
    assert_eq!(
        (
            out.client.rounds,
            out.client.bytes_sent,
            out.server.dealer_bytes
        ),
        (rounds, client_bytes, dealer_bytes),
        "(rounds, client bytes, dealer bytes)"
    );
}
