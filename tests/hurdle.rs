//! GA hurdles (`[evolve] hurdle`), with the real binary on small synthetic data: each
//! generation's new genes train to the hurdle, the better half goes on and resumes from
//! the hurdle's checkpoint — bit-identical to the same gene trained in one go — the rest
//! are recorded as stopped and never become elites; the report shows the agreement.

use evoattn::record::{RunRow, Stage};
use evoattn::study::store::{generations_from_frame, read_parquet, runs_from_frame};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

mod common;
use common::{assert_clean_exit, output_within, tiny_data};

fn tmp(name: &str) -> PathBuf {
    common::temp_dir("hurdle", name)
}

const SETTINGS: &str =
    "[overrides]\nsteps = 40\nwarmup = 4\neval_every = 0\nseq_len = 16\neval_max_tokens = 400\n";

fn run(study: &Path, store: &Path, data: &Path) -> String {
    let out = output_within(
        Command::new(env!("CARGO_BIN_EXE_evoattn"))
            .args([
                "run",
                study.to_str().unwrap(),
                "--store",
                store.to_str().unwrap(),
            ])
            .args([
                "--quiet",
                "--data",
                data.to_str().unwrap(),
                "--checkpoint-every",
                "0",
            ]),
        Duration::from_secs(300),
    );
    assert_clean_exit(&out, &[0], "run")
}

fn rows(store: &Path, name: &str) -> Vec<RunRow> {
    runs_from_frame(&read_parquet(&store.join(name).join("runs.parquet")).unwrap()).unwrap()
}

