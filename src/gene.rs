//! The attention gene space (`../shared/design/genes.md`).
//!
//! A gene is four components written `similarity+normalization+gating+temperature`,
//! e.g. `dot+sparsemax+output_gate+learned`. Every combination is valid, so the space has
//! [`GENE_COUNT`] genes, the product of the components' value counts.
//!
//! A component's values are one enum here; each value's parameters and forward live in
//! `src/model/attention/<component>.rs` as exhaustive matches, so adding a value is two
//! edits: its variant here and its arm there (the compiler points at the second).
//!
//! **Growing the space.** The canonical order ([`Gene::all`], [`Gene::index`], the short
//! ids) and every draw of the GA and of random search are defined over the current space.
//! A new value renumbers genes and changes those draws, so [`SPACE_VERSION`] must be bumped
//! with it: stores record the version they were planned with (`meta.json`), the unit hash
//! includes it (from version 2 on), and a search study refuses to resume under another
//! version rather than silently planning different genes.

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
    WrongArity {
        /// The text given.
        text: String,
        /// How many components it had.
        found: usize,
    },
    /// A component has a value outside its set.
    #[error("unknown {component} `{value}`; valid values: {valid}")]
    UnknownValue {
        /// The component's name.
        component: &'static str,
        /// The value given.
        value: String,
        /// The valid values, comma-separated.
        valid: String,
    },
}

/// One of the four components of a gene, in gene order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Component {
    /// [`Similarity`].
    Similarity,
    /// [`Normalization`].
    Normalization,
    /// [`Gating`].
    Gating,
    /// [`Temperature`].
    Temperature,
}

impl Component {
    /// The four components, in gene order.
    pub const ALL: [Component; 4] = [
        Component::Similarity,
        Component::Normalization,
        Component::Gating,
        Component::Temperature,
    ];

    /// The component's name (`similarity`, …), as in study files and tables.
    pub fn as_str(self) -> &'static str {
        match self {
            Component::Similarity => Similarity::COMPONENT,
            Component::Normalization => Normalization::COMPONENT,
            Component::Gating => Gating::COMPONENT,
            Component::Temperature => Temperature::COMPONENT,
        }
    }

    /// The canonical spellings of its values, in canonical order.
    pub fn values(self) -> Vec<&'static str> {
        fn names<T: Copy>(all: &[T], f: fn(T) -> &'static str) -> Vec<&'static str> {
            all.iter().map(|v| f(*v)).collect()
        }
        match self {
            Component::Similarity => names(Similarity::ALL, Similarity::as_str),
            Component::Normalization => names(Normalization::ALL, Normalization::as_str),
            Component::Gating => names(Gating::ALL, Gating::as_str),
            Component::Temperature => names(Temperature::ALL, Temperature::as_str),
        }
    }
}

impl fmt::Display for Component {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Component {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Component::ALL
            .into_iter()
            .find(|c| c.as_str() == s.trim())
            .ok_or_else(|| {
                format!(
                    "unknown component `{s}`; valid components: similarity, normalization, gating, temperature"
                )
            })
    }
}

/// One attention mechanism: a point in the gene space.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Gene {
    /// How a query and a key are compared.
    pub similarity: Similarity,
    /// How a row of logits becomes weights.
    pub normalization: Normalization,
    /// What gates the attention output.
    pub gating: Gating,
    /// The scale multiplying the logits.
    pub temperature: Temperature,
}

/// Number of genes in the space: the product of the components' value counts.
pub const GENE_COUNT: usize =
    Similarity::ALL.len() * Normalization::ALL.len() * Gating::ALL.len() * Temperature::ALL.len();

/// Version of the gene space: bump it whenever a component gains, loses or reorders a
/// value (see the module docs). 1: the space of `genes.md` (6 × 6 × 5 × 4).
pub const SPACE_VERSION: u32 = 1;

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

    /// Every gene in canonical order (similarity slowest, temperature fastest).
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

    /// Position of this gene in [`Gene::all`] (0..[`GENE_COUNT`]); stable within a
    /// [`SPACE_VERSION`].
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

    /// The value of component `c`, e.g. `sparsemax` for [`Component::Normalization`].
    pub fn get(&self, c: Component) -> &'static str {
        match c {
            Component::Similarity => self.similarity.as_str(),
            Component::Normalization => self.normalization.as_str(),
            Component::Gating => self.gating.as_str(),
            Component::Temperature => self.temperature.as_str(),
        }
    }

    /// This gene with component `c` set to `value` (an error lists the valid values).
    pub fn with(self, c: Component, value: &str) -> Result<Gene, GeneError> {
        let mut g = self;
        match c {
            Component::Similarity => g.similarity = value.parse()?,
            Component::Normalization => g.normalization = value.parse()?,
            Component::Gating => g.gating = value.parse()?,
            Component::Temperature => g.temperature = value.parse()?,
        }
        Ok(g)
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
    fn space_has_the_genes_md_count_of_distinct_genes() {
        let all = Gene::all();
        // genes.md: 6 similarities × 6 normalizations × 5 gatings × 4 temperatures.
        assert_eq!(GENE_COUNT, 6 * 6 * 5 * 4);
        assert_eq!(all.len(), GENE_COUNT);
        let set: HashSet<_> = all.iter().collect();
        assert_eq!(set.len(), GENE_COUNT);
        let ids: HashSet<_> = all.iter().map(|g| g.short_id()).collect();
        assert_eq!(ids.len(), GENE_COUNT);
    }

    #[test]
    fn get_and_with_address_components_by_type() {
        let g = Gene::PUBLISHED_WINNER;
        let parts: Vec<&str> = Component::ALL.iter().map(|&c| g.get(c)).collect();
        assert_eq!(parts.join("+"), g.to_string());
        let h = g.with(Component::Gating, "highway").unwrap();
        assert_eq!(h.to_string(), "dot+sparsemax+highway+learned");
        let e = g.with(Component::Gating, "gated").unwrap_err().to_string();
        assert!(e.contains("gating") && e.contains("highway"), "{e}");
        assert_eq!("gating".parse::<Component>(), Ok(Component::Gating));
        assert!("gate".parse::<Component>().is_err());
        assert_eq!(
            Component::Normalization.values().len(),
            Normalization::ALL.len()
        );
    }

    #[test]
    fn display_parse_roundtrip_and_index() {
        for (i, g) in Gene::all().into_iter().enumerate() {
            let s = g.to_string();
            assert_eq!(s.parse::<Gene>().unwrap(), g);
            assert_eq!(g.index(), i);
            assert_eq!(Gene::from_index(i), Some(g));
        }
        assert_eq!(Gene::from_index(GENE_COUNT), None);
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
        assert_eq!(g.index(), GENE_COUNT - 1);
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
