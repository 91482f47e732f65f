//! CPU cost of the state machine's apply and commit per job, on a real sled
//! tree: the part of an enqueue, lease and completion that every node of a
//! cluster pays. Run with `cargo bench --bench machine`.
//!
//! Entries carry 8 commands each, as the driver batches single-job requests
//! from 16 producers, and the tree is flushed every 4 entries, as each Ready
//! is. It prints process CPU time (user + system) per job, the figure to
//! compare changes by on a shared machine; the wall clock moves with
//! neighbours. It commits after every entry where the driver commits once
//! per applied range, and it counts sled's own threads too, so it is an
//! upper bound of what a node pays, for comparing changes.
//!
//! It runs once with every job of one tenant and again with the jobs spread
//! over 20,000 and then 100,000 tenants: a lease should cost about the same.

use std::time::Instant;

use bytes::Bytes;
use drover::bench::process_cpu_seconds;
use drover::command::{Command, Completion, LogEntry, Outcome};
use drover::job::{NewJob, PRIORITY_DEFAULT};
use drover::machine::Machine;

const JOBS: u64 = 100_000;
const PER_ENTRY: u64 = 8;
const ENTRIES_PER_FLUSH: u64 = 4;

struct Bench {
    db: sled::Db,
    machine: Machine,
    index: u64,
}

impl Bench {
    /// Applies `commands` in entries of `PER_ENTRY`, committing each entry
    /// and flushing like the driver; returns the outcomes.
    fn apply(&mut self, commands: Vec<Command>) -> Vec<Outcome> {
        let mut outcomes = Vec::with_capacity(commands.len());
        let mut commands = commands.into_iter().peekable();
        while commands.peek().is_some() {
            self.index += 1;
            let entry = LogEntry {
                at_ms: self.index,
                commands: commands.by_ref().take(PER_ENTRY as usize).collect(),
            };
            outcomes.extend(self.machine.apply(self.index, 1, &entry).expect("apply"));
            self.machine.commit().expect("commit");
            if self.index % ENTRIES_PER_FLUSH == 0 {
                self.db.flush().expect("flush");
            }
        }
        outcomes
    }
}

fn measure(name: &str, jobs: u64, f: impl FnOnce()) {
    let (cpu, wall) = (process_cpu_seconds(), Instant::now());
    f();
    let cpu = process_cpu_seconds() - cpu;
    println!(
        "{name:<10} {:>6.2} us cpu/job   {:>6.2} us wall/job   ({jobs} jobs)",
        cpu * 1e6 / jobs as f64,
        wall.elapsed().as_secs_f64() * 1e6 / jobs as f64
    );
}

fn main() {
    for tenants in [1, 20_000, 100_000] {
        println!("{JOBS} jobs over {tenants} tenants");
        run(tenants);
    }
}

fn run(tenants: u64) {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = sled::Config::new()
        .path(dir.path())
        .flush_every_ms(None)
        .open()
        .expect("open sled");
    // The default policies, as a machine has before the log sets any.
    let mut machine = Machine::open(db.open_tree("machine").expect("tree")).expect("open machine");
    machine.entry_format(drover::command::ENTRY_VERSION);
    let mut b = Bench {
        db,
        machine,
        index: 0,
    };
    let payload = Bytes::from(vec![7u8; 256]);
    let enqueues: Vec<Command> = (0..JOBS)
        .map(|i| Command::Enqueue {
            jobs: vec![NewJob {
                queue: "bench".into(),
                job_type: "default".into(),
                tenant: format!("t{}", i % tenants),
                run_id: String::new(),
                priority: PRIORITY_DEFAULT,
                payload: payload.clone(),
                idempotency_key: String::new(),
                delay_ms: 0,
                labels: Default::default(),
            }],
        })
        .collect();
    measure("enqueue", JOBS, || {
        b.apply(enqueues);
    });

    let leases: Vec<Command> = (0..JOBS / 4)
        .map(|i| Command::Lease {
            worker: format!("worker-{}", i % 4),
            queues: vec!["bench".into()],
            max: 4,
        })
        .collect();
    let mut leased = Vec::new();
    measure("lease", JOBS, || {
        for outcome in b.apply(leases) {
            if let Outcome::Leased(jobs) = outcome {
                leased.extend(jobs.into_iter().map(|l| (l.job.id, l.job.attempts)));
            }
        }
    });
    assert_eq!(leased.len() as u64, JOBS, "every job leased once");

    let completes: Vec<Command> = leased
        .chunks(4)
        .map(|chunk| Command::Complete {
            worker: "worker".into(),
            items: chunk
                .iter()
                .map(|&(job_id, attempt)| Completion {
                    job_id,
                    attempt,
                    result: Bytes::new(),
                })
                .collect(),
        })
        .collect();
    measure("complete", JOBS, || {
        b.apply(completes);
    });
}
