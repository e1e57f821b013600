//! Build facts: which code made a result.

/// Version of the training semantics; bumped whenever a change alters results, so that a
/// unit trained by older code is never taken for one trained by newer code (it enters the
/// unit hash).
///
/// History:
/// - 1: the engine of sessions 1–3 (genes.md, replica-batched transformer, AdamW with
///   decoupled decay on weights and embeddings only, warm-up + cosine to 10 %).
pub const ENGINE_VERSION: u32 = 1;

/// Revision of the CPU kernels of α-entmax and additive attention, for the genes that use
/// them (no other gene's results changed, so no other unit id does):
/// - 1: composed from candle ops (bisection for α-entmax; the broadcast `[.., T, T, d_a]`
///   tensor for additive attention);
/// - 2: the fused ops of [`crate::model::entmax`] and [`crate::model::additive`]. Values
///   and gradients agree with revision 1 to floating-point rounding, but a run's result is
///   not bit-identical, so these genes' units get new ids and are trained afresh.
pub const FUSED_KERNELS_REVISION: u32 = 2;

/// The revision of the α-entmax kernel, for the genes with `alpha_entmax` (revisions 1
/// and 2 as in [`FUSED_KERNELS_REVISION`]):
/// - 3: the backward's ∂α sums in f64 from p / Σp (revision 2 summed f32 values of
///   p^{2−α}, which the closed form amplifies by 1/(α − 1)²: up to 3.6e-3 off at
///   α = 1.005; now at most 6.5e-7 in the test). ∂z and the forward of finite logits are
///   unchanged (NaN or +∞ logits now give a NaN row instead of zeros).
/// - 4: Newton starts at a Jensen lower bound of the threshold instead of max x − 1 (~2–3
///   steps instead of ~6.5 on the `cpu` preset), and the backward's f64 sums use lane
///   accumulators and the vectorisable f64 `exp`/`ln` of [`crate::model::kernels`] (within
///   ~2 ulp of libm). The weights agree with revision 3's to ~1e-7 (as both do with the
///   f64 path).
pub const ENTMAX_KERNEL_REVISION: u32 = 4;

/// The revision of the sparsemax and 1.5-entmax kernels, for the genes with those
/// normalizations:
/// - 1 (implicit): composed from candle ops (sort, cumulative sums, a differentiable
///   threshold on the support);
/// - 5: the fused ops of [`crate::model::sparsemax`], the same exact sort-based thresholds
///   (prefix sums in f64) over the candidates of each row with the closed-form gradient.
///   Values and gradients agree with revision 1 to rounding, not bit for bit.
///
/// Revisions are numbered across kernels (5 follows [`ENTMAX_KERNEL_REVISION`]'s 4; the
/// list is `REVISIONS` below), so that a gene's newest revision is also its largest.
pub const SPARSE_KERNEL_REVISION: u32 = 5;

/// The revision of the output layer's CPU kernel ([`crate::model::lm_head`]), which every
/// gene uses:
/// - 1 (implicit): row max, Σ exp(z − m) with 8 partial sums, then G = exp(z − lse)·g
///   (the exponentials computed twice), ∂E = Gᵀ·h as one GEMM;
/// - 6: z ← exp(z − m) in place with an FMA exponential and 32 partial sums, G = e·(g/s)
///   (one multiply), and ∂E in pieces of 1,024 vocabulary rows (one single-threaded GEMM
///   each) that other threads compute while candle runs the rest of the backward. Losses
///   and gradients agree with revision 1 to f32 rounding, not bit for bit, so every gene's
///   units get new ids.
pub const HEAD_KERNEL_REVISION: u32 = 6;

/// Which genes a kernel revision changed.
type Affects = fn(crate::gene::Gene) -> bool;

/// Every kernel revision after the implicit 1, oldest first, with the genes whose kernels
/// it changed. The numbers rise strictly (a test checks it), so a gene's newest revision
/// is also its largest: each change a gene's kernels go through gives it a new number.
/// A new revision is appended here with the next number.
const REVISIONS: [(u32, Affects); 5] = [
    (FUSED_KERNELS_REVISION, |g| {
        uses_additive(g) || uses_alpha_entmax(g)
    }),
    (3, uses_alpha_entmax),
    (ENTMAX_KERNEL_REVISION, uses_alpha_entmax),
    (SPARSE_KERNEL_REVISION, uses_sparse),
    (HEAD_KERNEL_REVISION, |_| true),
];

fn uses_additive(g: crate::gene::Gene) -> bool {
    g.similarity == crate::gene::Similarity::Additive
}

fn uses_alpha_entmax(g: crate::gene::Gene) -> bool {
    g.normalization == crate::gene::Normalization::AlphaEntmax
}

fn uses_sparse(g: crate::gene::Gene) -> bool {
    use crate::gene::Normalization;
    matches!(
        g.normalization,
        Normalization::Sparsemax | Normalization::Entmax15
    )
}

/// The kernel revision that enters `gene`'s unit ids: the newest revision that changed one
/// of its kernels. Since [`HEAD_KERNEL_REVISION`] (the output layer, which every gene has)
/// that is 6 for every gene; before it, [`ENTMAX_KERNEL_REVISION`] for `alpha_entmax`
/// normalization, [`SPARSE_KERNEL_REVISION`] for `sparsemax` and `entmax15`,
/// [`FUSED_KERNELS_REVISION`] for `additive` similarity with another normalization, and
/// `None` (revision 1, implicit) for every other gene ([`kernel_revision_history`]).
pub fn kernel_revision(gene: crate::gene::Gene) -> Option<u32> {
    kernel_revision_history(gene).pop().flatten()
}

/// Every kernel revision `gene`'s unit ids have had, oldest first, starting with `None`
/// (revision 1): what a store trained by an earlier build may hold.
pub fn kernel_revision_history(gene: crate::gene::Gene) -> Vec<Option<u32>> {
    std::iter::once(None)
        .chain(
            REVISIONS
                .iter()
                .filter(|(_, f)| f(gene))
                .map(|&(r, _)| Some(r)),
        )
        .collect()
}

/// The revision numbers, oldest first (for the test that they rise).
pub fn kernel_revision_numbers() -> Vec<u32> {
    REVISIONS.iter().map(|&(r, _)| r).collect()
}

/// Commit the binary was built from (`-dirty` when tracked files had changes, `unknown`
/// outside a git checkout); set by `build.rs`.
pub const GIT_COMMIT: &str = env!("EVOATTN_GIT_COMMIT");

/// The crate version.
pub const CRATE_VERSION: &str = env!("CARGO_PKG_VERSION");
