//! Matrix products on shares: fixed-point matmuls, prepared (masked once) weights and one-round
//! lifted products.

use super::*;

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
fn a_weight_for_client_inputs_multiplies_nothing_else() {
    // The token table's preparation: the server drops W - B (it never multiplies by it), so the
    // weight serves the client's inputs, exactly, and any other product is refused by both.
    let mut rng = ChaCha12Rng::seed_from_u64(13);
    let (m, k, n) = (3, 40, 16);
    let w = uniform(&mut rng, k * n, -0.3, 0.3);
    let x: Vec<u64> = (0..m * k)
        .map(|_| rng.random_range(-3i64..4) as u64)
        .collect();
    let plain = x.clone();
    let out = run(&cfg(), vec![encode(fp(), &[k, n], &w)], move |p, s| {
        let table = protocols::prepare_client_input_weight(p, s[0].clone())?;
        let mine = if p.is_client() {
            RingTensor::new(&[m, k], plain.clone())?
        } else {
            RingTensor::zeros(&[m, k])
        };
        let z = protocols::matmul_weight_client_input(p, &mine, &table)?;
        assert!(protocols::matmul_weight(p, &mine, &table).is_err());
        Ok(vec![z])
    });
    let we = encode(fp(), &[k, n], &w);
    let want: Vec<u64> = (0..m * n)
        .map(|ij| {
            (0..k).fold(0u64, |acc, p| {
                acc.wrapping_add(x[ij / n * k + p].wrapping_mul(we.data()[p * n + ij % n]))
            })
        })
        .collect();
    assert_eq!(out.outputs[0].data(), want.as_slice(), "X W in the ring");
}

#[test]
fn a_weight_larger_than_one_message_is_opened_in_pieces() {
    // 2048 x 2049 words, just past one message of the opening: two rounds, the same bytes, and
    // the products through it as exact as through a small one.
    let mut rng = ChaCha12Rng::seed_from_u64(14);
    let (m, k, n) = (2, 2048, 2049);
    assert!(k * n > post::mpc::party::OPEN_CHUNK_WORDS);
    let w = uniform(&mut rng, k * n, -0.3, 0.3);
    let a = uniform(&mut rng, m * k, -2.0, 2.0);
    let out = run(
        &cfg(),
        vec![encode(fp(), &[m, k], &a), encode(fp(), &[k, n], &w)],
        move |p, s| {
            let before = p.net.total();
            let prepared = protocols::prepare_weight(p, &s[1])?;
            let cost = p.net.total().since(&before);
            assert_eq!(
                (cost.rounds, cost.bytes_sent),
                (2, 8 * (k * n) as u64),
                "W - B in two messages"
            );
            Ok(vec![protocols::fixed_matmul_weight(p, &s[0], &prepared)?])
        },
    );
    let want = matmul_f64(&encoded(&a), &encoded(&w), m, k, n);
    assert_close(
        "matmul_weight",
        &decode_at(&out.outputs[0], 16),
        &want,
        ulp(),
        0.0,
    );
}
