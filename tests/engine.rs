//! Engine tests: every gene trains, replicas are independent, seeds are common random
//! numbers, divergence is isolated, weight decay spares what it must.

use candle_core::{DType, Device, Tensor};
use evoattn::data::batch::BatchStream;
use evoattn::data::Corpus;
use evoattn::gene::{Gating, Gene, Normalization, Similarity, Temperature};
use evoattn::model::params::Role;
use evoattn::model::{ModelConfig, Transformer};
use evoattn::train::{self, Preset, RunOptions, TrainConfig};

/// A small synthetic corpus with some structure (a repeating grammar plus noise).
fn synthetic_corpus() -> Corpus {
    let words = [
        "the", "cat", "sat", "on", "a", "mat", "dog", "ran", "to", "park", "and", "then", "slept",
    ];
    let mut state = 12345u64;
    let mut next = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) as usize
    };
    let mut text = String::new();
    for _ in 0..400 {
        let n = 5 + next() % 8;
        let start = next() % words.len();
        let line: Vec<&str> = (0..n)
            .map(|i| {
                if next() % 5 == 0 {
                    words[next() % words.len()]
                } else {
                    words[(start + i) % words.len()]
                }
            })
            .collect();
        text.push_str(&line.join(" "));
        text.push('\n');
    }
    let lines: Vec<&str> = text.lines().collect();
    let valid = lines[..60].join("\n");
    let test = lines[60..120].join("\n");
    Corpus::from_texts(&text, &valid, &test, None, Default::default()).unwrap()
}

fn tiny_cfg() -> TrainConfig {
    TrainConfig {
        d_model: 16,
        n_heads: 2,
        seq_len: 8,
        batch_size: 4,
        steps: 20,
        warmup: 3,
        lr: 3e-3,
        eval_every: 0,
        eval_max_tokens: Some(512),
        ..Preset::Smoke.config()
    }
}

fn batch(corpus: &Corpus, cfg: &TrainConfig, seeds: &[u64]) -> (Tensor, Tensor) {
    let (mut xs, mut ys) = (Vec::new(), Vec::new());
    for &s in seeds {
        let (x, y) = BatchStream::new(s, corpus.train.len(), cfg.batch_size, cfg.seq_len)
            .next_batch(&corpus.train);
        xs.extend(x);
        ys.extend(y);
    }
    let shape = (seeds.len(), cfg.batch_size, cfg.seq_len);
    (
        Tensor::from_vec(xs, shape, &Device::Cpu).unwrap(),
        Tensor::from_vec(ys, shape, &Device::Cpu).unwrap(),
    )
}

/// The training loop's loss, whose output-layer embedding gradient is computed beside
/// candle's backward and added afterwards, gives every parameter the gradient of the plain
/// loss bit for bit (vocabulary above one 1,024-row piece of ∂E, two replicas).
#[test]
fn deferred_embedding_gradient_gives_the_same_gradients() {
    let corpus = synthetic_corpus();
    let cfg = Preset::Smoke.config();
    let mut mcfg = cfg.model(corpus.vocab.len());
    mcfg.vocab_size = 2_100; // ids stay below the corpus's vocabulary; rows above get only ∂E
    let seeds = [3u64, 4];
    let (x, y) = batch(&corpus, &cfg, &seeds);
    for gene in [
        "dot+softmax+none+fixed",
        "additive+alpha_entmax+output_gate+learned",
    ] {
        let gene: Gene = gene.parse().unwrap();
        let model = Transformer::new(gene, mcfg, &seeds, DType::F32, &Device::Cpu).unwrap();
        let plain = train::gradients(&model, &x, &y).unwrap();
        let (loss, deferred) = model.loss_deferred(&x, &y).unwrap();
        let mut grads = loss.sum_all().unwrap().backward().unwrap();
        assert!(
            deferred.lookup_pending(),
            "{gene}: the lookup took candle's path"
        );
        model.add_deferred_grad(&mut grads, deferred).unwrap();
        let bits = |t: &Tensor| -> Vec<u32> {
            let v: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
            v.iter().map(|x| x.to_bits()).collect()
        };
        for ((spec, var), (name, want)) in model.params.iter().zip(&plain) {
            assert_eq!(&spec.name, name);
            let got = grads.get(var).map(bits);
            assert_eq!(got, want.as_ref().map(bits), "{gene}: {name}");
        }
    }
}

