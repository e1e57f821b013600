//! `tests.parquet`: every comparison of the report with all its statistics (one row per
//! gene against the baseline; columns documented in the README).

use super::analysis::{Analysis, AsoResult, Comparison};
use crate::gene::Gene;
use anyhow::Result;
use polars::prelude::*;

/// `tests.parquet`: every comparison with all its statistics.
pub fn tests_frame(a: &Analysis) -> Result<DataFrame> {
    let c = &a.comparisons;
    let f = |name: &str, g: &dyn Fn(&Comparison) -> f64| {
        Column::new(name.into(), c.iter().map(g).collect::<Vec<f64>>())
    };
    let o = |name: &str, g: &dyn Fn(&Comparison) -> Option<f64>| {
        Column::new(name.into(), c.iter().map(g).collect::<Vec<Option<f64>>>())
    };
    let i = |name: &str, g: &dyn Fn(&Comparison) -> Option<u64>| {
        Column::new(
            name.into(),
            c.iter()
                .map(|x| g(x).map(|v| v as i64))
                .collect::<Vec<Option<i64>>>(),
        )
    };
    let s = |name: &str, g: &dyn Fn(&Comparison) -> String| {
        Column::new(name.into(), c.iter().map(g).collect::<Vec<String>>())
    };
    Ok(DataFrame::new_infer_height(vec![
        s("gene", &|x| x.gene.to_string()),
        s("baseline", &|_| Gene::BASELINE.to_string()),
        Column::new("n".into(), c.iter().map(|x| x.n as i64).collect::<Vec<_>>()),
        Column::new(
            "n_baseline".into(),
            c.iter().map(|x| x.n_baseline as i64).collect::<Vec<_>>(),
        ),
        Column::new(
            "paired".into(),
            c.iter().map(|x| x.paired).collect::<Vec<_>>(),
        ),
        f("diff", &|x| x.diff),
        f("ci_low", &|x| x.ci.low),
        f("ci_high", &|x| x.ci.high),
        f("ci_level", &|x| x.ci.level),
        o("bca_low", &|x| x.bca.as_ref().map(|b| b.low)),
        o("bca_high", &|x| x.bca.as_ref().map(|b| b.high)),
        s("test", &|x| x.test.to_string()),
        f("margin", &|x| x.tests.margin),
        f("pvalue", &|x| x.pvalue()),
        f("pvalue_holm", &|x| x.adjusted.diff),
        f("pvalue_min_effect_better", &|x| x.adjusted.better),
        f("pvalue_min_effect_worse", &|x| x.adjusted.worse),
        f("pvalue_tost", &|x| x.adjusted.tost),
        f("pvalue_rank", &|x| x.pvalue_rank),
        f("pvalue_rank_min", &|x| x.rank_min_p),
        f("hedges_g", &|x| x.hedges_g),
        f("a12", &|x| x.a12),
        o("aso_epsilon_min", &|x| match x.aso {
            AsoResult::Defined(e) => Some(e),
            AsoResult::Undefined(_) => None,
        }),
        s("verdict", &|x| x.verdict.as_str().to_string()),
        f("sd_power", &|x| x.sd),
        f("mde_80", &|x| x.mde_80),
        i("seeds_for_margin_80", &|x| x.seeds_for_margin_80),
        i("seeds_for_equivalence_80", &|x| x.seeds_for_equivalence_80),
    ])?)
}
