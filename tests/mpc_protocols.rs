//! Every protocol on secret shares, opened and compared with f64 plaintext over realistic GPT-2
//! ranges; rounds must not depend on the number of rows.

mod mpc_common;

use mpc_common::{assert_close, assert_costs, decode_at, encode, run, uniform, Outcome};
use post::mpc::protocols::{
    self,
    exp::exp,
    gelu::gelu,
    layernorm::layernorm,
    max::max_last,
    reciprocal, select,
    softmax::{softmax, softmax_values_at},
    PreparedRows,
};
use post::mpc::{EngineConfig, FixedPoint, LinkModel, RingTensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha12Rng;

fn cfg() -> EngineConfig {
    EngineConfig {
        link: LinkModel::ideal(),
        ..EngineConfig::default()
    }
}

fn fp() -> FixedPoint {
    FixedPoint::default()
}

fn ulp() -> f64 {
    1.0 / fp().scale()
}

fn gelu_ref(x: f64) -> f64 {
    0.5 * x * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x.powi(3))).tanh())
}

/// The reals that the fixed-point encoding of `xs` stands for.
fn encoded(xs: &[f64]) -> Vec<f64> {
    xs.iter()
        .map(|&x| fp().decode_one(fp().encode_one(x).unwrap()))
        .collect()
}

fn matmul_f64(a: &[f64], b: &[f64], m: usize, k: usize, n: usize) -> Vec<f64> {
    let mut c = vec![0.0; m * n];
    for i in 0..m {
        for j in 0..n {
            c[i * n + j] = (0..k).map(|t| a[i * k + t] * b[t * n + j]).sum();
        }
    }
    c
}

#[test]
fn fixed_mul_and_matmul_match_f64() {
    let mut rng = ChaCha12Rng::seed_from_u64(1);
    let (x, y) = (
        uniform(&mut rng, 3000, -300.0, 300.0),
        uniform(&mut rng, 3000, -50.0, 50.0),
    );
    let out = run(
        &cfg(),
        vec![encode(fp(), &[3000], &x), encode(fp(), &[3000], &y)],
        |p, s| Ok(vec![protocols::fixed_mul(p, &s[0], &s[1])?]),
    );
    // Against the exact product of the encoded inputs (f64 holds it exactly): the product is exact
    // in Z_2^128 and its local truncation gives floor or floor + 1, so the result is within one ulp.
    let (xe, ye) = (encoded(&x), encoded(&y));
    let want: Vec<f64> = xe.iter().zip(&ye).map(|(a, b)| a * b).collect();
    assert_close(
        "fixed_mul",
        &decode_at(&out.outputs[0], 16),
        &want,
        ulp(),
        0.0,
    );
    // One round: x + r and y + s opened, 128-bit shares of a, m per operand and of four cross
    // terms from the dealer (16 bytes each).
    assert_costs(&out, 1, 2 * 8 * 3000, 8 * 16 * 3000);

    let (m, k, n) = (8, 96, 40);
    let a = uniform(&mut rng, m * k, -3.0, 3.0);
    let b = uniform(&mut rng, k * n, -0.2, 0.2);
    let out = run(
        &cfg(),
        vec![encode(fp(), &[m, k], &a), encode(fp(), &[k, n], &b)],
        |p, s| Ok(vec![protocols::fixed_matmul(p, &s[0], &s[1])?]),
    );
    // The sum of exact products of the encoded inputs, then one truncation: within one ulp.
    let want = matmul_f64(&encoded(&a), &encoded(&b), m, k, n);
    assert_close(
        "fixed_matmul",
        &decode_at(&out.outputs[0], 16),
        &want,
        ulp(),
        0.0,
    );
    assert_costs(&out, 2, 39424, 7680);
    assert_eq!(
        out.client.bytes_sent,
        8 * (m * k + k * n + m * n) as u64,
        "eps, delta, then the truncation mask"
    );
}

#[test]
fn prepared_weight_products_open_only_the_activations() {
    // Two different inputs through the same prepared weight: a reused activation mask would show
    // as a wrong second product (and leak X1 - X2).
    let mut rng = ChaCha12Rng::seed_from_u64(2);
    let (m, k, n) = (5, 64, 48);
    let a1 = uniform(&mut rng, m * k, -4.0, 4.0);
    let a2 = uniform(&mut rng, m * k, -4.0, 4.0);
    let w = uniform(&mut rng, k * n, -0.3, 0.3);
    let out = run(
        &cfg(),
        vec![
            encode(fp(), &[m, k], &a1),
            encode(fp(), &[m, k], &a2),
            encode(fp(), &[k, n], &w),
        ],
        move |p, s| {
            let prepared = protocols::prepare_weight(p, &s[2])?;
            let before = p.net.total().bytes_sent;
            let first = protocols::fixed_matmul_weight(p, &s[0], &prepared)?;
            let per_call = p.net.total().bytes_sent - before;
            // Second use of the same weight: the mask is not opened again.
            let second = protocols::fixed_matmul_weight(p, &s[1], &prepared)?;
            let per_call_again = p.net.total().bytes_sent - before - per_call;
            assert_eq!(
                per_call,
                8 * (m * k + m * n) as u64,
                "activations and truncation only"
            );
            assert_eq!(per_call_again, per_call);
            Ok(vec![first, second])
        },
    );
    let we = encoded(&w);
    for (o, a) in out.outputs.iter().zip([&a1, &a2]) {
        let want = matmul_f64(&encoded(a), &we, m, k, n);
        assert_close("matmul_weight", &decode_at(o, 16), &want, ulp(), 0.0);
    }
}

/// Ring values uniform in (-2^61, 2^61), the whole range a one-round matmul lifts.
fn full_range(rng: &mut ChaCha12Rng, n: usize) -> Vec<u64> {
    let bound = (1i64 << 61) - 1;
    (0..n)
        .map(|_| rng.random_range(-bound..=bound) as u64)
        .collect()
}

