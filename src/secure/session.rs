//! A secure session: the client and the server (a thread holding the private model), a dealer and a
//! link, set up once and used for every step and prompt. The client side is a [`Verifier`], so the
//! decoding loop of `post draft` runs unchanged on top of it.
//!
//! Right after the weight sharing the two toss a coin ([`super::coins`]): the seed of every
//! step's uniforms, which neither party chooses alone. Per step the client announces, in one
//! message, what the server learns anyway ([`Step`]): how many cached positions to keep (the
//! committed tokens, or none for a new prompt: never a rollback into verified positions), how many
//! new tokens the forward takes and how many of them are drafts. Then both run the secure forward
//! and private sampling; the accepted count is opened to both and the client learns the next token.

use std::sync::mpsc::{channel, Receiver, Sender};
use std::thread::JoinHandle;

use anyhow::{anyhow, bail, Context, Result};
use rand::RngCore;
use serde::Serialize;

use super::cache::SecureKvCache;
use super::coins::{self, PlantedCoin, Seed, StepUniforms};
use super::model::{PrivateModel, SecureModel, SecureShape};
pub use super::sampling::check_temperature;
use super::sampling::{private_sample_at, ClientDraws};
use super::step::Step;

use crate::decoding::{Verdict, Verifier};
use crate::model::Config;
use crate::mpc::net::Counters;
use crate::mpc::{make_parties, EngineConfig, Party, CLIENT};

/// Costs of a stretch of a session, both parties together.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Costs {
    /// Message flights the client waited for.
    pub rounds: u64,
    /// Online bytes sent by the client.
    pub client_bytes: u64,
    /// Online bytes sent by the server.
    pub server_bytes: u64,
    /// Dealer corrections sent to the server (offline).
    pub dealer_bytes: u64,
    /// Simulated end-to-end seconds (the client's virtual clock).
    pub sim_seconds: f64,
    /// Measured local compute seconds of the busier party.
    pub compute_seconds: f64,
}

impl Costs {
    fn from_parties(client: &Counters, server: &Counters) -> Self {
        Self {
            rounds: client.rounds,
            client_bytes: client.bytes_sent,
            server_bytes: server.bytes_sent,
            dealer_bytes: client.dealer_bytes + server.dealer_bytes,
            sim_seconds: client.sim_time,
            compute_seconds: client.compute_time.max(server.compute_time),
        }
    }

    /// The costs since `before`.
    pub fn since(&self, before: &Costs) -> Costs {
        Costs {
            rounds: self.rounds - before.rounds,
            client_bytes: self.client_bytes - before.client_bytes,
            server_bytes: self.server_bytes - before.server_bytes,
            dealer_bytes: self.dealer_bytes - before.dealer_bytes,
            sim_seconds: self.sim_seconds - before.sim_seconds,
            compute_seconds: self.compute_seconds - before.compute_seconds,
        }
    }
}

/// Everything the server received in a session: the payloads of the shared traffic, and apart from
/// them the public announcements (the coin toss, shapes, cache lengths); and the accepted counts
/// the protocol opened to it, one per step.
#[derive(Debug, Clone, Default)]
pub struct ServerView {
    pub transcript: Vec<u8>,
    pub announcements: Vec<Vec<u64>>,
    pub accepted: Vec<usize>,
}

/// The server's side of a session: the coin toss, then steps until the client stops. Each step
/// request is checked ([`Step::decode`]) against the positions verified so far.
fn serve(
    p: &mut Party,
    model: &SecureModel,
    temperature: f64,
    reports: &Sender<Counters>,
) -> Result<ServerView> {
    let seed = coins::toss(p, None).context("coin toss")?;
    let mut cache = model.new_cache(p)?;
    let _ = reports.send(p.net.total());
    let window = model.window();
    let (mut committed, mut steps, mut accepted) = (0usize, 0u64, Vec::new());
    loop {
        let msg = p.announce(CLIENT, &[], Step::stop().len())?;
        let Some(step) = Step::decode(&msg, committed, window)? else {
            return Ok(ServerView {
                transcript: p.net.take_transcript(),
                announcements: p.net.take_public_log(),
                accepted,
            });
        };
        let Step { keep, n_new, k } = step;
        cache.truncate(p, keep)?;
        let logits = model.forward_untruncated(p, None, n_new, &mut cache)?;
        let outcome = private_sample_at(
            p,
            &logits.narrow_rows(n_new - k - 1, k + 1)?,
            p.fp.frac_bits,
            k,
            temperature,
            &StepUniforms::derive(&seed, steps, k),
            None,
        )?;
        committed = step.committed_after(outcome.accepted)?;
        steps += 1;
        accepted.push(outcome.accepted);
        let _ = reports.send(p.net.total());
    }
}

