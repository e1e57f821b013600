//! Job states from Slurm's tools: `squeue` for jobs in the queue, then `sacct` where
//! accounting exists, then `scontrol show job` (which knows finished jobs for
//! `MinJobAge`). Each tool may be missing or fail; what it said goes into the notes and
//! the next one is asked.

use serde::Serialize;
use std::collections::BTreeMap;
use std::process::Command;

/// The state of one job or array task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JobState {
    /// `123` for a job, `123_4` for task 4 of array job 123.
    pub id: String,
    /// Slurm's state (`PENDING`, `RUNNING`, `COMPLETED`, `FAILED`, …) or `UNKNOWN` when no
    /// tool knows the job any more.
    pub state: String,
    /// `exit:signal` when known (finished jobs).
    pub exit_code: Option<String>,
    /// Time used so far, when known.
    pub elapsed: Option<String>,
    /// Why it is pending, or where it runs, when known.
    pub detail: Option<String>,
    /// Which tool said so: `squeue`, `sacct`, `scontrol` or `none`.
    pub source: String,
}

/// What the tools said about a set of jobs.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// States, by id (array tasks in task order).
    pub jobs: Vec<JobState>,
    /// One line per tool that was missing or failed.
    pub notes: Vec<String>,
}

/// Output of `tool args`, or a one-line note of why there is none.
fn call(tool: &str, args: &[&str]) -> Result<String, String> {
    match Command::new(tool).args(args).output() {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(format!("{tool}: not found on PATH"))
        }
        Err(e) => Err(format!("{tool}: {e}")),
        Ok(o) if o.status.success() => Ok(String::from_utf8_lossy(&o.stdout).into_owned()),
        Ok(o) => {
            // The last line says most (`fatal: …` after the lookups that led to it).
            let err = String::from_utf8_lossy(&o.stderr);
            let line = err
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("")
                .trim();
            let prefix = format!("{tool}: ");
            let line = line.strip_prefix(&prefix).unwrap_or(line);
            Err(format!(
                "{tool}: {}",
                if line.is_empty() { "failed" } else { line }
            ))
        }
    }
}

/// Sort key: array job id, then task index, then the id's text.
fn key(id: &str) -> (u64, i64, String) {
    let (job, task) = id.split_once('_').unwrap_or((id, ""));
    (
        job.parse().unwrap_or(u64::MAX),
        task.parse().unwrap_or(-1),
        id.to_string(),
    )
}

/// Parses `squeue -h -r -o %i|%T|%M|%R` lines.
pub fn parse_squeue(out: &str) -> Vec<JobState> {
    out.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.trim().split('|').collect();
            (f.len() >= 4 && !f[0].is_empty()).then(|| JobState {
                id: f[0].to_string(),
                state: f[1].to_string(),
                exit_code: None,
                elapsed: Some(f[2].to_string()),
                detail: Some(f[3].to_string()).filter(|d| !d.is_empty() && d != "None"),
                source: "squeue".into(),
            })
        })
        .collect()
}

/// Parses `sacct -n -P -X --format=JobID,State,ExitCode,Elapsed` lines.
pub fn parse_sacct(out: &str) -> Vec<JobState> {
    out.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.trim().split('|').collect();
            (f.len() >= 4 && !f[0].is_empty() && !f[0].contains('[')).then(|| JobState {
                id: f[0].to_string(),
                // "CANCELLED by 0" → CANCELLED
                state: f[1].split_whitespace().next().unwrap_or("").to_string(),
                exit_code: Some(f[2].to_string()),
                elapsed: Some(f[3].to_string()),
                detail: None,
                source: "sacct".into(),
            })
        })
        .collect()
}

/// Parses `scontrol show job -o` lines (one job or array task a line).
pub fn parse_scontrol(out: &str) -> Vec<JobState> {
    out.lines()
        .filter_map(|l| {
            let fields: BTreeMap<&str, &str> = l
                .split_whitespace()
                .filter_map(|w| w.split_once('='))
                .collect();
            let job = *fields.get("JobId")?;
            let id = match (fields.get("ArrayJobId"), fields.get("ArrayTaskId")) {
                (Some(a), Some(t)) if t.chars().all(|c| c.is_ascii_digit()) => format!("{a}_{t}"),
                (Some(_), Some(_)) => return None, // pending tasks as a range: squeue has them
                _ => job.to_string(),
            };
            Some(JobState {
                id,
                state: fields.get("JobState")?.to_string(),
                exit_code: fields.get("ExitCode").map(|s| s.to_string()),
                elapsed: fields.get("RunTime").map(|s| s.to_string()),
                detail: fields
                    .get("Reason")
                    .filter(|r| **r != "None")
                    .map(|s| s.to_string()),
                source: "scontrol".into(),
            })
        })
        .collect()
}

