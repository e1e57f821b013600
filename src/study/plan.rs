//! Plans: a study expands to units (gene × configuration × seed), identified by a content
//! hash, and units of one gene and configuration are packed into replica-batched runs.

use crate::gene::{Gene, SPACE_VERSION};
use crate::train::TrainConfig;
use crate::version::ENGINE_VERSION;
use sha2::{Digest, Sha256};

/// One training run of one gene with one seed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Unit {
    /// Content hash of everything that affects the result (16 hex digits).
    pub id: String,
    /// Gene.
    pub gene: Gene,
    /// Seed (initialisation and batch order).
    pub seed: u64,
}

/// Content hash of a unit: engine version, gene-space version, kernel revision (for the
/// genes whose kernels changed, [`crate::version::kernel_revision`]), gene, training
/// configuration, data fingerprint and seed. Anything else (device, threads, replicas,
/// study) does not enter. The gene-space version enters from version 2 on: version 1 is
/// implicit, so stores written before the space had a version keep their unit ids.
pub fn unit_id(gene: Gene, cfg: &TrainConfig, data_fingerprint: &str, seed: u64) -> String {
    unit_id_at(
        gene,
        cfg,
        data_fingerprint,
        seed,
        crate::version::kernel_revision(gene),
    )
}

/// [`unit_id`] at kernel revision `kernels` (`None`: revision 1, the ids of units trained
/// before [`crate::version::FUSED_KERNELS_REVISION`]).
pub fn unit_id_at(
    gene: Gene,
    cfg: &TrainConfig,
    data_fingerprint: &str,
    seed: u64,
    kernels: Option<u32>,
) -> String {
    let mut key = serde_json::json!({
        "engine_version": ENGINE_VERSION,
        "gene": gene.to_string(),
        "config": cfg,
        "data": data_fingerprint,
        "seed": seed,
    });
    if SPACE_VERSION != 1 {
        key["gene_space_version"] = SPACE_VERSION.into();
    }
    if let Some(rev) = kernels {
        key["kernels"] = rev.into();
    }
    let digest = Sha256::digest(key.to_string().as_bytes());
    hex::encode(&digest[..8])
}

/// The unit id of a unit trained only to step `at` (a GA hurdle).
pub fn hurdle_unit_id(unit: &str, at: usize) -> String {
    format!("{unit}-h{at}")
}

/// Units of one gene trained together as the replicas of one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pack {
    /// Hash of its unit ids (16 hex digits); names its files in the store.
    pub id: String,
    /// Gene.
    pub gene: Gene,
    /// Its units, seeds ascending.
    pub units: Vec<Unit>,
    /// A hurdle pack ([`Pack::to_hurdle`]): train to this step only.
    pub stop_at: Option<usize>,
}

impl Pack {
    /// The pack that trains this one's units to step `at` only (a GA hurdle): its id and
    /// unit ids are this pack's with `-h<at>` appended, so its rows never count as the
    /// full units'; it shares this pack's checkpoint, so the full run resumes from it.
    pub fn to_hurdle(&self, at: usize) -> Pack {
        Pack {
            id: format!("{}-h{at}", self.id),
            gene: self.gene,
            units: self
                .units
                .iter()
                .map(|u| Unit {
                    id: hurdle_unit_id(&u.id, at),
                    ..u.clone()
                })
                .collect(),
            stop_at: Some(at),
        }
    }

    /// The id of the full pack (for checkpoints): the id without a hurdle suffix.
    pub fn base_id(&self) -> &str {
        match self.stop_at {
            Some(at) => self.id.strip_suffix(&format!("-h{at}")).unwrap_or(&self.id),
            None => &self.id,
        }
    }

    /// The seeds, in replica order.
    pub fn seeds(&self) -> Vec<u64> {
        self.units.iter().map(|u| u.seed).collect()
    }
}

/// Planner for one data set: a default configuration, optionally one per gene (a
/// replication with each gene's tuned hyperparameters).
#[derive(Debug, Clone)]
pub struct Planner {
    /// Training configuration of every unit whose gene has no entry in `per_gene`.
    pub config: TrainConfig,
    /// Configurations of particular genes.
    pub per_gene: std::collections::BTreeMap<Gene, TrainConfig>,
    /// Data fingerprint ([`crate::data::Corpus::fingerprint`]).
    pub data_fingerprint: String,
    /// Most units per pack.
    pub max_replicas: usize,
}