/// The client's end of a secure session, usable as the decoding loop's verifier.
pub struct SecureVerifier {
    party: Party,
    model: SecureModel,
    cache: SecureKvCache,
    /// Cached positions to keep at the next step (the loop's rollback, applied when announced).
    keep: usize,
    /// Positions verified so far, as the server counts them: the next step keeps all or none.
    committed: usize,
    /// The coin toss's seed and the steps so far: each step's uniforms.
    seed: Seed,
    steps: u64,
    temperature: f64,
    server: Option<JoinHandle<Result<ServerView>>>,
    reports: Receiver<Counters>,
    /// Server reports expected so far (one after setup, one per step) and the latest received.
    expected_reports: usize,
    received_reports: usize,
    server_totals: Counters,
    /// The server is another process (`connect`): its costs are read off the client's side.
    remote: bool,
    /// The one-time cost of sharing and preparing the weights.
    pub setup: Costs,
}

/// The server's side of a session with a client process, once the weights are shared: steps
/// until the client stops.
pub(crate) fn serve_client(p: &mut Party, model: &SecureModel, temperature: f64) -> Result<()> {
    let (reports, _) = channel();
    serve(p, model, temperature, &reports)?;
    Ok(())
}

impl SecureVerifier {
    /// Starts the server thread with `model`, shares and prepares its weights, and returns the
    /// client's end. `temperature` is public and fixed for the session.
    pub fn start(
        model: &(impl PrivateModel + ?Sized),
        engine: &EngineConfig,
        temperature: f64,
    ) -> Result<Self> {
        Self::start_recording(model, engine, temperature, false)
    }

    /// Like [`Self::start`]; with `record_server`, the server keeps everything it receives from the
    /// first message of the setup on, and [`Self::finish`] returns it (for the leakage tests).
    pub fn start_recording(
        model: &(impl PrivateModel + ?Sized),
        engine: &EngineConfig,
        temperature: f64,
        record_server: bool,
    ) -> Result<Self> {
        Self::start_inner(model, engine, temperature, record_server, None)
    }

    /// [`Self::start_recording`] with the client's coin fixed instead of drawn: for tests that
    /// play a client choosing its coin, or revealing another than it committed to.
    #[doc(hidden)]
    pub fn start_with_coin(
        model: &(impl PrivateModel + ?Sized),
        engine: &EngineConfig,
        temperature: f64,
        record_server: bool,
        coin: PlantedCoin,
    ) -> Result<Self> {
        Self::start_inner(model, engine, temperature, record_server, Some(coin))
    }

    fn start_inner(
        model: &(impl PrivateModel + ?Sized),
        engine: &EngineConfig,
        temperature: f64,
        record_server: bool,
        coin: Option<PlantedCoin>,
    ) -> Result<Self> {
        check_temperature(temperature).map_err(|why| anyhow!(why))?;
        let (client, mut server) = make_parties(engine)?;
        let shape = model.secure_shape();
        let (server_model, server_shape) = (model.to_model(), shape.clone());
        let (tx, reports) = channel();
        if record_server {
            server.net.record_transcript();
        }
        let handle = std::thread::spawn(move || -> Result<ServerView> {
            let secure = SecureModel::setup(&mut server, &server_shape, Some(&server_model))?;
            drop(server_model);
            serve(&mut server, &secure, temperature, &tx)
        });
        Self::set_up(client, &shape, temperature, Some(handle), reports, coin)
    }

    /// The client's end of a session with a server process, over `client`'s link.
    pub(crate) fn from_remote(client: Party, cfg: &Config, temperature: f64) -> Result<Self> {
        check_temperature(temperature).map_err(|why| anyhow!(why))?;
        let (_, reports) = channel();
        Self::set_up(client, &cfg.into(), temperature, None, reports, None)
    }

    /// The client's half of the weight sharing and of the coin toss, then its end of the session;
    /// `server` is the in-process server thread (None: the server is another process).
    fn set_up(
        mut client: Party,
        shape: &SecureShape,
        temperature: f64,
        server: Option<JoinHandle<Result<ServerView>>>,
        reports: Receiver<Counters>,
        coin: Option<PlantedCoin>,
    ) -> Result<Self> {
        let model = SecureModel::setup(&mut client, shape, None).context("weight sharing")?;
        let seed = coins::toss(&mut client, coin.as_ref()).context("coin toss")?;
        let cache = model.new_cache(&mut client)?;
        let remote = server.is_none();
        let mut verifier = Self {
            party: client,
            model,
            cache,
            keep: 0,
            committed: 0,
            seed,
            steps: 0,
            temperature,
            server,
            reports,
            // The in-process server reports once after its setup, then once per step.
            expected_reports: if remote { 0 } else { 1 },
            received_reports: 0,
            server_totals: Counters::default(),
            remote,
            setup: Costs::default(),
        };
        verifier.setup = verifier.totals()?;
        Ok(verifier)
    }

    /// Announces a step request as it is, for tests that play a client breaking the step rules
    /// (the server refuses it and ends the session; [`Self::finish`] then returns its error).
    #[doc(hidden)]
    pub fn announce_raw_step(&mut self, words: &[u64]) -> Result<()> {
        self.party.announce(CLIENT, words, words.len())?;
        Ok(())
    }

    /// The private model's end-of-text token (from the shape the server announced).
    pub fn end_of_text(&self) -> Option<u32> {
        self.model.end_of_text()
    }

