//! The network layer and the engine's behaviour at its edges: exact byte and round counts, the
//! virtual clock against its formula, TCP carrying the same bytes as the simulation, hang-ups and
//! timeouts, and what the server sees.

use std::time::Duration;

use crate::common::mpc::{decode_at, encode, run, uniform};
use post::mpc::net::{sim_pair, tcp_pair};
use post::mpc::protocols::{self, softmax::softmax};
use post::mpc::{
    run_two_party, EngineConfig, FixedPoint, LinkModel, MpcError, RingTensor, TransportKind,
};
use rand::SeedableRng;
use rand_chacha::ChaCha12Rng;

#[test]
fn link_profiles_parse() {
    assert_eq!(LinkModel::parse("lan").unwrap(), LinkModel::lan());
    assert_eq!(LinkModel::parse("wan").unwrap(), LinkModel::wan());
    let link = LinkModel::parse("bw=200mbps,rtt=40ms").unwrap();
    assert!((link.bandwidth - 25e6).abs() < 1e-6 && (link.rtt - 0.04).abs() < 1e-12);
    for bad in [
        "",
        "bw=fast,rtt=1ms",
        "rtt=1ms",
        "bw=1gbps",
        "bw=1gbps,rtt=1ms,x=2",
        "bw=0mbps,rtt=1ms",
    ] {
        assert!(
            matches!(LinkModel::parse(bad), Err(MpcError::BadConfig(_))),
            "{bad:?} accepted"
        );
    }
}

#[test]
fn virtual_time_of_known_exchanges_equals_the_formula() {
    // 3 rounds of 1000 words each way on rtt 200 ms, 1 MB/s: each round costs 8000/1e6 + 0.1 s.
    let link = LinkModel {
        rtt: 0.2,
        bandwidth: 1e6,
    };
    let (mut a, mut b) = sim_pair(link);
    let peer = std::thread::spawn(move || {
        for _ in 0..3 {
            b.exchange_u64s(&[7u64; 1000]).unwrap();
        }
        b.total()
    });
    for _ in 0..3 {
        a.exchange_u64s(&[5u64; 1000]).unwrap();
    }
    let (ta, tb) = (a.total(), peer.join().unwrap());
    let formula = 3.0 * (8000.0 / 1e6 + 0.1);
    // The clock is the formula plus compute, its own and what the peer's messages carried.
    let compute = ta.compute_time + tb.compute_time;
    for t in [ta, tb] {
        assert_eq!(t.rounds, 3);
        assert_eq!((t.bytes_sent, t.bytes_recv), (24_000, 24_000));
        assert!(
            t.sim_time >= formula - 1e-9 && t.sim_time - formula <= compute + 1e-3,
            "{} vs {formula}",
            t.sim_time
        );
    }
}

#[test]
fn messages_queue_behind_each_other_on_one_direction() {
    let link = LinkModel {
        rtt: 0.0,
        bandwidth: 1e6,
    };
    let (mut a, mut b) = sim_pair(link);
    a.send_u64s(&[1u64; 12_500]).unwrap(); // 0.1 s on the wire
    a.send_u64s(&[1u64; 12_500]).unwrap(); // leaves when the first has gone: arrives at 0.2 s
    b.recv_u64s(12_500).unwrap();
    b.recv_u64s(12_500).unwrap();
    let (t, sender) = (b.total(), a.total());
    assert!(
        t.sim_time >= 0.2 - 1e-9 && t.sim_time < 0.2 + t.compute_time + sender.compute_time + 1e-3,
        "{}",
        t.sim_time
    );
}

#[test]
fn beaver_mul_counts_are_exact_and_tcp_matches_the_simulation() {
    let fp = FixedPoint::default();
    let mut rng = ChaCha12Rng::seed_from_u64(1);
    let x = uniform(&mut rng, 100, -5.0, 5.0);
    let y = uniform(&mut rng, 100, -5.0, 5.0);
    let inputs = vec![encode(fp, &[100], &x), encode(fp, &[100], &y)];
    let mut results = Vec::new();
    for transport in [TransportKind::Sim, TransportKind::Tcp] {
        let cfg = EngineConfig {
            transport,
            link: LinkModel::lan(),
            ..EngineConfig::default()
        };
        let out = run(&cfg, inputs.clone(), |p, s| {
            Ok(vec![protocols::mul(p, &s[0], &s[1])?])
        });
        // One round; each party sends eps and delta: 2 * 100 words.
        for c in [out.client, out.server] {
            assert_eq!(c.rounds, 1);
            assert_eq!((c.bytes_sent, c.bytes_recv), (1600, 1600));
        }
        // Party 0 expands its triple from its seed; party 1 receives only c's correction.
        assert_eq!((out.client.dealer_bytes, out.server.dealer_bytes), (0, 800));
        // One LAN round: the party whose clock was behind waits at least the one-way latency plus
        // the transfer (the other may already be past the peer's send time).
        let waited = out.client.sim_time.max(out.server.sim_time);
        assert!(
            waited >= 0.4e-3 + 1600.0 / LinkModel::lan().bandwidth,
            "{waited}"
        );
        results.push(out.outputs[0].clone());
    }
    assert_eq!(
        results[0], results[1],
        "TCP and the simulation compute the same shares"
    );
    let got = decode_at(&results[0], 32);
    for ((g, a), b) in got.iter().zip(&x).zip(&y) {
        assert!((g - a * b).abs() < 1e-4);
    }
}

