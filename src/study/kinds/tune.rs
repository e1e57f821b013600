//! `kind = "tune"`: the same hyperparameter random search for each listed gene. The trial
//! configurations are drawn once ([`crate::search::tune::trial_configs`]) and every gene
//! trains on every one of them, each on every seed of `seeds`.
//!
//! `[tune]` keys: `genes`, `trials` (default 20), `seed` (default 0), and a range
//! `KEY = [low, high]` for any hyperparameter of [`crate::search::tune::HPARAMS`].

use crate::gene::Gene;
use crate::record::Stage;
use crate::search::tune::{self, Ranges, HPARAMS};
use crate::study::spec::{Ctx, RawStudy, SpecError, Study};
use crate::study::{Driven, Reached, Runner};
use anyhow::Result;

/// A validated `[tune]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Tune {
    /// Genes, each tuned with the same trials.
    pub genes: Vec<Gene>,
    /// Trials per gene (each over every seed of `seeds`).
    pub trials: usize,
    /// Seed of the draw of the trial configurations.
    pub seed: u64,
    /// Ranges searched.
    pub ranges: Ranges,
}

/// Default number of trials.
pub const DEFAULT_TRIALS: usize = 20;

/// Most trials a tune study may declare.
pub const MAX_TRIALS: usize = 10_000;

/// Validates `[tune]` (required).
pub(crate) fn validate(raw: &RawStudy, ctx: &Ctx<'_>) -> Result<Tune, SpecError> {
    let Some(t) = &raw.tune else {
        return Err(ctx.err(
            None,
            "kind = \"tune\" needs a [tune] section with `genes = [...]` and at least one range, e.g. lr = [3e-4, 3e-3]".into(),
        ));
    };
    let at = Some(t.span());
    let table = t.get_ref();
    let key_at = |k: &str| Some(ctx.key_span("tune", k, t.span()));
    let valid_keys = || {
        ["genes", "trials", "seed"]
            .into_iter()
            .chain(HPARAMS.iter().map(|h| h.key))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut genes = Vec::new();
    let mut trials = DEFAULT_TRIALS;
    let mut seed = 0u64;
    let mut ranges = Ranges::default();
    let mut saw_genes = false;
    for (key, value) in table {
        let bad = |m: String| ctx.err(key_at(key), format!("[tune] {m}"));
        match key.as_str() {
            "genes" => {
                saw_genes = true;
                let list = value
                    .as_array()
                    .ok_or_else(|| bad("genes must be a list of gene names".into()))?;
                for g in list {
                    let text = g
                        .as_str()
                        .ok_or_else(|| bad(format!("genes: `{g}` is not a gene name")))?;
                    let gene: Gene = text.parse().map_err(|e| bad(format!("genes: {e}")))?;
                    if genes.contains(&gene) {
                        return Err(bad(format!("gene `{gene}` is listed twice")));
                    }
                    genes.push(gene);
                }
            }
            "trials" => {
                trials = value
                    .as_integer()
                    .and_then(|v| usize::try_from(v).ok())
                    .filter(|v| (1..=MAX_TRIALS).contains(v))
                    .ok_or_else(|| {
                        bad(format!(
                            "trials = {value} is out of range: trials must be a whole number between 1 and {MAX_TRIALS}"
                        ))
                    })?;
            }
            "seed" => {
                seed = value
                    .as_integer()
                    .and_then(|v| u64::try_from(v).ok())
                    .filter(|&v| v <= crate::study::spec::MAX_SEED)
                    .ok_or_else(|| {
                        bad(format!(
                            "seed = {value} is out of range: seed must be a whole number between 0 and {}",
                            crate::study::spec::MAX_SEED
                        ))
                    })?;
            }
            k => {
                let h = tune::hparam(k).ok_or_else(|| {
                    bad(format!("unknown key `{k}`; valid keys: {}", valid_keys()))
                })?;
                let nums: Option<Vec<f64>> = value.as_array().map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_float().or_else(|| v.as_integer().map(|i| i as f64)))
                        .collect()
                });
                let n_items = value.as_array().map_or(0, |a| a.len());
                let [lo, hi] = match nums {
                    Some(v) if v.len() == 2 && n_items == 2 => [v[0], v[1]],
                    _ => {
                        return Err(bad(format!(
                            "{k} = [low, high] must be a list of exactly two numbers"
                        )))
                    }
                };
                (h.check)(lo, hi, ctx.config)
                    .map_err(|m| bad(format!("{k} = [{lo}, {hi}]: {m}")))?;
                ranges = ranges.with(h, [lo, hi]);
            }
        }
    }
    if !saw_genes || genes.is_empty() {
        return Err(ctx.err(
            at,
            "[tune] genes is empty; list the genes to tune, e.g. [\"dot+softmax+none+fixed\"]"
                .into(),
        ));
    }
    if trials == 0 {
        return Err(ctx.err(at, "[tune] trials must be at least 1".into()));
    }
    if ranges == Ranges::default() {
        let keys: Vec<&str> = HPARAMS.iter().map(|h| h.key).collect();
        return Err(ctx.err(
            at,
            format!(
                "[tune] declares no range: add at least one of {} = [low, high]",
                keys.join(", ")
            ),
        ));
    }
    Ok(Tune {
        genes,
        trials,
        seed,
        ranges,
    })
}

