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
