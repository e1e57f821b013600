//! The Markdown report: verdict sentences, tables, and the reproducibility block.

use super::analysis::{Analysis, AsoResult, Comparison, Options, Verdict};
use super::Provenance;
use crate::gene::Gene;
use crate::record::RunRow;
use std::collections::BTreeMap;
use std::fmt::Write as _;

pub(crate) fn f2(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.2}")
    } else {
        "–".into()
    }
}

pub(crate) fn pfmt(p: f64) -> String {
    if !p.is_finite() {
        "–".into()
    } else if p < 1e-4 {
        format!("{p:.1e}")
    } else {
        format!("{p:.4}")
    }
}

/// `lo` to `hi` as positive numbers for an improvement (better) or a deficit (worse).
fn magnitude(c: &Comparison) -> (f64, f64) {
    if c.diff < 0.0 {
        (-c.ci.high, -c.ci.low)
    } else {
        (c.ci.low, c.ci.high)
    }
}

/// How the runs were compared, in words.
fn design_words(c: &Comparison) -> String {
    if c.paired {
        format!("{} seed pairs", c.n)
    } else {
        format!("{} vs {} runs, unpaired", c.n, c.n_baseline)
    }
}

/// What the data could have shown: the minimum detectable difference and the seeds that
/// equivalence would need.
fn could_show(c: &Comparison, opts: &Options) -> String {
    let unit = if c.paired {
        "seed pairs"
    } else {
        "runs per arm"
    };
    let mut t = format!(
        "with {} a true difference of about {} ppl would have been detected with 80 % power (planned at the observed sd of {} ppl, itself uncertain: 95 % CI {} to {})",
        design_words(c),
        f2(c.mde_80),
        f2(c.sd),
        f2(c.sd_ci.low),
        f2(c.sd_ci.high)
    );
    match c.seeds_for_equivalence_80 {
        Some(n) => {
            let _ = write!(
                t,
                ", and showing equivalence within ±{} ppl would take about {n} {unit} at that sd (if the true difference were 0)",
                opts.margin
            );
        }
        None => {
            let _ = write!(
                t,
                ", and equivalence within ±{} ppl is out of reach at this noise",
                opts.margin
            );
        }
    }
    t
}

/// The verdict sentence of one comparison: what the data show and, where they cannot
/// tell, what they could have shown.
pub fn sentence(c: &Comparison, opts: &Options) -> String {
    let d = opts.margin;
    let lvl = (100.0 * c.ci.level).round();
    let (lo, hi) = magnitude(c);
    let g = c.gene;
    let q = &c.adjusted;
    match c.verdict {
        Verdict::BetterByMargin | Verdict::WorseByMargin => {
            let better = c.verdict == Verdict::BetterByMargin;
            format!(
                "`{g}` is **{} than the baseline by at least {d} ppl**: {} by {} ppl ({lvl} % t CI {} to {}; Holm-adjusted p = {} against H0: {} by more than {d} ppl; {}).",
                if better { "better" } else { "worse" },
                if better { "lower" } else { "higher" },
                f2(c.diff.abs()),
                f2(lo),
                f2(hi),
                pfmt(if better { q.better } else { q.worse }),
                if better { "not better" } else { "not worse" },
                design_words(c)
            )
        }
        Verdict::Better | Verdict::Worse => {
            let better = c.verdict == Verdict::Better;
            format!(
                "`{g}` is **{}** than the baseline by {} ppl ({lvl} % t CI {} to {}; Holm-adjusted p = {}; {}), but a difference of at least {d} ppl is not shown (Holm-adjusted p = {} for {} by more than {d} ppl).",
                if better { "better" } else { "worse" },
                f2(c.diff.abs()),
                f2(lo),
                f2(hi),
                pfmt(q.diff),
                design_words(c),
                pfmt(if better { q.better } else { q.worse }),
                if better { "better" } else { "worse" },
            )
        }
        Verdict::BetterWithinMargin | Verdict::WorseWithinMargin => {
            let better = c.verdict == Verdict::BetterWithinMargin;
            format!(
                "`{g}` is **{} than the baseline, by less than {d} ppl**: difference {} ppl ({lvl} % t CI {} to {}, inside ±{d}; Holm-adjusted p = {} for the difference and {} for equivalence within ±{d} ppl; {}).",
                if better { "better" } else { "worse" },
                f2(c.diff),
                f2(c.ci.low),
                f2(c.ci.high),
                pfmt(q.diff),
                pfmt(q.tost),
                design_words(c)
            )
        }
        Verdict::Equivalent => format!(
            "`{g}` is **equivalent to the baseline within ±{d} ppl**: difference {} ppl ({lvl} % t CI {} to {}; TOST Holm-adjusted p = {}; {}).",
            f2(c.diff),
            f2(c.ci.low),
            f2(c.ci.high),
            pfmt(q.tost),
            design_words(c)
        ),
        Verdict::Inconclusive => format!(
            "`{g}`: **inconclusive** — difference {} ppl ({lvl} % t CI {} to {}; Holm-adjusted p = {}); {}.",
            f2(c.diff),
            f2(c.ci.low),
            f2(c.ci.high),
            pfmt(q.diff),
            could_show(c, opts)
        ),
    }
}

