//! Measurements of the secure forward: its logits against candle's, and its cost over N new tokens
//! at a given context on each link (the motivating table of POST: N tokens cost about one).

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::{anyhow, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha12Rng;
use serde::Serialize;

use crate::model::Model;
use crate::mpc::net::{Counters, LinkModel};
use crate::mpc::{make_parties, EngineConfig, Party};
use crate::secure::{PrivateModel, SecureModel};

/// Runs `f` as both parties, each with its side of the shared model set up first; the server's
/// thread drops `model` once it is shared (the plaintext weights are not held beside the shares
/// unless the caller keeps them). Returns (client's result, server's result).
pub fn with_secure_model<T, F>(model: Model, engine: &EngineConfig, f: F) -> Result<(T, T)>
where
    T: Send + 'static,
    F: Fn(&mut Party, &SecureModel) -> Result<T> + Send + Sync + 'static,
{
    let (client, server) = make_parties(engine)?;
    let f = Arc::new(f);
    let shape = model.secure_shape();
    let spawn = |mut party: Party, weights: Option<Model>| {
        let (f, shape) = (f.clone(), shape.clone());
        std::thread::spawn(move || -> Result<T> {
            let secure = SecureModel::setup(&mut party, &shape, weights.as_ref())?;
            drop(weights);
            f(&mut party, &secure)
        })
    };
    let h0 = spawn(client, None);
    let h1 = spawn(server, Some(model));
    let r0 = h0.join().map_err(|_| anyhow!("the client panicked"))?;
    let r1 = h1.join().map_err(|_| anyhow!("the server panicked"))?;
    Ok((r0?, r1?))
}

/// Secure logits [ids.len(), vocab] opened from shares: the first `split` tokens in one forward,
/// the rest in a second one through the shared KV cache.
pub fn secure_logits(
    model: &(impl PrivateModel + ?Sized),
    engine: &EngineConfig,
    ids: &[u32],
    split: usize,
) -> Result<Vec<Vec<f64>>> {
    let ids = ids.to_vec();
    let vocab = model.secure_shape().vocab_size();
    let (rows, _) = with_secure_model(model.to_model(), engine, move |p, m| {
        let mut cache = m.new_cache(p)?;
        let mut out = Vec::new();
        for part in [&ids[..split], &ids[split..]] {
            if part.is_empty() {
                continue;
            }
            let logits = m.forward(p, Some(part), part.len(), &mut cache)?;
            let opened = p.open(&logits)?;
            out.extend(p.fp.decode(&opened)?);
        }
        Ok(out)
    })?;
    Ok(rows.chunks(vocab).map(<[f64]>::to_vec).collect())
}

/// Max and mean absolute difference between secure and candle logits over every position.
pub fn logit_error(
    model: &(impl PrivateModel + ?Sized),
    engine: &EngineConfig,
    ids: &[u32],
    split: usize,
) -> Result<LogitError> {
    let secure = secure_logits(model, engine, ids, split)?;
    let plain = model.to_model();
    let plain = plain.forward_rows(ids, &mut plain.new_cache())?;
    let mut out = LogitError::default();
    let mut n = 0usize;
    for (s, c) in secure.iter().flatten().zip(plain.iter().flatten()) {
        let e = (s - *c as f64).abs();
        out.max = out.max.max(e);
        out.mean += e;
        out.max_abs_logit = out.max_abs_logit.max((*c as f64).abs());
        n += 1;
    }
    out.mean /= n.max(1) as f64;
    Ok(out)
}

/// Secure logits against candle's: the largest and the mean absolute error, and the largest
/// plaintext logit (the scale the error is relative to).
#[derive(Debug, Clone, Copy, Default)]
pub struct LogitError {
    pub max: f64,
    pub mean: f64,
    pub max_abs_logit: f64,
}

/// One secure forward of a model over `new_tokens` at `context` cached positions.
#[derive(Debug, Clone, Serialize)]
pub struct ForwardRow {
    pub model: String,
    pub link: String,
    pub context: usize,
    pub new_tokens: usize,
    pub rounds: u64,
    /// Online MB sent by the client (10^6 bytes).
    pub client_mb: f64,
    pub server_mb: f64,
    /// Dealer corrections (offline), MB.
    pub dealer_mb: f64,
    /// Seconds the busier party spent getting dealer material (offline: its seed's expansion and
    /// the dealer's derivation of its corrections), not in `sim_seconds`.
    pub dealer_seconds: f64,
    /// Simulated seconds on the link.
    pub sim_seconds: f64,
    /// Measured local compute seconds of the busier party.
    pub compute_seconds: f64,
    /// Measured on this many decoder layers and projected to the full model by the last measured
    /// layer's costs: rounds, bytes and dealer bytes exactly from 2 layers on (the layers are
    /// identical), seconds as measured.
    pub projected_from_layers: Option<usize>,
}

/// Prints the costs [`forward_costs`] measured, as `post verify --forward-only` does: a table of
/// the rows and the first forward by part, or with `json` one object of the rows and the rounds
/// per label.
pub fn print_forward_costs(
    rows: &[ForwardRow],
    by_part: &BTreeMap<String, Counters>,
    json: bool,
) -> Result<()> {
    if json {
        #[derive(Serialize)]
        struct ForwardReport<'a> {
            rows: &'a [ForwardRow],
            rounds_per_label: &'a BTreeMap<String, u64>,
        }
        let labels: BTreeMap<String, u64> =
            by_part.iter().map(|(l, c)| (l.clone(), c.rounds)).collect();
        let report = ForwardReport {
            rows,
            rounds_per_label: &labels,
        };
        println!("{}", serde_json::to_string(&report)?);
        return Ok(());
    }
    println!(
        "{:<18} {:<6} {:>7} {:>6} {:>7} {:>10} {:>10} {:>10} {:>9} {:>9}",
        "model",
        "net",
        "context",
        "tokens",
        "rounds",
        "client MB",
        "server MB",
        "dealer MB",
        "sim s",
        "compute s"
    );
    for r in rows {
        println!(
            "{:<18} {:<6} {:>7} {:>6} {:>7} {:>10.2} {:>10.2} {:>10.2} {:>9.3} {:>9.3}",
            r.model,
            r.link,
            r.context,
            r.new_tokens,
            r.rounds,
            r.client_mb,
            r.server_mb,
            r.dealer_mb,
            r.sim_seconds,
            r.compute_seconds
        );
    }
    if let Some(n) = rows.first().and_then(|r| r.projected_from_layers) {
        println!(
            "(projected_from_layers = {n}: measured on {n} decoder layers, the by-part table too)"
        );
    }
    println!(
        "\nthe first forward by part: rounds, MB sent by both parties, dealer MB to both, \
         the busier party's compute s"
    );
    for (label, c) in by_part
        .iter()
        .filter(|(l, _)| !l.contains('/') || l.starts_with("block0/"))
    {
        println!(
            "  {label:<32} {:>5} {:>9.3} {:>9.3} {:>9.3}",
            c.rounds,
            c.bytes_sent as f64 / 1e6,
            c.dealer_bytes as f64 / 1e6,
            c.compute_time
        );
    }
    Ok(())
}

