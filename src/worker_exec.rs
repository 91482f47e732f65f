//! The handler behind `drover worker --exec CMD`: runs CMD with `sh -c` once
//! per job, payload on stdin, job facts in `DROVER_*` variables (and its
//! trace context in `TRACEPARENT`, when it has one). Exit 0
//! completes the job with stdout as its result; any other exit fails it with
//! the class named by the last stderr line of the form `error_class=NAME`, or
//! `exit_<code>` when there is none. Either way, a last line of stderr (else
//! stdout) with `cost_usd=` reports what the job used:
//! `cost_usd=0.012 tokens_in=1200 tokens_out=300`. Both may share a line
//! (`error_class=oom cost_usd=0.004`); such report lines are left out of
//! the failure's message.

use std::process::Stdio;

use bytes::Bytes;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use crate::client::worker::{JobError, JobOutput, JobUsage};
use crate::proto::v1 as pb;

/// Bytes of stderr kept as the failure message.
const MAX_MESSAGE: usize = 2048;

/// Runs `cmd` for one job as the module says: a zero exit completes it
/// with stdout as the result, any other fails it.
pub async fn exec_job(cmd: &str, job: pb::LeasedJob) -> Result<JobOutput, JobError> {
    let mut command = Command::new("sh");
    // Its trace context, where tools that trace (otel-cli, SDKs) look.
    if !job.traceparent.is_empty() {
        command.env("TRACEPARENT", &job.traceparent);
    }
    let mut child = command
        // The worker's credentials are not the job's: a job's code must not
        // be able to act as the worker (lease, complete) or as its operator.
        .env_remove("DROVER_TOKEN")
        .env_remove("DROVER_CA")
        .env_remove("DROVER_SERVER")
        .arg("-c")
        .arg(cmd)
        .env("DROVER_JOB_ID", job.job_id.to_string())
        .env("DROVER_QUEUE", &job.queue)
        .env("DROVER_JOB_TYPE", &job.job_type)
        .env("DROVER_TENANT", &job.tenant)
        .env("DROVER_RUN_ID", &job.run_id)
        .env("DROVER_ATTEMPT", job.attempt.to_string())
        .env("DROVER_PRIORITY", job.priority.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        // Its own process group, so stopping the job stops everything the
        // command started.
        .process_group(0)
        .spawn()
        .map_err(|e| JobError {
            class: "spawn_failed".into(),
            message: format!("cannot start `sh -c {cmd}`: {e}"),
            usage: JobUsage::default(),
        })?;
    let mut group = child.id().map(KillGroup);
    if let Some(mut stdin) = child.stdin.take() {
        let payload = job.payload.clone();
        // Written beside the wait so a command that ignores stdin cannot block us.
        tokio::spawn(async move {
            let _ = stdin.write_all(&payload).await;
        });
    }
    let out = child.wait_with_output().await.map_err(|e| JobError {
        class: "wait_failed".into(),
        message: e.to_string(),
        usage: JobUsage::default(),
    });
    // It ended by itself: its group is not ours to signal any more (the id
    // may be reused).
    if let Some(g) = group.as_mut() {
        g.0 = 0;
    }
    let out = out?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    let usage = reported_usage(&stderr, &String::from_utf8_lossy(&out.stdout));
    if out.status.success() {
        return Ok(JobOutput {
            result: Bytes::from(out.stdout),
            usage,
        });
    }
    let told: Vec<&str> = stderr.lines().filter(|l| report(l).is_none()).collect();
    Err(JobError {
        class: error_class(&stderr).unwrap_or_else(|| exit_class(&out.status)),
        message: tail(&told.join("\n"), MAX_MESSAGE),
        usage,
    })
}

/// What the last report line with `cost_usd=` of stderr, else of stdout,
/// reports: `cost_usd=0.012 tokens_in=1200`. A value that does not parse
/// is left out.
pub fn reported_usage(stderr: &str, stdout: &str) -> JobUsage {
    let pairs = [stderr, stdout].into_iter().find_map(|text| {
        text.lines()
            .rev()
            .filter_map(report)
            .find(|pairs| pairs.iter().any(|(k, _)| *k == "cost_usd"))
    });
    let mut usage = JobUsage::default();
    for (name, value) in pairs.unwrap_or_default() {
        if name == "error_class" {
            continue;
        }
        if name == "cost_usd" {
            usage.cost_usd = value.parse().unwrap_or(0.0);
        } else if let Ok(n) = value.parse() {
            usage.named.insert(name.to_string(), n);
        }
    }
    usage
}

fn exit_class(status: &std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit_{code}"),
        (None, Some(sig)) => format!("signal_{sig}"),
        _ => "exit_unknown".into(),
    }
}