/// Plot files beside the report, by kind (`seeds`, `curves`, `ga`, `search-vs`, `tune`,
/// `ablation`).
pub type PlotFiles = BTreeMap<&'static str, String>;

/// The Markdown report; `plots` names the SVG files written beside it.
pub fn markdown(a: &Analysis, rows: &[RunRow], prov: &Provenance, plots: &PlotFiles) -> String {
    let o = &a.options;
    let mut s = String::new();
    let _ = writeln!(s, "# Study `{}`\n", prov.study);
    let _ = writeln!(s, "## Verdict\n");
    for sec in a.sections() {
        let lines = sec.verdict(o.alpha);
        for line in &lines {
            let _ = writeln!(s, "- {line}");
        }
        if !lines.is_empty() {
            let _ = writeln!(s);
        }
    }
    if !a.verdicts {
        let _ = writeln!(
            s,
            "No verdicts: the leaderboard shows {}, and testing genes on the runs their best trial was selected on would be biased. Compare them in a replication with the tuned values on fresh seeds (`[replicate] hparams = {{ from = \"…\" }}`).\n",
            a.scope
        );
    } else if a.comparisons.is_empty() && a.ablation.is_none() {
        let _ = writeln!(
            s,
            "The baseline `{}` is not among the analysed runs, so no gene is compared with it.\n",
            Gene::BASELINE
        );
    }
    for c in &a.comparisons {
        let _ = writeln!(s, "- {}", sentence(c, o));
    }
    if !a.comparisons.is_empty() {
        let _ = writeln!(
            s,
            "\nLower perplexity is better; δ = {} ppl is the margin below which a difference does not matter. Each gene is tested against the baseline four ways — the difference (two-sided), better by more than δ and worse by more than δ (one-sided minimum-effect tests), and equivalence within ±δ (TOST) — each kind of p-value Holm-adjusted over the {} comparisons, at α = {} (so each kind of claim is held at that family-wise level; within one gene the four tests cannot contradict each other). \"At least δ\" and \"equivalent\" are decided by those tests, never by a point estimate; intervals are t intervals of the test that made the verdict (90 % for the one-sided and TOST tests, 95 % otherwise), not adjusted for multiplicity. Analysed: {}.\n",
            o.margin,
            a.comparisons.len(),
            o.alpha,
            a.scope
        );
    }
    let _ = writeln!(s, "## Leaderboard (validation perplexity)\n");
    let _ = writeln!(
        s,
        "| gene | n | diverged | val ppl mean ± sd | 95 % CI | test ppl | params (non-emb.) | tokens/s |\n|---|---:|---:|---:|---:|---:|---:|---:|"
    );
    for l in &a.lines {
        let _ = writeln!(
            s,
            "| `{}` | {} | {} | {} ± {} | {} – {} | {} | {} | {:.0} |",
            l.gene,
            l.n,
            l.diverged,
            f2(l.val.mean),
            f2(l.val.sd),
            f2(l.val.ci.low),
            f2(l.val.ci.high),
            f2(l.test_mean),
            l.params_nonembed,
            l.tokens_per_s
        );
    }
    if let Some(p) = plots.get("seeds") {
        let _ = writeln!(s, "\n![Validation ppl per seed]({p})");
    }
    if !a.per_gene_config.is_empty() {
        let same = a.per_gene_config.windows(2).all(|w| w[0].1 == w[1].1);
        let hps = &crate::search::tune::HPARAMS;
        let _ = writeln!(
            s,
            "\n{}\n\n| gene |{}\n|---|{}",
            if same {
                "Every gene trained with the same hyperparameters:"
            } else {
                "The genes trained with different hyperparameters (each its own tuned values):"
            },
            hps.iter()
                .map(|h| format!(" {} |", h.label))
                .collect::<String>(),
            "---:|".repeat(hps.len())
        );
        for (g, c) in &a.per_gene_config {
            let vals: String = hps.iter().map(|h| format!(" {} |", (h.get)(c))).collect();
            let _ = writeln!(s, "| `{g}` |{vals}");
        }
    }
    if !a.comparisons.is_empty() {
        let _ = writeln!(s, "\n## Comparisons against `{}`\n", Gene::BASELINE);
        let _ = writeln!(
            s,
            "| gene | diff (ppl) | t CI | BCa CI | test | p | Holm p | p better by > δ | p worse by > δ | p TOST | rank p | Hedges' g | A12 | ASO ε_min | verdict |\n|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
        );
        for c in &a.comparisons {
            let _ = writeln!(
                s,
                "| `{}` | {} | {} – {} ({:.0} %) | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                c.gene,
                f2(c.diff),
                f2(c.ci.low),
                f2(c.ci.high),
                100.0 * c.ci.level,
                c.bca
                    .as_ref()
                    .map_or("–".into(), |b| format!("{} – {}", f2(b.low), f2(b.high))),
                c.test,
                pfmt(c.pvalue()),
                pfmt(c.adjusted.diff),
                pfmt(c.adjusted.better),
                pfmt(c.adjusted.worse),
                pfmt(c.adjusted.tost),
                pfmt(c.pvalue_rank),
                f2(c.hedges_g),
                f2(c.a12),
                match &c.aso {
                    AsoResult::Defined(e) => f2(*e),
                    AsoResult::Undefined(_) => "undefined".into(),
                },
                c.verdict.as_str(),
            );
        }
        let _ = writeln!(
            s,
            "\nDifferences are gene − baseline (negative: the gene is better); δ = {} ppl. The Holm p and the three margin p-values are Holm-adjusted over the {} comparisons, each kind separately. BCa intervals ({} resamples, seed {}) only from {} runs per arm. The rank test is Wilcoxon (paired) or Mann–Whitney; it counts a diverged run as worse than every finished run, while means, t-tests, g, A12 and ASO use finished runs only. ASO ε_min < 0.2 means the gene almost stochastically dominates the baseline.",
            o.margin,
            a.comparisons.len(),
            o.resamples,
            o.seed,
            super::analysis::BCA_FROM
        );
        let undefined: Vec<String> = a
            .comparisons
            .iter()
            .filter_map(|c| match &c.aso {
                AsoResult::Undefined(why) => Some(format!("`{}` ({why})", c.gene)),
                AsoResult::Defined(_) => None,
            })
            .collect();
        if !undefined.is_empty() {
            let _ = writeln!(s, "ASO is undefined for {}.", undefined.join(", "));
        }
        let _ = writeln!(
            s,
            "\nWhat these runs can show (planned for the design as run, at the observed sd, 80 % power, unadjusted α = {}; never power at the observed effect; the figures scale with the sd, whose 95 % interval is given):\n\n| gene | sd used (ppl) | 95 % CI of the sd | design | difference detected with 80 % power (ppl) | seeds to detect a true difference of δ (two-sided) | seeds for equivalence within ±δ (true difference 0) |\n|---|---:|---:|---|---:|---:|---:|",
            o.alpha
        );
        for c in &a.comparisons {
            let _ = writeln!(
                s,
                "| `{}` | {} | {} – {} | {} | {} | {} | {} |",
                c.gene,
                f2(c.sd),
                f2(c.sd_ci.low),
                f2(c.sd_ci.high),
                if c.paired {
                    format!("{} pairs (paired differences)", c.n)
                } else {
                    format!("{} vs {} (two-sample)", c.n, c.n_baseline)
                },
                f2(c.mde_80),
                c.seeds_for_margin_80.map_or("–".into(), |n| n.to_string()),
                c.seeds_for_equivalence_80
                    .map_or("–".into(), |n| n.to_string())
            );
        }
    }
    if let Some((f, post, genes)) = &a.friedman {
        let _ = writeln!(s, "\n## All genes together\n");
        let _ = writeln!(
            s,
            "Friedman test over {} genes × {} shared seeds (diverged runs rank worst): χ²({}) = {}, p = {}.",
            genes.len(),
            a.lines.first().map_or(0, |l| l.n),
            f.df_between,
            f2(f.statistic),
            pfmt(f.pvalue),
        );
        if post.is_empty() {
            let _ = writeln!(
                s,
                "\nEvery seed ranks the genes in the same order, however small the gaps; Conover's post-hoc degenerates then (its variance term is 0) and is not shown. Judge pairs by the comparisons above."
            );
        } else {
            let _ = writeln!(
                s,
                "Conover's post-hoc, Holm-adjusted over the {} pairs:\n\n| gene | gene | Holm p | differ |\n|---|---|---:|---|",
                post.len()
            );
        }
        for p in post {
            let _ = writeln!(
                s,
                "| `{}` | `{}` | {} | {} |",
                genes[p.a],
                genes[p.b],
                pfmt(p.pvalue),
                if p.pvalue <= o.alpha { "yes" } else { "no" }
            );
        }
    }
    for sec in a.sections() {
        s.push_str(&sec.markdown(o.alpha, plots.get(sec.plot_kind()).map(|x| x.as_str())));
    }
    if let Some(p) = plots.get("curves") {
        let _ = writeln!(
            s,
            "\n## Learning curves\n\nMean over seeds with a ±1 sd band, analysed runs only.\n\n![Learning curves]({p})"
        );
    }
    if let Some(p) = plots.get("search-vs") {
        let _ = writeln!(
            s,
            "\n## Search against another search\n\nBest fitness so far against runs trained, for this study and the one given with `--compare-search`; compare them at equal budget (the shorter run count).\n\n![Search comparison]({p})"
        );
    }
    if let Some(p) = plots.get("ga") {
        let _ = writeln!(
            s,
            "\n## Search progress\n\nBest and mean fitness (mean validation ppl) per generation; every individual is a dot, elites are triangles.\n\n![GA progress]({p})"
        );
    }
    let _ = writeln!(s, "\n## Noise\n");
    let _ = writeln!(
        s,
        "Pooled seed sd of validation ppl: {} ppl. Share of variance between genes (one-way random effects): {}; ICC(1) = {}.",
        f2(a.seed_sd),
        f2(a.noise.gene_share),
        f2(a.noise.icc)
    );
    if let Some(sd) = a.interaction_sd {
        let _ = writeln!(
            s,
            "\nGene × seed interaction sd (residual of gene + seed over the seeds every gene finished): {} ppl. A shared seed effect cancels in seed-paired comparisons, so this, not the seed sd, is the noise of a seed-paired ranking.",
            f2(sd)
        );
    }
    if let Some(sel) = &a.selection {
        let _ = writeln!(
            s,
            "\n## Selection\n\nThe search evaluated {} distinct genes, each scored on {} seed(s). Picking the best of {} equal genes would look better than the truth by {} ppl in expectation (the winner's curse: E[max of {} standard normals] × {} ppl / √{}, the sd of {}; an approximation for independent, equal genes); compare the search's raw improvement with that.",
            sel.genes,
            sel.seeds_per_gene,
            sel.genes,
            f2(sel.curse),
            sel.genes,
            f2(sel.sd),
            sel.seeds_per_gene,
            sel.sd_from
        );
        if !sel.shrinkage.is_empty() {
            let _ = writeln!(
                s,
                "\nWhat the search selected on — each replicated gene's edge over the baseline (gene − baseline, seed-paired) on the search seeds — against the same edge on the fresh seeds (positive shrinkage: the search flattered the gene):\n\n| gene | search seeds | edge in the search (ppl) | edge on fresh seeds (ppl) | shrinkage (ppl) |\n|---|---:|---:|---:|---:|"
            );
            for x in &sel.shrinkage {
                let _ = writeln!(
                    s,
                    "| `{}` | {} | {} | {} | {} |",
                    x.gene,
                    x.search_seeds,
                    f2(x.search_edge),
                    f2(x.fresh_edge),
                    f2(x.shrinkage)
                );
            }
            if sel.shrinkage.iter().any(|x| x.search_seeds == 0) {
                let _ = writeln!(
                    s,
                    "\nA gene without search seeds shared with the baseline has no seed-paired search edge (–)."
                );
            }
        }
    }
    let _ = writeln!(s, "\n## Caveats\n");
    let min_n = a.lines.iter().map(|l| l.n).min().unwrap_or(0);
    if min_n < super::analysis::SMALL_SAMPLE {
        let rank = a
            .comparisons
            .iter()
            .map(|c| c.rank_min_p)
            .fold(f64::NAN, f64::min);
        let _ = writeln!(
            s,
            "- Some genes have fewer than 5 runs (minimum {min_n}): t intervals are wide, no bootstrap interval or ASO is reported (from so few runs they cannot reach beyond the observed spread){}.",
            if rank.is_finite() {
                format!(", and the exact rank test cannot go below p = {}", pfmt(rank))
            } else {
                String::new()
            }
        );
    }
    let div: usize = a.lines.iter().map(|l| l.diverged).sum();
    if div > 0 {
        let _ = writeln!(
            s,
            "- {div} run(s) diverged: excluded from means and t-tests, counted as worst in rank tests."
        );
    } else {
        let _ = writeln!(s, "- No run diverged.");
    }
    let _ = writeln!(
        s,
        "- Genes were selected on validation perplexity; test perplexity is reported alongside and was not used for selection."
    );
    if let Some(r) = rows.first() {
        let tokens = r.config.steps * r.config.batch_size * r.config.seq_len;
        let _ = writeln!(
            s,
            "- Scale: preset `{}`, {} steps × {} windows × {} tokens = {} training tokens per run, d_model {}, {} layers, vocabulary cap {}.",
            r.preset,
            r.config.steps,
            r.config.batch_size,
            r.config.seq_len,
            tokens,
            r.config.d_model,
            r.config.n_layers,
            r.config.vocab_cap.map_or("none (33,278 words)".into(), |v| v.to_string())
        );
    }
    let _ = writeln!(s, "\n## Reproducibility\n");
    let commits = distinct(rows, |r| &r.git_commit);
    let devices = distinct(rows, |r| &r.device);
    let fps = distinct(rows, |r| &r.data_fingerprint);
    let _ = writeln!(s, "- Command: `{}`", prov.command);
    let _ = writeln!(s, "- Study file SHA-256: `{}`", prov.study_sha256);
    let _ = writeln!(
        s,
        "- evoattn {} (engine version {}), runs trained at commit(s) {}",
        rows.first().map_or("?", |r| r.evoattn_version.as_str()),
        rows.first().map_or(0, |r| r.engine_version),
        commits
            .iter()
            .map(|c| format!("`{c}`"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let _ = writeln!(
        s,
        "- Report written by commit `{}`",
        crate::version::GIT_COMMIT
    );
    let _ = writeln!(s, "- Device(s): {}", devices.join(", "));
    let hardware = distinct(rows, |r| &r.hardware);
    let _ = writeln!(
        s,
        "- Hardware: {}",
        hardware
            .iter()
            .map(|h| if h.is_empty() {
                "not recorded (trained before evoattn recorded it)".to_string()
            } else {
                h.to_string()
            })
            .collect::<Vec<_>>()
            .join("; ")
    );
    for c in &a.comparisons {
        if c.mixed_hardware_pairs > 0 {
            let _ = writeln!(
                s,
                "- **Mixed hardware:** `{}` vs the baseline: {} of its {} seed pairs ran on different hardware ({} with hardware not recorded); CPU results can depend on the CPU model, so those differences include any hardware effect, which the tests do not adjust for (README, \"What is bit-identical where\")",
                c.gene, c.mixed_hardware_pairs, c.n, c.unrecorded_hardware_pairs
            );
        } else if c.mixed_hardware_arms {
            let _ = writeln!(
                s,
                "- **Mixed hardware:** `{}` and the baseline (unpaired) ran on different sets of hardware; CPU results can depend on the CPU model, so their difference includes any hardware effect, which the tests do not adjust for",
                c.gene
            );
        }
    }
    let _ = writeln!(
        s,
        "- Data fingerprint(s) (SHA-256 of the WikiText-2 files and vocabulary cap): {}",
        fps.iter()
            .map(|c| format!("`{c}`"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    s
}

/// The distinct values of a text field of `rows`, sorted.
fn distinct<'r>(rows: &'r [RunRow], f: impl Fn(&'r RunRow) -> &'r String) -> Vec<&'r str> {
    let mut v: Vec<&str> = rows.iter().map(|r| f(r).as_str()).collect();
    v.sort_unstable();
    v.dedup();
    v
}