#[test]
fn one_round_matmul_is_floor_or_floor_plus_one_of_the_ring_product() {
    // Inputs over the whole range the lift allows (|x| < 2^61), through one wide weight twice:
    // each output is floor(X W / 2^16) or one more, X W the exact integer product (taken mod
    // 2^128, which fixes the result mod 2^64). A wrong wrap, table row or lane is off by 2^48.
    let mut rng = ChaCha12Rng::seed_from_u64(21);
    let (m, k, n) = (5, 64, 50);
    let xs = [full_range(&mut rng, m * k), full_range(&mut rng, m * k)];
    let w = full_range(&mut rng, k * n);
    let inputs = vec![
        RingTensor::new(&[m, k], xs[0].clone()).unwrap(),
        RingTensor::new(&[m, k], xs[1].clone()).unwrap(),
        RingTensor::new(&[k, n], w.clone()).unwrap(),
    ];
    let out = run(&cfg(), inputs, move |p, s| {
        let before = p.net.total();
        let wide = protocols::prepare_weight_wide(p, &s[2])?;
        let prepared = p.net.total().since(&before);
        assert_eq!(
            (prepared.rounds, prepared.bytes_sent),
            (2, (8 + 16) * (k * n) as u64),
            "preparing: the lift's opening, then F = W - B mod 2^128"
        );
        let mut outs = Vec::new();
        for x in &s[..2] {
            let before = p.net.total();
            outs.push(protocols::matmul_weight_truncating(p, x, &wide)?);
            let call = p.net.total().since(&before);
            assert_eq!((call.rounds, call.bytes_sent), (1, 8 * (m * k) as u64));
            if !p.is_client() {
                // r and C (128-bit), msb(r), and the table (n = 50 entries: 13 words a row).
                let table = 8 * m * k * n.div_ceil(4);
                assert_eq!(
                    call.dealer_bytes,
                    (16 * m * k + 8 * m * k + 16 * m * n + table) as u64
                );
            }
        }
        let short = RingTensor::zeros(&[m, k + 1]);
        assert!(protocols::matmul_weight_truncating(p, &short, &wide).is_err());
        Ok(outs)
    });
    for (o, x) in out.outputs.iter().zip(&xs) {
        for ij in 0..m * n {
            let (i, j) = (ij / n, ij % n);
            let z = (0..k).fold(0u128, |acc, p| {
                let prod = (x[i * k + p] as i64 as i128).wrapping_mul(w[p * n + j] as i64 as i128);
                acc.wrapping_add(prod as u128)
            });
            let floor = (z >> 16) as u64;
            let got = o.data()[ij];
            assert!(
                got == floor || got == floor.wrapping_add(1),
                "({i}, {j}): got {got:#x}, floor {floor:#x}"
            );
        }
    }
}

#[test]
fn client_inputs_times_a_prepared_weight_are_exact() {
    // The client's own one-hot rows (and a dense integer matrix) times a shared weight: exactly the
    // ring product, for the bytes of an ordinary prepared-weight product; the server must hold 0.
    let mut rng = ChaCha12Rng::seed_from_u64(12);
    let (m, k, n) = (5, 300, 24);
    let w = uniform(&mut rng, k * n, -0.3, 0.3);
    let mut one_hot = vec![0u64; m * k];
    for i in 0..m {
        one_hot[i * k + rng.random_range(0..k)] = 1;
    }
    let dense: Vec<u64> = (0..m * k)
        .map(|_| rng.random_range(-3i64..4) as u64)
        .collect();
    let inputs = [one_hot, dense];
    let plain = inputs.clone();
    let out = run(&cfg(), vec![encode(fp(), &[k, n], &w)], move |p, s| {
        let prepared = protocols::prepare_weight(p, &s[0])?;
        let mut outs = Vec::new();
        for x in &plain {
            let mine = if p.is_client() {
                RingTensor::new(&[m, k], x.clone())?
            } else {
                RingTensor::zeros(&[m, k])
            };
            let before = p.net.total().bytes_sent;
            outs.push(protocols::matmul_weight_client_input(p, &mine, &prepared)?);
            assert_eq!(p.net.total().bytes_sent - before, 8 * (m * k) as u64);
        }
        if !p.is_client() {
            let refused = protocols::matmul_weight_client_input(
                p,
                &RingTensor::filled(&[m, k], 1),
                &prepared,
            );
            assert!(refused.is_err(), "a nonzero server share was accepted");
        }
        Ok(outs)
    });
    let we = encode(fp(), &[k, n], &w);
    for (o, x) in out.outputs.iter().zip(&inputs) {
        let want: Vec<u64> = (0..m * n)
            .map(|ij| {
                let (i, j) = (ij / n, ij % n);
                (0..k).fold(0u64, |acc, p| {
                    acc.wrapping_add(x[i * k + p].wrapping_mul(we.data()[p * n + j]))
                })
            })
            .collect();
        assert_eq!(o.data(), want.as_slice(), "X W in the ring");
    }
}

#[test]
fn truncation_never_wraps_over_a_million_large_products() {
    // Products of GPT-2-sized activations (|x y| up to 3e6, i.e. 2^53.5 at 32 fractional bits):
    // local SecureML truncation would fail about 2^-10 of the time here; ours may only be one ulp high.
    let mut rng = ChaCha12Rng::seed_from_u64(3);
    let n = 1 << 20;
    let x = uniform(&mut rng, n, -3.0e6, 3.0e6);
    let at_2f: Vec<u64> = x
        .iter()
        .map(|v| (v * 2f64.powi(32)).round() as i64 as u64)
        .collect();
    let out = run(
        &cfg(),
        vec![RingTensor::new(&[n], at_2f.clone()).unwrap()],
        |p, s| Ok(vec![protocols::truncate(p, &s[0], 16)?]),
    );
    let mut off_by_one = 0;
    for (got, &raw) in out.outputs[0].data().iter().zip(&at_2f) {
        let exact = (raw as i64) >> 16;
        let diff = (*got as i64).wrapping_sub(exact);
        assert!(diff == 0 || diff == 1, "truncation error of {diff} ulps");
        off_by_one += (diff != 0) as usize;
    }
    println!("truncation: {off_by_one} of {n} elements one ulp high, none worse");
    assert_costs(&out, 1, 8388608, 16777216);
}

#[test]
fn less_than_zero_is_exact_at_the_edges() {
    let fpv = fp();
    let mut values: Vec<f64> = vec![0.0, ulp(), -ulp(), 1.0, -1.0, 5e8, -5e8, 123.456, -0.0001];
    let mut rng = ChaCha12Rng::seed_from_u64(4);
    values.extend(uniform(&mut rng, 2000, -1e6, 1e6));
    let n = values.len();
    let out = run(&cfg(), vec![encode(fpv, &[n], &values)], |p, s| {
        Ok(vec![protocols::ltz(p, &s[0])?])
    });
    for (bit, v) in out.outputs[0].data().iter().zip(&values) {
        let want = (fpv.encode_one(*v).unwrap() as i64) < 0;
        assert_eq!(*bit, want as u64, "ltz({v})");
    }
    assert_costs(&out, 1, 16072, 3101896);
    assert_eq!(
        out.client.bytes_sent,
        8 * n as u64,
        "one masked word per element"
    );
}

