//! `tests.parquet`: every comparison of the report with all its statistics.

use super::analysis::{Analysis, Comparison};
use crate::gene::Gene;
use anyhow::Result;
use polars::prelude::*;

/// `tests.parquet`: every comparison with all its statistics.
pub fn tests_frame(a: &Analysis) -> Result<DataFrame> {
    let c = &a.comparisons;
    let f = |g: &dyn Fn(&Comparison) -> f64| c.iter().map(g).collect::<Vec<f64>>();
    Ok(DataFrame::new_infer_height(vec![
        Column::new(
            "gene".into(),
            c.iter().map(|x| x.gene.to_string()).collect::<Vec<_>>(),
        ),
        Column::new("baseline".into(), vec![Gene::BASELINE.to_string(); c.len()]),
        Column::new("n".into(), c.iter().map(|x| x.n as i64).collect::<Vec<_>>()),
        Column::new(
            "n_baseline".into(),
            c.iter().map(|x| x.n_baseline as i64).collect::<Vec<_>>(),
        ),
        Column::new(
            "paired".into(),
            c.iter().map(|x| x.paired).collect::<Vec<_>>(),
        ),
        Column::new("diff".into(), f(&|x| x.diff)),
        Column::new("ci_low".into(), f(&|x| x.ci.low)),
        Column::new("ci_high".into(), f(&|x| x.ci.high)),
        Column::new(
            "test".into(),
            c.iter().map(|x| x.test.to_string()).collect::<Vec<_>>(),
        ),
        Column::new("pvalue".into(), f(&|x| x.pvalue)),
        Column::new("pvalue_holm".into(), f(&|x| x.pvalue_holm)),
        Column::new("pvalue_rank".into(), f(&|x| x.pvalue_rank)),
        Column::new("hedges_g".into(), f(&|x| x.hedges_g)),
        Column::new("a12".into(), f(&|x| x.a12)),
        Column::new("aso_epsilon_min".into(), f(&|x| x.aso_epsilon_min)),
        Column::new(
            "verdict".into(),
            c.iter()
                .map(|x| x.verdict.as_str().to_string())
                .collect::<Vec<_>>(),
        ),
        Column::new(
            "seeds_for_80".into(),
            c.iter()
                .map(|x| x.seeds_for_80.map(|n| n as i64))
                .collect::<Vec<Option<i64>>>(),
        ),
    ])?)
}
