//! A decoder-only transformer LM whose attention is built from a [`Gene`], with a leading
//! replica axis R on every parameter so that one graph trains R independent models.
//!
//! Read top to bottom: [`ModelConfig`] → [`Transformer::specs`] (every parameter and its
//! init) → [`Transformer::forward`] (embeddings, blocks, tied output layer) →
//! [`Transformer::loss`] (per-replica mean cross-entropy).
//!
//! Block (pre-LayerNorm): `u = LN₁(x)`, attention from the gene, then the gate/residual
//! (`x + W_O·y` for `none`), then `h + MLP(LN₂(h))` with a 4× GELU MLP. Linear layers have
//! biases (init 0); weights are N(0, 0.02), residual output projections (W_O, MLP out)
//! N(0, 0.02/√(2·layers)). LayerNorm is written here with differentiable ops (candle's
//! fused `LayerNorm::forward` returns no gradient).

pub mod gelu;
pub mod kernels;
pub mod lm_head;
pub mod normalize;
pub mod params;

use crate::gene::{Gating, Gene, Normalization, Similarity, Temperature};
use candle_core::{DType, Device, Result, Tensor, D};
use normalize::Mask;
use params::{Init, ParamSpec, Params, Role};
use serde::{Deserialize, Serialize};

/// Shape of the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelConfig {
    pub vocab_size: usize,
    pub d_model: usize,
    pub n_layers: usize,
    pub n_heads: usize,
    /// Context length L (also sets the positional table and the `cosine` / `log_n` scales).
    pub seq_len: usize,
}

impl ModelConfig {
    /// Head width d_h.
    pub fn d_head(&self) -> usize {
        self.d_model / self.n_heads
    }
    /// Checks that the shape is usable.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.n_heads > 0 && self.d_model.is_multiple_of(self.n_heads),
            "d_model ({}) must be a positive multiple of n_heads ({})",
            self.d_model,
            self.n_heads
        );
        anyhow::ensure!(self.n_layers > 0, "n_layers must be at least 1");
        anyhow::ensure!(self.seq_len >= 2, "seq_len must be at least 2");
        anyhow::ensure!(self.vocab_size >= 2, "vocab_size must be at least 2");
        Ok(())
    }
}

/// Standard deviation of weight initialisation.
pub const INIT_STD: f64 = 0.02;
/// LayerNorm epsilon.
pub const LN_EPS: f64 = 1e-5;
/// Epsilon inside the norm of `cosine` and `qk_rmsnorm`.
pub const QK_EPS: f64 = 1e-6;

/// The base scale c of a gene's logits at context length `seq_len`.
pub fn base_scale(sim: Similarity, d_head: usize, seq_len: usize) -> f64 {
    match sim {
        Similarity::Cosine => {
            let l = seq_len as f64;
            (l * l - l).log2()
        }
        _ => 1.0 / (d_head as f64).sqrt(),
    }
}

