//! Shares, fixed point, Beaver products and truncation.

use super::*;

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
