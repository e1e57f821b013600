//! evoattn: evolutionary search over attention mechanisms, wrapped with repeated-seed
//! evaluation, equally tuned baselines and hypothesis tests.
//!
//! Dependencies run one way, following the data:
//!
//! ```text
//! gene ─▶ data ─▶ model ─▶ train ─▶ search ─▶ study (spec ▶ kinds ▶ plan ▶ exec ▶ store) ─▶ report
//!                                              ▲ stats (a crate of its own: imports nothing of evoattn)
//! ```
//!
//! - [`gene`]: the space (four component enums); [`seed`]: seed derivation, a leaf used by
//!   data, model, stats and search; [`version`]: build facts; [`record`]: the rows a study
//!   produces, shared by store, search, report and CLI.
//! - [`data`] (WikiText-2) → [`model`] (the transformer; [`model::attention`] has one file
//!   per gene component) → [`train`] (AdamW, evaluation).
//! - [`search`]: GA, random search, hyperparameter trials; pure, behind callbacks.
//! - [`study`]: study files ([`study::spec`]), one module per kind ([`study::kinds`]),
//!   units and packs ([`study::plan`]), training them ([`study::exec`]), the resumable
//!   Parquet store ([`study::store`]).
//! - [`slurm`]: a study on a Slurm cluster (batch scripts, `sbatch`, job states); above
//!   [`study`], which it only calls.
//! - [`stats`] (the `evoattn-stats` crate) → [`report`]: analysis, Markdown, charts,
//!   `tests.parquet`.
//!
//! The binary (`src/main.rs`, `src/cli/`) only parses arguments and prints.

#![warn(missing_docs)]

pub mod cpu;
pub mod data;
pub mod gene;
pub mod interrupt;
pub mod model;
pub mod record;
pub mod report;
pub mod search;
pub mod slurm;
pub mod study;
pub mod train;
pub mod version;

pub use evoattn_stats as stats;
pub use evoattn_stats::seed;