    /// Both parties' costs since the session started.
    pub fn totals(&mut self) -> Result<Costs> {
        if self.remote {
            // What the server sent is what the client received.
            let client = self.party.net.total();
            let server = Counters {
                bytes_sent: client.bytes_recv,
                ..Counters::default()
            };
            return Ok(Costs::from_parties(&client, &server));
        }
        while self.received_reports < self.expected_reports {
            match self.reports.recv() {
                Ok(totals) => self.server_totals = totals,
                Err(_) => return Err(self.server_failure()),
            }
            self.received_reports += 1;
        }
        let client = self.party.net.total();
        Ok(Costs::from_parties(&client, &self.server_totals))
    }

    /// The client's counters per protocol label (`block0/attn/softmax`, ...).
    pub fn client_counters(&self) -> &std::collections::BTreeMap<String, Counters> {
        self.party.net.counters()
    }

    /// The server's error, once its thread has ended.
    fn server_failure(&mut self) -> anyhow::Error {
        match self.server.take().map(|h| h.join()) {
            Some(Ok(Err(e))) => e.context("the server failed"),
            Some(Err(_)) => anyhow!("the server panicked"),
            _ => anyhow!("the server stopped"),
        }
    }

    /// Sends a raw step announcement, as a hostile client would (the attack tests: the server must
    /// refuse any step it cannot run with an error, never a panic).
    #[doc(hidden)]
    pub fn send_raw_step(&mut self, words: [u64; 4]) -> Result<()> {
        self.announce_raw_step(&words)
    }

    /// Stops the server and waits for it; returns what the server received (empty unless the
    /// session was started recording).
    pub fn finish(mut self) -> Result<ServerView> {
        let stopped = self
            .party
            .announce(CLIENT, &Step::stop(), Step::stop().len());
        if self.remote {
            stopped?;
            return Ok(ServerView::default());
        }
        if stopped.is_err() {
            // The server hung up first: its error says why.
            return Err(self.server_failure());
        }
        match self.server.take().map(|h| h.join()) {
            Some(Ok(result)) => result,
            Some(Err(_)) => bail!("the server panicked"),
            None => bail!("the server had already stopped"),
        }
    }
}

impl Verifier for SecureVerifier {
    fn window(&self) -> usize {
        self.model.window()
    }

    fn clock(&mut self) -> Option<f64> {
        Some(self.party.net.total().sim_time)
    }

    fn vocab_size(&self) -> usize {
        self.model.vocab_size()
    }

    fn reset(&mut self) -> Result<()> {
        self.keep = 0;
        Ok(())
    }

    /// The uniforms are the session's (`rng` is not used). The step keeps the cached positions
    /// only when they are exactly the verified ones (the decoding loop's rollback after each step);
    /// any other rollback starts over from the first token, since the server refuses to replay
    /// verified positions.
    fn verify(
        &mut self,
        tokens: &[u32],
        drafts: &[u32],
        q: &[Vec<f64>],
        _rng: &mut dyn RngCore,
    ) -> Result<Verdict> {
        let k = drafts.len();
        let keep = self.keep.min(tokens.len().saturating_sub(1));
        let keep = if keep == self.committed { keep } else { 0 };
        let mut input = tokens[keep..].to_vec();
        input.extend(drafts);
        // Check what the server cannot: it must never be left waiting in the middle of a step.
        let (v, window) = (self.vocab_size(), self.window());
        if let Some(bad) = input.iter().find(|&&id| id as usize >= v) {
            bail!("token id {bad} is outside the vocabulary of {v}")
        }
        if keep + input.len() > window || q.len() != k {
            bail!(
                "{} positions do not fit the context window of {window}",
                keep + input.len()
            )
        }
        if q.iter().any(|row| row.len() != v) {
            bail!("the public distributions of the drafts must each cover the {v} tokens")
        }
        let n_new = input.len();
        let step = Step { keep, n_new, k };
        // The server's own check, here first: a step it refuses would end the session.
        Step::decode(&step.encode(), self.committed, window)?;
        let draws = ClientDraws {
            drafts: drafts.to_vec(),
            q: q.to_vec(),
        };
        let uniforms = StepUniforms::derive(&self.seed, self.steps, k);
        let p = &mut self.party;
        p.announce(CLIENT, &step.encode(), step.encode().len())?;
        self.steps += 1;
        self.cache.truncate(p, keep)?;
        let logits = self
            .model
            .forward_untruncated(p, Some(&input), n_new, &mut self.cache)?;
        let rows = logits.narrow_rows(n_new - k - 1, k + 1)?;
        let extra = p.fp.frac_bits;
        let outcome = private_sample_at(
            p,
            &rows,
            extra,
            k,
            self.temperature,
            &uniforms,
            Some(&draws),
        )?;
        let verdict = outcome
            .verdict()
            .ok_or_else(|| anyhow!("the client received no verdict"))?;
        self.committed = step.committed_after(verdict.accepted)?;
        self.keep = self.cache.len();
        self.expected_reports += 1;
        Ok(verdict)
    }

    fn rollback(&mut self, len: usize) -> Result<()> {
        self.keep = self.keep.min(len);
        Ok(())
    }
}
