//! evoattn: evolutionary search over attention mechanisms, wrapped with repeated-seed
//! evaluation, equally tuned baselines and hypothesis tests.
//!
//! Data flows one way: gene space ([`gene`]) → data ([`data`]) → model ([`model`]) →
//! training and evaluation ([`train`]) → studies: plan, execute, store ([`study`], with the
//! searches of [`search`]) → statistics ([`stats`]).

pub mod cpu;
pub mod data;
pub mod gene;
pub mod model;
pub mod report;
pub mod search;
pub use evoattn_stats as stats;
pub use evoattn_stats::seed;
pub mod study;
pub mod train;

/// Version of the training semantics; bumped whenever a change alters results.
pub const ENGINE_VERSION: u32 = 1;
