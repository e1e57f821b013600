//! `evoattn status`: a runner that trains nothing and counts unit states.

use super::plan::Planner;
use super::store::{PackCheck, PackState, Store};
use super::Runner;
use crate::gene::Gene;
use crate::record::{RunRow, Stage};
use anyhow::Result;

/// Unit counts of one stage, for `evoattn status`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct StageCounts {
    /// Stage name.
    pub stage: Stage,
    /// Finished units.
    pub done: usize,
    /// Units in runs that a live process holds.
    pub claimed: usize,
    /// Units nobody holds yet (packs that failed excluded).
    pub pending: usize,
    /// Units of packs whose last training failed (`failed/` in the store) and that nobody
    /// holds now; `evoattn run` retries them.
    pub failed: usize,
}

/// A runner that trains nothing and counts unit states.
pub struct StatusRunner {
    /// The study's store (read only).
    pub store: Store,
    /// Planner.
    pub planner: Planner,
    /// Counts per stage (a GA's generations add up).
    pub counts: Vec<StageCounts>,
    /// Units requested by earlier stages (as in [`super::exec::Executor`]).
    pub earlier: std::collections::HashSet<String>,
}

impl StatusRunner {
    /// A runner over `store` that plans with `planner`.
    pub fn new(store: Store, planner: Planner) -> StatusRunner {
        StatusRunner {
            store,
            planner,
            counts: vec![],
            earlier: Default::default(),
        }
    }
}

impl Runner for StatusRunner {
    fn ensure(&mut self, stage: Stage, requests: &[(Gene, u64)], _need_all: bool) -> Result<bool> {
        self.store.refresh()?;
        let packs = self
            .planner
            .pack(requests, |u| self.earlier.contains(&u.id));
        for &(g, s) in requests {
            self.earlier.insert(self.planner.unit(g, s).id);
        }
        self.count(stage, &packs)
    }
    fn ensure_hurdle(&mut self, requests: &[(Gene, u64)], at: usize) -> Result<bool> {
        self.store.refresh()?;
        let packs: Vec<_> = self
            .planner
            .pack(requests, |u| self.earlier.contains(&u.id))
            .iter()
            .map(|p| p.to_hurdle(at))
            .collect();
        self.count(Stage::Hurdle, &packs)
    }
    fn finished_hurdle(&self, gene: Gene, seed: u64, at: usize) -> Option<&RunRow> {
        self.store.run(&super::plan::hurdle_unit_id(
            &self.planner.unit(gene, seed).id,
            at,
        ))
    }
    fn finished(&self, gene: Gene, seed: u64) -> Option<&RunRow> {
        self.store.run(&self.planner.unit(gene, seed).id)
    }
    fn planner(&self) -> &Planner {
        &self.planner
    }
    fn planner_mut(&mut self) -> &mut Planner {
        &mut self.planner
    }
}

impl StatusRunner {
    /// Adds the states of `packs` to `stage`'s counts; whether all are finished.
    fn count(&mut self, stage: Stage, packs: &[super::plan::Pack]) -> Result<bool> {
        if self.counts.last().is_none_or(|c| c.stage != stage) {
            self.counts.push(StageCounts {
                stage,
                done: 0,
                claimed: 0,
                pending: 0,
                failed: 0,
            });
        }
        let c = self.counts.last_mut().expect("pushed");
        let mut all_done = true;
        for p in packs {
            let n = p.units.len();
            if self.store.pack_check(p) == PackCheck::Finished {
                c.done += n;
                continue;
            }
            all_done = false;
            match self.store.pack_state(&p.id)? {
                PackState::Claimed(_) => c.claimed += n,
                PackState::Pending if self.store.failure(&p.id).is_some() => c.failed += n,
                PackState::Pending => c.pending += n,
            }
        }
        Ok(all_done)
    }
}