#[test]
fn bounded_comparisons_are_exact_in_their_range() {
    // Keys over the low 20 bits: exact for every x in [-2^20, 2^20), edges included.
    let mut rng = ChaCha12Rng::seed_from_u64(5);
    let mut values: Vec<i64> = vec![0, 1, -1, (1 << 20) - 1, -(1 << 20)];
    values.extend((0..1000).map(|_| rng.random_range(-(1i64 << 20)..(1 << 20))));
    let n = values.len();
    let raw = RingTensor::new(&[n], values.iter().map(|&v| v as u64).collect()).unwrap();
    let out = run(&cfg(), vec![raw], |p, s| {
        let mut round = protocols::Round::new();
        let bits = round.ltz_bounded(p, &s[0], 20)?;
        Ok(vec![round.run(p)?.take(bits)])
    });
    for (bit, v) in out.outputs[0].data().iter().zip(&values) {
        assert_eq!(*bit, (*v < 0) as u64, "ltz({v}) over 20 bits");
    }
    // One masked word per element, as a full comparison; keys of 20 levels instead of 63.
    let words = 3 * 20 + 3;
    assert_costs(&out, 1, 8 * n as u64, (8 + 8 * words) * n as u64);
}

#[test]
fn coarse_comparisons_err_only_just_below_zero() {
    // Keys over bits 6..20: exact on [-2^20, 2^20 - 2^6] but for x in (-2^6, 0), which may read
    // as non-negative (and, for a key that skipped nothing, never would).
    let mut rng = ChaCha12Rng::seed_from_u64(6);
    let mut values: Vec<i64> = vec![0, 1, -64, (1 << 20) - 64, -(1 << 20)];
    values.extend((0..1000).map(|_| rng.random_range(-(1i64 << 20)..(1 << 20) - 63)));
    values.extend((0..4).flat_map(|_| -63..0));
    let n = values.len();
    let raw = RingTensor::new(&[n], values.iter().map(|&v| v as u64).collect()).unwrap();
    let out = run(&cfg(), vec![raw], |p, s| {
        let mut round = protocols::Round::new();
        let bits = round.ltz_coarse(p, &s[0], 20, 6)?;
        Ok(vec![round.run(p)?.take(bits)])
    });
    let mut misread = 0;
    for (bit, v) in out.outputs[0].data().iter().zip(&values) {
        assert!(*bit <= 1, "ltz({v}) is a bit");
        if (-63..0).contains(v) {
            misread += (*bit == 0) as usize;
        } else {
            assert_eq!(*bit, (*v < 0) as u64, "ltz({v}) over bits 6..20");
        }
    }
    // x = -d reads 0 with probability 1 - d/64: about half of the 252 in the window.
    assert!((60..200).contains(&misread), "{misread} of 252 misread");
    let words = 3 * 14 + 3;
    assert_costs(&out, 1, 8 * n as u64, (8 + 8 * words) * n as u64);
}

#[test]
fn comparison_products_are_exact_in_the_ring() {
    // [x < 0], [x < 0] x and [x < 0] w for raw ring values anywhere in the ring's range, the edges
    // included, against exact integer arithmetic: the payload words must carry the masks exactly.
    let mut rng = ChaCha12Rng::seed_from_u64(41);
    let mut xs: Vec<u64> = vec![
        0,
        1,
        u64::MAX,
        1 << 62,
        (1u64 << 62).wrapping_neg(),
        1 << 63,
    ];
    xs.extend((0..3000).map(|_| rng.random::<u64>()));
    let n = xs.len();
    let ws: Vec<Vec<u64>> = (0..2)
        .map(|_| (0..n).map(|_| rng.random()).collect())
        .collect();
    let tensor = |v: &[u64]| RingTensor::new(&[n], v.to_vec()).unwrap();
    let out = run(
        &cfg(),
        vec![tensor(&xs), tensor(&ws[0]), tensor(&ws[1])],
        |p, s| {
            let mut round = protocols::Round::new();
            let got = round.ltz_products(p, &s[0], &[&s[1], &s[2]])?;
            let mut out = round.run(p)?;
            Ok(vec![
                out.take(got.bit),
                out.take(got.times_x),
                out.take(got.times[0]),
                out.take(got.times[1]),
            ])
        },
    );
    for i in 0..n {
        let t = ((xs[i] as i64) < 0) as u64;
        assert_eq!(out.outputs[0].data()[i], t, "bit of {:#x}", xs[i]);
        assert_eq!(out.outputs[1].data()[i], t * xs[i], "t x for {:#x}", xs[i]);
        assert_eq!(
            out.outputs[2].data()[i],
            t * ws[0][i],
            "t w for {:#x}",
            xs[i]
        );
        assert_eq!(
            out.outputs[3].data()[i],
            t * ws[1][i],
            "t w' for {:#x}",
            xs[i]
        );
    }
    // One opening of x + r_0, w + r_1 and w' + r_2.
    assert_eq!(
        (out.client.rounds, out.client.bytes_sent),
        (1, 3 * 8 * n as u64)
    );
}

#[test]
fn relu_and_select_match() {
    let mut rng = ChaCha12Rng::seed_from_u64(5);
    let x = uniform(&mut rng, 500, -20.0, 20.0);
    let out = run(&cfg(), vec![encode(fp(), &[500], &x)], |p, s| {
        Ok(vec![select::relu(p, &s[0])?])
    });
    let want: Vec<f64> = x.iter().map(|v| v.max(0.0)).collect();
    assert_close("relu", &decode_at(&out.outputs[0], 16), &want, ulp(), 0.0);
    assert_costs(&out, 1, 4000, 1032000);
}

#[test]
fn max_and_argmax_over_rows_of_every_size() {
    let mut rng = ChaCha12Rng::seed_from_u64(6);
    for &(rows, n) in &[(3, 1), (4, 2), (2, 5), (3, 17), (2, 1024)] {
        let x = uniform(&mut rng, rows * n, -50.0, 50.0);
        let out = run(&cfg(), vec![encode(fp(), &[rows, n], &x)], |p, s| {
            let (m, i) = max_last(p, &s[0])?;
            Ok(vec![m, i])
        });
        if (rows, n) == (2, 1024) {
            // Ten binary levels of 1 round: each comparison's opening also selects value and index.
            assert_costs(&out, 10, 32736, 5286864);
        }
        let got_max = decode_at(&out.outputs[0], 16);
        for r in 0..rows {
            let row = &x[r * n..(r + 1) * n];
            let (best, value) =
                row.iter().enumerate().fold(
                    (0, f64::MIN),
                    |acc, (i, &v)| if v > acc.1 { (i, v) } else { acc },
                );
            assert!(
                (got_max[r] - value).abs() <= ulp(),
                "max of row {r} ({rows}x{n})"
            );
            assert_eq!(
                out.outputs[1].data()[r],
                best as u64,
                "argmax of row {r} ({rows}x{n})"
            );
        }
    }
}

