//! The batch scripts: an array of `evoattn run --no-report` tasks and a final
//! `evoattn run` that writes the report, with the signal handling that lets a task stop
//! cleanly before its time limit and requeue itself.

use anyhow::{bail, Result};
use std::path::PathBuf;

/// Seconds before the time limit that a task is asked to stop (USR1 to the batch shell,
/// passed on to `evoattn` as SIGTERM), at most; shorter for time limits under 8 minutes.
pub const SIGNAL_LEAD_S: u64 = 120;

/// A task requeues itself after a time-limit stop at most this many times (each requeue
/// resumes from the checkpoints, so only a time limit too short to make progress hits it).
pub const MAX_REQUEUES: u32 = 20;

/// Most CPUs per task accepted (the most threads `evoattn` takes).
pub const MAX_CPUS: usize = 1024;

/// Most array tasks accepted (Slurm's default `MaxArraySize` is 1001: indices 0–1000).
pub const MAX_TASKS: usize = 1000;

/// What each job asks Slurm for. `None`: the cluster's default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resources {
    /// `--partition`.
    pub partition: Option<String>,
    /// `--account`.
    pub account: Option<String>,
    /// `--qos`.
    pub qos: Option<String>,
    /// `--cpus-per-task`; also the task's `--threads` (default 1).
    pub cpus_per_task: Option<usize>,
    /// GPUs per task: `--gres=gpu:G`, and the task runs with `--device cuda` (only 1 is
    /// accepted: `evoattn run` trains on one device per process).
    pub gpus_per_task: Option<usize>,
    /// `--mem`, e.g. `8G`.
    pub mem: Option<String>,
    /// `--time`, in any of Slurm's formats (`MM`, `HH:MM:SS`, `D-HH`, …).
    pub time: Option<String>,
    /// More sbatch options, each a `#SBATCH` line (e.g. `--constraint=a100`).
    pub extra: Vec<String>,
}

/// sbatch options the scripts set themselves; `--extra` may not give them.
const MANAGED: &[&str] = &[
    "--array",
    "-a",
    "--output",
    "-o",
    "--error",
    "-e",
    "--open-mode",
    "--signal",
    "--requeue",
    "--no-requeue",
    "--dependency",
    "-d",
    "--parsable",
    "--wrap",
    "--wait",
    "-W",
];

impl Resources {
    /// Checks the values: no spaces or quotes in a value, one GPU at most, `--time` in a
    /// Slurm format, `--extra` options that the scripts do not set themselves.
    pub fn check(&self) -> Result<()> {
        for (flag, v) in [
            ("--partition", &self.partition),
            ("--account", &self.account),
            ("--qos", &self.qos),
            ("--mem", &self.mem),
            ("--time", &self.time),
        ] {
            if let Some(v) = v {
                if v.is_empty()
                    || v.chars()
                        .any(|c| c.is_whitespace() || "'\"`$\\#;".contains(c))
                {
                    bail!("{flag} `{v}`: give one Slurm value without spaces, quotes or shell characters, e.g. {flag} {}", example(flag));
                }
            }
        }
        match self.cpus_per_task {
            Some(0) => bail!("--cpus-per-task 0: give at least 1"),
            Some(c) if c > MAX_CPUS => bail!(
                "--cpus-per-task {c} is out of range: give between 1 and {}",
                MAX_CPUS
            ),
            _ => {}
        }
        if let Some(g) = self.gpus_per_task {
            if g > 1 {
                bail!("--gpus-per-task {g}: evoattn run trains on one GPU per process; give --gpus-per-task 1 and more tasks (--array N) instead");
            }
        }
        if let Some(t) = &self.time {
            parse_time(t)?;
        }
        for o in &self.extra {
            if !o.starts_with('-') || o.chars().any(|c| "'\"`$\\;\n".contains(c)) {
                bail!("--extra `{o}`: give sbatch options such as --extra \"--constraint=a100 --exclusive\" (no quotes or shell characters)");
            }
            let name = o.split('=').next().unwrap_or(o);
            if MANAGED.contains(&name) {
                bail!("--extra {o}: the scripts set {name} themselves; leave it out (use --array N for the task count)");
            }
        }
        Ok(())
    }

    /// GPUs asked for (0 or 1).
    pub fn gpus(&self) -> usize {
        self.gpus_per_task.unwrap_or(0)
    }

