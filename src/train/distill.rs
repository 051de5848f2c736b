//! Knowledge distillation: a student (the public model) learns the teacher's (the private model's)
//! next-token distributions. The model owner runs it, since only they hold both models; publishing
//! the aligned student reveals what any distilled model reveals: an approximation of the teacher's
//! behaviour on the distillation data, and nothing of any client's prompts.
//!
//! Losses, per position, averaged (p = teacher, q = student, both softmax(logits / T)):
//! - `fkl`: forward KL(p || q) = sum p (log p - log q), mass-covering;
//! - `rkl`: reverse KL(q || p) = sum q (log q - log p), mode-seeking;
//! - `tv`: total variation 0.5 sum |p - q|, which is exactly 1 - (acceptance rate of the
//!   speculative rule at that position), so it optimises acceptance directly;
//! - `fkl+ce`: forward KL plus cross-entropy on the data tokens, half and half.

use candle_core::{Result, Tensor, D};
use candle_nn::ops::{log_softmax, softmax};

use super::next_token_loss;
use crate::model::{LanguageModel, Model};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DistillLoss {
    ForwardKl,
    ReverseKl,
    TotalVariation,
    ForwardKlPlusCe,
}

impl std::str::FromStr for DistillLoss {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "fkl" => Ok(Self::ForwardKl),
            "rkl" => Ok(Self::ReverseKl),
            "tv" => Ok(Self::TotalVariation),
            "fkl+ce" => Ok(Self::ForwardKlPlusCe),
            other => Err(format!(
                "unknown loss {other:?} (expected fkl, rkl, tv or fkl+ce)"
            )),
        }
    }
}

impl DistillLoss {
    pub fn name(&self) -> &'static str {
        match self {
            Self::ForwardKl => "fkl",
            Self::ReverseKl => "rkl",
            Self::TotalVariation => "tv",
            Self::ForwardKlPlusCe => "fkl+ce",
        }
    }

    /// The loss of student logits against teacher logits ([b, t, v] each) and data targets [b, t].
    pub fn compute(
        &self,
        student: &Tensor,
        teacher: &Tensor,
        targets: &Tensor,
        temperature: f64,
    ) -> Result<Tensor> {
        let log_q = log_softmax(&(student / temperature)?, D::Minus1)?;
        let log_p = log_softmax(&(teacher / temperature)?, D::Minus1)?.detach();
        let per_position = |t: Tensor| -> Result<Tensor> { t.sum(D::Minus1)?.mean_all() };
        match self {
            Self::ForwardKl => per_position((log_p.exp()? * (&log_p - &log_q)?)?),
            Self::ReverseKl => per_position((log_q.exp()? * (&log_q - &log_p)?)?),
            Self::TotalVariation => per_position(
                ((log_p.exp()? - softmax(&(student / temperature)?, D::Minus1)?)?.abs()? * 0.5)?,
            ),
            Self::ForwardKlPlusCe => {
                let kl = per_position((log_p.exp()? * (&log_p - &log_q)?)?)?;
                (kl * 0.5)? + (next_token_loss(student, targets)? * 0.5)?
            }
        }
    }
}

/// The distillation objective for [`super::fit`]: teacher logits are computed without gradients.
pub fn loss_fn(
    teacher: &dyn LanguageModel,
    loss: DistillLoss,
    temperature: f64,
) -> impl Fn(&Model, &Tensor, &Tensor) -> Result<Tensor> + '_ {
    move |student: &Model, inputs: &Tensor, targets: &Tensor| {
        let teacher_logits = teacher.forward(inputs, &mut teacher.new_cache())?.detach();
        let student_logits = student.forward(inputs, &mut student.new_cache())?;
        loss.compute(&student_logits, &teacher_logits, targets, temperature)
    }
}
