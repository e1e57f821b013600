//! The attention gene space (`../shared/design/genes.md`).
//!
//! A gene is four components written `similarity+normalization+gating+temperature`,
//! e.g. `dot+sparsemax+output_gate+learned`. Every combination is valid:
//! 6 × 6 × 5 × 4 = 720 genes.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

macro_rules! component {
    ($(#[$doc:meta])* $name:ident, $label:literal, { $($(#[$vdoc:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($(#[$vdoc])* $variant),+ }

        impl $name {
            /// Every value, in the canonical (enumeration) order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            /// Name of the component, as used in error messages.
            pub const COMPONENT: &'static str = $label;

            /// The canonical spelling of this value.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            /// Position of this value in [`Self::ALL`].
            pub fn index(self) -> usize {
                Self::ALL.iter().position(|v| *v == self).expect("value is in ALL")
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result { f.write_str(self.as_str()) }
        }

        impl FromStr for $name {
            type Err = GeneError;
            fn from_str(s: &str) -> Result<Self, GeneError> {
                let s = s.trim();
                $(if s == $text { return Ok($name::$variant); })+
                $name::alias(s).ok_or_else(|| GeneError::UnknownValue {
                    component: $label,
                    value: s.to_string(),
                    valid: Self::ALL.iter().map(|v| v.as_str()).collect::<Vec<_>>().join(", "),
                })
            }
        }
    };
}

component!(
    /// How a query and a key are compared.
    Similarity, "similarity", {
        /// q · k
        Dot => "dot",
        /// cosine of q and k (ε = 1e-6 inside the norm)
        Cosine => "cosine",
        /// RMSNorm with learned gains on q and on k, then the dot product
        QkRmsnorm => "qk_rmsnorm",
        /// qᵀ W_h k with a per-head matrix initialised near the identity
        Bilinear => "bilinear",
        /// w_hᵀ tanh(A_h q + B_h k) (Bahdanau)
        Additive => "additive",
        /// −‖q − k‖²
        NegL2 => "neg_l2",
});

component!(
    /// How a row of logits becomes attention weights.
    Normalization, "normalization", {
        /// exp(z − max)/Σ exp(z − max)
        Softmax => "softmax",
        /// softmax with an extra zero logit ("attend to nothing")
        Softmax1 => "softmax1",
        /// Euclidean projection onto the simplex (exact sort-based threshold)
        Sparsemax => "sparsemax",
        /// 1.5-entmax (exact sort-based threshold)
        Entmax15 => "entmax15",
        /// α-entmax with a learned α per head (bisection)
        AlphaEntmax => "alpha_entmax",
        /// sigmoid(z − ln n), no row normalisation
        Sigmoid => "sigmoid",
});

component!(
    /// What gates the attention output.
    Gating, "gating", {
        /// no gate
        None => "none",
        /// elementwise sigmoid gate on the head outputs, before W_O
        OutputGate => "output_gate",
        /// one scalar sigmoid gate per head and token, before W_O
        HeadGate => "head_gate",
        /// elementwise sigmoid gate after W_O
        DenseGate => "dense_gate",
        /// highway connection replacing the residual add
        Highway => "highway",
});

component!(
    /// The scale multiplying the logits.
    Temperature, "temperature", {
        /// the base scale c
        Fixed => "fixed",
        /// exp(θ), one θ per layer
        Learned => "learned",
        /// exp(θ_h), one θ per head
        LearnedHead => "learned_head",
        /// c · σ_h · ln(n_i)/ln(L) (scalable softmax)
        LogN => "log_n",
});

impl Similarity {
    fn alias(_s: &str) -> Option<Self> {
        None
    }
}
impl Normalization {
    fn alias(_s: &str) -> Option<Self> {
        None
    }
    /// True when the weights of a row are guaranteed to sum to one.
    pub fn sums_to_one(self) -> bool {
        !matches!(self, Normalization::Softmax1 | Normalization::Sigmoid)
    }
}
impl Gating {
    fn alias(_s: &str) -> Option<Self> {
        None
    }
}
impl Temperature {
    fn alias(s: &str) -> Option<Self> {
        match s {
            "learned_scalar" => Some(Temperature::Learned),
            _ => None,
        }
    }
}

/// Errors from parsing a gene.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GeneError {
    /// The text does not have four `+`-separated components.
    #[error("gene `{text}` must have 4 components written similarity+normalization+gating+temperature (e.g. dot+softmax+none+fixed), found {found}")]
    WrongArity { text: String, found: usize },
    /// A component has a value outside its set.
    #[error("unknown {component} `{value}`; valid values: {valid}")]
    UnknownValue {
        component: &'static str,
        value: String,
        valid: String,
    },
}

/// One attention mechanism: a point in the 720-gene space.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Gene {
    pub similarity: Similarity,
    pub normalization: Normalization,
    pub gating: Gating,
    pub temperature: Temperature,
}

/// Number of genes in the space.
pub const GENE_COUNT: usize = 720;