#[test]
fn tcp_pair_moves_real_bytes() {
    let (mut a, mut b) = tcp_pair(LinkModel::ideal(), None).unwrap();
    let peer = std::thread::spawn(move || b.exchange_u64s(&[3, 4]).unwrap());
    assert_eq!(a.exchange_u64s(&[1, 2]).unwrap(), vec![3, 4]);
    assert_eq!(peer.join().unwrap(), vec![1, 2]);
}

#[test]
fn a_peer_that_hangs_up_gives_an_error_not_a_deadlock() {
    for transport in [TransportKind::Sim, TransportKind::Tcp] {
        let cfg = EngineConfig {
            transport,
            ..EngineConfig::default()
        };
        let result = run_two_party(&cfg, |p| {
            if p.id == 1 {
                return Ok(()); // the server leaves before the protocol
            }
            let x = RingTensor::zeros(&[10]);
            protocols::mul(p, &x, &x).map(|_| ())
        });
        assert!(
            matches!(result, Err(MpcError::PeerClosed)),
            "{transport:?}: {result:?}"
        );
    }
}

#[test]
fn a_silent_peer_times_out() {
    let cfg = EngineConfig::default();
    let result = run_two_party(&cfg, |p| {
        // The server stays silent 40 times longer than the client waits: a loaded machine that
        // starts the client late must still see a time-out, not the server's hang-up.
        if p.id == 1 {
            std::thread::sleep(Duration::from_millis(2000));
            return Ok(());
        }
        p.net.timeout = Duration::from_millis(50);
        p.net.recv_u64s(1).map(|_| ())
    });
    assert!(matches!(result, Err(MpcError::Timeout(_))), "{result:?}");
}

#[test]
fn shape_mismatches_are_errors() {
    let cfg = EngineConfig::default();
    let result = run_two_party(&cfg, |p| {
        let (x, y) = (RingTensor::zeros(&[2, 3]), RingTensor::zeros(&[3, 2]));
        let elementwise = protocols::mul(p, &x, &y);
        let matmul = protocols::matmul(p, &x, &RingTensor::zeros(&[2, 3]));
        Ok((elementwise.is_err(), matmul.is_err()))
    })
    .unwrap();
    assert_eq!(result.0, (true, true));
    assert!(matches!(
        FixedPoint::default().encode_one(1e12),
        Err(MpcError::OutOfRange { .. })
    ));
}

/// Every byte the server receives while the client's private input is shared and a softmax and a
/// GeLU run on it.
fn server_view(secret: Vec<f64>) -> Vec<u8> {
    let cfg = EngineConfig {
        link: LinkModel::ideal(),
        seed: Some(5),
        ..EngineConfig::default()
    };
    let n = secret.len();
    let (_, view) = run_two_party(&cfg, move |p| {
        p.net.record_transcript();
        let input = if p.is_client() {
            Some(FixedPoint::default().encode(&[4, n / 4], &secret)?)
        } else {
            None
        };
        let x = p.share_input(0, input.as_ref(), &[4, n / 4])?;
        let s = softmax(p, &x, None)?;
        protocols::gelu::gelu(p, &s)?;
        Ok(p.net.take_transcript())
    })
    .unwrap();
    view
}

fn histogram(bytes: &[u8]) -> [f64; 256] {
    let mut h = [0.0; 256];
    bytes.iter().for_each(|&b| h[b as usize] += 1.0);
    h
}

#[test]
fn the_server_sees_uniform_bytes_whatever_the_client_secret() {
    let mut rng = ChaCha12Rng::seed_from_u64(9);
    let a = server_view(uniform(&mut rng, 1024, -30.0, 30.0));
    let b = server_view(vec![0.0; 1024]);
    assert_eq!(a.len(), b.len(), "message sizes never depend on the secret");
    assert!(a.len() > 100_000);
    // Chi-square of each transcript against uniform bytes, 255 dof: critical value 330 at p = 1e-3.
    for (name, view) in [("random secret", &a), ("zero secret", &b)] {
        let expected = view.len() as f64 / 256.0;
        let chi: f64 = histogram(view)
            .iter()
            .map(|c| (c - expected).powi(2) / expected)
            .sum();
        assert!(chi < 330.0, "{name}: chi-square {chi:.1}");
    }
    // Two-sample chi-square between the two transcripts' byte distributions.
    let (ha, hb) = (histogram(&a), histogram(&b));
    let chi: f64 = ha
        .iter()
        .zip(&hb)
        .filter(|(x, y)| *x + *y > 0.0)
        .map(|(x, y)| (x - y).powi(2) / (x + y))
        .sum();
    assert!(
        chi < 330.0,
        "the transcripts' distributions differ: chi-square {chi:.1}"
    );
}

