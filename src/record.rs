//! The records a study produces — one finished unit ([`RunRow`]), one point of its curve
//! ([`CurveRow`]), one individual of a GA generation ([`GenerationRow`]) — shared by the
//! store (which writes and reads them as Parquet), the searches, the report and the CLI.
//! Their column layout is in `study::store::schema`.

use crate::gene::Gene;
use crate::train::TrainConfig;
use std::fmt;
use std::str::FromStr;

/// The stage of a study that requested a unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Stage {
    /// A search over genes (evolve or random_search).
    Search,
    /// Genes on a common seed list (replicate, or the stage after a search).
    Replicate,
    /// A hyperparameter random search per gene (tune).
    Tune,
    /// A full factorial over components (ablate).
    Ablate,
    /// Rounds of a race over seeds (race; its confirmation is a replicate stage).
    Race,
    /// GA evaluations trained only to a hurdle (`[evolve] hurdle`): partial runs, never
    /// final results.
    Hurdle,
}

impl Stage {
    /// Every stage.
    pub const ALL: [Stage; 6] = [
        Stage::Search,
        Stage::Replicate,
        Stage::Tune,
        Stage::Ablate,
        Stage::Race,
        Stage::Hurdle,
    ];

    /// The name stored in `runs.parquet`.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Search => "search",
            Stage::Replicate => "replicate",
            Stage::Tune => "tune",
            Stage::Ablate => "ablate",
            Stage::Race => "race",
            Stage::Hurdle => "hurdle",
        }
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for Stage {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl FromStr for Stage {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Stage::ALL
            .into_iter()
            .find(|x| x.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown stage `{s}` (valid: search, replicate, tune, ablate, race, hurdle)"
                )
            })
    }
}

/// How an individual of a GA generation came to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operator {
    /// Drawn for the first population (or the baseline put there).
    Initial,
    /// Survived from the previous generation.
    Elite,
    /// Uniform crossover of two elites, no component mutated.
    Crossover,
    /// Uniform crossover, then at least one component mutated.
    Mutation,
}

impl Operator {
    /// Every operator.
    pub const ALL: [Operator; 4] = [
        Operator::Initial,
        Operator::Elite,
        Operator::Crossover,
        Operator::Mutation,
    ];

    /// The name stored in `generations.parquet`.
    pub fn as_str(self) -> &'static str {
        match self {
            Operator::Initial => "initial",
            Operator::Elite => "elite",
            Operator::Crossover => "crossover",
            Operator::Mutation => "mutation",
        }
    }
}

impl fmt::Display for Operator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Operator {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Operator::ALL
            .into_iter()
            .find(|x| x.as_str() == s)
            .ok_or_else(|| {
                format!("unknown operator `{s}` (valid: initial, elite, crossover, mutation)")
            })
    }
}

/// One row of `runs.parquet`: one unit.
#[derive(Debug, Clone, PartialEq)]
pub struct RunRow {
    /// Study name.
    pub study: String,
    /// Stage that trained it.
    pub stage: Stage,
    /// Unit content hash.
    pub unit_id: String,
    /// The replica-batched run it was part of.
    pub pack_id: String,
    /// Gene.
    pub gene: Gene,
    /// Seed.
    pub seed: u64,
    /// Preset the configuration started from.
    pub preset: String,
    /// Training configuration (one column per field).
    pub config: TrainConfig,
    /// Trainable parameters.
    pub params_total: u64,
    /// Trainable parameters outside the (tied) embedding and positions.
    pub params_nonembed: u64,
    /// Step at which the run diverged (non-finite loss or gradient), if it did.
    pub diverged_at: Option<u64>,
    /// Mean training loss over the last 100 steps.
    pub train_loss: f64,
    /// Validation perplexity at the end (null when diverged).
    pub val_ppl: Option<f64>,
    /// Test perplexity at the end (null when diverged).
    pub test_ppl: Option<f64>,
    /// Training tokens per second of the whole pack (all replicas).
    pub tokens_per_s: f64,
    /// Wall seconds of the whole pack.
    pub wall_s: f64,
    /// `cpu` or `cuda:N`.
    pub device: String,
    /// For a hurdle-stage row: the step the run stopped at (its results are at that step).
    pub stopped_at: Option<u64>,
    /// What it ran on: the CPU model (`/proc/cpuinfo`) or the GPU's name; empty in stores
    /// written before evoattn recorded it.
    pub hardware: String,
    /// Compute threads of the run.
    pub threads: u64,
    /// Replicas in the pack.
    pub replicas: u64,
    /// Crate version.
    pub evoattn_version: String,
    /// [`crate::version::ENGINE_VERSION`].
    pub engine_version: u32,
    /// Commit the binary was built from (`-dirty` when the tree had changes).
    pub git_commit: String,
    /// Data fingerprint.
    pub data_fingerprint: String,
    /// UTC, RFC 3339.
    pub started_at: String,
    /// UTC, RFC 3339.
    pub finished_at: String,
}

/// One row of `curves.parquet`.
#[derive(Debug, Clone, PartialEq)]
pub struct CurveRow {
    /// Unit.
    pub unit_id: String,
    /// Optimiser steps done.
    pub step: u64,
    /// Mean training loss since the previous point.
    pub train_loss: f64,
    /// Validation perplexity (null after divergence).
    pub val_ppl: Option<f64>,
}

/// One row of `generations.parquet`.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationRow {
    /// 0-based generation.
    pub generation: u64,
    /// Position in the population (elites first).
    pub slot: u64,
    /// Gene.
    pub gene: Gene,
    /// Parent genes joined by `;` (empty for initial individuals).
    pub parents: String,
    /// How it came to be.
    pub operator: Operator,
    /// Mean validation ppl over the gene's seeds so far (inf when any diverged).
    pub fitness: f64,
    /// Seeds in that mean.
    pub n_seeds: u64,
    /// Mean validation ppl at the hurdle, for genes that ran it this generation.
    pub hurdle_fitness: Option<f64>,
    /// Stopped at the hurdle (then `fitness` is +∞ and the gene was not trained in full).
    pub stopped: bool,
}

/// One row of `race.parquet`: one candidate after one round of a race.
#[derive(Debug, Clone, PartialEq)]
pub struct RaceRow {
    /// 0-based round.
    pub round: u64,
    /// Candidate.
    pub gene: Gene,
    /// Seeds it has so far.
    pub n_seeds: u64,
    /// Mean validation ppl over its finished runs.
    pub mean: f64,
    /// Its rank sum over the seeds (1 = best per seed).
    pub rank_sum: f64,
    /// Alive after this round's test.
    pub alive: bool,
    /// Eliminated by this round's test.
    pub eliminated: bool,
    /// The p-value of the test that eliminated it (this round), else NaN.
    pub pvalue: f64,
}

/// Current UTC time as RFC 3339 (seconds).
pub fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for s in Stage::ALL {
            assert_eq!(s.as_str().parse::<Stage>(), Ok(s));
        }
        for o in Operator::ALL {
            assert_eq!(o.as_str().parse::<Operator>(), Ok(o));
        }
        assert!("searching".parse::<Stage>().is_err());
    }

    #[test]
    fn timestamps_are_rfc3339() {
        let t = now_rfc3339();
        assert_eq!(t.len(), 20);
        assert!(
            t.starts_with("20") && t.ends_with('Z') && &t[10..11] == "T",
            "{t}"
        );
    }
}