impl Gene {
    /// The published baseline, `dot+softmax+none+fixed`.
    pub const BASELINE: Gene = Gene {
        similarity: Similarity::Dot,
        normalization: Normalization::Softmax,
        gating: Gating::None,
        temperature: Temperature::Fixed,
    };
    /// The published "evolved" winner, `dot+sparsemax+output_gate+learned`.
    pub const PUBLISHED_WINNER: Gene = Gene {
        similarity: Similarity::Dot,
        normalization: Normalization::Sparsemax,
        gating: Gating::OutputGate,
        temperature: Temperature::Learned,
    };

    /// All 720 genes in canonical order (similarity slowest, temperature fastest).
    pub fn all() -> Vec<Gene> {
        let mut out = Vec::with_capacity(GENE_COUNT);
        for &similarity in Similarity::ALL {
            for &normalization in Normalization::ALL {
                for &gating in Gating::ALL {
                    for &temperature in Temperature::ALL {
                        out.push(Gene {
                            similarity,
                            normalization,
                            gating,
                            temperature,
                        });
                    }
                }
            }
        }
        out
    }

    /// Position of this gene in [`Gene::all`] (0..720); stable across versions.
    pub fn index(&self) -> usize {
        let g = Gating::ALL.len();
        let t = Temperature::ALL.len();
        let n = Normalization::ALL.len();
        ((self.similarity.index() * n + self.normalization.index()) * g + self.gating.index()) * t
            + self.temperature.index()
    }

    /// The gene at a position of [`Gene::all`].
    pub fn from_index(i: usize) -> Option<Gene> {
        (i < GENE_COUNT).then(|| Gene::all()[i])
    }

    /// A stable short id: `g` and the zero-padded index, e.g. `g000` for the baseline.
    pub fn short_id(&self) -> String {
        format!("g{:03}", self.index())
    }
}

impl fmt::Display for Gene {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}+{}+{}+{}",
            self.similarity, self.normalization, self.gating, self.temperature
        )
    }
}

impl FromStr for Gene {
    type Err = GeneError;
    fn from_str(s: &str) -> Result<Self, GeneError> {
        let parts: Vec<&str> = s.trim().split('+').collect();
        if parts.len() != 4 {
            return Err(GeneError::WrongArity {
                text: s.to_string(),
                found: parts.len(),
            });
        }
        Ok(Gene {
            similarity: parts[0].parse()?,
            normalization: parts[1].parse()?,
            gating: parts[2].parse()?,
            temperature: parts[3].parse()?,
        })
    }
}

impl Serialize for Gene {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Gene {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn space_has_720_distinct_genes() {
        let all = Gene::all();
        assert_eq!(all.len(), GENE_COUNT);
        let set: HashSet<_> = all.iter().collect();
        assert_eq!(set.len(), 720);
        let ids: HashSet<_> = all.iter().map(|g| g.short_id()).collect();
        assert_eq!(ids.len(), 720);
    }

    #[test]
    fn display_parse_roundtrip_and_index() {
        for (i, g) in Gene::all().into_iter().enumerate() {
            let s = g.to_string();
            assert_eq!(s.parse::<Gene>().unwrap(), g);
            assert_eq!(g.index(), i);
            assert_eq!(Gene::from_index(i), Some(g));
        }
        assert_eq!(Gene::from_index(720), None);
    }

    #[test]
    fn known_genes_and_ids() {
        assert_eq!(Gene::BASELINE.to_string(), "dot+softmax+none+fixed");
        assert_eq!(Gene::BASELINE.short_id(), "g000");
        assert_eq!(
            Gene::PUBLISHED_WINNER.to_string(),
            "dot+sparsemax+output_gate+learned"
        );
        // dot=0, sparsemax=2, output_gate=1, learned=1 -> ((0*6+2)*5+1)*4+1 = 45
        assert_eq!(Gene::PUBLISHED_WINNER.short_id(), "g045");
        let g: Gene = "neg_l2+sigmoid+highway+log_n".parse().unwrap();
        assert_eq!(g.index(), 719);
    }

    #[test]
    fn alias_learned_scalar() {
        let g: Gene = "dot+sparsemax+output_gate+learned_scalar".parse().unwrap();
        assert_eq!(g, Gene::PUBLISHED_WINNER);
        assert_eq!(g.to_string(), "dot+sparsemax+output_gate+learned");
    }

    #[test]
    fn unknown_value_lists_valid_values() {
        let e = "dot+softermax+none+fixed".parse::<Gene>().unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("normalization"), "{msg}");
        assert!(msg.contains("softermax"), "{msg}");
        for v in [
            "softmax",
            "softmax1",
            "sparsemax",
            "entmax15",
            "alpha_entmax",
            "sigmoid",
        ] {
            assert!(msg.contains(v), "{msg} should list {v}");
        }
        let e = "dot+softmax+none".parse::<Gene>().unwrap_err();
        assert!(matches!(e, GeneError::WrongArity { found: 3, .. }));
    }

    #[test]
    fn serde_as_string() {
        let json = serde_json::to_string(&Gene::BASELINE).unwrap();
        assert_eq!(json, "\"dot+softmax+none+fixed\"");
        let back: Gene = serde_json::from_str(&json).unwrap();
        assert_eq!(back, Gene::BASELINE);
        assert!(serde_json::from_str::<Gene>("\"dot+x+none+fixed\"").is_err());
    }
}
