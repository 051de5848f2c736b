//! The external KV cache every plaintext model shares: keys and values per layer, held by the
//! caller so that speculative decoding can roll rejected drafts back with [`KvCache::truncate`].

use candle_core::{Result, Tensor};

/// Keys and values of every layer for the positions seen so far, held by the caller.
#[derive(Debug, Clone, Default)]
pub struct KvCache {
    /// [b, heads, t, head_dim] keys and values per layer; `None` before the first position.
    pub(crate) layers: Vec<Option<(Tensor, Tensor)>>,
}

impl KvCache {
    pub fn new(n_layer: usize) -> Self {
        Self {
            layers: vec![None; n_layer],
        }
    }

    /// Refuses `new` positions after the cached ones past a `window`, or a cache made for a model
    /// of another depth than `layers`.
    pub fn check_fits(&self, new: usize, window: usize, layers: usize) -> Result<()> {
        let total = self.len() + new;
        if total > window {
            candle_core::bail!("{total} positions exceed the context window of {window}")
        }
        if self.layers.len() != layers {
            candle_core::bail!("cache has {} layers, model has {layers}", self.layers.len())
        }
        Ok(())
    }

    /// Number of positions cached.
    pub fn len(&self) -> usize {
        match self.layers.first() {
            Some(Some((k, _))) => k.dim(2).expect("cached keys are [b, h, t, d]"),
            _ => 0,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Keeps the first `len` positions: how rejected drafts are rolled back.
    pub fn truncate(&mut self, len: usize) -> Result<()> {
        if len >= self.len() {
            return Ok(());
        }
        for layer in self.layers.iter_mut() {
            *layer = match layer.take() {
                Some(_) if len == 0 => None,
                Some((k, v)) => Some((k.narrow(2, 0, len)?, v.narrow(2, 0, len)?)),
                None => None,
            };
        }
        Ok(())
    }
}
