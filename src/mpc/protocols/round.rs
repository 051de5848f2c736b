//! One round of openings shared by several protocols: a round scheduler, which knows no protocol.
//!
//! Callers stage independent steps on a [`Round`] (comparisons, products, squares, truncations,
//! each staged by its protocol's own `impl Round` methods), then [`Round::run`] opens everything
//! at once: one exchange, one round, however many steps. A step is a `Stage`: the values it has
//! masked for the opening, and what it makes of them once they are opened.

use crate::mpc::party::{Party, Result};
use crate::mpc::ring::RingTensor;

/// Where a staged step's output will be once the round has run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot(usize);

impl Slot {
    /// The slot `k` places after this one: a step's outputs take consecutive slots.
    pub(crate) fn offset(self, k: usize) -> Slot {
        Slot(self.0 + k)
    }
}

/// A step waiting for the round's opening.
pub(crate) trait Stage {
    /// How many slots its outputs take.
    fn outputs(&self) -> usize {
        1
    }

    /// Its outputs, one per slot, from its opened values (`party`: this party's id).
    fn finish(self: Box<Self>, party: usize, opened: &[u64]) -> Result<Vec<RingTensor>>;
}

/// Values masked by the caller, handed back opened.
struct Opened(Vec<usize>);

impl Stage for Opened {
    fn finish(self: Box<Self>, _party: usize, opened: &[u64]) -> Result<Vec<RingTensor>> {
        Ok(vec![RingTensor::new(&self.0, opened.to_vec())?])
    }
}

/// Steps that open their masked values together.
#[derive(Default)]
pub struct Round {
    masked: Vec<Vec<u64>>,
    stages: Vec<Box<dyn Stage>>,
    slots: usize,
}

/// The outputs of a round, taken by slot.
pub struct Outputs(Vec<Option<RingTensor>>);

impl Outputs {
    pub fn take(&mut self, slot: Slot) -> RingTensor {
        self.0[slot.0]
            .take()
            .expect("each slot of a round is taken once")
    }
}

impl Round {
    pub fn new() -> Self {
        Self::default()
    }

    /// Stages a step that opens `masked`; its outputs take the next slots, the first of which is
    /// returned.
    pub(crate) fn push(&mut self, masked: Vec<u64>, stage: Box<dyn Stage>) -> Slot {
        let first = self.slots;
        self.slots += stage.outputs();
        self.masked.push(masked);
        self.stages.push(stage);
        Slot(first)
    }

    /// Opens values the caller has masked itself (a step staged outside the round, such as a
    /// product with a growing row cache); the slot holds them opened.
    pub fn open(&mut self, masked: &RingTensor) -> Slot {
        self.push(
            masked.data().to_vec(),
            Box::new(Opened(masked.shape().to_vec())),
        )
    }

    /// Opens every staged value in one exchange and finishes every step.
    pub fn run(self, p: &mut Party) -> Result<Outputs> {
        if self.stages.is_empty() {
            return Ok(Outputs(vec![]));
        }
        let flat: Vec<u64> = self.masked.iter().flatten().copied().collect();
        let opened = p.open(&RingTensor::new(&[flat.len()], flat)?)?.into_data();
        let party = p.id;
        let mut offset = 0;
        let mut outputs = Vec::with_capacity(self.slots);
        for (stage, masked) in self.stages.into_iter().zip(&self.masked) {
            let c = &opened[offset..offset + masked.len()];
            offset += masked.len();
            outputs.extend(stage.finish(party, c)?.into_iter().map(Some));
        }
        Ok(Outputs(outputs))
    }
}
