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
