//! evoattn: evolutionary search over attention mechanisms, wrapped with repeated-seed
//! evaluation, equally tuned baselines and hypothesis tests.
//!
//! Data flows one way: gene space ([`gene`]) → data ([`data`]) → model ([`model`]) →
//! training and evaluation ([`train`]).

pub mod cpu;
pub mod data;
pub mod gene;
pub mod model;
pub mod stats;
pub mod train;

/// Version of the training semantics; bumped whenever a change alters results.
pub const ENGINE_VERSION: u32 = 1;