#[test]
fn hurdles_stop_the_worse_half_and_resume_the_rest_exactly() {
    let dir = tmp("ga");
    let data = tiny_data(&dir, 6000);
    let study = dir.join("h.toml");
    std::fs::write(
        &study,
        format!("name = \"h\"\nkind = \"evolve\"\npreset = \"smoke\"\n[evolve]\npopulation = 4\nelites = 1\ngenerations = 2\nseed = 3\nhurdle = {{ at = 0.5, keep = 0.5 }}\n{SETTINGS}"),
    )
    .unwrap();
    let store = dir.join("s");
    let err = run(&study, &store, &data);
    assert!(
        err.contains("resumed from its checkpoint at step 20 of 40"),
        "{err}"
    );

    let gens = generations_from_frame(&read_parquet(&store.join("h/generations.parquet")).unwrap())
        .unwrap();
    assert_eq!(gens.len(), 8);
    let g0: Vec<_> = gens.iter().filter(|g| g.generation == 0).collect();
    // Generation 0: all four genes run the hurdle, two go on.
    assert!(g0.iter().all(|g| g.hurdle_fitness.is_some()));
    assert_eq!(g0.iter().filter(|g| g.stopped).count(), 2);
    for g in g0.iter().filter(|g| g.stopped) {
        assert!(g.fitness.is_infinite());
        // Stopped at the hurdle because the kept ones were at least as good there.
        for k in g0.iter().filter(|k| !k.stopped) {
            assert!(k.hurdle_fitness.unwrap() <= g.hurdle_fitness.unwrap());
        }
    }
    // The elite of generation 1 is a gene that finished, and it skips the hurdle.
    let elite = gens
        .iter()
        .find(|g| g.generation == 1 && g.operator == evoattn::record::Operator::Elite)
        .unwrap();
    assert!(elite.hurdle_fitness.is_none() && !elite.stopped && elite.fitness.is_finite());
    assert!(g0.iter().any(|g| g.gene == elite.gene && !g.stopped));

    let rs = rows(&store, "h");
    let hurdle: Vec<&RunRow> = rs.iter().filter(|r| r.stage == Stage::Hurdle).collect();
    let search: Vec<&RunRow> = rs.iter().filter(|r| r.stage == Stage::Search).collect();
    let evaluated = gens.iter().filter(|g| g.hurdle_fitness.is_some()).count();
    assert!(hurdle.len() >= 4 && hurdle.len() <= evaluated);
    assert!(hurdle
        .iter()
        .all(|r| r.stopped_at == Some(20) && r.unit_id.ends_with("-h20")));
    assert!(search.iter().all(|r| r.stopped_at.is_none()));
    for g in gens.iter().filter(|g| g.stopped) {
        assert!(
            !search.iter().any(|r| r.gene == g.gene),
            "{} was stopped",
            g.gene
        );
    }
    // Stopped genes keep their hurdle checkpoint (a later full run resumes there); genes
    // that went on do not.
    let cks = std::fs::read_dir(store.join("h/checkpoints"))
        .unwrap()
        .count();
    let stopped_genes: std::collections::BTreeSet<_> =
        gens.iter().filter(|g| g.stopped).map(|g| g.gene).collect();
    let finished: std::collections::BTreeSet<_> = search.iter().map(|r| r.gene).collect();
    assert_eq!(cks, stopped_genes.difference(&finished).count());

    // A gene that went on: the same numbers as training it in one go.
    let kept = search[0];
    let rep = dir.join("rep.toml");
    std::fs::write(
        &rep,
        format!("name = \"rep\"\nkind = \"replicate\"\npreset = \"smoke\"\nseeds = [1]\n[replicate]\ngenes = [\"{}\"]\n{SETTINGS}", kept.gene),
    )
    .unwrap();
    let store2 = dir.join("s2");
    run(&rep, &store2, &data);
    let plain = rows(&store2, "rep")
        .into_iter()
        .find(|r| r.gene == kept.gene)
        .unwrap();
    assert_eq!(plain.unit_id, kept.unit_id);
    assert_eq!(
        plain.val_ppl.unwrap().to_bits(),
        kept.val_ppl.unwrap().to_bits()
    );
    assert_eq!(
        plain.test_ppl.unwrap().to_bits(),
        kept.test_ppl.unwrap().to_bits()
    );
    assert_eq!(plain.train_loss.to_bits(), kept.train_loss.to_bits());

    // The report has the hurdle section; hurdle rows are not in its leaderboard.
    let md = std::fs::read_to_string(store.join("h/report.md")).unwrap();
    assert!(md.contains("## Hurdle"), "{md}");
    assert!(md.contains("stopped"), "{md}");
    // A rerun trains nothing.
    let err = run(&study, &store, &data);
    assert!(err.contains("0 unit(s) trained now"), "{err}");

    // A stopped gene's hurdle pack whose rows are lost finds its checkpoint at the hurdle:
    // the rerun evaluates it there again (no training) and gives the same hurdle row.
    let stopped_row = hurdle
        .iter()
        .find(|r| stopped_genes.contains(&r.gene) && !finished.contains(&r.gene))
        .copied()
        .cloned()
        .expect("a stopped gene");
    for ext in ["runs.parquet", "curves.parquet"] {
        std::fs::remove_file(
            store
                .join("h/packs")
                .join(format!("{}.{ext}", stopped_row.pack_id)),
        )
        .unwrap();
    }
    let err = run(&study, &store, &data);
    assert!(
        err.contains("resumed from its checkpoint at step 20 of 20"),
        "{err}"
    );
    let again = rows(&store, "h")
        .into_iter()
        .find(|r| r.unit_id == stopped_row.unit_id)
        .unwrap();
    assert_eq!(again.stopped_at, Some(20));
    assert_eq!(
        again.val_ppl.unwrap().to_bits(),
        stopped_row.val_ppl.unwrap().to_bits()
    );
    assert_eq!(again.train_loss.to_bits(), stopped_row.train_loss.to_bits());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_hurdles_are_refused() {
    let dir = tmp("bad");
    let data = tiny_data(&dir, 6000);
    for (h, want) in [
        ("{ at = 1.5, keep = 0.5 }", "hurdle at"),
        ("{ at = 0.5, keep = 0 }", "keep"),
        ("{ at = 0.5, keep = 0.2 }", "would become an elite"),
    ] {
        let p = dir.join("b.toml");
        std::fs::write(
            &p,
            format!("name = \"b\"\nkind = \"evolve\"\npreset = \"smoke\"\n[evolve]\npopulation = 4\nelites = 2\ngenerations = 2\nhurdle = {h}\n{SETTINGS}"),
        )
        .unwrap();
        let out = output_within(
            Command::new(env!("CARGO_BIN_EXE_evoattn")).args([
                "run",
                p.to_str().unwrap(),
                "--check",
                "--data",
                data.to_str().unwrap(),
            ]),
            Duration::from_secs(60),
        );
        let err = assert_clean_exit(&out, &[1], "bad hurdle");
        assert!(err.contains(want) && err.contains("b.toml:"), "{err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