/// A token id at or above the vocabulary size is an error on every path, not a row of the
/// next replica's table.
#[test]
fn an_out_of_range_token_id_is_an_error() {
    let corpus = synthetic_corpus();
    let cfg = tiny_cfg();
    let mcfg = cfg.model(corpus.vocab.len());
    let seeds = [3u64, 4];
    let model = Transformer::new(Gene::BASELINE, mcfg, &seeds, DType::F32, &Device::Cpu).unwrap();
    let (x, y) = batch(&corpus, &cfg, &seeds);
    let mut ids: Vec<u32> = x.flatten_all().unwrap().to_vec1().unwrap();
    ids[5] = mcfg.vocab_size as u32; // replica 0: would read replica 1's row 0
    let bad = Tensor::from_vec(ids, x.dims(), &Device::Cpu).unwrap();
    let plain = model.loss(&bad, &y).map(|_| ()).unwrap_err().to_string();
    let deferred = match model.loss_deferred(&bad, &y) {
        Ok(_) => panic!("the deferred loss accepted an out-of-range id"),
        Err(e) => e.to_string(),
    };
    for err in [plain, deferred] {
        assert!(err.contains("out of range for a vocabulary of"), "{err}");
    }
}

#[test]
fn every_gene_has_finite_loss_and_nonzero_gradient_on_every_parameter() {
    let corpus = synthetic_corpus();
    // The smoke preset's shape (d 32, 4 heads, 2 layers, 32-token windows, batch 8).
    let cfg = Preset::Smoke.config();
    let mcfg = cfg.model(corpus.vocab.len());
    let seeds = [3u64, 4];
    let (x, y) = batch(&corpus, &cfg, &seeds);
    let mut failures = Vec::new();
    for gene in Gene::all() {
        let model = Transformer::new(gene, mcfg, &seeds, DType::F32, &Device::Cpu).unwrap();
        let loss: Vec<f32> = model.loss(&x, &y).unwrap().to_vec1().unwrap();
        if !loss.iter().all(|l| l.is_finite()) {
            failures.push(format!("{gene}: loss {loss:?}"));
            continue;
        }
        for (name, g) in train::gradients(&model, &x, &y).unwrap() {
            let ok = match &g {
                None => false,
                Some(g) => {
                    // non-zero and finite for each replica separately
                    let per: Vec<f32> = g
                        .abs()
                        .unwrap()
                        .reshape((seeds.len(), ()))
                        .unwrap()
                        .sum(1)
                        .unwrap()
                        .to_vec1()
                        .unwrap();
                    per.iter().all(|v| v.is_finite() && *v > 0.0)
                }
            };
            if !ok {
                failures.push(format!("{gene}: parameter {name} has no or zero gradient"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures, first: {:?}",
        failures.len(),
        &failures[..failures.len().min(10)]
    );
}

#[test]
fn replica_equals_single_run_with_same_seed() {
    let corpus = synthetic_corpus();
    let cfg = tiny_cfg();
    for gene in [
        Gene::BASELINE,
        Gene::PUBLISHED_WINNER,
        "additive+alpha_entmax+highway+log_n".parse().unwrap(),
    ] {
        let multi = train::train(
            gene,
            &cfg,
            &corpus,
            &[5, 6, 7],
            &Device::Cpu,
            RunOptions::default(),
        )
        .unwrap();
        let single = train::train(
            gene,
            &cfg,
            &corpus,
            &[6],
            &Device::Cpu,
            RunOptions::default(),
        )
        .unwrap();
        let a = &multi.seeds[1].losses;
        let b = &single.seeds[0].losses;
        assert_eq!(a.len(), 20);
        assert_eq!(b.len(), 20);
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!(
                ((x - y) / y).abs() < 1e-4,
                "{gene} step {i}: replica {x} vs single {y}"
            );
        }
        assert!(
            (multi.seeds[1].val_ppl.unwrap() / single.seeds[0].val_ppl.unwrap() - 1.0).abs() < 1e-3
        );
        // and the replicas are really different models
        assert_ne!(multi.seeds[0].losses, multi.seeds[1].losses);
    }
}

#[test]
fn shared_parameters_start_identical_across_genes() {
    let corpus = synthetic_corpus();
    let cfg = tiny_cfg().model(corpus.vocab.len());
    let a = Transformer::new(Gene::BASELINE, cfg, &[11], DType::F32, &Device::Cpu).unwrap();
    let b = Transformer::new(
        "bilinear+sigmoid+output_gate+log_n".parse().unwrap(),
        cfg,
        &[11],
        DType::F32,
        &Device::Cpu,
    )
    .unwrap();
    let c = Transformer::new(Gene::BASELINE, cfg, &[12], DType::F32, &Device::Cpu).unwrap();
    let flat = |m: &Transformer, n: &str| -> Vec<f32> {
        m.params.get(n).flatten_all().unwrap().to_vec1().unwrap()
    };
    for name in [
        "tok_emb",
        "pos_emb",
        "layers.0.attn.wqkv",
        "layers.1.mlp.w2",
        "layers.1.attn.wo",
        "ln_f.g",
    ] {
        assert_eq!(
            flat(&a, name),
            flat(&b, name),
            "{name} differs between genes with the same seed"
        );
    }
    assert_ne!(
        flat(&a, "tok_emb"),
        flat(&c, "tok_emb"),
        "different seeds must give different inits"
    );
}

#[test]
fn batches_depend_on_seed_only() {
    // The stream takes no gene: two genes with the same seed see identical batches, which we
    // check end to end: at step 0 (before any update) the per-replica loss of two genes whose
    // parameters coincide at init equals.
    let corpus = synthetic_corpus();
    let cfg = tiny_cfg();
    let mut a = BatchStream::new(9, corpus.train.len(), 4, 8);
    let mut b = BatchStream::new(9, corpus.train.len(), 4, 8);
    for _ in 0..50 {
        assert_eq!(a.next_batch(&corpus.train), b.next_batch(&corpus.train));
    }
    // dot+softmax+none+fixed and dot+softmax+none+learned are the same function at init
    // (θ₀ = ln c), so their first-step losses on the same seed must match exactly.
    let g1 = Gene::BASELINE;
    let g2: Gene = "dot+softmax+none+learned".parse().unwrap();
    let mut one = cfg.clone();
    one.steps = 1;
    let r1 = train::train(g1, &one, &corpus, &[9], &Device::Cpu, RunOptions::default()).unwrap();
    let r2 = train::train(g2, &one, &corpus, &[9], &Device::Cpu, RunOptions::default()).unwrap();
    assert!((r1.seeds[0].losses[0] - r2.seeds[0].losses[0]).abs() < 1e-5);
}

#[test]
fn diverged_replica_is_frozen_and_does_not_affect_others() {
    let corpus = synthetic_corpus();
    let cfg = tiny_cfg();
    let gene = Gene::PUBLISHED_WINNER;
    let clean = train::train(
        gene,
        &cfg,
        &corpus,
        &[1, 2, 3],
        &Device::Cpu,
        RunOptions::default(),
    )
    .unwrap();
    let hit = train::train(
        gene,
        &cfg,
        &corpus,
        &[1, 2, 3],
        &Device::Cpu,
        RunOptions {
            poison: Some((1, 7)),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(hit.seeds[1].diverged_at, Some(7));
    assert_eq!(hit.seeds[1].val_ppl, None);
    assert_eq!(hit.seeds[1].test_ppl, None);
    assert_eq!(hit.seeds[1].losses.len(), 7);
    for r in [0, 2] {
        assert_eq!(hit.seeds[r].diverged_at, None);
        assert_eq!(
            hit.seeds[r].losses, clean.seeds[r].losses,
            "replica {r} was affected"
        );
        assert_eq!(hit.seeds[r].val_ppl, clean.seeds[r].val_ppl);
    }
}

#[test]
fn weight_decay_spares_gains_biases_temperatures_and_alpha() {
    let cfg = ModelConfig {
        vocab_size: 50,
        d_model: 16,
        n_layers: 2,
        n_heads: 2,
        seq_len: 8,
    };
    let mut seen = std::collections::HashSet::new();
    for gene in Gene::all() {
        for s in Transformer::specs(gene, &cfg) {
            let leaf = s.name.rsplit('.').next().unwrap().to_string();
            let no_decay = [
                "g",
                "b",
                "bqkv",
                "bo",
                "b1",
                "b2",
                "gate_b",
                "q_gain",
                "k_gain",
                "temp_theta",
                "temp_sigma",
                "alpha_a",
            ];
            if no_decay.contains(&leaf.as_str()) {
                assert_eq!(s.role, Role::NoDecay, "{} must not be decayed", s.name);
                assert!(!s.decays());
            } else {
                assert!(s.decays(), "{} should be decayed", s.name);
            }
            seen.insert(leaf);
        }
    }
    for leaf in [
        "temp_theta",
        "temp_sigma",
        "alpha_a",
        "q_gain",
        "gate_b",
        "bilinear",
        "add_w",
    ] {
        assert!(seen.contains(leaf), "{leaf} never declared");
    }
    // Temperatures start at θ₀ = ln c (the optimiser's decay behaviour is tested in
    // train::tests::decay_moves_only_decayed_parameters).
    let corpus = synthetic_corpus();
    let mut c = tiny_cfg();
    c.steps = 1;
    c.warmup = 0;
    let model_before = Transformer::new(
        Gene::PUBLISHED_WINNER,
        c.model(corpus.vocab.len()),
        &[1],
        DType::F32,
        &Device::Cpu,
    )
    .unwrap();
    let theta0: f32 = model_before
        .params
        .get("layers.0.attn.temp_theta")
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()[0];
    assert!(
        (theta0 as f64 - (1.0 / (8f64).sqrt()).ln()).abs() < 1e-6,
        "θ₀ = ln c"
    );
}

#[test]
fn parameter_counts_match_genes_md() {
    let cfg = ModelConfig {
        vocab_size: 1000,
        d_model: 128,
        n_layers: 2,
        n_heads: 4,
        seq_len: 64,
    };
    let base = Transformer::param_counts(Gene::BASELINE, &cfg).1;
    let with = |sim, norm, gate, temp| {
        Transformer::param_counts(
            Gene {
                similarity: sim,
                normalization: norm,
                gating: gate,
                temperature: temp,
            },
            &cfg,
        )
        .1
    };
    let (d, h, dh, l) = (128usize, 4usize, 32usize, 2usize);
    let da = 16;
    use Gating as G;
    use Normalization as N;
    use Similarity as S;
    use Temperature as T;
    assert_eq!(
        with(S::QkRmsnorm, N::Softmax, G::None, T::Fixed) - base,
        l * 2 * dh
    );
    assert_eq!(
        with(S::Bilinear, N::Softmax, G::None, T::Fixed) - base,
        l * h * dh * dh
    );
    assert_eq!(
        with(S::Additive, N::Softmax, G::None, T::Fixed) - base,
        l * h * (2 * da * dh + da)
    );
    assert_eq!(with(S::Dot, N::Softmax, G::None, T::Learned) - base, l);
    assert_eq!(
        with(S::Dot, N::Softmax, G::None, T::LearnedHead) - base,
        l * h
    );
    assert_eq!(with(S::Dot, N::Softmax, G::None, T::LogN) - base, l * h);
    assert_eq!(
        with(S::Dot, N::AlphaEntmax, G::None, T::Fixed) - base,
        l * h
    );
    for g in [G::OutputGate, G::DenseGate, G::Highway] {
        assert_eq!(
            with(S::Dot, N::Softmax, g, T::Fixed) - base,
            l * (d * d + d)
        );
    }
    assert_eq!(
        with(S::Dot, N::Softmax, G::HeadGate, T::Fixed) - base,
        l * (d * h + h)
    );
    let (total, nonembed) = Transformer::param_counts(Gene::BASELINE, &cfg);
    assert_eq!(total - nonembed, 1000 * d + 64 * d);
}

#[test]
fn training_reduces_loss() {
    let corpus = synthetic_corpus();
    let mut cfg = tiny_cfg();
    cfg.steps = 150;
    let out = train::train(
        Gene::BASELINE,
        &cfg,
        &corpus,
        &[1],
        &Device::Cpu,
        RunOptions::default(),
    )
    .unwrap();
    let l = &out.seeds[0].losses;
    let first: f32 = l[..5].iter().sum::<f32>() / 5.0;
    let last: f32 = l[140..].iter().sum::<f32>() / 10.0;
    assert!(last < first - 0.3, "loss did not fall: {first} -> {last}");
    let ppl = out.seeds[0].val_ppl.unwrap();
    assert!(
        ppl < corpus.unigram_ppl(&corpus.valid),
        "val ppl {ppl} not below unigram"
    );
}

/// A parameter's name, shape and bit patterns.
type WeightBits = (String, Vec<usize>, Vec<u32>);

/// A run of `seeds` in `groups` replica groups inside a pool of `threads` threads
/// (whatever the machine's cores; flushing denormals like the executor's), with a NaN
/// injected into replica 1 at step 6.
#[allow(clippy::too_many_arguments)]
fn grouped_run(
    gene: Gene,
    cfg: &TrainConfig,
    corpus: &Corpus,
    seeds: &[u64],
    threads: usize,
    groups: usize,
    stop_at: Option<usize>,
    checkpoint: Option<train::checkpoint::Checkpointing>,
) -> train::RunOutput {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .start_handler(|_| evoattn::cpu::flush_denormals())
        .build()
        .unwrap();
    pool.install(|| {
        train::train(
            gene,
            cfg,
            corpus,
            seeds,
            &Device::Cpu,
            RunOptions {
                replica_groups: Some(groups),
                poison: Some((1, 6)),
                keep_weights: true,
                stop_at,
                checkpoint,
                ..Default::default()
            },
        )
        .unwrap()
    })
}

/// The same bits whatever the grouping: losses, perplexities, divergence and final
/// weights; and a checkpoint written under one grouping resumes under another to the bits
/// of a run never stopped.
#[test]
fn grouped_replicas_give_the_same_bits() {
    let corpus = synthetic_corpus();
    let mut cfg = tiny_cfg();
    cfg.eval_every = 7;
    let seeds = [5, 6, 7, 8];
    let dir = std::env::temp_dir().join(format!("evoattn-groups-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for gene in [
        Gene::BASELINE,
        "additive+alpha_entmax+highway+log_n".parse().unwrap(),
    ] {
        let batched = grouped_run(gene, &cfg, &corpus, &seeds, 2, 1, None, None);
        assert_eq!(batched.replica_groups, 1);
        assert_eq!(batched.seeds[1].diverged_at, Some(6), "the injected NaN");
        assert_eq!(batched.seeds[0].diverged_at, None);
        let same = |out: &train::RunOutput, what: &str| {
            assert_eq!(out.seeds.len(), 4);
            for (a, b) in batched.seeds.iter().zip(&out.seeds) {
                assert_eq!(a.seed, b.seed);
                assert_eq!(a.losses, b.losses, "{gene} seed {}: losses, {what}", a.seed);
                assert_eq!(
                    a.diverged_at, b.diverged_at,
                    "{gene} seed {}: {what}",
                    a.seed
                );
                assert_eq!(
                    a.val_ppl, b.val_ppl,
                    "{gene} seed {}: val ppl, {what}",
                    a.seed
                );
                assert_eq!(
                    a.test_ppl, b.test_ppl,
                    "{gene} seed {}: test ppl, {what}",
                    a.seed
                );
                // Bit patterns: the diverged replica's curve and weights hold NaN.
                let curve = |c: &[train::CurvePoint]| -> Vec<(usize, u64, Option<u64>)> {
                    c.iter()
                        .map(|p| (p.step, p.train_loss.to_bits(), p.val_ppl.map(f64::to_bits)))
                        .collect()
                };
                assert_eq!(
                    curve(&a.curve),
                    curve(&b.curve),
                    "{gene} seed {}: curve, {what}",
                    a.seed
                );
            }
            let weights = |o: &train::RunOutput| -> Vec<Vec<WeightBits>> {
                o.weights
                    .iter()
                    .map(|w| {
                        w.iter()
                            .map(|(n, d, v)| {
                                (
                                    n.clone(),
                                    d.clone(),
                                    v.iter().map(|x| x.to_bits()).collect(),
                                )
                            })
                            .collect()
                    })
                    .collect()
            };
            assert_eq!(
                weights(&batched),
                weights(out),
                "{gene}: final weights, {what}"
            );
        };
        // 1 thread per group, then 2 (the deferred embedding gradient's helper and the
        // parallel row passes inside each group's pool), and batched on 4 threads.
        for (threads, groups) in [(2, 2), (4, 4), (4, 2), (4, 1)] {
            let out = grouped_run(gene, &cfg, &corpus, &seeds, threads, groups, None, None);
            assert_eq!(out.replica_groups, groups);
            same(&out, &format!("{groups} groups on {threads} threads"));
        }
        // Stopped at step 10 under one grouping, resumed under another.
        for (write, resume) in [(2, 1), (1, 4), (4, 2)] {
            let ck = train::checkpoint::Checkpointing {
                path: dir.join(format!("{write}-{resume}.safetensors")),
                rejected_dir: dir.join("rejected"),
                key: "grouped".into(),
                every: train::checkpoint::Every::Off,
                hardware: "test".into(),
            };
            let _ = std::fs::remove_file(&ck.path);
            let part = grouped_run(
                gene,
                &cfg,
                &corpus,
                &seeds,
                4,
                write,
                Some(10),
                Some(ck.clone()),
            );
            assert_eq!(part.stopped_at, Some(10));
            let full = grouped_run(gene, &cfg, &corpus, &seeds, 4, resume, None, Some(ck));
            assert_eq!(
                full.resumed_from,
                Some(10),
                "{gene}: resumed {write} -> {resume}"
            );
            same(
                &full,
                &format!("checkpoint of {write} groups resumed in {resume}"),
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn replica_groups_must_divide_the_replicas() {
    let corpus = synthetic_corpus();
    let err = train::train(
        Gene::BASELINE,
        &tiny_cfg(),
        &corpus,
        &[1, 2, 3],
        &Device::Cpu,
        RunOptions {
            replica_groups: Some(2),
            ..Default::default()
        },
    )
    .unwrap_err();
    assert!(
        format!("{err:#}").contains("must divide the number of replicas"),
        "{err:#}"
    );
}
