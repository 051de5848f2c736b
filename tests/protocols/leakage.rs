//! What a party learns from the openings of a protocol pipeline, over many independent runs: each
//! opened word must be uniform across the runs' randomness (a cleartext value would be constant),
//! and so must the difference of the same word in two openings (a reused mask would leave the
//! difference of two secrets, constant across runs). Both checks are shown to fail on planted leaks.
//! The pipeline covers input sharing, weight preparation (the client's view of W - B), products with
//! a prepared weight, softmax, GeLU, LayerNorm (alone and with the product after it) and the
//! reciprocal, argmax (comparisons whose keys also multiply the value and the index difference),
//! GeLU on a product awaiting truncation, a product truncated in its own round (Z_2^128), a
//! weight lifted to the integers and two one-round products by it (openings mod 2^64 and 2^128), and
//! attention against a KV cache (keys appended with the scores' product, values appended and
//! multiplied inside softmax).

use crate::common::mpc::uniform;
use post::mpc::correlation::Correlation;
use post::mpc::protocols::{
    append_and_multiply, fixed_matmul_weight, fixed_mul,
    gelu::{gelu, gelu_at},
    layernorm::layernorm,
    layernorm_matmul::layernorm_matmul_at,
    matmul_weight, matmul_weight_truncating,
    max::max_last,
    prepare_weight, prepare_weight_wide, reciprocal,
    softmax::{softmax, softmax_values_at},
    PreparedRows,
};
use post::mpc::{run_two_party, EngineConfig, FixedPoint, LinkModel, RingTensor, CLIENT, SERVER};
use rand::SeedableRng;
use rand_chacha::ChaCha12Rng;

/// The client's view (the server sees the same values) of one run with fresh OS seeds, in each
/// of three pipelines: the clean one, and the clean one followed by a planted leak.
struct Views {
    clean: Vec<Vec<u64>>,
    /// The client's input opened as it is.
    cleartext: Vec<Vec<u64>>,
    /// Two openings masked with the same dealer mask: x - a, then 2x - a.
    reused_mask: Vec<Vec<u64>>,
}

/// One session runs the pipeline, then both planted leaks (a third of the sessions that one per
/// pipeline would take, and the same views): each leak's view is the clean openings followed by
/// that leak's own, as a session running that leak alone would show them, since the clean openings
/// do not depend on what follows and the cleartext opening draws nothing from the dealer.
fn openings(secret: Vec<f64>) -> Views {
    let cfg = EngineConfig {
        link: LinkModel::ideal(),
        seed: None,
        ..EngineConfig::default()
    };
    let fp = FixedPoint::default();
    let mut rng = ChaCha12Rng::seed_from_u64(77);
    let weight = uniform(&mut rng, 16 * 8, -0.5, 0.5);
    let gains = uniform(&mut rng, 8, 0.5, 1.5);
    let (client_view, _) = run_two_party(&cfg, move |p| {
        p.record_openings();
        let mine = |owner: usize, values: &[f64], shape: &[usize]| {
            (p.id == owner).then(|| fp.encode(shape, values).unwrap())
        };
        let (x_in, w_in, g_in) = (
            mine(CLIENT, &secret, &[4, 16]),
            mine(SERVER, &weight, &[16, 8]),
            mine(SERVER, &gains, &[8]),
        );
        let x = p.share_input(CLIENT, x_in.as_ref(), &[4, 16])?;
        let w = p.share_input(SERVER, w_in.as_ref(), &[16, 8])?;
        let gamma = p.share_input(SERVER, g_in.as_ref(), &[8])?;
        let prepared = prepare_weight(p, &w)?;
        let y1 = fixed_matmul_weight(p, &x, &prepared)?;
        let y2 = fixed_matmul_weight(p, &x.add(&x)?, &prepared)?;
        let s = softmax(p, &y1, None)?;
        let g = gelu(p, &y2)?;
        layernorm(p, &g, &gamma, &RingTensor::zeros(&[8]), 1e-5)?;
        layernorm_matmul_at(p, &x, 0, &prepared, 16, 1e-5)?;
        let positive = p.add_constant(&s, p.fp.constant(1.0));
        reciprocal::reciprocal(p, &positive, 16, 0.5, 4.0)?;
        max_last(p, &y1)?;
        let wide = matmul_weight(p, &x, &prepared)?;
        gelu_at(p, &wide, 16)?;
        fixed_mul(p, &y1, &y2)?;
        let lifted = prepare_weight_wide(p, &w)?;
        matmul_weight_truncating(p, &x, &lifted)?;
        matmul_weight_truncating(p, &x.add(&x)?, &lifted)?;
        // Four new positions of two heads of width 4: y1 as keys and queries, y2 as values.
        let (mut keys, mut values) = (PreparedRows::new(p, 8, 2)?, PreparedRows::new(p, 8, 2)?);
        let queries = y1.clone().reshape(&[2, 4, 4])?;
        let scores = append_and_multiply(p, &mut keys, &y1, &queries, true)?;
        softmax_values_at(p, &scores, 16, None, &mut values, &y2)?;
        let clean = p.take_openings();
        p.record_openings();
        p.open(&x)?;
        let cleartext = p.take_openings();
        p.record_openings();
        let a = p.deal(
            &Correlation::MulTriple { len: 64 },
            &[&[4, 16], &[64], &[64]],
        )?;
        p.open(&x.sub(&a[0])?)?;
        p.open(&x.add(&x)?.sub(&a[0])?)?;
        let reused_mask = p.take_openings();
        Ok(Views {
            cleartext: [clean.clone(), cleartext].concat(),
            reused_mask: [clean.clone(), reused_mask].concat(),
            clean,
        })
    })
    .unwrap();
    client_view
}

