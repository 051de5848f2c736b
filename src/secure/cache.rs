//! The shared KV cache of a secure model: per layer, keys and values whose rows were opened
//! masked once ([`PreparedRows`]).

use super::layers::server_share;
use crate::mpc::party::Result;
use crate::mpc::protocols::PreparedRows;
use crate::mpc::Party;

/// One layer's keys and values, each a [positions, width] matrix whose rows were opened masked once.
pub struct LayerCache {
    pub(crate) keys: PreparedRows,
    pub(crate) values: PreparedRows,
}

/// The shared KV cache of every layer; rows of rejected drafts are dropped with [`Self::truncate`].
pub struct SecureKvCache {
    pub(crate) layers: Vec<LayerCache>,
}

impl SecureKvCache {
    /// Empty caches for `layers` layers of keys and values [positions, width] in `heads` heads.
    pub(crate) fn new(p: &mut Party, layers: usize, width: usize, heads: usize) -> Result<Self> {
        let layers = (0..layers)
            .map(|_| {
                Ok(LayerCache {
                    keys: PreparedRows::new(p, width, heads)?,
                    values: PreparedRows::new(p, width, heads)?,
                })
            })
            .collect::<Result<_>>()?;
        Ok(Self { layers })
    }

    pub fn len(&self) -> usize {
        self.layers.first().map_or(0, |l| l.keys.rows())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Keeps the first `len` positions (both parties call it with the same length).
    pub fn truncate(&mut self, p: &mut Party, len: usize) -> Result<()> {
        for layer in &mut self.layers {
            layer.keys.truncate(p, len)?;
            layer.values.truncate(p, len)?;
        }
        Ok(())
    }

    /// Appends `rows` positions of given keys and values to every layer (1 round per matrix): fills a
    /// context for cost measurements without running the forward over it. The server supplies the
    /// values; the client passes `None`.
    pub fn fill(&mut self, p: &mut Party, kv: Option<&[f64]>, rows: usize) -> anyhow::Result<()> {
        for layer in &mut self.layers {
            let width = layer.keys.width();
            let shape = [rows, width];
            let share = server_share(p, kv.map(|v| v[..rows * width].to_vec()), &shape)?;
            layer.keys.append(p, &share)?;
            layer.values.append(p, &share)?;
        }
        Ok(())
    }
}
