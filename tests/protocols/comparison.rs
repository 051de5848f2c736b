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

/// [x < t] for each of `thresholds` from one key and one opening ([`protocols::Round::ltz_thresholds`]),
/// and from one plain comparison of x - t per threshold, in one run.
fn thresholds_and_plain(xs: &[u64], thresholds: &[u64], bits: u32, skip: u32) -> Outcome {
    let n = xs.len();
    let ts = thresholds.to_vec();
    let out = run(
        &cfg(),
        vec![RingTensor::new(&[n], xs.to_vec()).unwrap()],
        move |p, s| {
            let mut round = protocols::Round::new();
            let slots = round.ltz_thresholds(p, &s[0], &ts, bits, skip)?;
            let mut out = round.run(p)?;
            let mut bits_out: Vec<RingTensor> = slots.into_iter().map(|s| out.take(s)).collect();
            // The same comparisons one key each, as the protocols made them before.
            let diffs: Vec<RingTensor> = ts
                .iter()
                .map(|&t| p.add_constant(&s[0], t.wrapping_neg()))
                .collect();
            let mut round = protocols::Round::new();
            let plain = diffs
                .iter()
                .map(|d| round.ltz_coarse(p, d, bits, skip))
                .collect::<Result<Vec<_>, _>>()?;
            let mut out = round.run(p)?;
            bits_out.extend(plain.into_iter().map(|s| out.take(s)));
            Ok(bits_out)
        },
    );
    assert_eq!(out.outputs.len(), 2 * thresholds.len());
    out
}

#[test]
fn one_key_compares_with_many_thresholds_over_the_whole_ring() {
    // Fixed-point values against GeLU's cut-offs and two more, against f64: at each threshold,
    // one and two ulps either side, and far away.
    let fpv = fp();
    let cut_offs = [-4.0, -2.0, 2.0, 4.0, 1000.5, -123.25];
    let mut reals: Vec<f64> = cut_offs
        .iter()
        .flat_map(|&t| [-2.0, -1.0, 0.0, 1.0, 2.0].map(|d| t + d * ulp()))
        .collect();
    let mut rng = ChaCha12Rng::seed_from_u64(42);
    reals.extend(uniform(&mut rng, 500, -1e6, 1e6));
    reals.extend([0.0, 5e8, -5e8]);
    let xs: Vec<u64> = reals.iter().map(|&v| fpv.encode_one(v).unwrap()).collect();
    let ts: Vec<u64> = cut_offs
        .iter()
        .map(|&t| fpv.encode_one(t).unwrap())
        .collect();
    let out = thresholds_and_plain(&xs, &ts, 63, 0);
    for (i, &t) in cut_offs.iter().enumerate() {
        for (j, &x) in reals.iter().enumerate() {
            let want = (fpv.decode_one(xs[j]) < t) as u64;
            assert_eq!(out.outputs[i].data()[j], want, "[{x} < {t}]");
            assert_eq!(out.outputs[6 + i].data()[j], want, "plain [{x} < {t}]");
        }
    }
    // Raw ring values where x - t wraps past 2^63: the comparison is the sign of x - t in the
    // ring, as one comparison of x - t gives it.
    let ts: Vec<u64> = vec![
        0,
        1,
        1 << 62,
        (1u64 << 62).wrapping_neg(),
        i64::MAX as u64,
        1 << 63,
    ];
    let mut xs: Vec<u64> = ts
        .iter()
        .flat_map(|&t| [0u64, 1, 2, u64::MAX, u64::MAX - 1].map(|d| t.wrapping_add(d)))
        .collect();
    // x - t just either side of 2^63 (the wrap) for every t.
    xs.extend(
        ts.iter()
            .flat_map(|&t| [(1u64 << 63) - 1, 1 << 63, (1 << 63) + 1].map(|d| t.wrapping_add(d))),
    );
    xs.extend((0..300).map(|_| rng.random::<u64>()));
    let out = thresholds_and_plain(&xs, &ts, 63, 0);
    for (i, &t) in ts.iter().enumerate() {
        for (j, &x) in xs.iter().enumerate() {
            let want = ((x.wrapping_sub(t) as i64) < 0) as u64;
            assert_eq!(out.outputs[i].data()[j], want, "x {x:#x}, t {t:#x}");
            assert_eq!(
                out.outputs[6 + i].data()[j],
                want,
                "plain: x {x:#x}, t {t:#x}"
            );
        }
    }
    // One opening and one key for all six thresholds, then six of each for the plain ones.
    let n2 = xs.len() as u64;
    let one = 8 + 8 * (3 * 63 + 3);
    assert_costs(&out, 2, 8 * n2 * 7, one * n2 * 7);
}