#[test]
fn exp_matches_on_softmax_inputs() {
    let mut rng = ChaCha12Rng::seed_from_u64(7);
    let mut x = uniform(&mut rng, 4000, -100.0, 0.0);
    x.extend(uniform(&mut rng, 4000, -4.0, 0.0));
    // Past the clamp at -2^(n+1) = -64, down to the edge of the fixed-point range.
    x.extend([0.0, -63.99, -64.0, -64.01, -1e4, -3e5, -5e8]);
    let n = x.len();
    let out = run(&cfg(), vec![encode(fp(), &[n], &x)], |p, s| {
        Ok(vec![exp(p, &s[0])?])
    });
    let want: Vec<f64> = x.iter().map(|v| v.exp()).collect();
    // The quartic start raised to 2^5 is above e^x by at most 1.7e-7 (at x = -5); fixed-point
    // rounding through five squarings at f + 6 bits adds under two ulps. The bound is the one the
    // 18-round second-order version had to meet.
    let got = decode_at(&out.outputs[0], 16);
    assert_close("exp", &got, &want, 3.4e-6 + 2.0 * ulp(), 0.0);
    // Where e^x is below that bound (x < -10: most of [-100, 0]) the bound says little: there the
    // output must be the nearest multiples of an ulp, 0 or 1 ulp, never a larger value.
    for (g, (w, v)) in got.iter().zip(want.iter().zip(&x)) {
        if *w < 3.4e-6 + 2.0 * ulp() {
            assert!(*g >= 0.0 && *g <= w + ulp(), "exp({v}) = {g}, want {w}");
        }
    }
    assert_costs(&out, 8, 704616, 14412600);
}

#[test]
fn reciprocal_and_rsqrt_over_wide_ranges() {
    let mut rng = ChaCha12Rng::seed_from_u64(8);
    // One grid comparison per point and value (176 points here), so a few hundred values suffice.
    let x: Vec<f64> = uniform(&mut rng, 400, 0.0, 1.0)
        .iter()
        .map(|u| 10f64.powf(u * 3.0))
        .collect(); // [1, 1000]
    let out = run(&cfg(), vec![encode(fp(), &[400], &x)], |p, s| {
        let r = reciprocal::reciprocal(p, &s[0], 16, 0.5, 1025.0)?;
        let bits = r.frac_bits;
        Ok(vec![
            r.value,
            p.public(&RingTensor::new(&[1], vec![bits as u64]).unwrap()),
        ])
    });
    let bits = out.outputs[1].data()[0] as u32;
    let want: Vec<f64> = x.iter().map(|v| 1.0 / v).collect();
    // The series' error e^3 <= 1.0e-5 (e = (2^(1/16) - 1) / (2^(1/16) + 1)), rounding of the
    // normalised value (relative 2^-19) and of the input itself (half an ulp of x).
    assert_close(
        "reciprocal",
        &decode_at(&out.outputs[0], bits),
        &want,
        0.0,
        4e-5 + 0.5 * ulp(),
    );
    assert_costs(&out, 4, 585600, 108739200);

    // Variances from 1e-3 to 1e4, given at 32 fractional bits as LayerNorm gives them.
    let v: Vec<f64> = uniform(&mut rng, 400, 0.0, 1.0)
        .iter()
        .map(|u| 10f64.powf(-3.0 + 7.0 * u))
        .collect();
    let at_2f: Vec<u64> = v
        .iter()
        .map(|x| (x * 2f64.powi(32)).round() as i64 as u64)
        .collect();
    let out = run(
        &cfg(),
        vec![RingTensor::new(&[400], at_2f).unwrap()],
        |p, s| {
            let r = reciprocal::rsqrt(p, &s[0], 32, 1e-4, 1e5, 1.0)?;
            let bits = r.frac_bits;
            Ok(vec![
                r.value,
                p.public(&RingTensor::new(&[1], vec![bits as u64]).unwrap()),
            ])
        },
    );
    let bits = out.outputs[1].data()[0] as u32;
    let want: Vec<f64> = v.iter().map(|x| 1.0 / x.sqrt()).collect();
    assert_close("rsqrt", &decode_at(&out.outputs[0], bits), &want, 0.0, 1e-4);
    assert_costs(&out, 4, 1552000, 295254400);
}

/// Inputs within 1/8 left of GeLU's cut-offs, where its comparisons (resolving 2^-8) may pick the
/// right-hand piece: a coarser resolution would exceed the tests' bound there.
fn just_below_cut_offs() -> Vec<f64> {
    [-4.0, -2.0, 2.0, 4.0]
        .into_iter()
        .flat_map(|t| {
            let fine = (1..=16).map(move |j| t - j as f64 / 4096.0);
            let coarse = (1..=8).map(move |j| t - j as f64 / 64.0);
            fine.chain(coarse)
        })
        .collect()
}

#[test]
fn gelu_matches_gpt2_tanh_form() {
    let mut rng = ChaCha12Rng::seed_from_u64(9);
    let mut x = uniform(&mut rng, 4000, -20.0, 20.0);
    x.extend(uniform(&mut rng, 4000, -5.0, 5.0));
    // The cut-offs, and the edges of the domain |x| < 2^29 (the comparisons' keys cover 46 bits).
    x.extend([-4.0, -2.0, 2.0, 4.0, 0.0, -100.0, 100.0, -5.3e8, 5.3e8]);
    x.extend(just_below_cut_offs());
    let n = x.len();
    let out = run(&cfg(), vec![encode(fp(), &[n], &x)], |p, s| {
        Ok(vec![gelu(p, &s[0])?])
    });
    let want: Vec<f64> = x.iter().map(|&v| gelu_ref(v)).collect();
    // Fit error 1e-4 per piece (7e-5 at the cut-offs), plus rounding of the powers' coefficients.
    assert_close(
        "gelu",
        &decode_at(&out.outputs[0], 16),
        &want,
        1e-4 + 12.0 * ulp(),
        0.0,
    );
    assert_costs(&out, 4, 1231960, 32744200);
}

fn softmax_ref(row: &[f64], keep: &[bool]) -> Vec<f64> {
    let m = row
        .iter()
        .zip(keep)
        .filter(|(_, &k)| k)
        .map(|(v, _)| *v)
        .fold(f64::MIN, f64::max);
    let e: Vec<f64> = row
        .iter()
        .zip(keep)
        .map(|(v, &k)| if k { (v - m).exp() } else { 0.0 })
        .collect();
    let s: f64 = e.iter().sum();
    e.iter().map(|v| v / s).collect()
}

/// [`softmax_ref`] of every row of `width`.
fn softmax_rows(x: &[f64], keep: &[bool], width: usize) -> Vec<f64> {
    x.chunks(width)
        .zip(keep.chunks(width))
        .flat_map(|(row, keep)| softmax_ref(row, keep))
        .collect()
}

