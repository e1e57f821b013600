//! The attention block a gene builds, one file per component:
//!
//! | component | file | parameters | forward |
//! |---|---|---|---|
//! | similarity | [`similarity`] | [`similarity::params`] | [`similarity::scores`]: s(q, k) |
//! | temperature | [`temperature`] | [`temperature::params`] | [`temperature::scale`]: z = scale · s |
//! | normalization | [`normalize`] | [`normalize::params`] | [`normalize::weights`]: p = norm(z) |
//! | gating | [`gating`] | [`gating::params`] | [`gating::apply`]: gate, W_O, residual |
//!
//! Both functions of a component are exhaustive `match`es over its enum in
//! [`crate::gene`], so a new variant does not compile until its parameters and its forward
//! exist. [`forward`] composes them: `qkv = u·W_qkv + b`, heads, s, z, p, `y = p·v`, gate.

pub mod gating;
pub mod normalize;
pub mod similarity;
pub mod temperature;

use super::params::{Init, ParamSpec, Params, Role};
use super::{ModelConfig, INIT_STD};
use crate::gene::Gene;
use candle_core::{Result, Tensor};
pub use normalize::Mask;

/// The name of parameter `name` of layer `layer`, e.g. `layers.0.attn.wqkv`.
pub fn name(layer: usize, name: &str) -> String {
    format!("layers.{layer}.{name}")
}

/// A decayed weight of layer `layer`, N(0, std²).
pub fn weight(layer: usize, n: &str, shape: &[usize], std: f64) -> ParamSpec {
    ParamSpec::new(name(layer, n), shape, Init::Normal(std), Role::Weight)
}

/// A never-decayed constant-initialised parameter (gain, bias, temperature, α).
pub fn constant(layer: usize, n: &str, shape: &[usize], v: f64) -> ParamSpec {
    ParamSpec::new(name(layer, n), shape, Init::Const(v), Role::NoDecay)
}

/// What a component's forward sees: one layer's parameters and the model's shape.
pub struct Layer<'a> {
    /// Every parameter of the model.
    pub params: &'a Params,
    /// The layer (0-based).
    pub layer: usize,
    /// The model's shape.
    pub cfg: &'a ModelConfig,
    /// Replicas R.
    pub replicas: usize,
}

impl Layer<'_> {
    /// Parameter `n` of this layer (e.g. `attn.gate_w`).
    pub fn get(&self, n: &str) -> &Tensor {
        self.params.get(&name(self.layer, n))
    }

    /// `x [R, N, din] · W [R, din, dout] + b [R, 1, dout]` with this layer's `w` and `b`.
    pub fn linear(&self, x: &Tensor, w: &str, b: &str) -> Result<Tensor> {
        super::broadcast::add(&x.matmul(self.get(w))?, self.get(b))
    }

    /// `[R, B·T, d]` → `[R, B, H, T, d_h]`.
    fn split_heads(&self, x: &Tensor, b: usize, t: usize) -> Result<Tensor> {
        let (h, dh) = (self.cfg.n_heads, self.cfg.d_head());
        x.reshape((self.replicas, b, t, h, dh))?
            .transpose(2, 3)?
            .contiguous()
    }
}

/// Every parameter of `gene`'s attention in layer `layer`, in a fixed order: W_qkv, b_qkv,
/// then similarity, temperature, normalization and gating, then W_O, b_O.
pub fn specs(gene: Gene, cfg: &ModelConfig, layer: usize) -> Vec<ParamSpec> {
    let (d, l) = (cfg.d_model, cfg.n_layers);
    let resid_std = INIT_STD / ((2 * l) as f64).sqrt();
    let mut s = vec![
        weight(layer, "attn.wqkv", &[d, 3 * d], INIT_STD),
        constant(layer, "attn.bqkv", &[1, 3 * d], 0.0),
    ];
    s.extend(similarity::params(gene.similarity, cfg, layer));
    s.extend(temperature::params(
        gene.temperature,
        gene.similarity,
        cfg,
        layer,
    ));
    s.extend(normalize::params(gene.normalization, cfg, layer));
    s.extend(gating::params(gene.gating, cfg, layer));
    s.push(weight(layer, "attn.wo", &[d, d], resid_std));
    s.push(constant(layer, "attn.bo", &[1, d], 0.0));
    s
}

/// Batched matmul over any number of leading dims (candle's CPU kernel takes at most one
/// or two batch dims); leading dims of `b` broadcast against `a`'s.
pub fn bmm(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let ad = a.dims();
    let bd = b.dims();
    let rank = ad.len();
    let lead: Vec<usize> = ad[..rank - 2]
        .iter()
        .zip(&bd[..rank - 2])
        .map(|(x, y)| *x.max(y))
        .collect();
    let n: usize = lead.iter().product();
    let (m, k, nn) = (ad[rank - 2], ad[rank - 1], bd[rank - 1]);
    let mut sa = lead.clone();
    sa.extend([m, k]);
    let mut sb = lead.clone();
    sb.extend([k, nn]);
    let a3 = a.broadcast_as(sa)?.contiguous()?.reshape((n, m, k))?;
    let b3 = b.broadcast_as(sb)?.contiguous()?.reshape((n, k, nn))?;
    let mut out = lead;
    out.extend([m, nn]);
    a3.matmul(&b3)?.reshape(out)
}

/// One attention block with its gate and residual: `x` and `u = LN₁(x)` are `[R, B·T, d]`,
/// the result is the block's output `[R, B·T, d]`.
pub fn forward(
    gene: Gene,
    l: &Layer<'_>,
    x: &Tensor,
    u: &Tensor,
    b: usize,
    t: usize,
    mask: &Mask,
) -> Result<Tensor> {
    let d = l.cfg.d_model;
    let qkv = l.linear(u, "attn.wqkv", "attn.bqkv")?;
    let q = l.split_heads(&qkv.narrow(2, 0, d)?, b, t)?;
    let k = l.split_heads(&qkv.narrow(2, d, d)?, b, t)?;
    let v = l.split_heads(&qkv.narrow(2, 2 * d, d)?, b, t)?;
    let s = similarity::scores(gene.similarity, l, &q, &k, mask)?;
    let z = temperature::scale(gene.temperature, gene.similarity, l, s, mask)?;
    let p = normalize::weights(gene.normalization, l, &z, mask)?;
    let y = bmm(&p, &v)?; // [R,B,H,T,dh]
    gating::apply(gene.gating, l, x, u, &y)
}