    /// The device the tasks train on: `cuda` with a GPU, else `cpu`.
    pub fn device(&self) -> &'static str {
        if self.gpus() > 0 {
            "cuda"
        } else {
            "cpu"
        }
    }

    /// CPUs per task (default 1), which is also the task's `--threads`.
    pub fn cpus(&self) -> usize {
        self.cpus_per_task.unwrap_or(1)
    }

    /// How many seconds before the time limit a task is asked to stop.
    pub fn signal_lead(&self) -> u64 {
        match self.time.as_deref().map(parse_time) {
            Some(Ok(Some(limit))) if limit < 4 * SIGNAL_LEAD_S => (limit / 4).max(10),
            _ => SIGNAL_LEAD_S,
        }
    }

    /// The `#SBATCH` lines for these resources.
    fn lines(&self) -> Vec<String> {
        let mut v = vec![format!("--cpus-per-task={}", self.cpus())];
        for (flag, value) in [
            ("--partition", &self.partition),
            ("--account", &self.account),
            ("--qos", &self.qos),
            ("--mem", &self.mem),
            ("--time", &self.time),
        ] {
            if let Some(x) = value {
                v.push(format!("{flag}={x}"));
            }
        }
        if self.gpus() > 0 {
            v.push(format!("--gres=gpu:{}", self.gpus()));
        }
        v.extend(self.extra.iter().cloned());
        v
    }
}

fn example(flag: &str) -> &'static str {
    match flag {
        "--mem" => "16G",
        "--time" => "04:00:00",
        _ => "NAME",
    }
}

/// A Slurm time limit in seconds: `MM`, `MM:SS`, `HH:MM:SS`, `D-HH`, `D-HH:MM`,
/// `D-HH:MM:SS`; `None` for `UNLIMITED`/`INFINITE`. An error names the formats.
pub fn parse_time(s: &str) -> Result<Option<u64>> {
    let bad = || {
        anyhow::anyhow!(
            "--time `{s}` is not a Slurm time: give MINUTES, HH:MM:SS or DAYS-HH:MM:SS, e.g. --time 04:00:00"
        )
    };
    if s.eq_ignore_ascii_case("unlimited") || s.eq_ignore_ascii_case("infinite") {
        return Ok(None);
    }
    let num = |x: &str| -> Result<u64> {
        if x.is_empty() || !x.chars().all(|c| c.is_ascii_digit()) || x.len() > 9 {
            return Err(bad());
        }
        x.parse().map_err(|_| bad())
    };
    let (days, rest) = match s.split_once('-') {
        Some((d, r)) => (Some(num(d)?), r),
        None => (None, s),
    };
    let parts: Vec<u64> = rest.split(':').map(num).collect::<Result<_>>()?;
    let secs = match (days, parts.as_slice()) {
        (None, [m]) => m * 60,
        (None, [m, s]) => m * 60 + s,
        (None, [h, m, s]) => h * 3600 + m * 60 + s,
        (Some(d), [h]) => d * 86400 + h * 3600,
        (Some(d), [h, m]) => d * 86400 + h * 3600 + m * 60,
        (Some(d), [h, m, s]) => d * 86400 + h * 3600 + m * 60 + s,
        _ => return Err(bad()),
    };
    if secs == 0 {
        bail!("--time {s} is zero: give a positive time limit, e.g. --time 04:00:00");
    }
    Ok(Some(secs))
}

/// `s` quoted for a POSIX shell (unchanged when it needs no quotes).
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+=:,@%".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// Everything a study's scripts say: what to run, where, with what.
#[derive(Debug, Clone)]
pub struct TaskSpec {
    /// Study name (the store folder).
    pub name: String,
    /// Study kind, for the comments.
    pub kind: String,
    /// The `evoattn` binary (absolute).
    pub exe: PathBuf,
    /// The study file (absolute).
    pub study: PathBuf,
    /// The store root (absolute).
    pub store: PathBuf,
    /// The data directory (absolute).
    pub data: PathBuf,
    /// `<store>/<name>/slurm` (absolute): scripts, logs, `jobs.json`.
    pub dir: PathBuf,
    /// Array tasks.
    pub tasks: usize,
    /// What each job asks for.
    pub resources: Resources,
}

impl TaskSpec {
    /// The command a task runs (`report = false`: with `--no-report`) or the final job
    /// runs (`report = true`), one argument per item.
    pub fn command(&self, report: bool) -> Vec<String> {
        let mut v: Vec<String> = vec![
            self.exe.display().to_string(),
            "--threads".into(),
            self.resources.cpus().to_string(),
            "run".into(),
            self.study.display().to_string(),
            "--store".into(),
            self.store.display().to_string(),
            "--data".into(),
            self.data.display().to_string(),
            "--device".into(),
            self.resources.device().into(),
            "--quiet".into(),
        ];
        if !report {
            v.push("--no-report".into());
        }
        v
    }

