//! The `gating` component: what gates the attention output and how it meets the residual
//! stream — its parameters ([`params`]) and its forward ([`apply`]), both exhaustive over
//! [`Gating`].

use super::{constant, weight, Layer};
use crate::gene::Gating;
use crate::model::params::ParamSpec;
use crate::model::{ModelConfig, INIT_STD};
use candle_core::{Result, Tensor};

/// The parameters `gating` adds to layer `layer` (gate biases 0, the highway bias −2).
pub fn params(gating: Gating, cfg: &ModelConfig, layer: usize) -> Vec<ParamSpec> {
    let (d, h) = (cfg.d_model, cfg.n_heads);
    let gate = |width: usize, bias: f64| {
        vec![
            weight(layer, "attn.gate_w", &[d, width], INIT_STD),
            constant(layer, "attn.gate_b", &[1, width], bias),
        ]
    };
    match gating {
        Gating::None => vec![],
        Gating::OutputGate | Gating::DenseGate => gate(d, 0.0),
        Gating::HeadGate => gate(h, 0.0),
        Gating::Highway => gate(d, -2.0),
    }
}

/// The block's output `[R, B·T, d]` from its input `x`, `u = LN₁(x)` (both `[R, B·T, d]`)
/// and the head outputs `y` `[R, B, H, T, d_h]`: the gate, W_O and the residual.
pub fn apply(gating: Gating, l: &Layer<'_>, x: &Tensor, u: &Tensor, y: &Tensor) -> Result<Tensor> {
    let (r, d, h) = (l.replicas, l.cfg.d_model, l.cfg.n_heads);
    let (b, t) = (y.dim(1)?, y.dim(3)?);
    // Heads back to `[R, B·T, d]`.
    let merge = |y: &Tensor| y.transpose(2, 3)?.reshape((r, b * t, d));
    let out = |y: &Tensor| l.linear(y, "attn.wo", "attn.bo");
    let gate = |u: &Tensor| candle_nn::ops::sigmoid(&l.linear(u, "attn.gate_w", "attn.gate_b")?);
    match gating {
        Gating::None => x + out(&merge(y)?)?,
        Gating::OutputGate => {
            let y = merge(y)?;
            let y = (y * gate(u)?)?;
            x + out(&y)?
        }
        Gating::HeadGate => {
            let g = gate(u)?.reshape((r, b, t, h, 1))?.transpose(2, 3)?; // [R,B,H,T,1]
            x + out(&merge(&y.broadcast_mul(&g)?)?)?
        }
        Gating::DenseGate => {
            let o = out(&merge(y)?)?;
            x + (o * gate(u)?)?
        }
        Gating::Highway => {
            let o = out(&merge(y)?)?;
            let tg = gate(u)?;
            let carry = (tg.ones_like()? - &tg)?;
            (carry * x)? + (tg * o)?
        }
    }
}
