//! Build facts: which code made a result.

/// Version of the training semantics; bumped whenever a change alters results, so that a
/// unit trained by older code is never taken for one trained by newer code (it enters the
/// unit hash).
///
/// History:
/// - 1: the engine of sessions 1–3 (genes.md, replica-batched transformer, AdamW with
///   decoupled decay on weights and embeddings only, warm-up + cosine to 10 %).
pub const ENGINE_VERSION: u32 = 1;

/// Commit the binary was built from (`-dirty` when tracked files had changes, `unknown`
/// outside a git checkout); set by `build.rs`.
pub const GIT_COMMIT: &str = env!("EVOATTN_GIT_COMMIT");

/// The crate version.
pub const CRATE_VERSION: &str = env!("CARGO_PKG_VERSION");