/// A report line's `key=value` pairs (other words are left out): a line
/// whose first word is `error_class=...` or `cost_usd=...`. None for any
/// other line.
fn report(line: &str) -> Option<Vec<(&str, &str)>> {
    let mut words = line.split_whitespace().peekable();
    let first = words.peek()?;
    if !(first.starts_with("error_class=") || first.starts_with("cost_usd=")) {
        return None;
    }
    Some(words.filter_map(|kv| kv.split_once('=')).collect())
}

/// The class from the last stderr line with `error_class=NAME`.
pub fn error_class(stderr: &str) -> Option<String> {
    stderr
        .lines()
        .rev()
        .filter_map(report)
        .find_map(|pairs| pairs.into_iter().find(|(k, _)| *k == "error_class"))
        .map(|(_, c)| c.to_string())
        .filter(|c| !c.is_empty())
}

fn tail(s: &str, max: usize) -> String {
    let s = s.trim_end();
    if s.len() <= max {
        return s.to_string();
    }
    let mut start = s.len() - max;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    s[start..].to_string()
}

/// Kills a job's process group when the job is dropped unfinished (its
/// lease was revoked: a timeout, an expiry, an operator).
struct KillGroup(u32);

impl Drop for KillGroup {
    fn drop(&mut self) {
        if let Ok(pgid) = i32::try_from(self.0) {
            if pgid > 0 {
                // SAFETY: kill(2) with a negative pid signals that process
                // group; no memory is touched.
                unsafe {
                    libc::kill(-pgid, libc::SIGKILL);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job() -> pb::LeasedJob {
        pb::LeasedJob {
            job_id: 42,
            attempt: 2,
            queue: "q".into(),
            payload: Bytes::from_static(b"hello"),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn success_returns_stdout_and_sees_env_and_stdin() {
        let out = exec_job(
            "printf '%s:%s:' \"$DROVER_JOB_ID\" \"$DROVER_ATTEMPT\"; cat",
            job(),
        )
        .await
        .unwrap();
        assert_eq!(out.result, Bytes::from_static(b"42:2:hello"));
    }

    #[tokio::test]
    async fn a_cost_usd_line_reports_what_the_job_used() {
        let out = exec_job(
            "echo result; echo cost_usd=0.25 tokens_in=1200 bad=x >&2",
            job(),
        )
        .await
        .unwrap();
        assert_eq!(out.usage.cost_usd, 0.25);
        assert_eq!(out.usage.named.get("tokens_in"), Some(&1200));
        assert!(!out.usage.named.contains_key("bad"));
        let f = exec_job("echo cost_usd=0.5; exit 2", job())
            .await
            .unwrap_err();
        assert_eq!(f.usage.cost_usd, 0.5, "from stdout when stderr has none");
        let out = exec_job("echo plain", job()).await.unwrap();
        assert_eq!(out.usage, JobUsage::default());
    }

    #[tokio::test]
    async fn failure_takes_class_from_stderr_or_exit_code() {
        let f = exec_job(
            "echo first >&2; echo error_class=rate_limited >&2; exit 3",
            job(),
        )
        .await
        .unwrap_err();
        assert_eq!(f.class, "rate_limited");
        let f = exec_job("echo oops >&2; exit 7", job()).await.unwrap_err();
        assert_eq!(f.class, "exit_7");
        assert_eq!(f.message, "oops");
        // One line with both: the class is its word, the cost counts, and
        // the message is what the job said besides.
        let f = exec_job(
            "echo out of memory >&2; echo error_class=oom cost_usd=0.004 >&2; exit 1",
            job(),
        )
        .await
        .unwrap_err();
        assert_eq!(f.class, "oom");
        assert_eq!(f.usage.cost_usd, 0.004);
        assert_eq!(f.message, "out of memory");
    }
}