#[test]
fn reveal_to_one_party_and_per_protocol_counters() {
    let cfg = EngineConfig {
        link: LinkModel::ideal(),
        ..EngineConfig::default()
    };
    let (client, server) = run_two_party(&cfg, |p| {
        let fp = FixedPoint::default();
        let secret = if p.is_client() {
            Some(fp.encode(&[2, 8], &[1.5; 16])?)
        } else {
            None
        };
        let x = p.share_input(0, secret.as_ref(), &[2, 8])?;
        softmax(p, &x, None)?;
        let revealed = p.reveal_to(1, &x)?;
        let counters = p.net.counters().clone();
        Ok((revealed, counters))
    })
    .unwrap();
    assert!(client.0.is_none(), "the client asked for nothing");
    let shown = decode_at(server.0.as_ref().unwrap(), 16);
    assert!(shown.iter().all(|v| (v - 1.5).abs() < 1e-9), "{shown:?}");
    // Inclusive counters per label path: the comparison inside the max inside the softmax
    // (one round in each of the three levels of a binary tournament over 8 elements).
    let (softmax_c, ltz_c) = (client.1["softmax"], client.1["softmax/max/ltz"]);
    assert!(
        softmax_c.rounds > ltz_c.rounds && ltz_c.rounds == 3,
        "{softmax_c:?} {ltz_c:?}"
    );
    assert!(client.1.contains_key("softmax/exp") && client.1.contains_key("softmax/reciprocal"));
    assert!(softmax_c.sim_time >= 0.0 && softmax_c.bytes_sent > ltz_c.bytes_sent);
}

/// Each party's share of a dealer triple's first component, and the first share the client sends
/// when it inputs a value (from its private randomness).
fn first_draws(seed: Option<u64>) -> (Vec<u64>, Vec<u64>, Vec<u64>) {
    let cfg = EngineConfig {
        link: LinkModel::ideal(),
        seed,
        ..EngineConfig::default()
    };
    let ((a0, _), (a1, sent)) = run_two_party(&cfg, |p| {
        let triple = p.deal(
            &post::mpc::correlation::Correlation::MulTriple { len: 8 },
            &[&[8], &[8], &[8]],
        )?;
        let input = p.is_client().then(|| RingTensor::zeros(&[8]));
        let received = p.share_input(0, input.as_ref(), &[8])?;
        Ok((triple[0].data().to_vec(), received.data().to_vec()))
    })
    .unwrap();
    (a0, a1, sent)
}

#[test]
fn sessions_without_a_seed_draw_fresh_independent_randomness() {
    let (a0, a1, sent) = first_draws(None);
    let (b0, b1, resent) = first_draws(None);
    // Fresh OS seeds: both parties' dealer streams and the client's private stream change.
    assert_ne!(a0, b0);
    assert_ne!(a1, b1);
    assert_ne!(sent, resent);
    // The two parties' streams are not one stream.
    assert_ne!(a0, a1);
    // A simulation seed reproduces everything (and is documented as not secure).
    assert_eq!(first_draws(Some(3)), first_draws(Some(3)));
}

#[test]
fn truncation_by_zero_or_62_bits_is_refused() {
    for shift in [0u32, 62, 64, 100] {
        let result = run_two_party(&EngineConfig::default(), move |p| {
            protocols::truncate(p, &RingTensor::zeros(&[4]), shift).map(|_| ())
        });
        assert!(
            matches!(result, Err(MpcError::BadConfig(ref m)) if m.contains("shift")),
            "shift {shift}: {result:?}"
        );
    }
}

#[test]
fn a_stalled_peer_inside_a_protocol_is_reported_with_the_phase() {
    let cfg = EngineConfig {
        timeout: Duration::from_millis(100),
        ..EngineConfig::default()
    };
    let result = run_two_party(&cfg, |p| {
        if p.id == 1 {
            // Silent for 30 times the client's patience, then gone.
            std::thread::sleep(Duration::from_millis(3000));
            return Ok(());
        }
        let (x, gamma) = (RingTensor::zeros(&[2, 8]), RingTensor::zeros(&[8]));
        protocols::layernorm::layernorm(p, &x, &gamma, &gamma, 1e-5).map(|_| ())
    });
    let error = result.unwrap_err();
    let text = error.to_string();
    assert!(
        matches!(&error, MpcError::During { source, .. } if matches!(**source, MpcError::Timeout(_))),
        "{error:?}"
    );
    assert!(text.contains("(during layernorm)"), "{text}");
}