#[test]
fn softmax_with_causal_mask_on_attention_logits() {
    let mut rng = ChaCha12Rng::seed_from_u64(10);
    let (t, total) = (6, 40);
    let x = uniform(&mut rng, t * total, -50.0, 50.0);
    // Query i sees keys 0..=34+i (34 cached positions plus the causal part of the new ones).
    let mask: Vec<bool> = (0..t)
        .flat_map(|i| (0..total).map(move |j| j <= total - t + i))
        .collect();
    let mask_for_run = mask.clone();
    let out = run(&cfg(), vec![encode(fp(), &[t, total], &x)], move |p, s| {
        Ok(vec![softmax(p, &s[0], Some(&mask_for_run))?])
    });
    assert_costs(&out, 19, 30144, 1874496);
    let got = decode_at(&out.outputs[0], 16);
    let want = softmax_rows(&x, &mask, total);
    // exp's bias (3.4e-6 at most) and a few ulps on entries below the row maximum, over a sum >= 1.
    assert_close("softmax (attention)", &got, &want, 1e-4, 0.0);
    for (g, keep) in got.iter().zip(&mask) {
        if !keep {
            assert_eq!(*g, 0.0, "masked entries are exact zeros");
        }
    }
}

#[test]
fn softmax_over_a_vocabulary_row() {
    let mut rng = ChaCha12Rng::seed_from_u64(11);
    let n = 50257;
    let x = uniform(&mut rng, n, -10.0, 12.0);
    let out = run(&cfg(), vec![encode(fp(), &[1, n], &x)], |p, s| {
        Ok(vec![softmax(p, &s[0], None)?])
    });
    let want = softmax_ref(&x, &vec![true; n]);
    // max over 50,257 (16 binary levels of 1 round), exp (8), reciprocal (4), and the product
    // truncated in its own round.
    assert_costs(&out, 29, 5228904, 199424952);
    let got = decode_at(&out.outputs[0], 16);
    // A row of one element is 1 whatever its value.
    let single = run(
        &cfg(),
        vec![encode(fp(), &[3, 1], &[-40.0, 0.5, 37.0])],
        |p, s| Ok(vec![softmax(p, &s[0], None)?]),
    );
    assert_close(
        "softmax (rows of 1)",
        &decode_at(&single.outputs[0], 16),
        &[1.0; 3],
        2.0 * ulp(),
        0.0,
    );
    // Each probability within two ulps; the sum of 50,257 of them (each truncated to floor or
    // floor + 1) within 5e-3 of one, so a scale error of a fraction of a percent fails.
    assert_close("softmax (vocabulary)", &got, &want, 2.0 * ulp(), 0.0);
    let total: f64 = got.iter().sum();
    println!("softmax (vocabulary): probabilities sum to {total}");
    assert!((total - 1.0).abs() < 5e-3, "probabilities sum to {total}");
}

/// LayerNorm in f64 over rows of `d`, eps = 1e-5.
fn layernorm_ref(x: &[f64], d: usize, gamma: &[f64], beta: &[f64]) -> Vec<f64> {
    x.chunks(d)
        .flat_map(|row| {
            let mean = row.iter().sum::<f64>() / d as f64;
            let var = row.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / d as f64;
            row.iter()
                .enumerate()
                .map(move |(i, v)| (v - mean) / (var + 1e-5).sqrt() * gamma[i] + beta[i])
        })
        .collect()
}

/// Rows of `d` around 3 with variances 1e-3 .. 1e6 (past the 1e5 an earlier LayerNorm was limited
/// to) and a constant row (variance 0: eps alone); (values, rows).
fn rows_over_variances(rng: &mut ChaCha12Rng, d: usize) -> (Vec<f64>, usize) {
    let scales = [0.03, 0.3, 1.0, 10.0, 100.0, 1000.0, 0.0];
    let mut x = Vec::new();
    for s in scales {
        x.extend(uniform(rng, d, -1.7, 1.7).iter().map(|v| v * s + 3.0));
    }
    (x, scales.len())
}

#[test]
fn layernorm_over_variances_from_0_to_1e6() {
    let mut rng = ChaCha12Rng::seed_from_u64(12);
    let d = 64;
    let (x, rows) = rows_over_variances(&mut rng, d);
    let gamma = uniform(&mut rng, d, 0.5, 1.5);
    let beta = uniform(&mut rng, d, -0.2, 0.2);
    let out = run(
        &cfg(),
        vec![
            encode(fp(), &[rows, d], &x),
            encode(fp(), &[d], &gamma),
            encode(fp(), &[d], &beta),
        ],
        |p, s| Ok(vec![layernorm(p, &s[0], &s[1], &s[2], 1e-5)?]),
    );
    let want = layernorm_ref(&x, d, &gamma, &beta);
    // Outputs are O(1); the input's own rounding (half an ulp over a standard deviation of 0.03)
    // dominates for the smallest variance: 1.5e-5 / 0.03 * 1.7 ~ 1e-3.
    assert_close(
        "layernorm",
        &decode_at(&out.outputs[0], 16),
        &want,
        1.5e-3,
        0.0,
    );
    assert_costs(&out, 5, 64512, 3563000);
}

/// LayerNorm's normalisation (no gain, no shift) in f64 over rows of `d`, eps = 1e-5.
fn normalised_ref(x: &[f64], d: usize) -> Vec<f64> {
    layernorm_ref(x, d, &vec![1.0; d], &vec![0.0; d])
}

