//! What a pack will cost, so that the executor can start the most expensive packs first
//! (longest-processing-time-first: a generation then ends close to total work / jobs
//! instead of waiting on a slow gene started last).
//!
//! A gene's cost per trained token is estimated, in order of preference, from
//! 1. finished runs of the same gene in this store (median of 1/tokens-per-second of the
//!    pack, per replica), or
//! 2. the committed cost table of `evoattn bench --sweep` (`benches/results/sweep-cpu.jsonl`,
//!    compiled in): the gene's similarity × normalization pair, times its gating on the
//!    baseline, times its temperature on the baseline (a multiplicative model), scaled to
//!    this store by the runs it already has (or left relative when it has none).
//!
//! Only the order of packs depends on it, never a result.

use super::plan::Pack;
use crate::gene::Gene;
use crate::record::RunRow;
use std::collections::HashMap;

/// The cost table committed by `evoattn bench --sweep --preset cpu --json`.
const SWEEP_CPU: &str = include_str!("../../benches/results/sweep-cpu.jsonl");

/// In which order the executor starts a stage's packs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PackOrder {
    /// The most expensive first (estimated by [`CostModel`]).
    #[default]
    LongestFirst,
    /// The plan's order (genes as requested, seeds ascending).
    Plan,
}

impl std::str::FromStr for PackOrder {
    type Err = String;
    fn from_str(s: &str) -> Result<PackOrder, String> {
        match s {
            "longest-first" => Ok(PackOrder::LongestFirst),
            "plan" => Ok(PackOrder::Plan),
            other => Err(format!(
                "unknown pack order `{other}`; valid: longest-first, plan"
            )),
        }
    }
}

/// Relative cost per token of genes, from the committed sweep and a store's runs.
#[derive(Debug, Clone)]
pub struct CostModel {
    /// tokens/s relative to the baseline, by gene, from the sweep table.
    table: HashMap<String, f64>,
    /// Median seconds per replica-token of finished runs, by gene.
    observed: HashMap<Gene, f64>,
    /// Seconds per replica-token of a gene whose table cost is 1 (from the store), if known.
    scale: Option<f64>,
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

impl CostModel {
    /// The model of the committed table and the finished runs `rows`.
    pub fn new<'a>(rows: impl IntoIterator<Item = &'a RunRow>) -> CostModel {
        let mut table = HashMap::new();
        for line in SWEEP_CPU.lines() {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            if let (Some(g), Some(r)) = (v["gene"].as_str(), v["ratio_to_baseline"].as_f64()) {
                if r > 0.0 {
                    table.insert(g.to_string(), r);
                }
            }
        }
        let mut per_gene: HashMap<Gene, Vec<f64>> = HashMap::new();
        for r in rows {
            if r.tokens_per_s > 0.0 && r.tokens_per_s.is_finite() {
                per_gene
                    .entry(r.gene)
                    .or_default()
                    .push(r.replicas.max(1) as f64 / r.tokens_per_s);
            }
        }
        let observed: HashMap<Gene, f64> = per_gene
            .into_iter()
            .filter_map(|(g, v)| median(v).map(|m| (g, m)))
            .collect();
        let mut m = CostModel {
            table,
            observed,
            scale: None,
        };
        m.scale = median(
            m.observed
                .iter()
                .map(|(g, s)| s / m.table_cost(*g))
                .collect(),
        );
        m
    }

    /// The table's cost of `gene` relative to the baseline (1 for the baseline; a part the
    /// table lacks counts as the baseline's): r₀/r(pair) · r₀/r(gating) · r₀/r(temperature),
    /// r the table's tokens/s ratios, r₀ the baseline's own.
    pub fn table_cost(&self, gene: Gene) -> f64 {
        let base = Gene::BASELINE;
        let r0 = self.table.get(&base.to_string()).copied().unwrap_or(1.0);
        let rel = |g: Gene| r0 / self.table.get(&g.to_string()).copied().unwrap_or(r0);
        let pair = rel(Gene {
            similarity: gene.similarity,
            normalization: gene.normalization,
            ..base
        });
        let gating = rel(Gene {
            gating: gene.gating,
            ..base
        });
        let temp = rel(Gene {
            temperature: gene.temperature,
            ..base
        });
        pair * gating * temp
    }

