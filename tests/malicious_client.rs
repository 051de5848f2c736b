//! A client that deviates from the session's protocol: it plants its own coin, reveals another
//! coin than it committed to, rolls back verified positions, sends counts near 2^64, or asks for a
//! temperature below the minimum. The planted coin changes nothing (the uniforms are joint); every
//! other deviation is refused with an error that names it, never a panic.

mod common;

use std::collections::HashMap;

use post::decoding::sampling::probabilities;
use post::decoding::{decode_with, speculative_decode, DecodeOptions, Verifier};
use post::model::Gpt2;
use post::mpc::{EngineConfig, LinkModel};
use post::secure::coins::{Coin, PlantedCoin};
use post::secure::SecureVerifier;
use rand::SeedableRng;
use rand_chacha::ChaCha12Rng;

fn ideal() -> EngineConfig {
    EngineConfig {
        link: LinkModel::ideal(),
        seed: Some(3),
        ..EngineConfig::default()
    }
}

/// A random private model over 4 tokens: a step takes a few milliseconds.
fn tiny() -> Gpt2 {
    common::random_model(&common::tiny_config(4, 16, 1, 2, 32), 12, 0.3)
}

/// Fixed drafts after `prompt`, each the token whose private probability is nearest 0.3, and
/// public distributions giving each draft twice its private probability: every draft is accepted
/// with probability a_i = p_i(x_i) / q_i(x_i) = 1/2 (or a little more). Returns (drafts, q, a, p).
#[allow(clippy::type_complexity)]
fn drafts_and_q(
    model: &Gpt2,
    prompt: &[u32],
    k: usize,
) -> (Vec<u32>, Vec<Vec<f64>>, Vec<f64>, Vec<Vec<f64>>) {
    let (mut drafts, mut q, mut a) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..k {
        let mut input = prompt.to_vec();
        input.extend(&drafts);
        let rows = model.forward_rows(&input, &mut model.new_cache()).unwrap();
        let p = probabilities(rows.last().unwrap(), 1.0);
        let x = (0..p.len())
            .min_by(|&a, &b| (p[a] - 0.3).abs().total_cmp(&(p[b] - 0.3).abs()))
            .unwrap();
        let q_x = (2.0 * p[x]).min(0.9);
        let rest = (1.0 - q_x) / (p.len() - 1) as f64;
        q.push(
            (0..p.len())
                .map(|j| if j == x { q_x } else { rest })
                .collect(),
        );
        a.push((p[x] / q_x).min(1.0));
        drafts.push(x as u32);
        assert!(a[i] > 0.05 && a[i] < 0.95, "draft {i}: a = {}", a[i]);
    }
    let mut input = prompt.to_vec();
    input.extend(&drafts);
    let rows = model.forward_rows(&input, &mut model.new_cache()).unwrap();
    let p = rows[prompt.len() - 1..]
        .iter()
        .map(|r| probabilities(r, 1.0))
        .collect();
    (drafts, q, a, p)
}

/// P(n) for n = 0..=k leading acceptances: a_0 ... a_{n-1} (1 - a_n).
fn accepted_distribution(a: &[f64]) -> HashMap<Vec<u32>, f64> {
    let mut reach = 1.0;
    let mut dist = HashMap::new();
    for (n, &a_n) in a.iter().enumerate() {
        dist.insert(vec![n as u32], reach * (1.0 - a_n));
        reach *= a_n;
    }
    dist.insert(vec![a.len() as u32], reach);
    dist
}

/// What the old protocol let a client do: pick its own uniforms. This client's pick is its coin
/// read as ten 24-bit words (big-endian, in [0, 1)), the same at every step.
fn old_rule_uniforms(coin: &Coin) -> Vec<f64> {
    coin.chunks_exact(3)
        .map(|w| u32::from_be_bytes([0, w[0], w[1], w[2]]) as f64 / (1u64 << 24) as f64)
        .collect()
}

/// The accepted count of each of `steps` replays of one position (a new prompt each time).
fn replayed_counts(
    verifier: &mut SecureVerifier,
    prompt: &[u32],
    drafts: &[u32],
    q: &[Vec<f64>],
    steps: usize,
) -> HashMap<Vec<u32>, usize> {
    let mut rng = ChaCha12Rng::seed_from_u64(0);
    let mut counts = HashMap::new();
    for _ in 0..steps {
        verifier.reset().unwrap();
        let verdict = verifier.verify(prompt, drafts, q, &mut rng).unwrap();
        *counts.entry(vec![verdict.accepted as u32]).or_default() += 1;
    }
    counts
}

