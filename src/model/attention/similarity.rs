//! The `similarity` component: how a query and a key are compared — its parameters
//! ([`params`]) and its forward ([`scores`]), both exhaustive over [`Similarity`].

use super::{bmm, constant, weight, Layer, Mask};
use crate::gene::Similarity;
use crate::model::additive::additive_scores;
use crate::model::params::{Init, ParamSpec, Role};
use crate::model::{ModelConfig, INIT_STD};
use candle_core::{DType, Result, Tensor, D};

/// Epsilon inside the norm of `cosine` and `qk_rmsnorm`.
pub const QK_EPS: f64 = 1e-6;

/// The base scale c of a gene's logits at context length `seq_len`: log₂(L² − L) for
/// `cosine` (QK-norm init), 1/√d_h otherwise.
pub fn base_scale(sim: Similarity, d_head: usize, seq_len: usize) -> f64 {
    match sim {
        Similarity::Cosine => {
            let l = seq_len as f64;
            (l * l - l).log2()
        }
        Similarity::Dot
        | Similarity::QkRmsnorm
        | Similarity::Bilinear
        | Similarity::Additive
        | Similarity::NegL2 => 1.0 / (d_head as f64).sqrt(),
    }
}

/// Width of the additive-attention hidden layer, d_a = min(d_h, 16).
pub fn additive_width(d_head: usize) -> usize {
    d_head.min(16)
}

/// The parameters `sim` adds to layer `layer`.
pub fn params(sim: Similarity, cfg: &ModelConfig, layer: usize) -> Vec<ParamSpec> {
    let (h, dh) = (cfg.n_heads, cfg.d_head());
    match sim {
        Similarity::QkRmsnorm => vec![
            constant(layer, "attn.q_gain", &[1, 1, dh], 1.0),
            constant(layer, "attn.k_gain", &[1, 1, dh], 1.0),
        ],
        Similarity::Bilinear => vec![ParamSpec::new(
            super::name(layer, "attn.bilinear"),
            &[h, dh, dh],
            Init::IdentityPlusNormal(INIT_STD),
            Role::Weight,
        )],
        Similarity::Additive => {
            let da = additive_width(dh);
            vec![
                weight(layer, "attn.add_a", &[h, dh, da], INIT_STD),
                weight(layer, "attn.add_b", &[h, dh, da], INIT_STD),
                weight(layer, "attn.add_w", &[h, 1, 1, da], INIT_STD),
            ]
        }
        Similarity::Dot | Similarity::Cosine | Similarity::NegL2 => vec![],
    }
}

/// Similarities s(q, k) `[R, B, H, T, T]` of queries and keys `[R, B, H, T, d_h]`. Scores
/// at positions `mask` hides may be anything finite (every normaliser masks them): the
/// fused additive op leaves them 0 under a causal mask.
pub fn scores(
    sim: Similarity,
    l: &Layer<'_>,
    q: &Tensor,
    k: &Tensor,
    mask: &Mask,
) -> Result<Tensor> {
    let kt = k.transpose(3, 4)?;
    match sim {
        Similarity::Dot => bmm(q, &kt),
        Similarity::Cosine => {
            let unit = |x: &Tensor| -> Result<Tensor> {
                x.broadcast_div(&(x.sqr()?.sum_keepdim(D::Minus1)? + QK_EPS)?.sqrt()?)
            };
            bmm(&unit(q)?, &unit(k)?.transpose(3, 4)?)
        }
        Similarity::QkRmsnorm => {
            let rms = |x: &Tensor, gain: &str| -> Result<Tensor> {
                let n = x.broadcast_div(&(x.sqr()?.mean_keepdim(D::Minus1)? + QK_EPS)?.sqrt()?)?;
                // candle's broadcast_mul, bit for bit, with a fast reduction for ∂gain
                crate::model::broadcast::mul(&n, &l.get(gain).unsqueeze(1)?)
            };
            bmm(
                &rms(q, "attn.q_gain")?,
                &rms(k, "attn.k_gain")?.transpose(3, 4)?,
            )
        }
        Similarity::Bilinear => {
            let w = l.get("attn.bilinear").unsqueeze(1)?;
            bmm(&bmm(q, &w)?, &kt)
        }
        Similarity::Additive => {
            let a = l.get("attn.add_a").unsqueeze(1)?;
            let bm = l.get("attn.add_b").unsqueeze(1)?;
            let qa = bmm(q, &a)?; // [R,B,H,T,da]
            let kb = bmm(k, &bm)?;
            let w = l.get("attn.add_w");
            let fused = q.device().is_cpu()
                && !crate::model::kernels::reference_kernels()
                && matches!(q.dtype(), DType::F32 | DType::F64);
            if fused {
                additive_scores(&qa, &kb, w, mask.is_causal())
            } else {
                additive_composite(&qa, &kb, &w.unsqueeze(1)?)
            }
        }
        Similarity::NegL2 => {
            let qq = q.sqr()?.sum_keepdim(D::Minus1)?; // [.., T, 1]
            let kk = k.sqr()?.sum_keepdim(D::Minus1)?.transpose(3, 4)?; // [.., 1, T]
            let qk = bmm(q, &kt)?;
            // candle's broadcast_sub, bit for bit; for ‖k‖², whose gradient candle sums over
            // the query dim with its scalar loop, a fast one
            crate::model::broadcast::sub(&(qk * 2.0)?.broadcast_sub(&qq)?, &kk)
        }
    }
}

/// Additive scores composed from candle ops (any device): the broadcast
/// `[R, B, H, T, T, d_a]` sum of `qa` and `kb` `[R, B, H, T, d_a]`, tanh, weighted by
/// `w` `[R, 1, H, 1, 1, d_a]` and summed over d_a.
pub fn additive_composite(qa: &Tensor, kb: &Tensor, w: &Tensor) -> Result<Tensor> {
    qa.unsqueeze(4)? // [R,B,H,T,1,da]
        .broadcast_add(&kb.unsqueeze(3)?)? // [R,B,H,1,T,da]
        .tanh()?
        .broadcast_mul(w)?
        .sum(D::Minus1)
}
