//! The Markdown report: verdict sentences, tables, and the reproducibility block.

use super::analysis::{Analysis, Comparison, Options, Verdict};
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

/// The verdict sentence of one comparison.
pub fn sentence(c: &Comparison, opts: &Options) -> String {
    let how = if c.paired {
        format!("{} seed-paired runs each", c.n)
    } else {
        format!("{} vs {} runs", c.n, c.n_baseline)
    };
    let base = match c.verdict {
        // The interval of the improvement (better) or of the deficit (worse), both positive.
        Verdict::Better | Verdict::Worse => {
            let (lo, hi) = if c.verdict == Verdict::Better {
                (-c.ci.high, -c.ci.low)
            } else {
                (c.ci.low, c.ci.high)
            };
            format!(
                "`{}` is {} than the baseline by {:.2} ppl (95 % CI {:.2} to {:.2}; Holm-adjusted p = {}; {how}).",
                c.gene,
                if c.verdict == Verdict::Better { "better" } else { "worse" },
                c.diff.abs(),
                lo,
                hi,
                pfmt(c.pvalue_holm),
            )
        }
        Verdict::NoDifference => format!(
            "`{}`: no detectable difference from the baseline (difference {} ppl, 95 % CI {} to {}; Holm-adjusted p = {}; {how}){}.",
            c.gene,
            f2(c.diff),
            f2(c.ci.low),
            f2(c.ci.high),
            pfmt(c.pvalue_holm),
            match c.seeds_for_80 {
                Some(n) => format!(
                    "; about {n} seeds per arm would detect the observed {:.2} ppl with 80 % power",
                    c.diff.abs()
                ),
                None => String::new(),
            }
        ),
    };
    let note = if c.verdict == Verdict::NoDifference
        && c.diff.abs() < opts.threshold
        && c.pvalue_holm <= opts.alpha
    {
        " Significant after correction, but smaller than the practical threshold."
    } else {
        ""
    };
    base + note
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
    if a.comparisons.is_empty() && a.ablation.is_none() {
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
            "\nBetter/worse means significant after Holm's correction over the {} comparisons (α = {}) **and** at least {} ppl apart; lower perplexity is better. Analysed: {}.\n",
            a.comparisons.len(),
            o.alpha,
            o.threshold,
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
            "| gene | diff (ppl) | BCa 95 % CI | test | p | Holm p | rank p | Hedges' g | A12 | ASO ε_min | verdict | seeds for 80 % |\n|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---|---:|"
        );
        for c in &a.comparisons {
            let _ = writeln!(
                s,
                "| `{}` | {} | {} – {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                c.gene,
                f2(c.diff),
                f2(c.ci.low),
                f2(c.ci.high),
                c.test,
                pfmt(c.pvalue),
                pfmt(c.pvalue_holm),
                pfmt(c.pvalue_rank),
                f2(c.hedges_g),
                f2(c.a12),
                f2(c.aso_epsilon_min),
                c.verdict.as_str(),
                c.seeds_for_80.map_or("–".into(), |n| n.to_string())
            );
        }
        let _ = writeln!(
            s,
            "\nDifferences are gene − baseline (negative: the gene is better). BCa intervals: {} resamples, seed {}. The rank test is Wilcoxon (paired) or Mann–Whitney; it counts a diverged run as worse than every finished run, while means, t-tests, g, A12 and ASO use finished runs only. ASO ε_min < 0.2 means the gene almost stochastically dominates the baseline.",
            o.resamples, o.seed
        );
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
    if let Some((n, curse)) = a.search {
        let _ = writeln!(
            s,
            "\nThe search evaluated {n} distinct genes. Picking the best of {n} single runs of *equal* genes at this seed sd would look better than the truth by {} ppl in expectation (the winner's curse); compare the search's raw improvement with that.",
            f2(curse)
        );
    }
    let _ = writeln!(s, "\n## Caveats\n");
    let min_n = a.lines.iter().map(|l| l.n).min().unwrap_or(0);
    if min_n < 5 {
        let _ = writeln!(
            s,
            "- Some genes have fewer than 5 runs (minimum {min_n}): t intervals are wide, bootstrap intervals from so few runs are too narrow to trust (they cannot reach beyond the observed spread), and rank tests have little power."
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
