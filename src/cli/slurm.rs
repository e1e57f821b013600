//! `evoattn slurm submit` and `evoattn slurm status`: a study on a Slurm cluster (the work
//! is in `evoattn::slurm`).

use super::output::{self, Plain};
use super::run::load_study;
use super::status::StatusArgs;
use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use evoattn::slurm::{self, jobs, query, Resources, SubmitRequest};
use serde_json::json;
use std::path::PathBuf;

/// `evoattn slurm …`.
#[derive(Subcommand)]
pub enum SlurmCmd {
    /// Write and submit an array of `evoattn run` tasks and a final job that writes the
    /// report (scripts and logs under STORE/<name>/slurm/).
    Submit(SubmitArgs),
    /// Show the study's Slurm jobs (from STORE/<name>/slurm/jobs.json) and its units.
    Status(SlurmStatusArgs),
}

/// `evoattn slurm submit`.
#[derive(Args)]
pub struct SubmitArgs {
    /// Study file (TOML).
    pub study: PathBuf,
    /// Store root, on a file system every node sees; the study writes under STORE/<name>/.
    #[arg(long, default_value = "runs")]
    pub store: PathBuf,
    /// Array tasks: `evoattn run` processes that share the study's runs.
    #[arg(long = "array", value_name = "N", default_value_t = 4)]
    pub tasks: usize,
    /// Slurm partition.
    #[arg(long)]
    pub partition: Option<String>,
    /// GPUs per task (1; the tasks then train with --device cuda).
    #[arg(long, value_name = "G")]
    pub gpus_per_task: Option<usize>,
    /// CPUs per task, also each task's --threads (default 1).
    #[arg(long, value_name = "C")]
    pub cpus_per_task: Option<usize>,
    /// Memory per task, e.g. 16G.
    #[arg(long, value_name = "M")]
    pub mem: Option<String>,
    /// Time limit per job, e.g. 04:00:00 (a task stops cleanly and requeues before it).
    #[arg(long, value_name = "T")]
    pub time: Option<String>,
    /// Slurm account.
    #[arg(long)]
    pub account: Option<String>,
    /// Slurm QOS.
    #[arg(long)]
    pub qos: Option<String>,
    /// More sbatch options, e.g. --extra "--constraint=a100 --exclusive".
    #[arg(long, allow_hyphen_values = true)]
    pub extra: Vec<String>,
    /// Data directory (default: EVOATTN_DATA, else the default one, fetched here if empty).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Print the scripts; write and submit nothing (works without Slurm).
    #[arg(long)]
    pub dry_run: bool,
    /// One JSON object on stdout: scripts, job ids, commands.
    #[arg(long)]
    pub json: bool,
}

/// `evoattn slurm status`.
#[derive(Args)]
pub struct SlurmStatusArgs {
    /// Study file (TOML).
    pub study: PathBuf,
    /// Store root.
    #[arg(long, default_value = "runs")]
    pub store: PathBuf,
    /// Data directory (default: EVOATTN_DATA, else the default one).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// JSON Lines: the jobs, then the store's units as `evoattn status --json` prints them.
    #[arg(long)]
    pub json: bool,
}

/// Runs `evoattn slurm …`.
pub fn run(c: &SlurmCmd) -> Result<()> {
    match c {
        SlurmCmd::Submit(a) => submit(a),
        SlurmCmd::Status(a) => status(a),
    }
}