    /// [`TaskSpec::command`] as one shell line.
    pub fn command_line(&self, report: bool) -> String {
        self.command(report)
            .iter()
            .map(|a| shell_quote(a))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The array job's script.
    pub fn array_script(&self) -> String {
        let head = format!(
            "# evoattn on Slurm: the {tasks} array task(s) of study `{name}` ({kind}).\n\
             # Written by `evoattn slurm submit`; submitted as `sbatch --parsable {script}`.\n\
             #\n\
             # Every task runs the same command (below): `evoattn run` without --shard claims the\n\
             # study's runs one at a time in the shared store, so the tasks split the work, a task\n\
             # only ever waits for runs that a *running* process holds (a dead holder's claim is\n\
             # taken over), and a single task alone finishes the study: any number of free slots\n\
             # will do, for every kind of study (an evolve study's next generation needs the whole\n\
             # previous one, which the running tasks train between them). --no-report: the final\n\
             # job (final.sbatch, afterany on this array) writes the report once.\n",
            tasks = self.tasks,
            name = self.name,
            kind = self.kind,
            script = self.dir.join("array.sbatch").display(),
        );
        let mut opts = vec![
            format!("--job-name=evoattn-{}", self.name),
            format!("--array=0-{}", self.tasks.saturating_sub(1)),
            format!("--output={}", self.dir.join("task-%A_%a.log").display()),
        ];
        opts.extend(self.common_options());
        self.render(&head, &opts, false)
    }

    /// The final job's script (submitted with `--dependency=afterany:<array job>`).
    pub fn final_script(&self) -> String {
        let head = format!(
            "# evoattn on Slurm: the final job of study `{name}` ({kind}).\n\
             # Written by `evoattn slurm submit`; submitted as\n\
             # `sbatch --parsable --dependency=afterany:<array job> {script}`, so it starts when every\n\
             # array task has ended (a task that requeued itself is pending again, not ended).\n\
             #\n\
             # It runs `evoattn run` once more: whatever a killed or failed task left is finished\n\
             # or resumed here (runs already in the store are never retrained), and, the study\n\
             # complete, the report is written: report.md and tests.parquet beside runs.parquet.\n",
            name = self.name,
            kind = self.kind,
            script = self.dir.join("final.sbatch").display(),
        );
        let mut opts = vec![
            format!("--job-name=evoattn-{}-final", self.name),
            format!("--output={}", self.dir.join("final-%j.log").display()),
        ];
        opts.extend(self.common_options());
        self.render(&head, &opts, true)
    }

    fn common_options(&self) -> Vec<String> {
        let mut v = vec![
            "--open-mode=append".to_string(),
            "--requeue".into(),
            format!("--signal=B:USR1@{}", self.resources.signal_lead()),
            format!("--chdir={}", self.dir.display()),
        ];
        v.extend(self.resources.lines());
        v
    }

    fn render(&self, head: &str, opts: &[String], report: bool) -> String {
        let lead = self.resources.signal_lead();
        let mut s = String::from("#!/bin/bash\n");
        s += head;
        s += &format!(
            "#\n\
             # Stopping: {lead} s before the time limit Slurm sends USR1 to this shell\n\
             # (--signal=B:USR1@{lead}). The first USR1 is passed on to evoattn as one SIGTERM:\n\
             # evoattn checkpoints\n\
             # the runs in flight, releases their claims and exits 75, and the job requeues itself\n\
             # (--requeue: same job id, this log goes on) to resume, at most {MAX_REQUEUES} times.\n\
             # scancel sends SIGTERM to every process of the job, evoattn included: the shell then\n\
             # only waits for it (a second SIGTERM would make evoattn exit at once) and does not\n\
             # requeue. Exit codes of evoattn: 0 done, 1 error, 3 some runs failed (retried by the\n\
             # next run), 75 interrupted after checkpointing.\n"
        );
        for o in opts {
            s += &format!("#SBATCH {o}\n");
        }
        s += &format!(
            r#"
set -u
cmd=({cmd})
echo "== $(date -u +%Y-%m-%dT%H:%M:%SZ) job ${{SLURM_JOB_ID:-?}}${{SLURM_ARRAY_TASK_ID:+ (array task $SLURM_ARRAY_TASK_ID)}} on $(hostname), restart ${{SLURM_RESTART_COUNT:-0}}"
echo "== ${{cmd[*]}}"
requeue=0
child=
# The first USR1 only: a second SIGTERM would make evoattn exit at once.
trap '[ "$requeue" -eq 0 ] && [ -n "$child" ] && kill -TERM "$child" 2>/dev/null; requeue=1' USR1
trap ':' TERM
# evoattn starts with USR1 ignored: only this shell acts on it.
(trap '' USR1; exec "${{cmd[@]}}") &
child=$!
[ "$requeue" -eq 1 ] && kill -TERM "$child" 2>/dev/null
# wait returns early (with 128 + the signal) when a trapped signal arrives: wait again
# until evoattn has exited, then once more for its own status (bash keeps it).
while :; do
    wait "$child"
    rc=$?
    kill -0 "$child" 2>/dev/null || break
done
wait "$child" 2>/dev/null
last=$?
[ "$last" -ne 127 ] && rc=$last
echo "== $(date -u +%Y-%m-%dT%H:%M:%SZ) evoattn exited with $rc"
if [ "$requeue" -eq 1 ] && {{ [ "$rc" -eq 75 ] || [ "$rc" -eq 143 ]; }}; then
    if [ "${{SLURM_RESTART_COUNT:-0}}" -lt {MAX_REQUEUES} ]; then
        id="${{SLURM_ARRAY_JOB_ID:+${{SLURM_ARRAY_JOB_ID}}_${{SLURM_ARRAY_TASK_ID:-}}}}"
        echo "== stopped for the time limit; requeueing ${{id:-$SLURM_JOB_ID}} to resume"
        scontrol requeue "${{id:-$SLURM_JOB_ID}}" && exit 0
        echo "== scontrol requeue failed; {what}"
    else
        echo "== requeued {MAX_REQUEUES} times already; not again: give a longer --time"
    fi
fi
exit "$rc"
"#,
            cmd = self.command_line(report),
            what = if report {
                "run `evoattn slurm submit` again (or the command above) to finish"
            } else {
                "the other tasks and the final job go on without this one"
            },
        );
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_in_slurm_formats() {
        assert_eq!(parse_time("30").unwrap(), Some(1800));
        assert_eq!(parse_time("1:30").unwrap(), Some(90));
        assert_eq!(parse_time("04:00:00").unwrap(), Some(14400));
        assert_eq!(parse_time("1-2").unwrap(), Some(93600));
        assert_eq!(parse_time("2-00:00:10").unwrap(), Some(172810));
        assert_eq!(parse_time("UNLIMITED").unwrap(), None);
        for bad in ["", "1h", "1:2:3:4", "-1", "a-1", "0", "1-2-3"] {
            assert!(parse_time(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn quoting_and_leads() {
        assert_eq!(shell_quote("/a/b-c.toml"), "/a/b-c.toml");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
        let r = |t: &str| Resources {
            time: Some(t.into()),
            ..Default::default()
        };
        assert_eq!(r("04:00:00").signal_lead(), 120);
        assert_eq!(r("2").signal_lead(), 30);
        assert_eq!(Resources::default().signal_lead(), 120);
    }

    #[test]
    fn a_gpu_task_asks_for_a_gpu_and_trains_on_cuda() {
        let spec = TaskSpec {
            name: "s".into(),
            kind: "evolve".into(),
            exe: "/bin/evoattn".into(),
            study: "/s.toml".into(),
            store: "/st".into(),
            data: "/d".into(),
            dir: "/st/s/slurm".into(),
            tasks: 8,
            resources: Resources {
                gpus_per_task: Some(1),
                cpus_per_task: Some(4),
                ..Default::default()
            },
        };
        let a = spec.array_script();
        for want in [
            "#SBATCH --gres=gpu:1\n",
            "#SBATCH --cpus-per-task=4\n",
            "#SBATCH --array=0-7\n",
            "cmd=(/bin/evoattn --threads 4 run /s.toml --store /st --data /d --device cuda --quiet --no-report)\n",
        ] {
            assert!(a.contains(want), "no {want:?} in {a}");
        }
        assert!(spec.final_script().contains("--device cuda --quiet)\n"));
    }

    #[test]
    fn bad_resources_are_refused() {
        let bad = [
            Resources {
                gpus_per_task: Some(2),
                ..Default::default()
            },
            Resources {
                partition: Some("a b".into()),
                ..Default::default()
            },
            Resources {
                extra: vec!["--array=0-3".into()],
                ..Default::default()
            },
            Resources {
                extra: vec!["exclusive".into()],
                ..Default::default()
            },
            Resources {
                time: Some("1h".into()),
                ..Default::default()
            },
        ];
        for r in bad {
            assert!(r.check().is_err(), "{r:?}");
        }
    }
}