#[test]
fn layernorm_and_the_next_product_in_five_rounds() {
    let mut rng = ChaCha12Rng::seed_from_u64(15);
    let (d, n) = (64, 24);
    // The residual stream given at 2f bits, as the secure forward hands it on.
    let (x, rows) = rows_over_variances(&mut rng, d);
    let gamma = uniform(&mut rng, d, 0.5, 1.5);
    let w = uniform(&mut rng, d * n, -0.3, 0.3);
    // The gain folded into the weight by its owner, as the secure forward does.
    let folded: Vec<f64> = (0..d * n).map(|i| gamma[i / n] * w[i]).collect();
    let out = run(
        &cfg(),
        vec![at_2f(&[rows, d], &x), encode(fp(), &[d, n], &folded)],
        |p, s| {
            let w = protocols::prepare_weight(p, &s[1])?;
            let at_f =
                protocols::layernorm_matmul::layernorm_matmul_at(p, &s[0], 16, &w, 16, 1e-5)?;
            let at_2f =
                protocols::layernorm_matmul::layernorm_matmul_at(p, &s[0], 16, &w, 32, 1e-5)?;
            Ok(vec![at_f.0, at_f.1, at_2f.0])
        },
    );
    // The reference runs on the inputs as encoded, so that only the protocol's own error counts:
    // the series' 2.5e-5 relative error of 1/sqrt scales each output, plus a few ulps of rounding.
    let xe: Vec<f64> = x
        .iter()
        .map(|v| (v * 2f64.powi(32)).round() / 2f64.powi(32))
        .collect();
    let normed = normalised_ref(&xe, d);
    let we = encoded(&folded);
    let want = matmul_f64(&normed, &we, rows, d, n);
    let scale: Vec<f64> = {
        let abs_normed: Vec<f64> = normed.iter().map(|v| v.abs()).collect();
        let abs_w: Vec<f64> = we.iter().map(|v| v.abs()).collect();
        matmul_f64(&abs_normed, &abs_w, rows, d, n)
    };
    for (name, got, bits) in [
        ("layernorm and product", &out.outputs[0], 16),
        ("layernorm and product at 2f", &out.outputs[2], 32),
    ] {
        let got = decode_at(got, bits);
        let mut worst = 0f64;
        for (i, ((g, w), s)) in got.iter().zip(&want).zip(&scale).enumerate() {
            let bound = 3e-5 * s + 4.0 * ulp();
            assert!(
                (g - w).abs() <= bound,
                "{name}[{i}]: got {g}, want {w} (bound {bound:.2e})"
            );
            worst = worst.max((g - w).abs() / bound);
        }
        println!("{name}: worst error {worst:.2} of its bound");
    }
    // The residual stream back at f bits: floor(x 2^16) or one more.
    for (got, raw) in out.outputs[1]
        .data()
        .iter()
        .zip(at_2f(&[rows, d], &x).data())
    {
        let diff = (*got as i64).wrapping_sub((*raw as i64) >> 16);
        assert!(diff == 0 || diff == 1, "residual truncation off by {diff}");
    }
    // Two calls after the weight's preparation (1 round): 5 rounds each.
    assert_costs(&out, 11, 79600, 7026096);
    // An eps so small that Q's range cannot be encoded is refused before any round.
    let check = protocols::layernorm_matmul::check_layernorm_matmul;
    for d in [64, 128, 192, 768, 1024, 1280, 1600] {
        assert!(
            check(d, 16, 1e-5).is_ok(),
            "GPT-2 widths take the fused path: {d}"
        );
    }
    assert!(check(768, 16, 1e-12).is_err());
}

/// Rounds of one call over `rows` rows.
fn rounds_for(rows: usize, which: &'static str) -> u64 {
    let mut rng = ChaCha12Rng::seed_from_u64(13);
    let d = 32;
    let x = uniform(&mut rng, rows * d, -3.0, 3.0);
    let w = uniform(&mut rng, d * d, -0.1, 0.1);
    let ones = vec![1.0; d];
    let inputs = vec![
        encode(fp(), &[rows, d], &x),
        encode(fp(), &[d, d], &w),
        encode(fp(), &[d], &ones),
    ];
    let out = run(&cfg(), inputs, move |p, s| {
        let y = match which {
            "matmul" => protocols::fixed_matmul(p, &s[0], &s[1])?,
            "gelu" => gelu(p, &s[0])?,
            "softmax" => softmax(p, &s[0], None)?,
            "layernorm" => layernorm(p, &s[0], &s[2], &s[2].map(|_| 0), 1e-5)?,
            "layernorm_matmul" => {
                let w = protocols::prepare_weight(p, &s[1])?;
                protocols::layernorm_matmul::layernorm_matmul_at(p, &s[0], 0, &w, 16, 1e-5)?.0
            }
            "max" => max_last(p, &s[0])?.0,
            "matmul_wide" => {
                let w = protocols::prepare_weight_wide(p, &s[1])?;
                protocols::matmul_weight_truncating(p, &s[0], &w)?
            }
            _ => unreachable!(),
        };
        Ok(vec![y])
    });
    out.client.rounds
}

#[test]
fn rounds_do_not_depend_on_the_number_of_rows() {
    for which in [
        "matmul",
        "gelu",
        "softmax",
        "layernorm",
        "layernorm_matmul",
        "max",
        "matmul_wide",
    ] {
        let one = rounds_for(1, which);
        let sixteen = rounds_for(16, which);
        println!("{which}: {one} rounds");
        assert_eq!(
            one, sixteen,
            "{which}: 1 row {one} rounds, 16 rows {sixteen}"
        );
    }
}

#[test]
fn square_opens_half_of_a_product() {
    let mut rng = ChaCha12Rng::seed_from_u64(14);
    let x = uniform(&mut rng, 1000, -100.0, 100.0);
    let out = run(&cfg(), vec![encode(fp(), &[1000], &x)], |p, s| {
        Ok(vec![protocols::square(p, &s[0])?])
    });
    // At 2f fractional bits the square is exact in the ring: X * X of the encoded input.
    let input = encode(fp(), &[1000], &x);
    assert_eq!(out.outputs[0], input.mul(&input).unwrap());
    assert_eq!(
        (
            out.client.rounds,
            out.client.bytes_sent,
            out.server.dealer_bytes
        ),
        (1, 8000, 8000)
    );
}

#[test]
fn masked_products_truncate_their_inputs_in_the_same_round() {
    // Operands anywhere below 2^61, shifts from 0 to 61 (the b_u b_v cross term is needed once the
    // shifts add up past 64), against exact integer arithmetic: each truncated operand is
    // floor(x / 2^s) or one more, and the product is exact in the ring for those operands.
    let mut rng = ChaCha12Rng::seed_from_u64(15);
    let n = 2000;
    let big = |rng: &mut ChaCha12Rng| -> Vec<i64> {
        uniform(rng, n, -1.0, 1.0)
            .iter()
            .map(|u| (u * 2f64.powi(60)) as i64)
            .collect()
    };
    let (xs, ys) = (big(&mut rng), big(&mut rng));
    let tensor = |v: &[i64]| RingTensor::new(&[n], v.iter().map(|&x| x as u64).collect()).unwrap();
    for (su, sv) in [
        (0, 0),
        (16, 0),
        (0, 16),
        (16, 16),
        (40, 30),
        (33, 33),
        (61, 1),
        (1, 61),
    ] {
        let out = run(&cfg(), vec![tensor(&xs), tensor(&ys)], move |p, s| {
            let mut round = protocols::Round::new();
            let product = round.mul(
                p,
                protocols::Operand::truncated(&s[0], su),
                protocols::Operand::truncated(&s[1], sv),
            )?;
            let square = round.square(p, protocols::Operand::truncated(&s[0], su))?;
            let truncated = round.truncate(p, &s[1], sv.max(1))?;
            let mut out = round.run(p)?;
            Ok(vec![
                out.take(product),
                out.take(square),
                out.take(truncated),
            ])
        });
        assert_costs(&out, 1, 8 * 4 * n as u64, out.server.dealer_bytes);
        let within = |got: u64, x: i64, s: u32| -> bool {
            let a = x >> s;
            got as i64 == a || (s > 0 && got as i64 == a + 1)
        };
        for i in 0..n {
            let (a, b) = (xs[i] >> su, ys[i] >> sv);
            let steps = |s: u32| if s > 0 { vec![0, 1] } else { vec![0] };
            let products: Vec<u64> = steps(su)
                .iter()
                .flat_map(|i| steps(sv).into_iter().map(move |j| (i, j)))
                .map(|(i, j)| ((a + i) as u64).wrapping_mul((b + j) as u64))
                .collect();
            let squares: Vec<u64> = steps(su)
                .iter()
                .map(|i| ((a + i) as u64).wrapping_mul((a + i) as u64))
                .collect();
            let (p, q, t) = (
                out.outputs[0].data()[i],
                out.outputs[1].data()[i],
                out.outputs[2].data()[i],
            );
            assert!(products.contains(&p), "shifts ({su}, {sv}): product {i}");
            assert!(squares.contains(&q), "shift {su}: square {i}");
            assert!(within(t, ys[i], sv.max(1)), "shift {sv}: truncation {i}");
        }
    }
}

