//! A decoder-only transformer LM whose attention is built from a [`Gene`], with a leading
//! replica axis R on every parameter so that one graph trains R independent models.
//!
//! Read top to bottom: [`ModelConfig`] → [`Transformer::specs`] (every parameter and its
//! init) → [`Transformer::forward`] (embeddings, blocks, tied output layer) →
//! [`Transformer::loss`] (per-replica mean cross-entropy). The attention of a block is in
//! [`attention`], one file per gene component.
//!
//! Block (pre-LayerNorm): `u = LN₁(x)`, attention from the gene, then the gate/residual
//! (`x + W_O·y` for `none`), then `h + MLP(LN₂(h))` with a 4× GELU MLP. Linear layers have
//! biases (init 0); weights are N(0, 0.02), residual output projections (W_O, MLP out)
//! N(0, 0.02/√(2·layers)). LayerNorm is written here with differentiable ops (candle's
//! fused `LayerNorm::forward` returns no gradient).

pub mod additive;
pub mod attention;
pub mod broadcast;
pub mod embed;
pub mod entmax;
pub mod gelu;
pub mod kernels;
pub mod lm_head;
pub mod params;
pub mod sparsemax;

use crate::gene::Gene;
use attention::{Layer, Mask};
use candle_core::{DType, Device, Result, Tensor, D};
use params::{Init, ParamSpec, Params, Role};
use serde::{Deserialize, Serialize};

/// Shape of the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelConfig {
    /// Words in the vocabulary (rows of the tied embedding).
    pub vocab_size: usize,
    /// Width d of the residual stream.
    pub d_model: usize,
    /// Transformer blocks.
    pub n_layers: usize,
    /// Attention heads H per block (d_h = d / H).
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
            self.d_model > 0 && self.n_heads > 0 && self.d_model.is_multiple_of(self.n_heads),
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

/// The LM: parameters plus the gene that decides the attention.
pub struct Transformer {
    /// The attention mechanism of every block.
    pub gene: Gene,
    /// Shape.
    pub cfg: ModelConfig,
    /// Every parameter, with a leading replica axis.
    pub params: Params,
    dtype: DType,
}

use attention::name as p;