#[test]
fn one_bounded_coarse_key_compares_with_many_thresholds() {
    // Keys over bits 6..20 against three thresholds: for each, exact on x - t in
    // [-2^20, 2^20 - 2^6] but for x - t in (-2^6, 0), which may read as non-negative, as one
    // comparison of x - t with its own key.
    let ts: Vec<i64> = vec![-1000, 0, 5000];
    let mut xs: Vec<i64> = ts
        .iter()
        .flat_map(|&t| [-65, -64, -63, -1, 0, 1, 63, 64].map(|d| t + d))
        .collect();
    let mut rng = ChaCha12Rng::seed_from_u64(43);
    // Every x - t within the keys' range: x in [-2^20 + 5000, 2^20 - 2^6 - 1000].
    xs.extend((0..1000).map(|_| rng.random_range(-(1i64 << 20) + 5000..(1 << 20) - 1064)));
    xs.extend([-(1i64 << 20) + 5000, (1 << 20) - 1064]);
    let raw = |v: &[i64]| -> Vec<u64> { v.iter().map(|&v| v as u64).collect() };
    let out = thresholds_and_plain(&raw(&xs), &raw(&ts), 20, 6);
    let mut misread = [0usize; 2];
    for (i, &t) in ts.iter().enumerate() {
        for (j, &x) in xs.iter().enumerate() {
            for (k, which) in [(0, "one key"), (1, "plain")] {
                let bit = out.outputs[3 * k + i].data()[j];
                assert!(bit <= 1, "[{x} < {t}] is a bit ({which})");
                if (-63..0).contains(&(x - t)) {
                    misread[k] += (bit == 0) as usize;
                } else {
                    assert_eq!(bit, (x < t) as u64, "[{x} < {t}] ({which})");
                }
            }
        }
    }
    // Each threshold has x - t = -63 and -1 in the window: x - t = -d reads 0 with probability
    // 1 - d/64 (for the one key, alike for the three thresholds, which share its mask).
    println!("misread in the window (one key, plain): {misread:?}");
    let n = xs.len() as u64;
    let one = 8 + 8 * (3 * 14 + 3);
    assert_costs(&out, 2, 8 * n * 4, one * n * 4);
}

#[test]
fn a_coarse_maximum_stays_within_its_levels_of_the_top() {
    // Keys over bits 10..40 of the differences: each level may keep the smaller of two values
    // within 2^10, so the result is one of the row's values and at most 7 * 2^10 below the
    // maximum of 128.
    let mut rng = ChaCha12Rng::seed_from_u64(44);
    let (rows, n) = (40, 128);
    let mut xs: Vec<i64> = (0..rows * n)
        .map(|_| rng.random_range(-(1i64 << 37)..(1 << 37)))
        .collect();
    // Rows of near ties, where the coarse keys misread most.
    for v in xs[..10 * n].iter_mut() {
        *v = 5000 + *v % 3000;
    }
    let data = xs.iter().map(|&v| v as u64).collect();
    let out = run(
        &cfg(),
        vec![RingTensor::new(&[rows, n], data).unwrap()],
        |p, s| Ok(vec![protocols::max::max_value_coarse(p, &s[0], 40, 10)?]),
    );
    let mut below = 0;
    for r in 0..rows {
        let row = &xs[r * n..(r + 1) * n];
        let top = *row.iter().max().unwrap();
        let got = out.outputs[0].data()[r] as i64;
        assert!(row.contains(&got), "row {r}: {got} is one of its values");
        assert!(
            top - got < 7 << 10,
            "row {r}: {got} within 7 * 2^10 of {top}"
        );
        below += (got < top) as usize;
    }
    println!("{below} of {rows} rows kept a value below the maximum");
    assert_eq!(protocols::max::levels(n), 7);
    // 7 levels of 1 round; keys of 30 levels with a two-word payload.
    let pairs = (rows * (n - 1)) as u64;
    assert_costs(&out, 7, 8 * pairs, (16 + 8 * (4 * 30 + 4)) * pairs);
}
