//! The hurdle section of a GA report (`[evolve] hurdle`): how many runs were stopped, the
//! training it saved, and how well the hurdle's ranking agreed with the final one. Counted
//! per unit (a gene on a seed), from the `hurdle` rows of `runs.parquet` and the full runs
//! they belong to, so a gene that fills two slots or comes back in a later generation is
//! counted once.

use crate::record::{RunRow, Stage};
use crate::stats::correlation::spearman;
use std::collections::HashMap;
use std::fmt::Write;

/// The section, when the study ran hurdles.
pub fn markdown(rows: &[RunRow]) -> Option<String> {
    let hurdle: Vec<&RunRow> = rows.iter().filter(|r| r.stage == Stage::Hurdle).collect();
    if hurdle.is_empty() {
        return None;
    }
    let full: HashMap<&str, &RunRow> = rows
        .iter()
        .filter(|r| r.stage != Stage::Hurdle)
        .map(|r| (r.unit_id.as_str(), r))
        .collect();
    let at = hurdle
        .iter()
        .filter_map(|r| r.stopped_at)
        .max()
        .unwrap_or(0) as usize;
    let steps = hurdle
        .iter()
        .map(|r| r.config.steps)
        .max()
        .unwrap_or(0)
        .max(at);
    // Each hurdle unit and its full run, if it went on.
    let pairs: Vec<(&RunRow, Option<&RunRow>)> = hurdle
        .iter()
        .map(|h| {
            let base = h
                .stopped_at
                .and_then(|s| h.unit_id.strip_suffix(&format!("-h{s}")))
                .unwrap_or(&h.unit_id);
            (*h, full.get(base).copied())
        })
        .collect();
    let went_on = pairs.iter().filter(|(_, f)| f.is_some()).count();
    let stopped = pairs.len() - went_on;
    let mut s = String::new();
    let _ = writeln!(s, "\n## Hurdle\n");
    let _ = writeln!(
        s,
        "Each generation's new genes (not its elites) trained to step {at} of {steps} first; the best fraction `keep` of them (rounded up), ranked by their mean validation ppl over their seeds there, went on to the full budget, the others were stopped (fitness +∞, never elites; their partial runs are the `hurdle` rows of `runs.parquet`, their curves end at step {at}). Over the study, counted per run (gene × seed): {} runs trained to the hurdle, {went_on} went on, {stopped} were stopped.",
        pairs.len()
    );
    if steps > 0 {
        let all = pairs.len() as f64 * steps as f64;
        let saved = stopped as f64 * (steps - at) as f64;
        let _ = writeln!(
            s,
            "\nTraining saved: {stopped} × {} steps = {:.0} of the {:.0} steps these hurdled runs would have taken in full ({:.0} %; of the hurdled runs' steps, not of the whole study, whose elites and other stages are not counted).",
            steps - at,
            saved,
            all,
            100.0 * saved / all.max(1.0)
        );
    }
    let (x, y): (Vec<f64>, Vec<f64>) = pairs
        .iter()
        .filter_map(|(h, f)| {
            let (a, b) = (h.val_ppl?, f.as_ref()?.val_ppl?);
            (a.is_finite() && b.is_finite()).then_some((a, b))
        })
        .unzip();
    let c = spearman(&x, &y);
    if c.n >= 3 && c.r.is_finite() {
        let _ = writeln!(
            s,
            "\nRank agreement of the hurdle's validation ppl with the final one, over the {} runs that went on, pooled over generations: Spearman ρ = {:.3}. Descriptive only: it is restricted to runs that passed (which pulls ρ towards 0), runs of one gene are not independent, and it says nothing about whether a stopped gene would have beaten a kept one.",
            c.n, c.r
        );
    } else {
        let _ = writeln!(
            s,
            "\nToo few runs went on after a hurdle ({}) for a rank correlation of the hurdle's ranking with the final one.",
            c.n
        );
    }
    Some(s)
}
