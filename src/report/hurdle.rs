//! The hurdle section of a GA report (`[evolve] hurdle`): how many genes were stopped, the
//! training it saved, and how well the hurdle's ranking agreed with the final one.

use crate::record::{GenerationRow, RunRow, Stage};
use crate::stats::correlation::spearman;
use std::fmt::Write;

/// The section, when the study ran hurdles.
pub fn markdown(gens: &[GenerationRow], rows: &[RunRow]) -> Option<String> {
    let hurdle_rows: Vec<&RunRow> = rows.iter().filter(|r| r.stage == Stage::Hurdle).collect();
    let ran: Vec<&GenerationRow> = gens.iter().filter(|g| g.hurdle_fitness.is_some()).collect();
    if ran.is_empty() && hurdle_rows.is_empty() {
        return None;
    }
    let at = hurdle_rows
        .iter()
        .filter_map(|r| r.stopped_at)
        .max()
        .unwrap_or(0) as usize;
    let steps = hurdle_rows.first().map_or(0, |r| r.config.steps).max(at);
    let stopped = ran.iter().filter(|g| g.stopped).count();
    let went_on = ran.len() - stopped;
    let mut s = String::new();
    let _ = writeln!(s, "\n## Hurdle\n");
    let _ = writeln!(
        s,
        "Each generation's new genes (not its elites) trained to step {at} of {steps} first; only the best of them by validation ppl there went on to the full budget, the others were stopped (fitness +∞, never elites; their partial runs are the `hurdle` rows of `runs.parquet`, their curves end at step {at}). Over the generations: {} hurdle evaluations, {went_on} went on, {stopped} stopped.",
        ran.len()
    );
    if steps > 0 {
        let full = ran.len() as f64 * steps as f64;
        let saved = stopped as f64 * (steps - at) as f64;
        let _ = writeln!(
            s,
            "\nTraining saved: {stopped} × {} steps = {:.0} of the {:.0} steps these evaluations would have taken in full ({:.0} %).",
            steps - at,
            saved,
            full,
            100.0 * saved / full.max(1.0)
        );
    }
    // Agreement, over the genes that finished: hurdle ppl against final fitness.
    let pairs: Vec<(f64, f64)> = ran
        .iter()
        .filter(|g| !g.stopped)
        .filter_map(|g| {
            let h = g.hurdle_fitness?;
            (h.is_finite() && g.fitness.is_finite()).then_some((h, g.fitness))
        })
        .collect();
    let (x, y): (Vec<f64>, Vec<f64>) = pairs.iter().copied().unzip();
    let c = spearman(&x, &y);
    if c.n >= 3 && c.r.is_finite() {
        let _ = writeln!(
            s,
            "\nAgreement of the hurdle's ranking with the final one, over the {} evaluations that finished: Spearman ρ = {:.3} (two-sided p = {:.3}). Only genes that passed are in it, so it is the agreement within the better part of each generation, which is where it matters; it says nothing directly about the stopped genes.",
            c.n, c.r, c.pvalue
        );
    } else {
        let _ = writeln!(
            s,
            "\nToo few evaluations finished after a hurdle ({}) for a rank correlation of the hurdle's ranking with the final one.",
            c.n
        );
    }
    Some(s)
}