#[test]
fn a_planted_coin_cannot_force_acceptance() {
    const K: usize = 2;
    const STEPS: usize = 120;
    let model = tiny();
    let prompt = [1u32, 3, 2];
    let (drafts, q, a, p) = drafts_and_q(&model, &prompt, K);
    let expected = accepted_distribution(&a);
    let critical = common::chi_square_critical(K, 3.72);

    // A coin whose every word is below 2^-19: as the client's own uniforms (the old rule) every
    // draft with p / q above 0.01 is accepted, so every step would accept all K drafts.
    let planted: Coin = std::array::from_fn(|j| if j % 3 == 2 { j as u8 } else { 0 });
    let old = old_rule_uniforms(&planted);
    assert!(
        old.len() > 2 * K && old.iter().all(|&u| u < 0.01),
        "{old:?}"
    );
    let forced = (0..K)
        .take_while(|&i| old[i] * q[i][drafts[i] as usize] < p[i][drafts[i] as usize])
        .count();
    assert_eq!(forced, K);
    // The check below has the power to see it: K at every step fails it by far.
    let all_forced = HashMap::from([(vec![K as u32], STEPS)]);
    let (stat, dof) = common::chi_square(&all_forced, &expected, STEPS);
    assert!(
        stat > 10.0 * critical && dof == K,
        "{stat:.1} with {dof} dof"
    );

    // Under the coin toss the server's coin makes the uniforms fresh: replays of one position
    // accept as the private model says (the exact distribution, from plaintext p and q).
    let coin = PlantedCoin {
        committed: planted,
        revealed: planted,
    };
    let start = std::time::Instant::now();
    let mut verifier = SecureVerifier::start_with_coin(&model, &ideal(), 1.0, false, coin).unwrap();
    let counts = replayed_counts(&mut verifier, &prompt, &drafts, &q, STEPS);
    let (stat, dof) = common::chi_square(&counts, &expected, STEPS);
    println!(
        "{counts:?} against {expected:.3?}: chi-square {stat:.1} ({dof} dof, critical {critical:.1}), {:.1} s",
        start.elapsed().as_secs_f64()
    );
    assert!(stat < critical, "chi-square {stat:.1} >= {critical:.1}");
    assert!(counts.get(&vec![K as u32]).copied().unwrap_or(0) < STEPS / 2);
    verifier.finish().unwrap();
}

#[test]
fn a_client_revealing_another_coin_than_its_commitment_is_refused() {
    let coin = PlantedCoin {
        committed: [1u8; 32],
        revealed: [2u8; 32],
    };
    let err = SecureVerifier::start_with_coin(&tiny(), &ideal(), 1.0, false, coin)
        .err()
        .expect("the server must refuse the coin");
    let err = format!("{err:#}");
    assert!(err.contains("does not match its commitment"), "{err}");
}

#[test]
fn rolling_back_verified_positions_is_refused_and_the_client_restarts_instead() {
    let model = tiny();
    let prompt = [1u32, 3, 2];
    let opts = DecodeOptions {
        draft_len: 2,
        temperature: 0.0,
        max_new_tokens: 5,
        stop_token: None,
    };
    let mut rng = ChaCha12Rng::seed_from_u64(1);
    let mut verifier = SecureVerifier::start(&model, &ideal(), 0.0).unwrap();
    let out = decode_with(&model, &mut verifier, &prompt, &opts, &mut rng).unwrap();
    let mut tokens = prompt.to_vec();
    tokens.extend(&out.output_ids);
    let committed = tokens.len() - 1;

    // The client's own rollback into verified positions restarts from the first token: the step
    // is accepted and gives the plaintext greedy token.
    verifier.rollback(4).unwrap();
    let verdict = verifier.verify(&tokens[..5], &[], &[], &mut rng).unwrap();
    let want = speculative_decode(&model, &model, &tokens[..5], &opts, &mut rng).unwrap();
    assert_eq!(verdict.next, want.output_ids[0]);

    // Asking the server itself to keep fewer positions ends the session.
    let mut verifier = SecureVerifier::start(&model, &ideal(), 0.0).unwrap();
    decode_with(&model, &mut verifier, &prompt, &opts, &mut rng).unwrap();
    verifier.announce_raw_step(&[1, 2, 1, 0]).unwrap();
    let err = format!("{:#}", verifier.finish().unwrap_err());
    assert!(
        err.contains(&format!(
            "keep 2 rolls back verified positions (committed {committed})"
        )),
        "{err}"
    );
}

