//! What both secure models share: weights entering as the server's private input, the client's
//! tokens as one-hot rows, and the split of a projection's columns into heads.

use anyhow::bail;
use candle_core::{DType, Tensor};

use crate::mpc::error::MpcError;
use crate::mpc::party::Result;
use crate::mpc::{Party, RingTensor, SERVER};

pub(crate) fn values(t: &Tensor) -> anyhow::Result<Vec<f64>> {
    let v = t.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?;
    Ok(v.into_iter().map(f64::from).collect())
}

/// The server's weight as a share: the weight itself on the server, zeros on the client.
pub(crate) fn server_share(
    p: &Party,
    values: Option<Vec<f64>>,
    shape: &[usize],
) -> anyhow::Result<RingTensor> {
    match values {
        Some(v) if p.id == SERVER => Ok(p.fp.encode(shape, &v)?),
        None if p.id != SERVER => Ok(RingTensor::zeros(shape)),
        _ => bail!("the server, and only the server, supplies the weights"),
    }
}

/// The client's tokens as one-hot rows [t, vocab] (integers, so the product by the token table
/// needs no truncation); the server's share is zero and it learns only `t`.
pub(crate) fn one_hot(
    p: &Party,
    ids: Option<&[u32]>,
    t: usize,
    vocab: usize,
) -> Result<RingTensor> {
    let mut one_hot = RingTensor::zeros(&[t, vocab]);
    if p.is_client() {
        let ids =
            ids.ok_or_else(|| MpcError::BadConfig("the client must pass its tokens".into()))?;
        if ids.len() != t {
            return Err(MpcError::BadConfig(format!(
                "{} ids for {t} tokens",
                ids.len()
            )));
        }
        for (i, &id) in ids.iter().enumerate() {
            if id as usize >= vocab {
                return Err(MpcError::BadConfig(format!(
                    "token id {id} is outside the vocabulary of {vocab}"
                )));
            }
            one_hot.data_mut()[i * vocab + id as usize] = 1;
        }
    }
    Ok(one_hot)
}

/// [t, heads * dh] -> [heads, t, dh].
pub(crate) fn split_heads(x: &RingTensor, heads: usize) -> Result<RingTensor> {
    let (t, d) = (x.len() / x.last_dim().max(1), x.last_dim());
    let dh = d / heads;
    let mut out = Vec::with_capacity(x.len());
    for h in 0..heads {
        for row in x.data().chunks(d) {
            out.extend_from_slice(&row[h * dh..(h + 1) * dh]);
        }
    }
    RingTensor::new(&[heads, t, dh], out)
}

/// [heads, t, dh] -> [t, heads * dh].
pub(crate) fn merge_heads(x: &RingTensor) -> Result<RingTensor> {
    let (heads, t, dh) = (x.shape()[0], x.shape()[1], x.shape()[2]);
    let mut out = vec![0u64; x.len()];
    for h in 0..heads {
        for i in 0..t {
            let src = &x.data()[(h * t + i) * dh..(h * t + i + 1) * dh];
            out[i * heads * dh + h * dh..i * heads * dh + (h + 1) * dh].copy_from_slice(src);
        }
    }
    RingTensor::new(&[t, heads * dh], out)
}