/// What one party measured: per (link, tokens) the counters of the forward and of its last
/// layer, and per label of the first measured forward its counters.
type Measured = (Vec<(Counters, Counters)>, BTreeMap<String, Counters>);

/// `c` plus `k` times `layer`.
fn plus_layers(c: &Counters, layer: &Counters, k: usize) -> Counters {
    let (k64, kf) = (k as u64, k as f64);
    Counters {
        rounds: c.rounds + k64 * layer.rounds,
        bytes_sent: c.bytes_sent + k64 * layer.bytes_sent,
        bytes_recv: c.bytes_recv + k64 * layer.bytes_recv,
        sim_time: c.sim_time + kf * layer.sim_time,
        compute_time: c.compute_time + kf * layer.compute_time,
        dealer_bytes: c.dealer_bytes + k64 * layer.dealer_bytes,
        dealer_time: c.dealer_time + kf * layer.dealer_time,
    }
}

/// Costs of one secure forward over each of `tokens` new tokens after `context` positions, on each
/// link. The context is filled with random keys and values (1 round per matrix, not counted), so a
/// long context costs no forward. One setup serves every measurement. Also returns, per label of
/// the first measured forward, both parties' counters together. Takes the model, which it drops
/// once shared.
pub fn forward_costs(
    name: &str,
    model: Model,
    links: &[(String, LinkModel)],
    context: usize,
    tokens: &[usize],
) -> Result<(Vec<ForwardRow>, BTreeMap<String, Counters>)> {
    forward_costs_by_layers(name, model, links, context, tokens, None)
}

