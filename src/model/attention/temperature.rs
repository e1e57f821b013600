//! The `temperature` component: the scale multiplying the logits — its parameters
//! ([`params`]) and its forward ([`scale`]), both exhaustive over [`Temperature`].

use super::normalize::Mask;
use super::similarity::base_scale;
use super::{constant, Layer};
use crate::gene::{Similarity, Temperature};
use crate::model::broadcast::mul;
use crate::model::params::ParamSpec;
use crate::model::ModelConfig;
use candle_core::{Result, Tensor};

/// Upper bound of the learned log-temperature θ (exp θ ≤ 100).
pub fn max_theta() -> f64 {
    100f64.ln()
}

/// The parameters `temp` adds to layer `layer` (θ₀ = ln c, σ₀ = 1, c from `sim`).
pub fn params(
    temp: Temperature,
    sim: Similarity,
    cfg: &ModelConfig,
    layer: usize,
) -> Vec<ParamSpec> {
    let h = cfg.n_heads;
    let c0 = base_scale(sim, cfg.d_head(), cfg.seq_len);
    match temp {
        Temperature::Fixed => vec![],
        Temperature::Learned => vec![constant(layer, "attn.temp_theta", &[1, 1, 1], c0.ln())],
        Temperature::LearnedHead => vec![constant(layer, "attn.temp_theta", &[h, 1, 1], c0.ln())],
        Temperature::LogN => vec![constant(layer, "attn.temp_sigma", &[h, 1, 1], 1.0)],
    }
}

/// The logits z = scale · s `[R, B, H, T, T]` from similarities `s`.
pub fn scale(
    temp: Temperature,
    sim: Similarity,
    l: &Layer<'_>,
    s: Tensor,
    mask: &Mask,
) -> Result<Tensor> {
    let c = base_scale(sim, l.cfg.d_head(), l.cfg.seq_len);
    match temp {
        Temperature::Fixed => s * c,
        // broadcast::mul: candle's broadcast_mul, bit for bit, with a fast reduction for the
        // gradient of a per-head factor (`learned` mostly keeps candle's, fast there: its
        // reduced dims are trailing unless there is one head)
        Temperature::Learned | Temperature::LearnedHead => {
            let theta = l.get("attn.temp_theta").unsqueeze(1)?;
            mul(&s, &theta.minimum(max_theta())?.exp()?)
        }
        Temperature::LogN => {
            let sigma = l.get("attn.temp_sigma").unsqueeze(1)?; // [R,1,H,1,1]
            let ln_l = (l.cfg.seq_len as f64).ln();
            let pos = (mask.ln_n() * (c / ln_l))?; // [T,1]
            let (t, one) = pos.dims2()?;
            mul(&mul(&s, &sigma)?, &pos.reshape((1, 1, 1, t, one))?)
        }
    }
}