fn submit(a: &SubmitArgs) -> Result<()> {
    if !a.dry_run && slurm::find_on_path("sbatch").is_none() {
        return Err(slurm::submit::no_sbatch());
    }
    let req = SubmitRequest {
        study: a.study.clone(),
        store: a.store.clone(),
        data: a.data.clone(),
        exe: std::env::current_exe().context("cannot find the evoattn binary's path")?,
        tasks: a.tasks,
        resources: Resources {
            partition: a.partition.clone(),
            account: a.account.clone(),
            qos: a.qos.clone(),
            cpus_per_task: a.cpus_per_task,
            gpus_per_task: a.gpus_per_task.filter(|&g| g > 0),
            mem: a.mem.clone(),
            time: a.time.clone(),
            extra: a
                .extra
                .iter()
                .flat_map(|e| e.split_whitespace().map(String::from))
                .collect(),
        },
        fetch: !a.dry_run,
    };
    let p = slurm::prepare(&req)?;
    let scripts = json!({"array": p.array_path(), "final": p.final_path()});
    let commands = json!({"task": p.spec.command_line(false), "final": p.spec.command_line(true)});
    if a.dry_run {
        let text = format!(
            "# ===== {} ({} task(s); --dry-run: not written, not submitted)\n{}\n# ===== {} (submitted with --dependency=afterany:<array job>; not written)\n{}",
            p.array_path().display(),
            p.spec.tasks,
            p.array_script,
            p.final_path().display(),
            p.final_script
        );
        let v = json!({"study": p.spec.name, "dry_run": true, "tasks": p.spec.tasks,
                       "scripts": scripts, "commands": commands,
                       "array_script": p.array_script, "final_script": p.final_script});
        return output::print(
            &Plain {
                json: vec![v],
                text,
            },
            a.json,
        );
    }
    let s = slurm::submit(&p)?;
    let final_job = s.final_job.clone().unwrap_or_default();
    let text = format!(
        "study {}: wrote {} and {}\nsubmitted array job {} ({} task(s)) and final job {final_job} (afterany:{})\neach task runs: {}\nthe final job runs: {}\nlogs in {}; follow with `evoattn slurm status {} --store {}`\n",
        p.spec.name,
        p.array_path().display(),
        p.final_path().display(),
        s.array_job,
        s.tasks,
        s.array_job,
        s.task_command,
        s.final_command,
        p.spec.dir.display(),
        a.study.display(),
        a.store.display()
    );
    let v = json!({"study": p.spec.name, "dry_run": false, "tasks": s.tasks,
                   "scripts": scripts, "commands": commands,
                   "jobs": {"array": s.array_job, "final": s.final_job},
                   "jobs_file": jobs::path(&p.spec.dir)});
    output::print(
        &Plain {
            json: vec![v],
            text,
        },
        a.json,
    )
}

fn status(a: &SlurmStatusArgs) -> Result<()> {
    let study = load_study(&a.study)?;
    let dir = slurm::slurm_dir(&a.store, &study.name);
    let file = jobs::read(&dir)?;
    let mut ids = Vec::new();
    let mut expected = Vec::new();
    for s in &file.submissions {
        ids.push(s.array_job.clone());
        expected.extend((0..s.tasks).map(|t| format!("{}_{t}", s.array_job)));
        if let Some(f) = &s.final_job {
            ids.push(f.clone());
            expected.push(f.clone());
        }
    }
    let report = query::query(&ids, &expected);
    let mut text = format!(
        "study {}: {} submission(s) in {}\n",
        study.name,
        file.submissions.len(),
        jobs::path(&dir).display()
    );
    let mut subs = Vec::new();
    for (i, s) in file.submissions.iter().enumerate() {
        let mine: Vec<&query::JobState> = report
            .jobs
            .iter()
            .filter(|j| {
                j.id.split('_').next() == Some(s.array_job.as_str())
                    || s.final_job.as_deref() == Some(j.id.as_str())
            })
            .collect();
        text += &format!(
            "  submission {} at {}: array job {} ({} task(s)), final job {}\n",
            i + 1,
            s.submitted_at,
            s.array_job,
            s.tasks,
            s.final_job
                .as_deref()
                .unwrap_or("none (its submission failed)")
        );
        for j in &mine {
            let role = if j.id.contains('_') { "task" } else { "final" };
            text += &format!(
                "    {:<12} {:<5} {:<11} {:>10}  {}{}\n",
                j.id,
                role,
                j.state,
                j.elapsed.as_deref().unwrap_or("-"),
                j.exit_code
                    .as_deref()
                    .map(|c| format!("exit {c}  "))
                    .unwrap_or_default(),
                j.detail.as_deref().unwrap_or("")
            );
        }
        subs.push(
            json!({"submitted_at": s.submitted_at, "array_job": s.array_job,
                         "final_job": s.final_job, "tasks": s.tasks, "jobs": mine}),
        );
    }
    for n in &report.notes {
        text += &format!("  ({n})\n");
    }
    let started = a.store.join(&study.name).join("meta.json").is_file();
    if !started {
        text += "  store: no task has started the study yet\n";
    }
    let v = json!({"study": study.name, "jobs_file": jobs::path(&dir), "submissions": subs,
                   "notes": report.notes, "store_started": started});
    output::print(
        &Plain {
            json: vec![v],
            text,
        },
        a.json,
    )?;
    if started {
        // The store's units, exactly as `evoattn status` shows them.
        super::status::status(&StatusArgs {
            study: a.study.clone(),
            store: a.store.clone(),
            data: a.data.clone(),
            json: a.json,
        })?;
    }
    Ok(())
}