/// The states of `expected` ids (`123_0`, …, `124`) of jobs `jobs` (`123`, `124`): from
/// `squeue`, else `sacct`, else `scontrol`; `UNKNOWN` when none knows one.
pub fn query(jobs: &[String], expected: &[String]) -> Report {
    let mut notes = Vec::new();
    let mut found: BTreeMap<String, JobState> = BTreeMap::new();
    if jobs.is_empty() {
        return Report::default();
    }
    let list = jobs.join(",");
    let mut queue_ok = true;
    match call("squeue", &["-h", "-r", "-j", &list, "-o", "%i|%T|%M|%R"]) {
        Ok(out) => found.extend(parse_squeue(&out).into_iter().map(|j| (j.id.clone(), j))),
        // Every id unknown to the queue: they have all left it.
        Err(e) if e.contains("Invalid job id") => {}
        Err(e) => {
            queue_ok = false;
            notes.push(e);
        }
    }
    let missing =
        |found: &BTreeMap<String, JobState>| expected.iter().any(|id| !found.contains_key(id));
    if missing(&found) {
        match call(
            "sacct",
            &[
                "-n",
                "-P",
                "-X",
                "-j",
                &list,
                "--format=JobID,State,ExitCode,Elapsed",
            ],
        ) {
            Ok(out) => {
                for j in parse_sacct(&out) {
                    found.entry(j.id.clone()).or_insert(j);
                }
            }
            Err(e) => notes.push(e),
        }
    }
    if missing(&found) {
        for job in jobs {
            match call("scontrol", &["show", "job", job, "-o"]) {
                Ok(out) => {
                    for j in parse_scontrol(&out) {
                        found.entry(j.id.clone()).or_insert(j);
                    }
                }
                Err(e) if e.contains("Invalid job id") => {}
                Err(e) => {
                    notes.push(e);
                    break;
                }
            }
        }
    }
    for id in expected {
        found.entry(id.clone()).or_insert_with(|| JobState {
            id: id.clone(),
            state: "UNKNOWN".into(),
            exit_code: None,
            elapsed: None,
            detail: Some(if queue_ok {
                "not in the queue any more (ended); sacct and scontrol have no record".into()
            } else {
                "squeue failed: state unknown".into()
            }),
            source: "none".into(),
        });
    }
    let mut jobs: Vec<JobState> = found.into_values().collect();
    jobs.sort_by_key(|j| key(&j.id));
    notes.dedup();
    Report { jobs, notes }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_outputs_parse() {
        let q = parse_squeue("5_1|PENDING|0:00|Resources\n5_0|RUNNING|0:03|localhost\n");
        assert_eq!(q.len(), 2);
        assert_eq!(q[1].state, "RUNNING");
        assert_eq!(q[0].detail.as_deref(), Some("Resources"));
        let s = parse_sacct("7|COMPLETED|0:0|00:00:03\n8_1|CANCELLED by 0|0:15|00:00:01\n8_[2-3]|PENDING|0:0|00:00:00\n");
        assert_eq!(s.len(), 2);
        assert_eq!(s[1].state, "CANCELLED");
        let c = parse_scontrol("JobId=6 ArrayJobId=5 ArrayTaskId=0 JobName=w JobState=COMPLETED Reason=None ExitCode=0:0 RunTime=00:00:04\nJobId=5 ArrayJobId=5 ArrayTaskId=1-3 JobState=PENDING\nJobId=9 JobState=FAILED Reason=NonZeroExitCode ExitCode=3:0 RunTime=00:00:01\n");
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].id, "5_0");
        assert_eq!(c[1].exit_code.as_deref(), Some("3:0"));
        let mut ids = vec!["10".to_string(), "9_10".into(), "9_2".into()];
        ids.sort_by_key(|i| key(i));
        assert_eq!(ids, ["9_2", "9_10", "10"]);
    }
}