#[test]
fn truncating_products_are_exact_in_z_2_128() {
    // Products truncated in their own round: operands up to the domain's 2^61 with input shifts,
    // output shifts from 1 to 64, against exact 128-bit arithmetic. Each operand is floor(x / 2^s)
    // or one more; the result is floor(T_u T_v / 2^t) or one more, in the low 64 bits. Products
    // stay below 2^92 (a local truncation fails with probability |product| / 2^128: 2^-36 here).
    let mut rng = ChaCha12Rng::seed_from_u64(16);
    let n = 2000;
    for (su, sv, t) in [
        (0, 0, 16),
        (16, 16, 16),
        (0, 30, 1),
        (45, 20, 64),
        (61, 0, 33),
        (33, 33, 40),
    ] {
        let raw = |rng: &mut ChaCha12Rng, s: u32| -> Vec<i64> {
            let bits = (46 + s).min(60) as i32;
            let mut v: Vec<i64> = uniform(rng, n - 2, -1.0, 1.0)
                .iter()
                .map(|u| (u * 2f64.powi(bits)) as i64)
                .collect();
            // The edges of the domain where the shift keeps the product small.
            let edge = if s >= 15 { (1i64 << 61) - 1 } else { 1 << bits };
            v.extend([edge, -edge]);
            v
        };
        let (xs, ys) = (raw(&mut rng, su), raw(&mut rng, sv));
        let tensor =
            |v: &[i64]| RingTensor::new(&[n], v.iter().map(|&x| x as u64).collect()).unwrap();
        let out = run(&cfg(), vec![tensor(&xs), tensor(&ys)], move |p, s| {
            let mut round = protocols::Round::new();
            let (u, v) = (
                protocols::Operand::truncated(&s[0], su),
                protocols::Operand::truncated(&s[1], sv),
            );
            let product = round.mul_truncating(p, u, v, t)?;
            let square = round.square_truncating(p, u, t)?;
            // x as rows of 10 times one factor per row, the first n / 10 values of y.
            let rows = s[0].clone().reshape(&[n / 10, 10])?;
            let factors = RingTensor::new(&[n / 10, 1], s[1].data()[..n / 10].to_vec())?;
            let by_rows = round.mul_truncating_rows(
                p,
                protocols::Operand::truncated(&rows, su),
                protocols::Operand::truncated(&factors, sv),
                t,
            )?;
            let mut out = round.run(p)?;
            Ok(vec![out.take(product), out.take(square), out.take(by_rows)])
        });
        // One round; x, y, x again, then x and the n / 10 factors opened; 128-bit dealer words:
        // a and m per operand and 4 cross terms for each product, a, m, a^2 and a m for the square.
        assert_costs(
            &out,
            1,
            8 * (4 * n + n / 10) as u64,
            16 * (18 * n + 2 * n / 10) as u64,
        );
        let operand = |x: i64, s: u32| -> Vec<i128> {
            let a = (x >> s) as i128;
            if s > 0 {
                vec![a, a + 1]
            } else {
                vec![a]
            }
        };
        let allowed = |z: i128| -> [u64; 2] { [(z >> t) as u64, ((z >> t) + 1) as u64] };
        for i in 0..n {
            let (a, b) = (operand(xs[i], su), operand(ys[i], sv));
            let products: Vec<u64> = a
                .iter()
                .flat_map(|x| b.iter().flat_map(move |y| allowed(x * y)))
                .collect();
            let squares: Vec<u64> = a.iter().flat_map(|x| allowed(x * x)).collect();
            let (p, q) = (out.outputs[0].data()[i], out.outputs[1].data()[i]);
            assert!(
                products.contains(&p),
                "shifts ({su}, {sv}, {t}): product {i}: {p:#x} not in {products:x?} for {} {}",
                xs[i],
                ys[i]
            );
            assert!(squares.contains(&q), "shifts ({su}, {t}): square {i}");
            let row_factor = operand(ys[i / 10], sv);
            let by_rows: Vec<u64> = a
                .iter()
                .flat_map(|x| row_factor.iter().flat_map(move |y| allowed(x * y)))
                .collect();
            let r = out.outputs[2].data()[i];
            assert!(
                by_rows.contains(&r),
                "shifts ({su}, {sv}, {t}): row product {i}"
            );
        }
    }
    // Output shifts outside 1..=64 are refused.
    for t in [0, 65] {
        let refused = post::mpc::run_two_party(&cfg(), move |p| {
            let x = RingTensor::zeros(&[2]);
            protocols::Round::new().mul_truncating(
                p,
                protocols::Operand::plain(&x),
                protocols::Operand::plain(&x),
                t,
            )?;
            Ok(())
        });
        assert!(refused.is_err(), "shift {t} accepted");
    }
}

/// Reals encoded at 2f = 32 fractional bits: a product's output before its truncation.
fn at_2f(shape: &[usize], xs: &[f64]) -> RingTensor {
    let data = xs
        .iter()
        .map(|v| (v * 2f64.powi(32)).round() as i64 as u64)
        .collect();
    RingTensor::new(shape, data).unwrap()
}