/// Pearson's statistic against uniform of four bits of the words (15 degrees of freedom): the
/// lowest four, and the four highest in use (a word that packs fewer than 64 comparison bits is
/// zero above them); the larger of the two. A value fixed across runs fails both.
fn chi_square(words: impl Iterator<Item = u64>) -> f64 {
    let words: Vec<u64> = words.collect();
    let used = 64 - words.iter().fold(0u64, |a, &w| a | w).leading_zeros();
    let statistic = |shift: u32| {
        let mut counts = [0.0f64; 16];
        words
            .iter()
            .for_each(|&w| counts[((w >> shift) & 15) as usize] += 1.0);
        let expected = words.len() as f64 / 16.0;
        counts
            .iter()
            .map(|c| (c - expected).powi(2) / expected)
            .sum::<f64>()
    };
    statistic(0).max(statistic(used.saturating_sub(4)))
}

/// The largest statistic over every opened word, and over the additive and xor differences of the
/// same word in two openings of equal length (each opening against the next eight such), across runs.
fn worst_statistics(runs: &[Vec<Vec<u64>>]) -> (f64, f64) {
    let shape: Vec<usize> = runs[0].iter().map(Vec::len).collect();
    assert!(
        runs.iter()
            .all(|r| r.iter().map(Vec::len).eq(shape.iter().copied())),
        "message shapes vary"
    );
    let mut worst_word = 0.0f64;
    for (m, &len) in shape.iter().enumerate() {
        for i in 0..len {
            worst_word = worst_word.max(chi_square(runs.iter().map(|r| r[m][i])));
        }
    }
    let mut worst_diff = 0.0f64;
    for m in 0..shape.len() {
        let later = (m + 1..shape.len())
            .filter(|&o| shape[o] == shape[m])
            .take(8);
        for o in later {
            for i in 0..shape[m].min(64) {
                // Differences within the bits the two words use (packed comparison bits leave the
                // top of a word zero, and a wrapping difference would fill it with ones).
                let used = 64
                    - runs
                        .iter()
                        .fold(0u64, |a, r| a | r[m][i] | r[o][i])
                        .leading_zeros();
                let mask = u64::MAX >> (64 - used.max(1));
                let sub = chi_square(runs.iter().map(|r| r[m][i].wrapping_sub(r[o][i]) & mask));
                let xor = chi_square(runs.iter().map(|r| r[m][i] ^ r[o][i]));
                worst_diff = worst_diff.max(sub).max(xor);
            }
        }
    }
    (worst_word, worst_diff)
}

#[test]
fn openings_are_uniform_across_runs_and_planted_leaks_are_caught() {
    const RUNS: usize = 160;
    // 15 degrees of freedom at z = 7 (Wilson-Hilferty: 93.1), a false alarm about once in 10^12
    // per statistic, so the maximum over tens of thousands of statistics stays below it; a value
    // fixed across runs scores 15 * RUNS = 2400.
    let k = 15.0f64;
    let critical = k * (1.0 - 2.0 / (9.0 * k) + 7.0 * (2.0 / (9.0 * k)).sqrt()).powi(3);
    let mut rng = ChaCha12Rng::seed_from_u64(5);
    let secrets = [uniform(&mut rng, 64, -3.0, 3.0), vec![0.0; 64]];
    for secret in &secrets {
        let runs: Vec<Views> = (0..RUNS).map(|_| openings(secret.clone())).collect();
        let words: usize = runs[0].clean.iter().map(Vec::len).sum();
        let worst = |view: fn(&Views) -> &Vec<Vec<u64>>| {
            worst_statistics(&runs.iter().map(|r| view(r).clone()).collect::<Vec<_>>())
        };
        let (word, diff) = worst(|r| &r.clean);
        println!(
            "clean: {words} opened words per run, worst word {word:.1}, worst difference {diff:.1}"
        );
        assert!(
            word < critical && diff < critical,
            "a clean pipeline looks leaky: word {word:.1}, difference {diff:.1}"
        );
        let (word, _) = worst(|r| &r.cleartext);
        println!("cleartext opening: worst word {word:.1}");
        assert!(word > critical, "a cleartext opening went unseen");
        let (_, diff) = worst(|r| &r.reused_mask);
        println!("reused mask: worst difference {diff:.1}");
        assert!(diff > critical, "a reused mask went unseen");
    }
}
