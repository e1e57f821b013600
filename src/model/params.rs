//! Replica-batched parameters, initialised from (seed, parameter name).
//!
//! Every parameter is stored with a leading replica axis `R`: replica `r` of parameter
//! `name` is drawn from a ChaCha8 generator seeded with `derive_seed(seeds[r], name)`, so
//! (a) replica r of an R-replica model equals a 1-replica model with the same seed, and
//! (b) a parameter that two genes share (same name, same shape) starts identical in both.

use crate::seed::derive_seed;
use candle_core::{DType, Device, Result, Tensor, Var};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

/// How a parameter is initialised.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Init {
    /// N(0, std²).
    Normal(f64),
    /// A constant.
    Const(f64),
    /// Identity in the last two (square) dims plus N(0, std²).
    IdentityPlusNormal(f64),
}

/// What kind of parameter this is, which decides weight decay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A weight matrix or vector of a linear map: decayed.
    Weight,
    /// An embedding table: decayed.
    Embedding,
    /// A gain, bias, temperature or α parameter: never decayed.
    NoDecay,
}

/// The declaration of one parameter (shape without the replica axis).
#[derive(Debug, Clone)]
pub struct ParamSpec {
    /// Unique name, e.g. `layers.0.attn.wqkv`; also seeds its initialisation.
    pub name: String,
    /// Shape of one replica.
    pub shape: Vec<usize>,
    /// How it starts.
    pub init: Init,
    /// Whether it is decayed.
    pub role: Role,
}

impl ParamSpec {
    /// A new declaration.
    pub fn new(name: impl Into<String>, shape: &[usize], init: Init, role: Role) -> Self {
        ParamSpec {
            name: name.into(),
            shape: shape.to_vec(),
            init,
            role,
        }
    }
    /// Elements per replica.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
    /// Whether AdamW decays this parameter.
    pub fn decays(&self) -> bool {
        matches!(self.role, Role::Weight | Role::Embedding)
    }
    /// The initial values of one replica.
    pub fn init_values(&self, seed: u64) -> Vec<f64> {
        let n = self.numel();
        let mut rng = ChaCha8Rng::seed_from_u64(derive_seed(seed, &self.name));
        let mut normal = |std: f64| -> Vec<f64> {
            (0..n)
                .map(|_| {
                    std * <StandardNormal as Distribution<f64>>::sample(&StandardNormal, &mut rng)
                })
                .collect()
        };
        match self.init {
            Init::Normal(std) => normal(std),
            Init::Const(c) => vec![c; n],
            Init::IdentityPlusNormal(std) => {
                let k = *self.shape.last().expect("matrix");
                let mut v = normal(std);
                for (i, x) in v.iter_mut().enumerate() {
                    let (r, c) = ((i / k) % k, i % k);
                    if r == c {
                        *x += 1.0;
                    }
                }
                v
            }
        }
    }
}

/// A set of replica-batched parameters.
pub struct Params {
    entries: Vec<(ParamSpec, Var)>,
    replicas: usize,
}

impl Params {
    /// Creates and initialises every parameter for the given replica seeds.
    pub fn new(
        specs: Vec<ParamSpec>,
        seeds: &[u64],
        dtype: DType,
        device: &Device,
    ) -> Result<Params> {
        let r = seeds.len();
        if r == 0 {
            candle_core::bail!("at least one seed (replica) is needed");
        }
        let mut entries = Vec::with_capacity(specs.len());
        for spec in specs {
            let mut data = Vec::with_capacity(r * spec.numel());
            for &s in seeds {
                data.extend(spec.init_values(s));
            }
            let mut shape = vec![r];
            shape.extend_from_slice(&spec.shape);
            let t = Tensor::from_vec(data, shape, &Device::Cpu)?
                .to_dtype(dtype)?
                .to_device(device)?;
            entries.push((spec, Var::from_tensor(&t)?));
        }
        Ok(Params {
            entries,
            replicas: r,
        })
    }

    /// Number of replicas R.
    pub fn replicas(&self) -> usize {
        self.replicas
    }

    /// The parameter called `name` (with its replica axis).
    pub fn get(&self, name: &str) -> &Tensor {
        match self.entries.iter().find(|(s, _)| s.name == name) {
            Some((_, v)) => v.as_tensor(),
            None => panic!("no parameter named {name}: the model declared it neither in specs()"),
        }
    }

    /// All parameters with their declarations.
    pub fn iter(&self) -> impl Iterator<Item = (&ParamSpec, &Var)> {
        self.entries.iter().map(|(s, v)| (s, v))
    }
}