#[test]
fn step_counts_near_2_to_64_are_refused_without_a_panic() {
    for words in [
        [1, 4, u64::MAX - 3, 3],
        [1, 0, 3, u64::MAX],
        [1, u64::MAX, 1, 0],
        [7, 0, 1, 0],
    ] {
        let mut verifier = SecureVerifier::start(&tiny(), &ideal(), 1.0).unwrap();
        verifier.announce_raw_step(&words).unwrap();
        let err = format!("{:#}", verifier.finish().unwrap_err());
        assert!(
            err.contains("step:") && !err.contains("panicked"),
            "{words:?}: {err}"
        );
    }
}

#[test]
fn temperatures_below_the_minimum_are_refused_naming_it() {
    use post::secure::{check_temperature, MIN_TEMPERATURE};
    assert_eq!(MIN_TEMPERATURE, 0.01);
    let model = tiny();
    for t in [0.005, 1e-9, -1.0, f64::NAN, f64::INFINITY] {
        let err = SecureVerifier::start(&model, &ideal(), t).err().unwrap();
        assert!(
            err.to_string().contains("at least the minimum 0.01"),
            "{t}: {err}"
        );
        let links = post::deploy::client::ClientLinks {
            link: post::link::LinkConfig::plaintext(std::time::Duration::from_secs(5)),
            server_key: Default::default(),
            dealer_key: Default::default(),
        };
        let err =
            post::deploy::client::connect("127.0.0.1:9", "127.0.0.1:9", &links, &ideal(), t, 4)
                .err()
                .unwrap();
        assert!(err.to_string().contains("0.01"), "{t}: {err}");
        assert!(check_temperature(t).is_err());
    }
    // 0 and the minimum itself work.
    let mut rng = ChaCha12Rng::seed_from_u64(2);
    for t in [0.0, MIN_TEMPERATURE] {
        let opts = DecodeOptions {
            draft_len: 2,
            temperature: t,
            max_new_tokens: 4,
            stop_token: None,
        };
        let mut verifier = SecureVerifier::start(&model, &ideal(), t).unwrap();
        let out = decode_with(&model, &mut verifier, &[1, 3, 2], &opts, &mut rng).unwrap();
        assert_eq!(out.output_ids.len(), 4);
        verifier.finish().unwrap();
    }
}

#[test]
fn the_server_refuses_a_hello_below_the_minimum_temperature() {
    use post::deploy::server::{serve, ServerPolicy, PROTOCOL_VERSION};
    use post::link::{connect, LinkConfig, Listener};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let link = LinkConfig::plaintext(std::time::Duration::from_secs(5));
    let policy = ServerPolicy {
        link: link.clone(),
        clients: Default::default(),
        // The dealer is never reached: the hello is refused first.
        dealer: "127.0.0.1:9".into(),
        dealer_key: Default::default(),
        engine: EngineConfig::default(),
        max_sessions: 1,
    };
    let daemon = post::deploy::Daemon::new(Some(1));
    let counter = daemon.clone();
    std::thread::spawn(move || serve(listener, std::sync::Arc::new(tiny()), policy, daemon));
    let mut client = connect(&addr, &link, Listener::Server, &Default::default())
        .unwrap()
        .transport;
    let hello = serde_json::json!({
        "version": PROTOCOL_VERSION,
        "frac_bits": 16,
        "nonce": "00".repeat(32),
        "temperature": 0.005,
        "vocab_size": 4,
    });
    client.send(serde_json::to_vec(&hello).unwrap()).unwrap();
    let answer: serde_json::Value = serde_json::from_slice(
        &client
            .recv(std::time::Duration::from_secs(30), 1 << 16)
            .unwrap(),
    )
    .unwrap();
    let refused = answer["refused"].as_str().unwrap();
    assert!(
        refused.contains("temperature 0.005") && refused.contains("0.01"),
        "{refused}"
    );
    assert!(answer["config"].is_null(), "no shape for a refused client");
    // A refused hello is no session: the daemon is still waiting for its one session.
    assert_eq!(counter.ended.load(std::sync::atomic::Ordering::SeqCst), 0);
}
