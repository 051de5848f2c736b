//! Less-than-zero, comparison keys (DCF), ReLU/select, max and argmax.

use super::*;

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
