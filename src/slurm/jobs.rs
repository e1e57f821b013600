//! `<store>/<name>/slurm/jobs.json`: what `evoattn slurm submit` submitted, one entry per
//! submission, oldest first, for `evoattn slurm status`.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// One `evoattn slurm submit`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Submission {
    /// When it was submitted (RFC 3339, UTC).
    pub submitted_at: String,
    /// The array job's id.
    pub array_job: String,
    /// The final job's id (`afterany` on the array); `None` when its submission failed.
    pub final_job: Option<String>,
    /// Array tasks.
    pub tasks: usize,
    /// The array job's script.
    pub array_script: PathBuf,
    /// The final job's script.
    pub final_script: PathBuf,
    /// The command each array task runs.
    pub task_command: String,
    /// The command the final job runs.
    pub final_command: String,
}

/// The contents of `jobs.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobsFile {
    /// Submissions, oldest first.
    pub submissions: Vec<Submission>,
}

/// `jobs.json` in the Slurm folder `dir`.
pub fn path(dir: &Path) -> PathBuf {
    dir.join("jobs.json")
}

/// Reads `jobs.json` in `dir`; an absent file is no submission.
pub fn read(dir: &Path) -> Result<JobsFile> {
    let p = path(dir);
    match std::fs::read_to_string(&p) {
        Ok(text) => serde_json::from_str(&text).with_context(|| {
            format!(
                "{} is not a jobs file written by `evoattn slurm submit`; move it away (the jobs themselves are unaffected)",
                p.display()
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(JobsFile::default()),
        Err(e) => Err(anyhow::anyhow!("cannot read {}: {e}", p.display())),
    }
}

/// Appends `s` to `jobs.json` in `dir` (written to a temporary file, then renamed).
pub fn append(dir: &Path, s: Submission) -> Result<()> {
    let mut f = read(dir)?;
    f.submissions.push(s);
    let p = path(dir);
    let tmp = dir.join(format!(".tmp-jobs.json-{}", std::process::id()));
    let text = serde_json::to_string_pretty(&f)? + "\n";
    std::fs::write(&tmp, text)
        .and_then(|_| std::fs::rename(&tmp, &p))
        .map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            anyhow::anyhow!(
                "cannot write {}: {e} (the jobs are submitted; note their ids)",
                p.display()
            )
        })
}
