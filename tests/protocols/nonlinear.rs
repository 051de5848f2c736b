//! Exp, GeLU, reciprocal and rsqrt.

use super::*;

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
    assert_costs(&out, 8, 704616, 10184904);
}

#[test]
fn reciprocal_and_rsqrt_over_wide_ranges() {
    let mut rng = ChaCha12Rng::seed_from_u64(8);
    // One key and one opening per value for all 176 grid points (each point one evaluation).
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
    assert_costs(&out, 4, 25600, 659200);

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
    assert_costs(&out, 4, 25600, 659200);
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
    assert_costs(&out, 4, 972600, 9531480);
}

fn silu_ref(x: f64) -> f64 {
    x / (1.0 + (-x).exp())
}

/// SiLU's inputs: LLaMA's gate values (mostly within +-20), its cut-offs (+-2.375, +-12) and the
/// values just left of them, where a comparison may pick the piece on the right, and the tails.
fn silu_inputs(rng: &mut ChaCha12Rng) -> Vec<f64> {
    let mut x = uniform(rng, 4000, -20.0, 20.0);
    x.extend(uniform(rng, 4000, -5.0, 5.0));
    x.extend([
        -12.0, -2.375, 2.375, 12.0, 0.0, -100.0, 100.0, -8000.0, 8000.0,
    ]);
    for t in [-12.0, -2.375, 2.375, 12.0] {
        x.extend((1..=16).map(|j| t - j as f64 / 4096.0));
        x.extend((1..=8).map(|j| t - j as f64 / 64.0));
    }
    x
}

#[test]
fn silu_matches_f64_and_gates_a_product() {
    let mut rng = ChaCha12Rng::seed_from_u64(26);
    let x = silu_inputs(&mut rng);
    let n = x.len();
    let up = uniform(&mut rng, n, -4.0, 4.0);
    let want: Vec<f64> = x.iter().map(|&v| silu_ref(v)).collect();
    // Fit error 7.5e-5 (the sides), 7.4e-5 past T; the input's half ulp moves SiLU by at most
    // 1.1 times that, and the rounding of the powers and of the output adds a few ulps.
    let bound = 7.5e-5 + 4.0 * ulp();

    let out = run(&cfg(), vec![encode(fp(), &[n], &x)], |p, s| {
        Ok(vec![protocols::silu::silu(p, &s[0])?])
    });
    assert_close("silu", &decode_at(&out.outputs[0], 16), &want, bound, 0.0);
    assert_costs(&out, 4, 1815520, 34300360);

    // The gate and up given at 2f bits, as the projections before them hand them on.
    let at_2f = |v: &[f64]| {
        let words = v.iter().map(|x| (x * 2f64.powi(32)).round() as i64 as u64);
        RingTensor::new(&[n], words.collect()).unwrap()
    };
    let out = run(&cfg(), vec![at_2f(&x)], |p, s| {
        Ok(vec![protocols::silu::silu_at(p, &s[0], 16)?])
    });
    assert_close(
        "silu at 2f",
        &decode_at(&out.outputs[0], 16),
        &want,
        bound,
        0.0,
    );
    assert_costs(&out, 4, 1815520, 23018200);

    let out = run(&cfg(), vec![at_2f(&x), at_2f(&up)], |p, s| {
        Ok(vec![protocols::silu::silu_mul_at(p, &s[0], &s[1], 16)?])
    });
    let got = decode_at(&out.outputs[0], 16);
    for (i, ((g, w), u)) in got.iter().zip(&want).zip(&up).enumerate() {
        // SiLU's error scaled by |up|, up's rounding (2^-8 ulp) times |SiLU|, the product's.
        let b = bound * u.abs() + ulp() * (w.abs() / 256.0 + 2.0);
        assert!(
            (g - w * u).abs() <= b,
            "silu(g) up [{i}]: got {g}, want {}",
            w * u
        );
    }
    assert_costs(&out, 4, 2334240, 27167960);
}
