//! Softmax over attention logits and vocabulary rows, and fused with the value product.

use super::*;

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
    assert_costs(&out, 19, 25344, 338112);
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
    assert_costs(&out, 29, 5226792, 71164872);
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
    assert_costs(&fused, 20, 56576, 651648);
}

#[test]
fn softmax_at_the_edges_of_its_score_domain() {
    // Scores up to 2^16 in magnitude (the keys' range) at 2f bits, as attention gives them: rows
    // spanning the whole domain, rows of near ties (where the coarse maximum keeps a value up to
    // 1/2 below the top), and a causal mask whose masked entries lie outside the domain.
    let mut rng = ChaCha12Rng::seed_from_u64(16);
    let (rows, n) = (8, 128);
    let edge = 65535.9;
    let mut x = Vec::with_capacity(rows * n);
    for r in 0..rows {
        let row: Vec<f64> = match r % 4 {
            0 => uniform(&mut rng, n, -edge, edge),
            1 => uniform(&mut rng, n, -0.4, 0.0)
                .iter()
                .map(|v| v + edge)
                .collect(),
            2 => uniform(&mut rng, n, -0.3, 0.3),
            _ => (0..n)
                .map(|j| if j % 2 == 0 { edge } else { -edge })
                .collect(),
        };
        x.extend(row);
    }
    let mask: Vec<bool> = (0..rows * n).map(|i| i % n <= 100 + i / n).collect();
    let mut raw = at_2f(&[rows, n], &x);
    // Masked entries hold anything: here values far outside the domain.
    for (v, &keep) in raw.data_mut().iter_mut().zip(&mask) {
        if !keep {
            *v = 1 << 60;
        }
    }
    let mask_for_run = mask.clone();
    let out = run(&cfg(), vec![raw], move |p, s| {
        Ok(vec![protocols::softmax::softmax_at(
            p,
            &s[0],
            16,
            Some(&mask_for_run),
        )?])
    });
    let got = decode_at(&out.outputs[0], 16);
    let want = softmax_rows(&x, &mask, n);
    // As on attention logits: exp's bias and a few ulps over a sum of at least 1.
    assert_close("softmax (domain edges)", &got, &want, 1e-4, 0.0);
    for (g, keep) in got.iter().zip(&mask) {
        if !keep {
            assert_eq!(*g, 0.0, "masked entries are exact zeros");
        }
    }
}
