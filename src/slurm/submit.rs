//! `evoattn slurm submit`: checks the study as `evoattn run --check` would, writes the two
//! scripts under `<store>/<name>/slurm/`, submits them with `sbatch --parsable` (the final
//! job with `--dependency=afterany:<array>`) and records the job ids in `jobs.json`.

use super::jobs::{self, Submission};
use super::script::{Resources, TaskSpec, MAX_TASKS};
use super::{find_on_path, slurm_dir};
use crate::data::{self, Corpus};
use crate::study::{self, Study};
use anyhow::{anyhow, bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// What to submit.
#[derive(Debug, Clone)]
pub struct SubmitRequest {
    /// The study file.
    pub study: PathBuf,
    /// The store root (shared by every node that runs a task).
    pub store: PathBuf,
    /// The data directory (`None`: `EVOATTN_DATA`, else the default one).
    pub data: Option<PathBuf>,
    /// The `evoattn` binary the jobs run (the CLI passes its own).
    pub exe: PathBuf,
    /// Array tasks.
    pub tasks: usize,
    /// What each job asks for.
    pub resources: Resources,
    /// Download WikiText-2 into the default data directory when neither `data` nor
    /// `EVOATTN_DATA` names one and it is empty (as `evoattn run` does); the tasks never
    /// download.
    pub fetch: bool,
}

/// A checked request and its scripts, not yet written.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// What the scripts say.
    pub spec: TaskSpec,
    /// The array job's script.
    pub array_script: String,
    /// The final job's script.
    pub final_script: String,
}

impl Prepared {
    /// Where the array script goes.
    pub fn array_path(&self) -> PathBuf {
        self.spec.dir.join("array.sbatch")
    }
    /// Where the final script goes.
    pub fn final_path(&self) -> PathBuf {
        self.spec.dir.join("final.sbatch")
    }
}

/// The one-line error when `sbatch` is missing.
pub fn no_sbatch() -> anyhow::Error {
    anyhow!("sbatch not found on PATH: run `evoattn slurm submit` on a Slurm login node (install the slurm-client package, or `module load slurm`), or add --dry-run to print the scripts without submitting")
}

/// Checks `req` (resources, the study file, the data, the study's settings and memory
/// estimate on this machine for CPU tasks) and renders the scripts. Writes nothing.
pub fn prepare(req: &SubmitRequest) -> Result<Prepared> {
    if req.tasks == 0 || req.tasks > MAX_TASKS {
        bail!(
            "--array {}: give between 1 and {MAX_TASKS} tasks",
            req.tasks
        );
    }
    req.resources.check()?;
    if req.resources.gpus() > 0 && !candle_core::utils::cuda_is_available() {
        bail!("--gpus-per-task: this evoattn was built without CUDA and the tasks run this binary; rebuild it with `cargo build --release --features cuda`");
    }
    let st = Study::load(&req.study).map_err(|e| anyhow!("{e}"))?;
    let study_abs = std::fs::canonicalize(&req.study)
        .with_context(|| format!("cannot resolve {}", req.study.display()))?;
    let store_abs = std::path::absolute(&req.store)
        .with_context(|| format!("cannot resolve --store {}", req.store.display()))?;
    let data_dir = if req.fetch {
        data::data_dir_or_fetch(req.data.as_deref())?
    } else {
        let d = data::resolve_data_dir(req.data.as_deref());
        data::check_data_dir(&d)?;
        d
    };
    let data_abs = std::fs::canonicalize(&data_dir)
        .with_context(|| format!("cannot resolve the data directory {}", data_dir.display()))?;
    let external = study::resolve_external(&st, &store_abs)?;
    let corpus = Corpus::load(&data_abs, st.config.vocab_cap)?;
    if req.resources.gpus() == 0 {
        study::preflight(
            &st,
            &external,
            &corpus,
            &data_abs,
            req.resources.cpus(),
            &candle_core::Device::Cpu,
        )?;
    } else {
        // No GPU here to measure: the settings only.
        st.config
            .check()
            .map_err(|e| anyhow!(st.config_error(&e)))?;
        st.config
            .check_data(&corpus)
            .map_err(|e| anyhow!("{} (data: {})", st.config_error(&e), data_abs.display()))?;
    }
    let spec = TaskSpec {
        dir: slurm_dir(&store_abs, &st.name),
        name: st.name.clone(),
        kind: st.kind.as_str().to_string(),
        exe: req.exe.clone(),
        study: study_abs,
        store: store_abs,
        data: data_abs,
        tasks: req.tasks,
        resources: req.resources.clone(),
    };
    Ok(Prepared {
        array_script: spec.array_script(),
        final_script: spec.final_script(),
        spec,
    })
}

/// Runs `sbatch --parsable ARGS` and returns the job id it printed.
fn sbatch(sbatch: &Path, args: &[String], what: &str) -> Result<String> {
    let out = Command::new(sbatch)
        .arg("--parsable")
        .args(args)
        .output()
        .with_context(|| format!("cannot run {}", sbatch.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let line = err
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("no message");
        bail!("sbatch refused the {what}: {}", line.trim());
    }
    // `123` or `123;cluster`.
    let id = stdout
        .lines()
        .next()
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_string();
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_digit()) {
        bail!(
            "sbatch accepted the {what} but printed no job id (`{}`); check squeue",
            stdout.trim()
        );
    }
    Ok(id)
}

/// Writes the scripts, submits the array and then the final job (`afterany` on it), and
/// appends the submission to `jobs.json`. Needs `sbatch` on `PATH`.
pub fn submit(p: &Prepared) -> Result<Submission> {
    let sbatch_path = find_on_path("sbatch").ok_or_else(no_sbatch)?;
    let dir = &p.spec.dir;
    std::fs::create_dir_all(dir).map_err(|e| {
        anyhow!(
            "cannot create {}: {e} (is --store writable?)",
            dir.display()
        )
    })?;
    for (path, text) in [
        (p.array_path(), &p.array_script),
        (p.final_path(), &p.final_script),
    ] {
        std::fs::write(&path, text).map_err(|e| anyhow!("cannot write {}: {e}", path.display()))?;
    }
    let array_job = sbatch(
        &sbatch_path,
        &[p.array_path().display().to_string()],
        "array job",
    )?;
    let final_job = sbatch(
        &sbatch_path,
        &[
            format!("--dependency=afterany:{array_job}"),
            p.final_path().display().to_string(),
        ],
        "final job",
    );
    let s = Submission {
        submitted_at: crate::record::now_rfc3339(),
        array_job: array_job.clone(),
        final_job: final_job.as_ref().ok().cloned(),
        tasks: p.spec.tasks,
        array_script: p.array_path(),
        final_script: p.final_path(),
        task_command: p.spec.command_line(false),
        final_command: p.spec.command_line(true),
    };
    jobs::append(dir, s.clone())?;
    if let Err(e) = final_job {
        bail!("{e:#}; the array job {array_job} is queued without it: once it ends, run `evoattn slurm submit` again (it resumes) or `{}` to write the report", s.final_command);
    }
    Ok(s)
}