impl Planner {
    /// A planner with one configuration for every gene.
    pub fn new(config: TrainConfig, data_fingerprint: String, max_replicas: usize) -> Planner {
        Planner {
            config,
            per_gene: Default::default(),
            data_fingerprint,
            max_replicas,
        }
    }

    /// The configuration `gene` trains with.
    pub fn config_for(&self, gene: Gene) -> &TrainConfig {
        self.per_gene.get(&gene).unwrap_or(&self.config)
    }

    /// The unit of (`gene`, `seed`).
    pub fn unit(&self, gene: Gene, seed: u64) -> Unit {
        Unit {
            id: unit_id(gene, self.config_for(gene), &self.data_fingerprint, seed),
            gene,
            seed,
        }
    }

    /// Packs the (gene, seed) requests that `skip` does not exclude: grouped by gene in
    /// order of first appearance, seeds ascending and deduplicated, chunks of at most
    /// `max_replicas`. Deterministic in its input, so every process and shard that sees the
    /// same requests and the same finished units forms the same packs.
    pub fn pack(&self, requests: &[(Gene, u64)], skip: impl Fn(&Unit) -> bool) -> Vec<Pack> {
        let mut order: Vec<Gene> = Vec::new();
        let mut seeds: std::collections::HashMap<Gene, Vec<u64>> = Default::default();
        for &(g, s) in requests {
            let e = seeds.entry(g).or_insert_with(|| {
                order.push(g);
                Vec::new()
            });
            e.push(s);
        }
        let mut packs = Vec::new();
        for g in order {
            let mut ss = seeds.remove(&g).unwrap_or_default();
            ss.sort_unstable();
            ss.dedup();
            let units: Vec<Unit> = ss
                .into_iter()
                .map(|s| self.unit(g, s))
                .filter(|u| !skip(u))
                .collect();
            for chunk in units.chunks(self.max_replicas.max(1)) {
                let mut h = Sha256::new();
                for u in chunk {
                    h.update(u.id.as_bytes());
                }
                packs.push(Pack {
                    id: hex::encode(&h.finalize()[..8]),
                    gene: g,
                    units: chunk.to_vec(),
                    stop_at: None,
                });
            }
        }
        packs
    }
}

/// Whether pack number `index` belongs to shard `i` of `n`.
pub fn in_shard(index: usize, shard: (usize, usize)) -> bool {
    index % shard.1 == shard.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::Preset;

    fn planner() -> Planner {
        Planner::new(Preset::Smoke.config(), "abc".into(), 2)
    }

    #[test]
    fn unit_ids_change_with_everything_that_matters() {
        let p = planner();
        let g = Gene::BASELINE;
        let base = p.unit(g, 1).id;
        assert_eq!(base, p.unit(g, 1).id);
        assert_eq!(base.len(), 16);
        assert_ne!(base, p.unit(g, 2).id);
        assert_ne!(base, p.unit(Gene::PUBLISHED_WINNER, 1).id);
        let mut cfg = p.config.clone();
        cfg.lr *= 2.0;
        assert_ne!(base, unit_id(g, &cfg, "abc", 1));
        assert_ne!(base, unit_id(g, &p.config, "abd", 1));
        let mut q = p.clone();
        q.per_gene.insert(Gene::PUBLISHED_WINNER, cfg);
        assert_eq!(
            base,
            q.unit(g, 1).id,
            "another gene's configuration does not matter"
        );
        assert_ne!(
            p.unit(Gene::PUBLISHED_WINNER, 1).id,
            q.unit(Gene::PUBLISHED_WINNER, 1).id
        );
    }

    #[test]
    fn packs_group_sort_dedup_and_chunk() {
        let p = planner();
        let (a, b) = (Gene::BASELINE, Gene::PUBLISHED_WINNER);
        let packs = p.pack(&[(b, 3), (a, 2), (b, 1), (b, 2), (b, 1), (a, 1)], |_| false);
        let shape: Vec<(Gene, Vec<u64>)> = packs.iter().map(|k| (k.gene, k.seeds())).collect();
        assert_eq!(shape, vec![(b, vec![1, 2]), (b, vec![3]), (a, vec![1, 2])]);
        let done = p.unit(b, 1).id;
        let packs = p.pack(&[(b, 1), (b, 2), (b, 3)], |u| u.id == done);
        assert_eq!(packs[0].seeds(), vec![2, 3]);
        assert_ne!(packs[0].id, p.pack(&[(b, 2)], |_| false)[0].id);
    }
}