/// Width of the additive-attention hidden layer, d_a = min(d_h, 16).
pub fn additive_width(d_head: usize) -> usize {
    d_head.min(16)
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

/// The LM: parameters plus the gene that decides the attention.
pub struct Transformer {
    pub gene: Gene,
    pub cfg: ModelConfig,
    pub params: Params,
    dtype: DType,
}

fn p(layer: usize, name: &str) -> String {
    format!("layers.{layer}.{name}")
}

impl Transformer {
    /// Every parameter of the model for `gene`, shapes without the replica axis and laid out
    /// to broadcast against the activations they meet.
    pub fn specs(gene: Gene, cfg: &ModelConfig) -> Vec<ParamSpec> {
        let (d, h, dh, l) = (cfg.d_model, cfg.n_heads, cfg.d_head(), cfg.n_layers);
        let resid_std = INIT_STD / ((2 * l) as f64).sqrt();
        let w = |name: String, shape: &[usize], std: f64| {
            ParamSpec::new(name, shape, Init::Normal(std), Role::Weight)
        };
        let c = |name: String, shape: &[usize], v: f64| {
            ParamSpec::new(name, shape, Init::Const(v), Role::NoDecay)
        };
        let mut s = vec![
            ParamSpec::new(
                "tok_emb",
                &[cfg.vocab_size, d],
                Init::Normal(INIT_STD),
                Role::Embedding,
            ),
            ParamSpec::new(
                "pos_emb",
                &[cfg.seq_len, d],
                Init::Normal(INIT_STD),
                Role::Embedding,
            ),
        ];
        let c0 = base_scale(gene.similarity, dh, cfg.seq_len);
        for i in 0..l {
            s.push(c(p(i, "ln1.g"), &[1, d], 1.0));
            s.push(c(p(i, "ln1.b"), &[1, d], 0.0));
            s.push(w(p(i, "attn.wqkv"), &[d, 3 * d], INIT_STD));
            s.push(c(p(i, "attn.bqkv"), &[1, 3 * d], 0.0));
            match gene.similarity {
                Similarity::QkRmsnorm => {
                    s.push(c(p(i, "attn.q_gain"), &[1, 1, dh], 1.0));
                    s.push(c(p(i, "attn.k_gain"), &[1, 1, dh], 1.0));
                }
                Similarity::Bilinear => s.push(ParamSpec::new(
                    p(i, "attn.bilinear"),
                    &[h, dh, dh],
                    Init::IdentityPlusNormal(INIT_STD),
                    Role::Weight,
                )),
                Similarity::Additive => {
                    let da = additive_width(dh);
                    s.push(w(p(i, "attn.add_a"), &[h, dh, da], INIT_STD));
                    s.push(w(p(i, "attn.add_b"), &[h, dh, da], INIT_STD));
                    s.push(w(p(i, "attn.add_w"), &[h, 1, 1, da], INIT_STD));
                }
                Similarity::Dot | Similarity::Cosine | Similarity::NegL2 => {}
            }
            match gene.temperature {
                Temperature::Fixed => {}
                Temperature::Learned => s.push(c(p(i, "attn.temp_theta"), &[1, 1, 1], c0.ln())),
                Temperature::LearnedHead => s.push(c(p(i, "attn.temp_theta"), &[h, 1, 1], c0.ln())),
                Temperature::LogN => s.push(c(p(i, "attn.temp_sigma"), &[h, 1, 1], 1.0)),
            }
            if gene.normalization == Normalization::AlphaEntmax {
                s.push(c(p(i, "attn.alpha_a"), &[h, 1, 1], 0.0));
            }
            match gene.gating {
                Gating::None => {}
                Gating::OutputGate | Gating::DenseGate => {
                    s.push(w(p(i, "attn.gate_w"), &[d, d], INIT_STD));
                    s.push(c(p(i, "attn.gate_b"), &[1, d], 0.0));
                }
                Gating::HeadGate => {
                    s.push(w(p(i, "attn.gate_w"), &[d, h], INIT_STD));
                    s.push(c(p(i, "attn.gate_b"), &[1, h], 0.0));
                }
                Gating::Highway => {
                    s.push(w(p(i, "attn.gate_w"), &[d, d], INIT_STD));
                    s.push(c(p(i, "attn.gate_b"), &[1, d], -2.0));
                }
            }
            s.push(w(p(i, "attn.wo"), &[d, d], resid_std));
            s.push(c(p(i, "attn.bo"), &[1, d], 0.0));
            s.push(c(p(i, "ln2.g"), &[1, d], 1.0));
            s.push(c(p(i, "ln2.b"), &[1, d], 0.0));
            s.push(w(p(i, "mlp.w1"), &[d, 4 * d], INIT_STD));
            s.push(c(p(i, "mlp.b1"), &[1, 4 * d], 0.0));
            s.push(w(p(i, "mlp.w2"), &[4 * d, d], resid_std));
            s.push(c(p(i, "mlp.b2"), &[1, d], 0.0));
        }
        s.push(c("ln_f.g".into(), &[1, d], 1.0));
        s.push(c("ln_f.b".into(), &[1, d], 0.0));
        s
    }

    /// (total, non-embedding) parameter counts of one replica.
    pub fn param_counts(gene: Gene, cfg: &ModelConfig) -> (usize, usize) {
        let specs = Self::specs(gene, cfg);
        let total: usize = specs.iter().map(|s| s.numel()).sum();
        let emb: usize = specs
            .iter()
            .filter(|s| s.role == Role::Embedding)
            .map(|s| s.numel())
            .sum();
        (total, total - emb)
    }

    /// A model with one replica per seed.
    pub fn new(
        gene: Gene,
        cfg: ModelConfig,
        seeds: &[u64],
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let params = Params::new(Self::specs(gene, &cfg), seeds, dtype, device)?;
        Ok(Transformer {
            gene,
            cfg,
            params,
            dtype,
        })
    }

    /// Number of replicas R.
    pub fn replicas(&self) -> usize {
        self.params.replicas()
    }

    /// The device the parameters live on.
    pub fn device(&self) -> &Device {
        self.params.get("tok_emb").device()
    }

    fn layer_norm(&self, x: &Tensor, prefix: &str) -> Result<Tensor> {
        let g = self.params.get(&format!("{prefix}.g"));
        let b = self.params.get(&format!("{prefix}.b"));
        let mean = x.mean_keepdim(D::Minus1)?;
        let xc = x.broadcast_sub(&mean)?;
        let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
        let y = xc.broadcast_div(&(var + LN_EPS)?.sqrt()?)?;
        y.broadcast_mul(g)?.broadcast_add(b)
    }

    /// x `[R, N, din]` · W `[R, din, dout]` + b `[R, 1, dout]`.
    fn linear(&self, x: &Tensor, w: &str, b: &str) -> Result<Tensor> {
        x.matmul(self.params.get(w))?
            .broadcast_add(self.params.get(b))
    }

    /// `[R, B·T, d]` → `[R, B, H, T, d_h]`.
    fn split_heads(&self, x: &Tensor, b: usize, t: usize) -> Result<Tensor> {
        let (r, h, dh) = (self.replicas(), self.cfg.n_heads, self.cfg.d_head());
        x.reshape((r, b, t, h, dh))?.transpose(2, 3)?.contiguous()
    }

    /// The attention logits z = scale · s(q, k), `[R, B, H, T, T]`.
    fn logits(&self, layer: usize, q: &Tensor, k: &Tensor, mask: &Mask) -> Result<Tensor> {
        let g = self.gene;
        let kt = k.transpose(3, 4)?;
        let s = match g.similarity {
            Similarity::Dot => bmm(q, &kt)?,
            Similarity::Cosine => {
                let unit = |x: &Tensor| -> Result<Tensor> {
                    x.broadcast_div(&(x.sqr()?.sum_keepdim(D::Minus1)? + QK_EPS)?.sqrt()?)
                };
                bmm(&unit(q)?, &unit(k)?.transpose(3, 4)?)?
            }
            Similarity::QkRmsnorm => {
                let rms = |x: &Tensor, gain: &str| -> Result<Tensor> {
                    let n =
                        x.broadcast_div(&(x.sqr()?.mean_keepdim(D::Minus1)? + QK_EPS)?.sqrt()?)?;
                    n.broadcast_mul(&self.params.get(&p(layer, gain)).unsqueeze(1)?)
                };
                bmm(
                    &rms(q, "attn.q_gain")?,
                    &rms(k, "attn.k_gain")?.transpose(3, 4)?,
                )?
            }
            Similarity::Bilinear => {
                let w = self.params.get(&p(layer, "attn.bilinear")).unsqueeze(1)?;
                bmm(&bmm(q, &w)?, &kt)?
            }
            Similarity::Additive => {
                let a = self.params.get(&p(layer, "attn.add_a")).unsqueeze(1)?;
                let bm = self.params.get(&p(layer, "attn.add_b")).unsqueeze(1)?;
                let w = self.params.get(&p(layer, "attn.add_w")).unsqueeze(1)?;
                let qa = bmm(q, &a)?.unsqueeze(4)?; // [R,B,H,T,1,da]
                let kb = bmm(k, &bm)?.unsqueeze(3)?; // [R,B,H,1,T,da]
                qa.broadcast_add(&kb)?
                    .tanh()?
                    .broadcast_mul(&w)?
                    .sum(D::Minus1)?
            }
            Similarity::NegL2 => {
                let qq = q.sqr()?.sum_keepdim(D::Minus1)?; // [.., T, 1]
                let kk = k.sqr()?.sum_keepdim(D::Minus1)?.transpose(3, 4)?; // [.., 1, T]
                let qk = bmm(q, &kt)?;
                (qk * 2.0)?.broadcast_sub(&qq)?.broadcast_sub(&kk)?
            }
        };
        let c = base_scale(g.similarity, self.cfg.d_head(), self.cfg.seq_len);
        let max_theta = 100f64.ln();
        match g.temperature {
            Temperature::Fixed => s * c,
            Temperature::Learned | Temperature::LearnedHead => {
                let theta = self.params.get(&p(layer, "attn.temp_theta")).unsqueeze(1)?;
                s.broadcast_mul(&theta.minimum(max_theta)?.exp()?)
            }
            Temperature::LogN => {
                let sigma = self.params.get(&p(layer, "attn.temp_sigma")).unsqueeze(1)?; // [R,1,H,1,1]
                let ln_l = (self.cfg.seq_len as f64).ln();
                let pos = (mask.ln_n() * (c / ln_l))?; // [T,1]
                s.broadcast_mul(&sigma)?.broadcast_mul(&pos)
            }
        }
    }

    /// One attention block (with its gate and residual), `x`, `u = LN₁(x)`: `[R, N, d]`.
    fn attention(
        &self,
        layer: usize,
        x: &Tensor,
        u: &Tensor,
        b: usize,
        t: usize,
        mask: &Mask,
    ) -> Result<Tensor> {
        let (r, d, h) = (self.replicas(), self.cfg.d_model, self.cfg.n_heads);
        let qkv = self.linear(u, &p(layer, "attn.wqkv"), &p(layer, "attn.bqkv"))?;
        let q = self.split_heads(&qkv.narrow(2, 0, d)?, b, t)?;
        let k = self.split_heads(&qkv.narrow(2, d, d)?, b, t)?;
        let v = self.split_heads(&qkv.narrow(2, 2 * d, d)?, b, t)?;
        let z = self.logits(layer, &q, &k, mask)?;
        let alpha = match self.gene.normalization {
            Normalization::AlphaEntmax => {
                let a = self.params.get(&p(layer, "attn.alpha_a")).unsqueeze(1)?;
                Some((candle_nn::ops::sigmoid(&a)? + 1.0)?)
            }
            _ => None,
        };
        let probs = normalize::normalize(self.gene.normalization, &z, mask, alpha.as_ref())?;
        let mut y = bmm(&probs, &v)?; // [R,B,H,T,dh]
        if self.gene.gating == Gating::HeadGate {
            let gate = candle_nn::ops::sigmoid(&self.linear(
                u,
                &p(layer, "attn.gate_w"),
                &p(layer, "attn.gate_b"),
            )?)?;
            let gate = gate.reshape((r, b, t, h, 1))?.transpose(2, 3)?; // [R,B,H,T,1]
            y = y.broadcast_mul(&gate)?;
        }
        let mut y = y.transpose(2, 3)?.reshape((r, b * t, d))?;
        let gate = |u: &Tensor| -> Result<Tensor> {
            candle_nn::ops::sigmoid(&self.linear(
                u,
                &p(layer, "attn.gate_w"),
                &p(layer, "attn.gate_b"),
            )?)
        };
        if self.gene.gating == Gating::OutputGate {
            y = (y * gate(u)?)?;
        }
        let o = self.linear(&y, &p(layer, "attn.wo"), &p(layer, "attn.bo"))?;
        match self.gene.gating {
            Gating::DenseGate => x + (o * gate(u)?)?,
            Gating::Highway => {
                let tg = gate(u)?;
                let carry = (tg.ones_like()? - &tg)?;
                (carry * x)? + (tg * o)?
            }
            _ => x + o,
        }
    }

    /// Logits `[R, B·T, V]` for token ids `[R, B, T]` (u32, T ≤ seq_len).
    pub fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        let x = self.hidden(ids)?;
        // Tied output layer: x · Eᵀ.
        x.matmul(&self.params.get("tok_emb").transpose(1, 2)?)
    }

    /// Summed NLL per replica `[R]` of predicting `targets` `[R, B, T]` from `ids`
    /// (the output layer and cross-entropy fused, see [`lm_head`]).
    pub fn nll_sum(&self, ids: &Tensor, targets: &Tensor) -> Result<Tensor> {
        let x = self.hidden(ids)?;
        let (r, n, _) = x.dims3()?;
        lm_head::lm_head_nll(&x, self.params.get("tok_emb"), &targets.reshape((r, n))?)?.sum(1)
    }

    /// Final hidden states `[R, B·T, d]` (after the last LayerNorm) for ids `[R, B, T]`.
    pub fn hidden(&self, ids: &Tensor) -> Result<Tensor> {
        let (r, b, t) = ids.dims3()?;
        if r != self.replicas() {
            candle_core::bail!("ids have {r} replicas, the model has {}", self.replicas());
        }
        if t > self.cfg.seq_len {
            candle_core::bail!(
                "sequence of {t} tokens is longer than seq_len {}",
                self.cfg.seq_len
            );
        }
        let (v, d) = (self.cfg.vocab_size, self.cfg.d_model);
        let dev = ids.device();
        // Token embedding: replica r looks up rows r·V + id of the flattened [R·V, d] table.
        let offsets = Tensor::arange(0u32, r as u32, dev)?
            .affine(v as f64, 0.0)?
            .reshape((r, 1, 1))?;
        let flat_ids = ids.broadcast_add(&offsets)?.flatten_all()?;
        let tok = self
            .params
            .get("tok_emb")
            .reshape((r * v, d))?
            .index_select(&flat_ids, 0)?;
        let pos = self.params.get("pos_emb").narrow(1, 0, t)?.unsqueeze(1)?; // [R,1,T,d]
        let mut x = tok
            .reshape((r, b, t, d))?
            .broadcast_add(&pos)?
            .reshape((r, b * t, d))?;
        let mask = Mask::causal(t, self.dtype, dev)?;
        for layer in 0..self.cfg.n_layers {
            let u = self.layer_norm(&x, &p(layer, "ln1"))?;
            x = self.attention(layer, &x, &u, b, t, &mask)?;
            let u = self.layer_norm(&x, &p(layer, "ln2"))?;
            let m = gelu::gelu(&self.linear(&u, &p(layer, "mlp.w1"), &p(layer, "mlp.b1"))?)?;
            x = (x + self.linear(&m, &p(layer, "mlp.w2"), &p(layer, "mlp.b2"))?)?;
        }
        self.layer_norm(&x, "ln_f")
    }

    /// Per-replica mean cross-entropy `[R]` of predicting `targets` `[R, B, T]` from `ids`.
    pub fn loss(&self, ids: &Tensor, targets: &Tensor) -> Result<Tensor> {
        let tokens = targets.dim(1)? * targets.dim(2)?;
        self.nll_sum(ids, targets)?.affine(1.0 / tokens as f64, 0.0)
    }
}
