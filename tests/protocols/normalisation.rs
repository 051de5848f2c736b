//! LayerNorm, alone and fused with the next product.

use super::*;

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
    assert_costs(&out, 5, 46872, 158480);
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
    assert_costs(&out, 11, 44320, 217056);
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

/// RMSNorm (no gain) in f64 over rows of `d`: x / sqrt(mean(x^2) + eps).
fn rms_normalised_ref(x: &[f64], d: usize, eps: f64) -> Vec<f64> {
    x.chunks(d)
        .flat_map(|row| {
            let ms = row.iter().map(|v| v * v).sum::<f64>() / d as f64;
            row.iter().map(move |v| v / (ms + eps).sqrt())
        })
        .collect()
}

#[test]
fn rmsnorm_and_the_next_product_in_five_rounds() {
    use protocols::layernorm_matmul::{norm_matmul_at, NormKind};
    let mut rng = ChaCha12Rng::seed_from_u64(26);
    let (d, n, eps) = (64, 24, 1e-6);
    // Mean squares from 1e-3 to 1e6, centred rows and one offset row (LLaMA's residual stream at
    // 2f bits), and a zero row (eps alone).
    let mut x = Vec::new();
    for s in [0.03, 0.3, 1.0, 10.0, 100.0, 1000.0] {
        x.extend(uniform(&mut rng, d, -1.7, 1.7).iter().map(|v| v * s));
    }
    x.extend(uniform(&mut rng, d, -1.0, 1.0).iter().map(|v| v + 5.0));
    x.extend(vec![0.0; d]);
    let rows = x.len() / d;
    let gamma = uniform(&mut rng, d, 0.5, 1.5);
    let w = uniform(&mut rng, d * n, -0.3, 0.3);
    let folded: Vec<f64> = (0..d * n).map(|i| gamma[i / n] * w[i]).collect();
    let out = run(
        &cfg(),
        vec![at_2f(&[rows, d], &x), encode(fp(), &[d, n], &folded)],
        move |p, s| {
            let w = protocols::prepare_weight(p, &s[1])?;
            let at_f = norm_matmul_at(p, &s[0], 16, &w, 16, eps, NormKind::Rms, None)?;
            let at_2f = norm_matmul_at(p, &s[0], 16, &w, 32, eps, NormKind::Rms, None)?;
            Ok(vec![at_f.0, at_2f.0])
        },
    );
    let xe: Vec<f64> = x
        .iter()
        .map(|v| (v * 2f64.powi(32)).round() / 2f64.powi(32))
        .collect();
    let normed = rms_normalised_ref(&xe, d, eps);
    let we = encoded(&folded);
    let want = matmul_f64(&normed, &we, rows, d, n);
    let abs_normed: Vec<f64> = normed.iter().map(|v| v.abs()).collect();
    let abs_w: Vec<f64> = we.iter().map(|v| v.abs()).collect();
    let scale = matmul_f64(&abs_normed, &abs_w, rows, d, n);
    for (name, got, bits) in [
        ("rmsnorm and product", &out.outputs[0], 16),
        ("rmsnorm and product at 2f", &out.outputs[1], 32),
    ] {
        let got = decode_at(got, bits);
        let mut worst = 0f64;
        for (i, ((g, w), s)) in got.iter().zip(&want).zip(&scale).enumerate() {
            // As LayerNorm's: 1/sqrt's 2.5e-5 relative error scales each output, plus rounding.
            let bound = 3e-5 * s + 4.0 * ulp();
            assert!(
                (g - w).abs() <= bound,
                "{name}[{i}]: got {g}, want {w} (bound {bound:.2e})"
            );
            worst = worst.max((g - w).abs() / bound);
        }
        println!("{name}: worst error {worst:.2} of its bound");
    }
    // The weight's preparation (1 round), then 5 rounds a call.
    assert_costs(&out, 11, 48896, 248064);
}

#[test]
fn rotary_embeddings_ride_in_the_norms_last_truncation() {
    use protocols::layernorm_matmul::{norm_matmul_at, NormKind};
    use protocols::rotary::{Rotary, ROTARY_BITS};
    let mut rng = ChaCha12Rng::seed_from_u64(27);
    // Rows [t, 3 heads of 8] at positions 40..46: two rotated heads (a query and a key head) and
    // one left alone (a value head), LLaMA's theta.
    let (d, dh, past, t, theta) = (64, 8, 40, 6, 10000.0);
    let n = 3 * dh;
    let x = uniform(&mut rng, t * d, -2.0, 2.0);
    let w = uniform(&mut rng, d * n, -0.3, 0.3);
    let rotary = Rotary::new(dh, theta).unwrap();
    let out = run(
        &cfg(),
        vec![at_2f(&[t, d], &x), encode(fp(), &[d, n], &w)],
        move |p, s| {
            let w = protocols::prepare_weight(p, &s[1])?;
            let mix = rotary.mix(past, t, n, 2)?;
            let (y, _) = norm_matmul_at(
                p,
                &s[0],
                16,
                &w,
                16,
                1e-6,
                NormKind::Rms,
                Some((mix, ROTARY_BITS)),
            )?;
            Ok(vec![y])
        },
    );
    let xe: Vec<f64> = x
        .iter()
        .map(|v| (v * 2f64.powi(32)).round() / 2f64.powi(32))
        .collect();
    let plain = matmul_f64(&rms_normalised_ref(&xe, d, 1e-6), &encoded(&w), t, d, n);
    // Hugging Face's rotate_half: x cos + [-x2, x1] sin per head, angle pos theta^(-2i / dh).
    let mut want = plain.clone();
    for r in 0..t {
        for h in 0..2 {
            for i in 0..dh / 2 {
                let angle = (past + r) as f64 * f64::powf(theta, -((2 * i) as f64) / dh as f64);
                let (c, s) = (angle.cos(), angle.sin());
                let (a, b) = (r * n + h * dh + i, r * n + h * dh + i + dh / 2);
                want[a] = plain[a] * c - plain[b] * s;
                want[b] = plain[b] * c + plain[a] * s;
            }
        }
    }
    // The norm's error (3e-5 relative of outputs up to ~3), cos and sin's rounding (2^-21 each),
    // and the output's ulps.
    assert_close(
        "rotated rmsnorm product",
        &decode_at(&out.outputs[0], 16),
        &want,
        1e-4 + 4.0 * ulp(),
        0.0,
    );
    // The rotation adds no round: the weight's preparation, then the norm's 5.
    assert_eq!(out.client.rounds, 6);
}