#[test]
fn inputs_awaiting_truncation_cost_no_extra_round() {
    // GeLU, exp, softmax and LayerNorm given x at 2f bits (the secure forward's matmul outputs)
    // meet the bounds of their f-bit tests above in the same number of rounds: the truncation
    // happens inside their first opening.
    let mut rng = ChaCha12Rng::seed_from_u64(42);
    let mut x = uniform(&mut rng, 3000, -20.0, 20.0);
    // GeLU's domain at 2f bits: |x| < 2^13.
    x.extend([-4.0, -2.0, 2.0, 4.0, 0.0, -100.0, 100.0, -8100.0, 8100.0]);
    x.extend(just_below_cut_offs());
    let n = x.len();
    let out = run(&cfg(), vec![at_2f(&[n], &x)], |p, s| {
        Ok(vec![protocols::gelu::gelu_at(p, &s[0], 16)?])
    });
    let want: Vec<f64> = x.iter().map(|&v| gelu_ref(v)).collect();
    let got = decode_at(&out.outputs[0], 16);
    assert_close("gelu at 2f", &got, &want, 1e-4 + 12.0 * ulp(), 0.0);
    assert_eq!(out.client.rounds, 4);

    let z = uniform(&mut rng, 3000, -100.0, 0.0);
    let out = run(&cfg(), vec![at_2f(&[3000], &z)], |p, s| {
        Ok(vec![protocols::exp::exp_at(p, &s[0], 16)?])
    });
    let want: Vec<f64> = z.iter().map(|v| v.exp()).collect();
    let got = decode_at(&out.outputs[0], 16);
    assert_close("exp at 2f", &got, &want, 3.4e-6 + 2.0 * ulp(), 0.0);
    assert_eq!(out.client.rounds, 8);

    let (t, total) = (6, 40);
    let scores = uniform(&mut rng, t * total, -50.0, 50.0);
    let mask: Vec<bool> = (0..t)
        .flat_map(|i| (0..total).map(move |j| j <= total - t + i))
        .collect();
    let mask_for_run = mask.clone();
    let out = run(&cfg(), vec![at_2f(&[t, total], &scores)], move |p, s| {
        Ok(vec![protocols::softmax::softmax_at(
            p,
            &s[0],
            16,
            Some(&mask_for_run),
        )?])
    });
    let want = softmax_rows(&scores, &mask, total);
    let got = decode_at(&out.outputs[0], 16);
    assert_close("softmax at 2f", &got, &want, 1e-4, 0.0);
    assert_eq!(
        out.client.rounds, 19,
        "as softmax_with_causal_mask_on_attention_logits"
    );

    let d = 64;
    let mut x = Vec::new();
    for s in [0.3, 10.0, 1000.0] {
        x.extend(uniform(&mut rng, d, -1.7, 1.7).iter().map(|v| v * s + 3.0));
    }
    let rows = x.len() / d;
    let gamma = uniform(&mut rng, d, 0.5, 1.5);
    let beta = uniform(&mut rng, d, -0.2, 0.2);
    let out = run(
        &cfg(),
        vec![
            at_2f(&[rows, d], &x),
            encode(fp(), &[d], &gamma),
            encode(fp(), &[d], &beta),
        ],
        |p, s| {
            let (y, input) = protocols::layernorm::layernorm_at(p, &s[0], 16, &s[1], &s[2], 1e-5)?;
            Ok(vec![y, input])
        },
    );
    let want = layernorm_ref(&x, d, &gamma, &beta);
    assert_close(
        "layernorm at 2f",
        &decode_at(&out.outputs[0], 16),
        &want,
        1.5e-3,
        0.0,
    );
    assert_eq!(out.client.rounds, 5);
    // The residual stream comes back truncated to f bits: floor(x 2^16) or one more.
    let input = at_2f(&[rows, d], &x);
    for (got, raw) in out.outputs[1].data().iter().zip(input.data()) {
        let diff = (*got as i64).wrapping_sub((*raw as i64) >> 16);
        assert!(diff == 0 || diff == 1, "residual truncation off by {diff}");
    }
}

/// softmax(scores) V against cached value rows, as attention forms it: heads 2, dh 8, 34 cached
/// rows and 6 new ones, causal mask, scores at 2f bits. `fused`: [`softmax_values_at`] (the
/// product in softmax's rounds); otherwise softmax, then the product, then its truncation.
fn attention_values(fused: bool) -> (Outcome, Vec<f64>) {
    let mut rng = ChaCha12Rng::seed_from_u64(12);
    let (heads, dh, past, t) = (2, 8, 34, 6);
    let (width, total) = (heads * dh, past + t);
    let values = uniform(&mut rng, total * width, -4.0, 4.0);
    let scores = uniform(&mut rng, heads * t * total, -30.0, 30.0);
    let mask: Vec<bool> = (0..heads * t)
        .flat_map(|hi| (0..total).map(move |j| j <= past + hi % t))
        .collect();
    let mask_for_run = mask.clone();
    let out = run(
        &cfg(),
        vec![
            at_2f(&[heads, t, total], &scores),
            encode(fp(), &[total, width], &values),
        ],
        move |p, s| {
            let mut rows = PreparedRows::new(p, width, heads)?;
            rows.append(p, &s[1].narrow_rows(0, past)?)?;
            let new = s[1].narrow_rows(past, t)?;
            let mask = Some(mask_for_run.as_slice());
            let out = if fused {
                softmax_values_at(p, &s[0], 16, mask, &mut rows, &new)?
            } else {
                let probs = protocols::softmax::softmax_at(p, &s[0], 16, mask)?;
                let o = protocols::append_and_multiply(p, &mut rows, &new, &probs, false)?;
                protocols::truncate(p, &o, 16)?
            };
            Ok(vec![out])
        },
    );
    let probs = softmax_rows(&scores, &mask, total);
    let v = encoded(&values);
    let mut want = Vec::with_capacity(heads * t * dh);
    for h in 0..heads {
        for i in 0..t {
            let row = &probs[(h * t + i) * total..(h * t + i + 1) * total];
            for c in 0..dh {
                want.push((0..total).map(|j| row[j] * v[j * width + h * dh + c]).sum());
            }
        }
    }
    (out, want)
}

#[test]
fn softmax_times_cached_values_in_softmax_rounds() {
    let (fused, want) = attention_values(true);
    let (apart, _) = attention_values(false);
    // exp's errors of an ulp or two on each e_j, times values below 4, over S >= 1: at most
    // 2.2e-4 over 100 runs (each with fresh dealer seeds), as apart, where each P_j is also
    // rounded to f bits before it meets V (1.6e-4 to 2.5e-4).
    let (got, got_apart) = (
        decode_at(&fused.outputs[0], 16),
        decode_at(&apart.outputs[0], 16),
    );
    assert_close("softmax V", &got, &want, 4e-4, 0.0);
    assert_close("softmax, then V", &got_apart, &want, 1e-3, 0.0);
    // 1 round filling the cache, then softmax's 19 (as softmax_at on these scores): the product
    // by the values opens with the reciprocal's grid; apart it takes 2 rounds more.
    assert_eq!(fused.client.rounds, 1 + 19);
    assert_eq!(apart.client.rounds, 1 + 19 + 2);
    assert_costs(&fused, 20, 66176, 3724416);
}
