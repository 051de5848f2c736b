//! One step request of a session: the four public words the client announces before each step,
//! [STEP, keep, n_new, k] (or [STOP, 0, 0, 0]), decoded and checked by the server before any use.
//!
//! keep is how many cached positions the step keeps: `committed` (the positions verified so far:
//! the step continues) or 0 (a new prompt). Anything else is refused: keeping fewer would replay
//! verified positions (a client could re-sample a position it has seen decided until it likes the
//! outcome), keeping more would reuse the rejected drafts' positions. Every count is checked with
//! checked arithmetic against the context window before the forward allocates anything.

use anyhow::{bail, Result};

/// The first word of a request.
pub const STOP: u64 = 0;
pub const STEP: u64 = 1;
/// Words of a request.
pub const WORDS: usize = 4;
/// The most drafts a step may bring.
pub const MAX_DRAFTS: usize = 64;

/// A checked step: the forward takes `n_new` tokens after `keep` cached positions, the last `k` of
/// them drafts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    pub keep: usize,
    pub n_new: usize,
    pub k: usize,
}

impl Step {
    /// The words the client announces.
    pub fn encode(&self) -> [u64; WORDS] {
        [STEP, self.keep as u64, self.n_new as u64, self.k as u64]
    }

    /// The stop request.
    pub fn stop() -> [u64; WORDS] {
        [STOP, 0, 0, 0]
    }

    /// Decodes a request after `committed` verified positions in a context window of `window`:
    /// `None` for a stop, the step if every field is valid, else an error naming the field.
    pub fn decode(msg: &[u64], committed: usize, window: usize) -> Result<Option<Step>> {
        let &[kind, keep, n_new, k] = msg else {
            bail!("step: {} words, expected {WORDS}", msg.len())
        };
        match kind {
            STOP if keep == 0 && n_new == 0 && k == 0 => return Ok(None),
            STOP => bail!("step: a stop request carries {msg:?}"),
            STEP => {}
            _ => bail!("step: unknown request {kind}"),
        }
        let fits = |x: u64| usize::try_from(x).ok().filter(|&x| x <= window);
        let Some(n_new) = fits(n_new).filter(|&n| n >= 1) else {
            bail!("step: n_new {n_new} must be in 1..={window} (the context window)")
        };
        let Some(k) = usize::try_from(k)
            .ok()
            .filter(|&k| k < n_new && k <= MAX_DRAFTS)
        else {
            bail!("step: k {k} drafts must be below n_new {n_new} and at most {MAX_DRAFTS}")
        };
        let Some(keep) = fits(keep) else {
            bail!("step: keep {keep} exceeds the context window of {window}")
        };
        match keep.checked_add(n_new) {
            Some(end) if end <= window => {}
            _ => bail!(
                "step: keep {keep} + n_new {n_new} positions exceed the context window of {window}"
            ),
        }
        if keep != committed && keep != 0 {
            if keep < committed {
                bail!("step: keep {keep} rolls back verified positions (committed {committed})")
            }
            bail!("step: keep {keep} keeps unverified positions (committed {committed})")
        }
        Ok(Some(Step { keep, n_new, k }))
    }