impl Tune {
    /// One pass per trial configuration, every gene on every seed.
    pub fn drive(&self, study: &Study, runner: &mut dyn Runner, out: &mut Driven) -> Result<()> {
        let configs = tune::trial_configs(&study.config, &self.ranges, self.trials, self.seed);
        let mut stage = Reached::new(Stage::Tune, vec![], runner.planner(), true);
        for (i, cfg) in configs.into_iter().enumerate() {
            runner.planner_mut().config = cfg;
            let requests: Vec<(Gene, u64)> = self
                .genes
                .iter()
                .flat_map(|&g| study.seeds.iter().map(move |&s| (g, s)))
                .collect();
            stage.complete &= runner.ensure(Stage::Tune, &requests, false)?;
            let part = Reached::new(Stage::Tune, requests, runner.planner(), true);
            stage.ids.extend(part.ids);
            stage.trials.extend(vec![i; part.requests.len()]);
            stage.requests.extend(part.requests);
        }
        runner.planner_mut().config = study.config.clone();
        out.push(stage);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{study, FakeRunner};
    use super::super::KindSpec;
    use crate::record::Stage;
    use crate::study::kinds::replicate::External;

    #[test]
    fn every_gene_gets_the_same_trials_on_every_seed() {
        let s = study(
            "name = \"t\"\nkind = \"tune\"\nseeds = [1, 2]\n[tune]\ngenes = [\"dot+softmax+none+fixed\", \"dot+sparsemax+output_gate+learned\"]\ntrials = 3\nlr = [1e-4, 1e-2]\nwarmup = [10, 50]\n",
        );
        let KindSpec::Tune(t) = &s.kind else {
            panic!("not a tune study")
        };
        assert_eq!(t.ranges.get("warmup"), Some([10.0, 50.0]));
        let mut r = FakeRunner::new(&s);
        let d = s.kind.drive(&s, External::default(), &mut r).unwrap();
        let st = &d.stages[0];
        assert_eq!(st.requests.len(), 3 * 2 * 2);
        assert_eq!(st.trials, vec![0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2]);
        // Within a trial both genes share a configuration; trials differ.
        let lrs: Vec<f64> = r
            .log
            .iter()
            .map(|l| r.finished_row(&l.3).unwrap().config.lr)
            .collect();
        assert!(lrs[..4].iter().all(|&x| x == lrs[0]));
        assert_ne!(lrs[0], lrs[4]);
        assert_eq!(r.planner.config, s.config, "the planner is restored");
        assert!(r.requests(Stage::Search).is_empty());
    }

    #[test]
    fn unknown_keys_and_ranges_of_three_values_are_refused() {
        let base = "name = \"t\"\nkind = \"tune\"\n[tune]\ngenes = [\"dot+softmax+none+fixed\"]\n";
        let e = crate::study::spec::Study::parse(
            &format!("{base}lrr = [1e-4, 1e-3]\n"),
            std::path::Path::new("t.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("unknown key `lrr`") && e.contains("beta2"),
            "{e}"
        );
        assert!(e.starts_with("t.toml:5:"), "{e}");
        let e = crate::study::spec::Study::parse(
            &format!("{base}lr = [1e-4, 1e-3, 1e-2]\n"),
            std::path::Path::new("t.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("exactly two"), "{e}");
    }
}