impl Transformer {
    /// Every parameter of the model for `gene`, shapes without the replica axis and laid out
    /// to broadcast against the activations they meet.
    pub fn specs(gene: Gene, cfg: &ModelConfig) -> Vec<ParamSpec> {
        let (d, l) = (cfg.d_model, cfg.n_layers);
        let resid_std = INIT_STD / ((2 * l) as f64).sqrt();
        let (w, c) = (attention::weight, attention::constant);
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
        for i in 0..l {
            s.push(c(i, "ln1.g", &[1, d], 1.0));
            s.push(c(i, "ln1.b", &[1, d], 0.0));
            s.extend(attention::specs(gene, cfg, i));
            s.push(c(i, "ln2.g", &[1, d], 1.0));
            s.push(c(i, "ln2.b", &[1, d], 0.0));
            s.push(w(i, "mlp.w1", &[d, 4 * d], INIT_STD));
            s.push(c(i, "mlp.b1", &[1, 4 * d], 0.0));
            s.push(w(i, "mlp.w2", &[4 * d, d], resid_std));
            s.push(c(i, "mlp.b2", &[1, d], 0.0));
        }
        let no_decay = |n: &str| ParamSpec::new(n, &[1, d], Init::Const(0.0), Role::NoDecay);
        s.push(ParamSpec::new(
            "ln_f.g",
            &[1, d],
            Init::Const(1.0),
            Role::NoDecay,
        ));
        s.push(no_decay("ln_f.b"));
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

    /// Matrix-multiply FLOPs of one training token (forward and backward) of one replica,
    /// the usual estimate: 3 × the forward's 2·(weights of the blocks) + 2·d·V (the tied
    /// output layer) + 4·L·T·d (scores and weighted values over the full T × T). Elementwise
    /// work (norms, GELU, the normaliser, additive attention's tanh) is not counted.
    pub fn flops_per_token(gene: Gene, cfg: &ModelConfig) -> f64 {
        let block_weights: usize = Self::specs(gene, cfg)
            .iter()
            .filter(|s| s.role == Role::Weight && s.shape.len() >= 2)
            .map(|s| s.numel())
            .sum();
        let (d, v, l, t) = (
            cfg.d_model as f64,
            cfg.vocab_size as f64,
            cfg.n_layers as f64,
            cfg.seq_len as f64,
        );
        3.0 * (2.0 * block_weights as f64 + 2.0 * d * v + 4.0 * l * t * d)
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
        broadcast::add(&broadcast::mul(&y, g)?, b)
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

    /// [`Self::nll_sum`] for a loss whose gradient reaches every token's NLL as
    /// `grad_scale` ([`lm_head::lm_head_nll_scaled`]: the backward's pass over the logits
    /// moves into the forward, with bit-identical gradients).
    fn nll_sum_scaled(&self, ids: &Tensor, targets: &Tensor, grad_scale: f32) -> Result<Tensor> {
        let x = self.hidden(ids)?;
        let (r, n, _) = x.dims3()?;
        let t = targets.reshape((r, n))?;
        lm_head::lm_head_nll_scaled(&x, self.params.get("tok_emb"), &t, grad_scale)?.sum(1)
    }

    /// Final hidden states `[R, B·T, d]` (after the last LayerNorm) for ids `[R, B, T]`.
    pub fn hidden(&self, ids: &Tensor) -> Result<Tensor> {
        Ok(self.hidden_with(ids, false)?.0)
    }

    /// [`Self::hidden`]; with `defer_lookup`, the token lookup's share of the embedding
    /// gradient is left out of candle's backward, to the returned
    /// [`embed::DeferredLookupGrad`] (on the CPU in f32; elsewhere it is candle's).
    fn hidden_with(
        &self,
        ids: &Tensor,
        defer_lookup: bool,
    ) -> Result<(Tensor, embed::DeferredLookupGrad)> {
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
        let d = self.cfg.d_model;
        let dev = ids.device();
        let table = self.params.get("tok_emb");
        let ids = ids.reshape((r, b * t))?;
        let (tok, lookup) = if defer_lookup {
            embed::lookup_deferred(table, &ids)?
        } else {
            (
                embed::lookup(table, &ids)?,
                embed::DeferredLookupGrad::default(),
            )
        };
        let pos = self.params.get("pos_emb").narrow(1, 0, t)?.unsqueeze(1)?; // [R,1,T,d]
        let mut x = broadcast::add(&tok.reshape((r, b, t, d))?, &pos)?.reshape((r, b * t, d))?;
        let mask = Mask::causal(t, self.dtype, dev)?;
        for layer in 0..self.cfg.n_layers {
            let l = Layer {
                params: &self.params,
                layer,
                cfg: &self.cfg,
                replicas: r,
            };
            let u = self.layer_norm(&x, &p(layer, "ln1"))?;
            x = attention::forward(self.gene, &l, &x, &u, b, t, &mask)?;
            let u = self.layer_norm(&x, &p(layer, "ln2"))?;
            let m = gelu::gelu(&l.linear(&u, "mlp.w1", "mlp.b1")?)?;
            x = (x + l.linear(&m, "mlp.w2", "mlp.b2")?)?;
        }
        Ok((self.layer_norm(&x, "ln_f")?, lookup))
    }

    /// [`Self::loss`] whose backward leaves the embedding's gradient out of candle's: the
    /// output layer's ∂E, computed on the other threads while the rest of the backward
    /// runs ([`lm_head::lm_head_nll_deferred`]), and the token lookup's rows
    /// ([`embed::lookup_deferred`]). After `backward()`, [`Self::add_deferred_grad`] puts
    /// their sum into the gradient store. Same values as [`Self::loss`], bit for bit.
    pub fn loss_deferred(&self, ids: &Tensor, targets: &Tensor) -> Result<(Tensor, DeferredGrads)> {
        let tokens = targets.dim(1)? * targets.dim(2)?;
        let scale = 1.0 / tokens as f64;
        let (x, lookup) = self.hidden_with(ids, true)?;
        let (r, n, _) = x.dims3()?;
        let t = targets.reshape((r, n))?;
        let (rows, head) =
            lm_head::lm_head_nll_deferred(&x, self.params.get("tok_emb"), &t, scale as f32)?;
        Ok((
            rows.sum(1)?.affine(scale, 0.0)?,
            DeferredGrads { head, lookup },
        ))
    }

    /// Completes `grads` from [`Self::loss_deferred`]'s backward: the gradient of
    /// `tok_emb` becomes the output layer's ∂E plus the lookup's rows (plus whatever
    /// candle already holds for it, which is nothing in this model).
    pub fn add_deferred_grad(
        &self,
        grads: &mut candle_core::backprop::GradStore,
        deferred: DeferredGrads,
    ) -> Result<()> {
        let emb = self.params.get("tok_emb");
        let (r, v, d) = emb.dims3()?;
        let mut ge = match deferred.head.finish() {
            Some((ge, _)) => ge,
            None if deferred.lookup.pending() => vec![0f32; r * v * d],
            None => return Ok(()),
        };
        deferred.lookup.add_into(&mut ge)?;
        let ge = Tensor::from_vec(ge, (r, v, d), emb.device())?;
        let total = match grads.get(emb) {
            Some(g) => (g + ge)?,
            None => ge,
        };
        grads.insert(emb, total);
        Ok(())
    }

    /// Per-replica mean cross-entropy `[R]` of predicting `targets` `[R, B, T]` from `ids`.
    pub fn loss(&self, ids: &Tensor, targets: &Tensor) -> Result<Tensor> {
        let tokens = targets.dim(1)? * targets.dim(2)?;
        let scale = 1.0 / tokens as f64;
        // candle's backward of affine(scale, 0) turns a unit gradient into `scale as f32`,
        // and that of sum(1) hands it to every row unchanged.
        self.nll_sum_scaled(ids, targets, scale as f32)?
            .affine(scale, 0.0)
    }
}

/// The embedding's gradient that a [`Transformer::loss_deferred`] backward left out of
/// candle's, for [`Transformer::add_deferred_grad`].
pub struct DeferredGrads {
    head: lm_head::DeferredEmbGrad,
    lookup: embed::DeferredLookupGrad,
}

impl DeferredGrads {
    /// Whether the token lookup's share is held here, to be added by
    /// [`Transformer::add_deferred_grad`] (after a backward, on the CPU in f32), rather
    /// than left in candle's gradients.
    pub fn lookup_pending(&self) -> bool {
        self.lookup.pending()
    }
}
