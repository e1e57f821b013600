//! Running a study on a Slurm cluster: `evoattn slurm submit` writes and submits the batch
//! scripts, `evoattn slurm status` shows the jobs next to the store's units.
//!
//! The design, in brief (README, "Cluster"):
//!
//! - An **array job** of N tasks, every task running the very same `evoattn run` without
//!   `--shard`: runs (packs) are claimed dynamically in the shared store, so the tasks
//!   split the work, a task waits only for runs that a *live* process holds (claims of dead
//!   holders are taken over) and one task alone finishes the study. Hence any number of
//!   free slots, one included, finishes every kind of study, evolve too, whose generation
//!   g + 1 needs all of g. Shards would not do: a GA shard waits for the other shards'
//!   packs even when no task runs them.
//! - Tasks run with `--no-report`; a **final job** with `--dependency=afterany:<array>`
//!   runs `evoattn run` once more: it finishes or resumes whatever a killed task left and
//!   writes the report, once.
//! - Signals: `--signal=B:USR1@LEAD` asks Slurm for USR1 to the batch shell LEAD seconds
//!   before the time limit; the script passes it on to `evoattn` as SIGTERM (exactly one:
//!   a second would make `evoattn` exit at once), which checkpoints the runs in flight,
//!   releases their claims and exits 75; the script then requeues its task (`--requeue`,
//!   same job id, the log is appended to). `scancel` signals every process of the job, so
//!   the script only waits and does not requeue.
//! - The job ids go to `<store>/<name>/slurm/jobs.json`; status reads them back and asks
//!   `squeue`, then `sacct`, then `scontrol`, none of which is required to exist.

pub mod jobs;
pub mod query;
pub mod script;
pub mod submit;

pub use script::{Resources, TaskSpec};
pub use submit::{prepare, submit, Prepared, SubmitRequest};

use std::path::{Path, PathBuf};

/// The folder of a study's Slurm files: `<store>/<name>/slurm`.
pub fn slurm_dir(store: &Path, study: &str) -> PathBuf {
    store.join(study).join("slurm")
}

/// The executable `tool` on `PATH`, if there is one.
pub fn find_on_path(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .filter(|d| !d.as_os_str().is_empty())
        .map(|d| d.join(tool))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
