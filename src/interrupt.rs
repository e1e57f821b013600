//! SIGTERM and SIGINT: the first asks every run in flight to checkpoint and stop (the
//! process then exits with [`EXIT_INTERRUPTED`]); a second one exits at once with
//! [`EXIT_FORCED`].
//!
//! Slurm sends SIGTERM before a time limit (`--signal`) and on preemption; Ctrl-C sends
//! SIGINT. Training checks [`requested`] after every step.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Exit code of a run stopped by a signal after checkpointing: rerun to resume.
pub const EXIT_INTERRUPTED: i32 = 75;
/// Exit code after a second signal (at once, without a checkpoint of the current step).
pub const EXIT_FORCED: i32 = 130;

static FLAG: std::sync::OnceLock<Arc<AtomicBool>> = std::sync::OnceLock::new();

fn flag() -> &'static Arc<AtomicBool> {
    FLAG.get_or_init(|| Arc::new(AtomicBool::new(false)))
}

/// Installs the handlers (once per process).
pub fn install() -> std::io::Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let f = flag().clone();
    for sig in [SIGTERM, SIGINT] {
        // Registered first, so it sees the flag as it was before this signal: a second
        // signal finds it set and exits.
        signal_hook::flag::register_conditional_shutdown(sig, EXIT_FORCED, f.clone())?;
        signal_hook::flag::register(sig, f.clone())?;
    }
    Ok(())
}

/// Whether a stop was asked for.
pub fn requested() -> bool {
    flag().load(Ordering::SeqCst)
}

/// Asks for a stop (what the first signal does; for tests and embedders).
pub fn request() {
    flag().store(true, Ordering::SeqCst);
}

/// The error of a run stopped by [`requested`] after checkpointing.
#[derive(Debug, Clone, Copy)]
pub struct Interrupted {
    /// Steps done when it stopped (0 when it stopped between runs).
    pub step: usize,
}

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "interrupted by a signal")?;
        if self.step > 0 {
            write!(f, " at step {} (checkpointed)", self.step)?;
        }
        Ok(())
    }
}

impl std::error::Error for Interrupted {}
