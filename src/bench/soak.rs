//! The soak scenario: e2e through one node (or, with `--cluster`, three)
//! with a short retention, for many millions of jobs, reading each node's
//! RSS and data dir at every checkpoint. What passes through must not stay:
//! memory and disk level off at what is live, so the slope after the first
//! checkpoint is the figure (bytes per job; about 0 when nothing leaks).

use std::time::Instant;

use super::{end_to_end_on, target, what_runs, BenchArgs, BenchError, LocalNode, Via};

/// Finished jobs are kept this long: short, so the run reaches the steady
/// state (retention purging as fast as jobs finish) in seconds.
const RETENTION: &str = "30s";

/// Reads of RSS at each checkpoint, of which the median counts.
const RSS_READS: usize = 5;

/// One checkpoint: jobs through so far, and the largest node's RSS and
/// data dir (every node of a cluster holds every job).
struct Mark {
    jobs: u64,
    rss: Option<u64>,
    disk: Option<u64>,
}

/// Jobs between checkpoints: a million, or a fifth of a shorter run.
fn every(jobs: u64) -> u64 {
    if jobs >= 2_000_000 {
        1_000_000
    } else {
        (jobs / 5).max(1)
    }
}

fn mb(b: Option<u64>) -> String {
    b.map_or("-".to_string(), |b| format!("{:.0} MB", b as f64 / 1e6))
}

/// Bytes per job from the first checkpoint to the last, of one figure.
fn slope(marks: &[Mark], figure: impl Fn(&Mark) -> Option<u64>) -> Option<f64> {
    let (first, last) = (marks.first()?, marks.last()?);
    let jobs = last.jobs.checked_sub(first.jobs).filter(|j| *j > 0)?;
    Some((figure(last)? as f64 - figure(first)? as f64) / jobs as f64)
}

pub(super) async fn soak(mut args: BenchArgs) -> Result<(), BenchError> {
    if args.node_config.is_none() {
        args.extra_config = format!("[jobs]\nretention = \"{RETENTION}\"\n");
    }
    let total = args.jobs;
    let step = every(total);
    println!(
        "drover bench --scenario soak: {total} jobs e2e ({} producers, {} workers of {}) through {}, {}; RSS and data dir every {step} jobs",
        args.producers,
        args.workers,
        args.worker_concurrency,
        what_runs(&args, ""),
        if args.node_config.is_some() {
            "the retention of --node-config".to_string()
        } else {
            format!("retention {RETENTION}")
        }
    );
    if args.server.is_some() {
        println!("  (RSS and data dir are read only of nodes the bench starts)");
    }
    let target = target(&args).await?;
    let read = |f: fn(&LocalNode) -> Option<u64>| target.nodes.iter().filter_map(f).max();
    let start = Instant::now();
    let mut marks = Vec::new();
    let mut done = 0;
    while done < total {
        let chunk = step.min(total - done);
        let run = end_to_end_on(
            &target,
            &BenchArgs {
                jobs: chunk,
                ..args.clone()
            },
            Via::Calls,
        )
        .await?;
        done += chunk;
        // RSS swings by 10-20 MB between reads (allocator pages, sled's
        // buffers): the median of several reads a moment apart.
        let mut reads = Vec::new();
        for _ in 0..RSS_READS {
            reads.extend(read(LocalNode::rss_bytes));
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
        reads.sort_unstable();
        let mark = Mark {
            jobs: done,
            rss: reads.get(reads.len() / 2).copied(),
            disk: read(LocalNode::data_bytes),
        };
        println!(
            "  {done:>10} jobs  {:>6.0} s  {:>6.0} jobs/s  rss {:>7}  data dir {:>7}{}",
            start.elapsed().as_secs_f64(),
            run.rate,
            mb(mark.rss),
            mb(mark.disk),
            run.cpu
                .nodes
                .map(|us| format!("  nodes {us:.0} us cpu/job"))
                .unwrap_or_default()
        );
        marks.push(mark);
    }
    // Bytes per job is MB per million jobs.
    let per_million =
        |s: Option<f64>| s.map_or("-".to_string(), |s| format!("{s:+.1} MB per million jobs"));
    // The second half as well: a figure that levels off late (sled's file
    // grows until its segments are reused) shows it there.
    let half = &marks[marks.len() / 2..];
    println!(
        "soak: after the first {step} jobs, rss {} and data dir {}; over the second half, rss {} and data dir {}",
        per_million(slope(&marks, |m| m.rss)),
        per_million(slope(&marks, |m| m.disk)),
        per_million(slope(half, |m| m.rss)),
        per_million(slope(half, |m| m.disk)),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slope_is_bytes_per_job_after_the_first_mark() {
        let m = |jobs, rss| Mark {
            jobs,
            rss: Some(rss),
            disk: None,
        };
        let marks = [m(1_000_000, 100_000_000), m(3_000_000, 240_000_000)];
        assert_eq!(slope(&marks, |m| m.rss), Some(70.0));
        assert_eq!(slope(&marks, |m| m.disk), None);
        assert_eq!(slope(&marks[..1], |m| m.rss), None, "one mark has no slope");
        assert_eq!(every(10_000_000), 1_000_000);
        assert_eq!(every(500_000), 100_000);
    }
}