    /// The verified positions after this step with `accepted` drafts: the kept ones, the new
    /// tokens that were not drafts, and the accepted drafts (the sampled token is fed next step).
    pub fn committed_after(&self, accepted: usize) -> Result<usize> {
        if accepted > self.k {
            bail!("step: {accepted} accepted of {} drafts", self.k)
        }
        self.keep
            .checked_add(self.n_new - self.k)
            .and_then(|c| c.checked_add(accepted))
            .ok_or_else(|| anyhow::anyhow!("step: the committed positions overflow"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: usize = 128;

    fn decode(msg: [u64; 4], committed: usize) -> Result<Option<Step>> {
        Step::decode(&msg, committed, WINDOW)
    }

    fn error(msg: [u64; 4], committed: usize) -> String {
        decode(msg, committed).unwrap_err().to_string()
    }

    #[test]
    fn valid_steps_and_the_stop_decode() {
        assert_eq!(decode(Step::stop(), 7).unwrap(), None);
        let first = Step {
            keep: 0,
            n_new: 5,
            k: 4,
        };
        assert_eq!(decode(first.encode(), 0).unwrap(), Some(first));
        // Continue after 9 verified positions, or start a new prompt.
        assert_eq!(
            decode([STEP, 9, 3, 2], 9).unwrap(),
            Some(Step {
                keep: 9,
                n_new: 3,
                k: 2
            })
        );
        assert!(decode([STEP, 0, 3, 2], 9).unwrap().is_some());
        // The window's last position, and the most drafts.
        assert!(decode([STEP, 100, 28, 0], 100).unwrap().is_some());
        assert!(decode([STEP, 0, 65, 64], 0).unwrap().is_some());
    }

    #[test]
    fn every_bad_field_is_refused_by_name() {
        assert!(error([STEP, 5, 1, 0], 9)
            .contains("keep 5 rolls back verified positions (committed 9)"));
        assert!(error([STEP, 12, 1, 0], 9).contains("keep 12 keeps unverified"));
        assert!(error([STEP, 0, 0, 0], 0).contains("n_new 0"));
        assert!(error([STEP, 0, 3, 3], 0).contains("k 3"));
        assert!(error([STEP, 0, 100, 65], 0).contains("at most 64"));
        assert!(error([STEP, 100, 29, 0], 100).contains("context window of 128"));
        assert!(error([STEP, 0, 129, 0], 0).contains("n_new 129"));
        assert!(error([2, 0, 1, 0], 0).contains("unknown request 2"));
        assert!(error([STOP, 0, 1, 0], 0).contains("stop"));
        assert!(Step::decode(&[STEP, 0, 1], 0, WINDOW)
            .unwrap_err()
            .to_string()
            .contains("3 words"));
    }

    #[test]
    fn counts_near_2_to_64_are_refused_without_wrapping() {
        let big = u64::MAX - 3;
        assert!(error([STEP, 4, big, 3], 4).contains("n_new"));
        assert!(error([STEP, big, 4, 3], 0).contains("keep"));
        assert!(error([STEP, 0, 4, big], 0).contains("k "));
        assert!(error([STEP, u64::MAX, u64::MAX, u64::MAX], usize::MAX).contains("n_new"));
        // keep and n_new fit alone, not together.
        assert!(error([STEP, 64, 65, 0], 64).contains("exceed"));
    }

    #[test]
    fn committed_positions_follow_the_accepted_drafts() {
        let step = Step {
            keep: 9,
            n_new: 5,
            k: 4,
        };
        // 9 kept + 1 new token + 2 accepted drafts.
        assert_eq!(step.committed_after(2).unwrap(), 12);
        assert_eq!(step.committed_after(4).unwrap(), 14);
        assert!(step.committed_after(5).is_err());
    }

    /// A small deterministic sweep over every field near its edges (a property test without a
    /// framework): decode never panics, and what it accepts satisfies every bound.
    #[test]
    fn decode_accepts_exactly_the_valid_steps() {
        let edges = |w: u64| {
            vec![
                0,
                1,
                2,
                3,
                63,
                64,
                65,
                w - 1,
                w,
                w + 1,
                u64::MAX / 2,
                u64::MAX - 4,
                u64::MAX,
            ]
        };
        let w = WINDOW as u64;
        for committed in [0usize, 1, 9, WINDOW] {
            for &keep in &edges(w) {
                for &n_new in &edges(w) {
                    for &k in &edges(w) {
                        let got = decode([STEP, keep, n_new, k], committed);
                        let valid = n_new >= 1
                            && k < n_new
                            && k <= MAX_DRAFTS as u64
                            && keep.checked_add(n_new).is_some_and(|e| e <= w)
                            && (keep == 0 || keep == committed as u64);
                        assert_eq!(got.is_ok(), valid, "{keep} {n_new} {k} after {committed}");
                        if let Ok(Some(s)) = got {
                            let end = s.committed_after(s.k).unwrap();
                            assert!(end <= WINDOW && s.committed_after(0).unwrap() <= end);
                        }
                    }
                }
            }
        }
    }
}