    /// Estimated cost of one replica-token of `gene` (seconds when the store has runs,
    /// relative to the baseline otherwise).
    pub fn per_token(&self, gene: Gene) -> f64 {
        match (self.observed.get(&gene), self.scale) {
            (Some(s), _) => *s,
            (None, Some(k)) => k * self.table_cost(gene),
            (None, None) => self.table_cost(gene),
        }
    }

    /// Estimated cost of `pack` with `steps` steps of `tokens_per_step` tokens (a hurdle
    /// pack costs its `stop_at` steps).
    pub fn pack_cost(&self, pack: &Pack, steps: usize, tokens_per_step: usize) -> f64 {
        let steps = pack.stop_at.unwrap_or(steps).min(steps);
        self.per_token(pack.gene) * (pack.units.len() * steps * tokens_per_step) as f64
    }

    /// Sorts `packs` most expensive first (stable: equal costs keep their order).
    pub fn longest_first<T>(
        &self,
        packs: &mut [T],
        pack: impl Fn(&T) -> &Pack,
        steps: usize,
        tokens_per_step: usize,
    ) {
        packs.sort_by(|a, b| {
            let (ca, cb) = (
                self.pack_cost(pack(a), steps, tokens_per_step),
                self.pack_cost(pack(b), steps, tokens_per_step),
            );
            cb.total_cmp(&ca)
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::study::plan::Unit;

    fn pack(gene: &str, units: usize) -> Pack {
        let gene: Gene = gene.parse().unwrap();
        Pack {
            id: format!("{gene}-{units}"),
            gene,
            units: (0..units as u64)
                .map(|s| Unit {
                    id: format!("{gene}-{s}"),
                    gene,
                    seed: s,
                })
                .collect(),
            stop_at: None,
        }
    }

    #[test]
    fn the_table_prices_slow_components_and_multiplies_them() {
        let m = CostModel::new(std::iter::empty());
        assert!((m.table_cost(Gene::BASELINE) - 1.0).abs() < 1e-12);
        let g: Gene = "dot+softmax+highway+learned".parse().unwrap();
        let gating = m.table_cost("dot+softmax+highway+fixed".parse().unwrap());
        let temp = m.table_cost("dot+softmax+none+learned".parse().unwrap());
        assert!((m.table_cost(g) - gating * temp).abs() < 1e-12);
        // every gene has a finite positive cost
        for g in Gene::all() {
            let c = m.table_cost(g);
            assert!(c.is_finite() && c > 0.0, "{g}: {c}");
        }
    }

    #[test]
    fn observed_runs_override_the_table_and_calibrate_the_rest() {
        let mut row = crate::study::store::schema::blank_run();
        row.gene = Gene::BASELINE;
        row.replicas = 2;
        row.tokens_per_s = 1000.0; // 2 ms per replica-token
        let m = CostModel::new([&row]);
        assert!((m.per_token(Gene::BASELINE) - 0.002).abs() < 1e-12);
        let other: Gene = "dot+sparsemax+none+fixed".parse().unwrap();
        assert!((m.per_token(other) - 0.002 * m.table_cost(other)).abs() < 1e-12);
    }

    #[test]
    fn longest_first_orders_by_cost_and_keeps_ties_in_plan_order() {
        let m = CostModel::new(std::iter::empty());
        // a 1-replica pack of the baseline, then a 3-replica one, then a twin of the first
        let mut packs = vec![
            pack("dot+softmax+none+fixed", 1),
            pack("dot+softmax+none+fixed", 3),
            pack("dot+softmax+none+fixed", 1),
        ];
        packs[2].id = "twin".into();
        let mut hurdle = pack("dot+softmax+none+fixed", 3);
        hurdle.stop_at = Some(10);
        hurdle.id = "hurdle".into();
        packs.push(hurdle);
        m.longest_first(&mut packs, |p| p, 100, 64);
        let ids: Vec<&str> = packs.iter().map(|p| p.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "dot+softmax+none+fixed-3",
                "dot+softmax+none+fixed-1",
                "twin",
                "hurdle"
            ]
        );
    }
}