/// [`forward_costs`], with `layers = Some(n)` measured on the model's first n decoder layers (at
/// full width, with the embedding, final norm and head) and projected to all of them: rows
/// labelled `projected_from_layers = n`; the by-part counters are the measured model's.
pub fn forward_costs_by_layers(
    name: &str,
    model: Model,
    links: &[(String, LinkModel)],
    context: usize,
    tokens: &[usize],
    layers: Option<usize>,
) -> Result<(Vec<ForwardRow>, BTreeMap<String, Counters>)> {
    let full = model.secure_shape().layers();
    let (model, measured) = match layers {
        Some(n) => (model.with_layers(n)?, n),
        None => (model, full),
    };
    let shape = model.secure_shape();
    let (window, vocab) = (shape.window(), shape.vocab_size());
    let max_new = tokens.iter().copied().max().unwrap_or(1);
    if tokens.contains(&0) || context + max_new > window {
        anyhow::bail!(
            "--context {context} + {max_new} new tokens must fit the context window of {window} (and every count be at least 1)"
        )
    }
    let (engine, link_list) = (EngineConfig::default(), links.to_vec());
    let token_list = tokens.to_vec();
    // The last measured layer stands for the rest: from the second on, a layer takes the residual
    // stream at 2f bits (the first at f, one opening fewer), so with n >= 2 the projection of
    // rounds and bytes is exact.
    let last_layer = format!("block{}", measured.saturating_sub(1));
    let (client, server): (Measured, Measured) = with_secure_model(model, &engine, move |p, m| {
        let width = shape.kv_width();
        let mut rng = ChaCha12Rng::seed_from_u64(7);
        let kv: Vec<f64> = (0..context * width)
            .map(|_| rng.random_range(-1.0..1.0))
            .collect();
        let mut per_call = Vec::new();
        let mut labels = BTreeMap::new();
        for (_, link) in &link_list {
            p.net.link = *link;
            for &t in &token_list {
                let mut cache = m.new_cache(p)?;
                if context > 0 {
                    cache.fill(p, (!p.is_client()).then_some(&kv[..]), context)?;
                }
                let ids: Vec<u32> = (0..t).map(|i| ((i * 7919 + 13) % vocab) as u32).collect();
                let (before, labels_before) = (p.net.total(), p.net.counters().clone());
                m.forward(p, p.is_client().then_some(&ids[..]), t, &mut cache)?;
                let layer = |labels: &BTreeMap<String, Counters>| {
                    labels.get(&last_layer).copied().unwrap_or_default()
                };
                let first = layer(p.net.counters()).since(&layer(&labels_before));
                per_call.push((p.net.total().since(&before), first));
                if labels.is_empty() {
                    for (label, c) in p.net.counters() {
                        let old = labels_before.get(label).copied().unwrap_or_default();
                        labels.insert(label.clone(), c.since(&old));
                    }
                }
            }
        }
        Ok((per_call, labels))
    })?;
    let mut rows = Vec::new();
    let mut i = 0;
    for (link_name, _) in links {
        for &t in tokens {
            let ((c, c_layer), (s, s_layer)) = (&client.0[i], &server.0[i]);
            let (c, s) = (
                plus_layers(c, c_layer, full - measured),
                plus_layers(s, s_layer, full - measured),
            );
            rows.push(ForwardRow {
                model: name.to_string(),
                link: link_name.clone(),
                context,
                new_tokens: t,
                rounds: c.rounds.max(s.rounds),
                client_mb: c.bytes_sent as f64 / 1e6,
                server_mb: s.bytes_sent as f64 / 1e6,
                dealer_mb: (c.dealer_bytes + s.dealer_bytes) as f64 / 1e6,
                dealer_seconds: c.dealer_time.max(s.dealer_time),
                sim_seconds: c.sim_time.max(s.sim_time),
                compute_seconds: c.compute_time.max(s.compute_time),
                projected_from_layers: layers,
            });
            i += 1;
        }
    }
    // Per label, both parties together: bytes sent by either, dealer bytes to either, the later
    // clock, the busier party's compute.
    let labels = client
        .1
        .iter()
        .map(|(label, c)| {
            let s = server.1.get(label).copied().unwrap_or_default();
            let both = Counters {
                rounds: c.rounds.max(s.rounds),
                bytes_sent: c.bytes_sent + s.bytes_sent,
                bytes_recv: c.bytes_recv + s.bytes_recv,
                sim_time: c.sim_time.max(s.sim_time),
                compute_time: c.compute_time.max(s.compute_time),
                dealer_bytes: c.dealer_bytes + s.dealer_bytes,
                dealer_time: c.dealer_time.max(s.dealer_time),
            };
            (label.clone(), both)
        })
        .collect();
    Ok((rows, labels))
}

/// One row of the forward-latency table: a secure forward over `n_tokens` new tokens after
/// `context` cached positions, and its simulated time relative to one new token on the same link.
#[derive(Debug, Clone, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct LatencyRow {
    pub model: String,
    pub weights: String,
    pub context: usize,
    pub n_tokens: usize,
    pub net: String,
    pub sim_seconds: f64,
    pub rounds: u64,
    pub online_mb: f64,
    pub ratio_to_1: f64,
    /// Dealer (offline) MB of the forward, and the seconds the busier party spent getting them.
    pub dealer_mb: f64,
    pub dealer_seconds: f64,
    /// Peak resident memory of the whole process so far (all parties and the dealer in one
    /// process), MB; 0 where /proc is not there.
    pub peak_rss_mb: f64,
}

/// The process's peak resident set so far (VmHWM), MB (10^6 bytes); 0 without /proc.
pub fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb * 1024.0 / 1e6)
}

/// The latency table from forward measurements that include one new token per link.
pub fn latency_rows(forward: &[ForwardRow], weights: &str) -> Result<Vec<LatencyRow>> {
    forward
        .iter()
        .map(|r| {
            let one = forward
                .iter()
                .find(|o| o.link == r.link && o.new_tokens == 1)
                .ok_or_else(|| anyhow!("the latency table needs 1 among --tokens"))?;
            Ok(LatencyRow {
                model: r.model.clone(),
                weights: weights.to_string(),
                context: r.context,
                n_tokens: r.new_tokens,
                net: r.link.clone(),
                sim_seconds: r.sim_seconds,
                rounds: r.rounds,
                online_mb: r.client_mb + r.server_mb,
                ratio_to_1: r.sim_seconds / one.sim_seconds,
                dealer_mb: r.dealer_mb,
                dealer_seconds: r.dealer_seconds,
                peak_rss_mb: peak_rss_mb(),
            })
        })
        .collect()
}
