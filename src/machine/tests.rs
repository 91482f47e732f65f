//! Tests of the machine with no runtime: time is a value, storage a temp sled.

use super::*;
use crate::command::Retention;
use crate::job::{Exhausted, PRIORITY_DEFAULT};
use bytes::Bytes;

const CFG: crate::policies::JobPolicies = crate::policies::JobPolicies {
    heartbeat_timeout_ms: 1_000,
    max_retries: 2,
    retry_base_delay_ms: 100,
    retry_max_delay_ms: 1_000,
};

struct Harness {
    _dir: tempfile::TempDir,
    db: sled::Db,
    m: Machine,
    index: u64,
    log: Vec<LogEntry>,
}

impl Harness {
    /// A machine of a cluster that writes this build's entry format.
    fn new() -> Harness {
        Harness::at_format(crate::command::ENTRY_VERSION)
    }

    /// A machine whose entries are all of `format`.
    fn at_format(format: u8) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let mut m = Machine::open(db.open_tree("machine").unwrap()).unwrap();
        m.entry_format(format);
        let mut h = Harness {
            _dir: dir,
            db,
            m,
            index: 0,
            log: Vec::new(),
        };
        // Policies come from the log, as on a node.
        h.run(
            0,
            Command::SetPolicies {
                policies: crate::policies::Policies {
                    jobs: CFG,
                    ..Default::default()
                },
            },
        );
        h
    }

    fn run(&mut self, at_ms: u64, command: Command) -> Outcome {
        self.index += 1;
        let entry = LogEntry {
            at_ms,
            commands: vec![command],
        };
        self.log.push(entry.clone());
        let mut out = self.m.apply(self.index, 1, &entry).unwrap();
        self.m.commit().unwrap();
        assert_eq!(out.len(), 1, "one outcome per command");
        out.remove(0)
    }

    fn enqueue(&mut self, at: u64, queue: &str, priority: u8) -> JobId {
        match self.run(
            at,
            Command::Enqueue {
                jobs: vec![new_job(queue, priority)],
            },
        ) {
            Outcome::Enqueued(v) => v[0].id,
            o => panic!("unexpected {o:?}"),
        }
    }

    fn lease(&mut self, at: u64, worker: &str, queues: &[&str], max: u32) -> Vec<Job> {
        match self.run(
            at,
            Command::Lease {
                worker: worker.into(),
                queues: queues.iter().map(|q| q.to_string()).collect(),
                max,
            },
        ) {
            Outcome::Leased(v) => v
                .into_iter()
                .map(|l| {
                    assert_eq!(
                        l.payload,
                        Bytes::from_static(b"payload"),
                        "leased with its payload"
                    );
                    l.job
                })
                .collect(),
            o => panic!("unexpected {o:?}"),
        }
    }

    fn complete(&mut self, at: u64, id: JobId, attempt: u32) -> Result<(), Refusal> {
        let items = vec![Completion {
            job_id: id,
            attempt,
            result: Bytes::from_static(b"ok"),
        }];
        match self.run(
            at,
            Command::Complete {
                worker: "w".into(),
                items,
            },
        ) {
            Outcome::Acks(mut v) => v.remove(0),
            o => panic!("unexpected {o:?}"),
        }
    }

    fn fail(&mut self, at: u64, id: JobId, attempt: u32) -> Result<(), Refusal> {
        let items = vec![Failure {
            job_id: id,
            attempt,
            error_class: "boom".into(),
            message: "it broke".into(),
        }];
        match self.run(
            at,
            Command::Fail {
                worker: "w".into(),
                items,
            },
        ) {
            Outcome::Acks(mut v) => v.remove(0),
            o => panic!("unexpected {o:?}"),
        }
    }

    fn job(&self, id: JobId) -> Job {
        self.m.reader().job(id).unwrap().unwrap()
    }
}

fn new_job(queue: &str, priority: u8) -> NewJob {
    NewJob {
        queue: queue.into(),
        job_type: "t".into(),
        tenant: "default".into(),
        run_id: String::new(),
        priority,
        payload: Bytes::from_static(b"payload"),
        idempotency_key: String::new(),
        delay_ms: 0,
        labels: Default::default(),
    }
}

#[test]
fn enqueue_stores_job_and_payload() {
    let mut h = Harness::new();
    let id = h.enqueue(10, "q", PRIORITY_DEFAULT);
    let job = h.job(id);
    assert_eq!(job.state, JobState::Ready);
    assert_eq!(job.enqueued_at_ms, 10);
    let (stored, payload) = h.m.reader().job_and_payload(id).unwrap().unwrap();
    assert_eq!(stored, job);
    assert_eq!(payload, Bytes::from_static(b"payload"));
    assert_eq!(h.m.stats().queues["q"].ready[2], 1);
    assert_eq!(
        h.m.meta().applied_index,
        2,
        "the policies, then the enqueue"
    );
}

#[test]
fn leases_by_priority_then_fifo() {
    let mut h = Harness::new();
    let low = h.enqueue(1, "q", 5);
    let mid1 = h.enqueue(2, "q", 3);
    let high = h.enqueue(3, "other", 1);
    let mid2 = h.enqueue(4, "q", 3);
    let got: Vec<JobId> = h
        .lease(5, "w", &["q", "other"], 10)
        .iter()
        .map(|j| j.id)
        .collect();
    assert_eq!(got, vec![high, mid1, mid2, low]);
    assert!(h.lease(6, "w", &["q", "other"], 10).is_empty());
    assert_eq!(h.m.stats().queues["q"].leased, 3);
}

#[test]
fn lease_respects_max_and_queues() {
    let mut h = Harness::new();
    for i in 0..5 {
        h.enqueue(i, "a", 3);
    }
    h.enqueue(9, "b", 1);
    assert_eq!(h.lease(10, "w", &["a"], 2).len(), 2);
    assert!(h.lease(10, "w", &["c"], 2).is_empty());
    assert_eq!(h.m.stats().queues["a"].ready_total(), 3);
}

#[test]
fn stale_leases_are_refused_and_change_nothing() {
    let mut h = Harness::new();
    let id = h.enqueue(0, "q", 3);
    let first = h.lease(0, "w1", &["q"], 1).remove(0);
    assert_eq!(first.attempts, 1);
    // The lease expires and another worker takes the job.
    assert_eq!(
        h.run(2_000, Command::Tick),
        Outcome::Ticked {
            expired: 1,
            promoted: 0
        }
    );
    let second = h.lease(2_001, "w2", &["q"], 1).remove(0);
    assert_eq!(second.attempts, 2);
    let before = h.job(id);
    let err = h.complete(2_002, id, 1).unwrap_err();
    assert!(
        matches!(
            err,
            Refusal::StaleLease {
                attempt: 1,
                current: 2,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(h.fail(2_002, id, 1).is_err());
    let beat = Command::Heartbeat {
        worker: "w1".into(),
        leases: vec![LeaseBeat {
            job_id: id,
            attempt: 1,
            progress: None,
        }],
    };
    assert!(matches!(h.run(2_003, beat), Outcome::Acks(v) if v[0].is_err()));
    assert_eq!(h.job(id), before, "refused messages change nothing");
    h.complete(2_004, id, 2).unwrap();
    assert_eq!(h.job(id).state, JobState::Succeeded);
    assert_eq!(h.m.reader().result(id).unwrap(), Bytes::from_static(b"ok"));
    // A worker that did not learn whether its result reached the log sends
    // it again: the repeat is acknowledged and changes nothing.
    let done = h.job(id);
    h.complete(2_005, id, 2).unwrap();
    assert_eq!(h.job(id), done, "a repeated completion changes nothing");
    assert!(
        h.fail(2_006, id, 2).is_err(),
        "a failure of a completed attempt is refused"
    );
    assert!(
        h.complete(2_006, id, 1).is_err(),
        "an older attempt stays stale"
    );
}

#[test]
fn a_repeated_failure_report_is_acknowledged_once_applied() {
    let mut h = Harness::new();
    let id = h.enqueue(0, "q", 3);
    h.lease(0, "w", &["q"], 1);
    h.fail(10, id, 1).unwrap();
    let failed = h.job(id);
    assert_eq!(failed.state, JobState::Scheduled);
    h.fail(20, id, 1).unwrap();
    assert_eq!(h.job(id), failed, "the repeat changes nothing");
    assert!(
        h.complete(30, id, 1).is_err(),
        "a failed attempt cannot complete"
    );
}

#[test]
fn heartbeat_extends_the_lease() {
    let mut h = Harness::new();
    let id = h.enqueue(0, "q", 3);
    h.lease(0, "w", &["q"], 1);
    let beat = |_at: u64| Command::Heartbeat {
        worker: "w".into(),
        leases: vec![LeaseBeat {
            job_id: id,
            attempt: 1,
            progress: Some(crate::job::Progress {
                fraction: 0.5,
                message: "half".into(),
            }),
        }],
    };
    h.run(900, beat(900));
    assert_eq!(
        h.run(1_500, Command::Tick),
        Outcome::Ticked {
            expired: 0,
            promoted: 0
        }
    );
    assert_eq!(h.job(id).progress.unwrap().message, "half");
    assert_eq!(
        h.run(1_900, Command::Tick),
        Outcome::Ticked {
            expired: 1,
            promoted: 0
        }
    );
    assert_eq!(h.job(id).state, JobState::Ready);
}

#[test]
fn a_new_leader_renews_every_lease_for_a_full_window() {
    let mut h = Harness::new();
    let id = h.enqueue(0, "q", 3);
    let other = h.enqueue(0, "q", 3);
    h.lease(0, "w", &["q"], 2);
    // Both leases end at 1_000; a leader change at 900 renews them to 1_900.
    assert_eq!(h.run(900, Command::RenewLeases), Outcome::Noop);
    let deadline = |h: &Harness, id| h.job(id).lease.map(|l| l.deadline_ms);
    assert_eq!(deadline(&h, id), Some(1_900));
    assert_eq!(deadline(&h, other), Some(1_900));
    assert_eq!(
        h.run(1_500, Command::Tick),
        Outcome::Ticked {
            expired: 0,
            promoted: 0
        }
    );
    assert_eq!(
        h.run(1_900, Command::Tick),
        Outcome::Ticked {
            expired: 2,
            promoted: 0
        },
        "a renewed lease still expires a window later"
    );
    assert_eq!(Command::RenewLeases.min_format(), 3);
    assert_eq!(Command::RenewLeases.for_format(2), None);
}

#[test]
fn failures_retry_with_backoff_then_dead_letter() {
    let mut h = Harness::new();
    let id = h.enqueue(0, "q", 3);
    let mut now = 0;
    for attempt in 1..=3 {
        let leased = h.lease(now, "w", &["q"], 1);
        assert_eq!(leased.len(), 1, "attempt {attempt} should be leasable");
        h.fail(now, id, attempt).unwrap();
        let job = h.job(id);
        if attempt <= CFG.max_retries {
            assert_eq!(job.state, JobState::Scheduled);
            let delay = job.run_at_ms - now;
            let base = CFG.retry_base_delay_ms << (attempt - 1);
            assert!(
                delay >= base && delay <= base + base / 4 + 1,
                "delay {delay}"
            );
            assert!(
                h.lease(now, "w", &["q"], 1).is_empty(),
                "not before its backoff"
            );
            now = job.run_at_ms;
            assert_eq!(
                h.run(now, Command::Tick),
                Outcome::Ticked {
                    expired: 0,
                    promoted: 1
                }
            );
        } else {
            assert_eq!(job.state, JobState::Dead);
            assert_eq!(job.last_error_class, "boom");
        }
    }
    assert_eq!(h.m.stats().queues["q"].dead, 1);
    assert_eq!(h.m.stats().queues["q"].pending(), 0);
}

#[test]
fn delayed_jobs_wait_for_their_time() {
    let mut h = Harness::new();
    let mut job = new_job("q", 3);
    job.delay_ms = 500;
    h.run(100, Command::Enqueue { jobs: vec![job] });
    assert!(h.lease(200, "w", &["q"], 1).is_empty());
    assert_eq!(h.m.next_due_ms(), Some(600));
    h.run(600, Command::Tick);
    assert_eq!(h.lease(601, "w", &["q"], 1).len(), 1);
}

#[test]
fn time_never_runs_backwards() {
    let mut h = Harness::new();
    h.enqueue(1_000, "q", 3);
    // An entry stamped earlier (a new leader with a slower clock) uses the latest time.
    let id = h.enqueue(500, "q", 3);
    assert_eq!(h.job(id).enqueued_at_ms, 1_000);
}

#[test]
fn idempotency_keys_return_the_first_job() {
    let mut h = Harness::new();
    let mut job = new_job("q", 3);
    job.idempotency_key = "k1".into();
    let out = h.run(
        0,
        Command::Enqueue {
            jobs: vec![job.clone(), job.clone()],
        },
    );
    let Outcome::Enqueued(v) = out else { panic!() };
    assert!(!v[0].duplicate);
    assert!(v[1].duplicate);
    assert_eq!(v[0].id, v[1].id);
    let Outcome::Enqueued(again) = h.run(1, Command::Enqueue { jobs: vec![job] }) else {
        panic!()
    };
    assert_eq!(
        again[0],
        Enqueued {
            id: v[0].id,
            duplicate: true
        }
    );
    assert_eq!(h.m.stats().queues["q"].ready_total(), 1);
}

#[test]
fn cancel_removes_from_dispatch() {
    let mut h = Harness::new();
    let id = h.enqueue(0, "q", 3);
    assert_eq!(
        h.run(1, Command::Cancel(crate::command::Cancel { id })),
        Outcome::Cancelled(Ok(JobState::Ready))
    );
    assert!(h.lease(2, "w", &["q"], 1).is_empty());
    assert!(matches!(
        h.run(3, Command::Cancel(crate::command::Cancel { id })),
        Outcome::Cancelled(Err(Refusal::Finished { .. }))
    ));
    assert!(matches!(
        h.run(3, Command::Cancel(crate::command::Cancel { id: 999 })),
        Outcome::Cancelled(Err(Refusal::UnknownJob(999)))
    ));
}

/// Replaying the same log into a fresh machine gives the same outcomes and the
/// same state; reopening a machine rebuilds the same indexes.
#[test]
fn replay_is_deterministic_and_reopen_rebuilds() {
    let mut h = Harness::new();
    let a = h.enqueue(0, "q", 2);
    h.enqueue(1, "q", 4);
    let mut delayed = new_job("r", 1);
    delayed.delay_ms = 50;
    h.run(
        2,
        Command::Enqueue {
            jobs: vec![delayed],
        },
    );
    h.lease(3, "w", &["q", "r"], 1);
    h.fail(4, a, 1).unwrap();
    h.run(5_000, Command::Tick);
    h.lease(5_001, "w", &["q", "r"], 3);
    let digest = h.m.digest().unwrap();

    let mut fresh = Harness::new();
    let mut replayed_outcomes = Vec::new();
    for (i, entry) in h.log.iter().enumerate() {
        replayed_outcomes.push(fresh.m.apply(i as u64 + 1, 1, entry).unwrap());
    }
    fresh.m.commit().unwrap();
    assert_eq!(fresh.m.digest().unwrap(), digest);
    assert_eq!(fresh.m.stats(), h.m.stats());

    // And replaying once more, entry by entry, into a third machine gives equal outcomes.
    let mut third = Harness::new();
    for (i, entry) in h.log.iter().enumerate() {
        let out = third.m.apply(i as u64 + 1, 1, entry).unwrap();
        assert_eq!(out, replayed_outcomes[i]);
    }

    // Reopen from disk.
    let tree = h.db.open_tree("machine").unwrap();
    let stats = h.m.stats();
    let reopened = Machine::open(tree).unwrap();
    assert_eq!(reopened.stats().queues, stats.queues);
    assert_eq!(reopened.next_due_ms(), h.m.next_due_ms());
    assert_eq!(reopened.meta(), h.m.meta());
}

/// Commands the leader folds into one entry apply exactly as they would in
/// entries of their own at the same time: same outcomes, same jobs.
#[test]
fn a_batched_entry_applies_like_its_commands_one_by_one() {
    let mut h = Harness::new();
    let a = h.enqueue(7, "q", 2);
    let b = h.enqueue(7, "q", 1);
    h.lease(7, "w", &["q"], 2);
    h.complete(7, b, 1).unwrap();
    h.fail(7, a, 1).unwrap();
    assert!(
        h.complete(7, a, 1).is_err(),
        "a completion of a failed attempt is refused"
    );
    let one_by_one: Vec<Outcome> = {
        let mut fresh = Harness::new();
        h.log
            .iter()
            .enumerate()
            .flat_map(|(i, e)| fresh.m.apply(i as u64 + 1, 1, e).unwrap())
            .collect()
    };

    let mut batched = Harness::new();
    let entry = LogEntry {
        at_ms: 7,
        commands: h.log.iter().flat_map(|e| e.commands.clone()).collect(),
    };
    let outcomes = batched.m.apply(1, 1, &entry).unwrap();
    batched.m.commit().unwrap();
    assert_eq!(outcomes, one_by_one);
    assert_eq!(batched.m.stats().queues, h.m.stats().queues);
    for id in [a, b] {
        assert_eq!(
            batched.m.reader().job(id).unwrap(),
            h.m.reader().job(id).unwrap()
        );
    }
}

#[test]
fn corrupt_records_are_reported_not_panicked() {
    let h = Harness::new();
    let tree = h.db.open_tree("machine").unwrap();
    tree.insert(key(JOB, 7), b"garbage".to_vec()).unwrap();
    let err = Machine::open(tree).err().expect("must refuse");
    assert!(err.to_string().contains("j/7"), "{err}");
}

#[test]
fn a_large_payload_keeps_its_own_record_and_state_changes_leave_it_alone() {
    let mut h = Harness::new();
    let big = Bytes::from(vec![b'x'; INLINE_PAYLOAD_MAX + 1]);
    let mut job = new_job("q", PRIORITY_DEFAULT);
    job.payload = big.clone();
    let id = match h.run(0, Command::Enqueue { jobs: vec![job] }) {
        Outcome::Enqueued(v) => v[0].id,
        o => panic!("unexpected {o:?}"),
    };
    let tree = h.db.open_tree("machine").unwrap();
    let record_len = || tree.get(key(JOB, id)).unwrap().unwrap().len();
    assert!(
        record_len() < 1024,
        "the record holds no payload: {} bytes",
        record_len()
    );
    assert_eq!(
        tree.get(key(PAYLOAD, id)).unwrap().unwrap().len(),
        big.len()
    );

    let leased = match h.run(
        1,
        Command::Lease {
            worker: "w".into(),
            queues: vec!["q".into()],
            max: 1,
        },
    ) {
        Outcome::Leased(v) => v,
        o => panic!("unexpected {o:?}"),
    };
    assert_eq!(leased[0].payload, big, "leased with the payload kept apart");
    h.run(
        2,
        Command::Heartbeat {
            worker: "w".into(),
            leases: vec![LeaseBeat {
                job_id: id,
                attempt: 1,
                progress: None,
            }],
        },
    );
    assert!(record_len() < 1024, "a heartbeat rewrote no payload");
    let (_, payload) = h.m.reader().job_and_payload(id).unwrap().unwrap();
    assert_eq!(payload, big);

    // A small payload lives in the record: no payload key of its own.
    let small = h.enqueue(3, "q", PRIORITY_DEFAULT);
    assert!(tree.get(key(PAYLOAD, small)).unwrap().is_none());
}

#[test]
fn the_timeline_is_typed_and_bounded_keeping_failures_over_progress() {
    let mut h = Harness::new();
    let id = h.enqueue(0, "q", 3);
    h.lease(10, "w1", &["q"], 1);
    let beat = |attempt: u32, fraction: f32, message: &str| Command::Heartbeat {
        worker: "w1".into(),
        leases: vec![LeaseBeat {
            job_id: id,
            attempt,
            progress: Some(crate::job::Progress {
                fraction,
                message: message.into(),
            }),
        }],
    };
    h.run(20, beat(1, 0.1, "fetching"));
    h.run(30, beat(1, 0.2, "fetching"));
    h.run(40, beat(1, 0.5, "parsing"));
    let job = h.job(id);
    assert_eq!(job.progress.as_ref().unwrap().fraction, 0.5);
    let kinds: Vec<_> = job.events.iter().map(|e| e.kind.name()).collect();
    assert_eq!(
        kinds,
        ["enqueued", "leased", "progress", "progress"],
        "a heartbeat that only moves the fraction adds no event"
    );
    assert_eq!(job.events[1].at_ms, 10, "events carry the entry's time");
    assert_eq!(job.events[1].kind.worker(), Some("w1"));
    assert_eq!(job.events[1].kind.attempt(), Some(1));
    fail_as(&mut h, 50, id, 1, "boom");
    let failed = h.job(id).events.last().unwrap().clone();
    assert_eq!(failed.kind.error_class(), Some("boom"));
    assert_eq!(failed.kind.worker(), Some("w1"));
    assert!(
        failed.kind.to_string().contains("retry scheduled"),
        "{failed:?}"
    );

    // Many messages: the oldest progress goes first, the rest stays.
    h.run(2_000, Command::Tick);
    h.lease(2_000, "w2", &["q"], 1);
    for i in 0..(crate::job::TIMELINE_MAX as u64 * 2) {
        h.run(2_001 + i, beat(2, 0.0, &format!("step {i}")));
    }
    let job = h.job(id);
    assert_eq!(job.events.len(), crate::job::TIMELINE_MAX);
    let kinds: Vec<_> = job.events.iter().map(|e| e.kind.name()).collect();
    assert_eq!(
        kinds[..4],
        ["enqueued", "leased", "failed", "leased"],
        "only progress was coalesced: {kinds:?}"
    );
    let last = job.events.last().unwrap();
    assert!(last
        .kind
        .to_string()
        .ends_with(&format!("step {}", crate::job::TIMELINE_MAX * 2 - 1)));
}

#[test]
fn a_quarantined_worker_leases_nothing_on_any_node_until_released() {
    let mut h = Harness::new();
    h.enqueue(0, "q", 3);
    let quarantine = Command::Quarantine {
        worker: "bad".into(),
        for_ms: 60_000,
        completed: 1,
        failed: 9,
    };
    assert_eq!(h.run(10, quarantine.clone()), Outcome::Removed(1));
    assert_eq!(
        h.run(20, quarantine),
        Outcome::Removed(0),
        "a second report keeps the first quarantine"
    );
    assert!(h.lease(30, "bad", &["q"], 5).is_empty());
    let q = &h.m.stats().quarantined["bad"];
    assert_eq!((q.since_ms, q.until_ms, q.failed), (10, 60_010, 9));
    // Replicated state: a node replaying the log, or reopening, agrees.
    let digest = h.m.digest().unwrap();
    let tree = h.db.open_tree("machine").unwrap();
    let reopened = Machine::open(tree).unwrap();
    assert_eq!(reopened.digest().unwrap(), digest);
    assert!(reopened.stats().quarantined.contains_key("bad"));
    h.m = reopened;
    assert!(h.lease(40, "bad", &["q"], 5).is_empty());
    assert_eq!(h.lease(50, "good", &["q"], 5).len(), 1, "others lease on");

    h.enqueue(60, "q", 3);
    assert_eq!(
        h.run(
            70,
            Command::ReleaseWorker(crate::command::ReleaseWorker {
                worker: "nobody".into()
            })
        ),
        Outcome::Rejected(Refusal::NotQuarantined {
            worker: "nobody".into()
        })
    );
    assert_eq!(
        h.run(
            80,
            Command::ReleaseWorker(crate::command::ReleaseWorker {
                worker: "bad".into()
            })
        ),
        Outcome::Removed(1)
    );
    assert!(h.m.stats().quarantined.is_empty());
    assert_eq!(h.lease(90, "bad", &["q"], 5).len(), 1);
}

#[test]
fn policies_set_from_a_config_leave_a_record_of_each_value_unless_written_for_format_3() {
    let mut h = Harness::new();
    let mut policies = h.m.policies().clone();
    policies.jobs.max_retries = 7;
    policies.queues.insert(
        "emails".into(),
        crate::policies::QueuePolicy {
            sla_ms: Some(30_000),
            ..Default::default()
        },
    );
    let from = |p: &Policies| {
        Command::SetPoliciesFrom(Box::new(crate::command::PoliciesFrom {
            policies: p.clone(),
            node: 2,
            file_sha256: "ab12".into(),
        }))
    };
    // A cluster still on format 3 writes the plain command: no record.
    let plain = from(&policies).for_format(3).unwrap();
    assert!(matches!(plain, Command::SetPolicies { .. }));
    let mut older = Harness::new();
    older.run(1, plain);
    assert_eq!(older.m.policies().jobs.max_retries, 7);
    assert!(older.m.reader().audit(None, 10).unwrap().records.is_empty());

    h.run(1, from(&policies));
    assert_eq!(h.m.policies().jobs.max_retries, 7);
    let page = h.m.reader().audit(None, 10).unwrap();
    let r = &page.records[0].1.record;
    assert_eq!(
        (r.who.as_str(), r.action.as_str()),
        ("config", "policies.set")
    );
    assert_eq!(
        r.target,
        format!(
            "jobs.max_retries: {} -> 7; queues.emails.sla_ms: (not set) -> 30000",
            CFG.max_retries
        )
    );
    assert_eq!(r.reason, "node 2's config file, sha256 ab12");
    // The same again changes nothing and writes nothing more.
    h.run(2, from(&policies));
    assert_eq!(h.m.reader().audit(None, 10).unwrap().records.len(), 1);
}

#[test]
fn a_policies_record_cuts_long_values_and_counts_changes_past_forty() {
    let change = |i: usize, len: usize| crate::policies::PolicyChange {
        key: format!("k{i}"),
        old: None,
        new: Some("x".repeat(len)),
    };
    let r = audit::policies_record(1, "", &[change(0, 5000)]);
    assert!(
        r.target.len() < 200 && r.target.ends_with("..."),
        "{}",
        r.target
    );
    assert_eq!(r.reason, "node 1's embedded defaults");
    let many: Vec<_> = (0..45).map(|i| change(i, 1)).collect();
    let r = audit::policies_record(1, "", &many);
    assert!(r.target.ends_with("; and 5 more"), "{}", r.target);
}

/// The clocks of `queue` as the tree keeps them: its record, and how many
/// lease commands' changes follow it.
fn stored_clocks(h: &Harness, queue: &str) -> (scheduler::ClocksRecord, usize) {
    let record = match h.m.tree.get(clocks_key(queue)).unwrap() {
        Some(v) => decode(b"S", &v).unwrap(),
        None => scheduler::ClocksRecord::default(),
    };
    (record, h.m.tree.scan_prefix([CLOCK_DELTA]).count())
}

#[test]
fn the_first_entry_of_format_4_keeps_clock_changes_apart() {
    let mut h = Harness::at_format(3);
    for (i, t) in ["a", "b", "c", "a", "b", "c"].into_iter().enumerate() {
        let mut j = new_job("q", 3);
        j.tenant = t.into();
        h.run(i as u64, Command::Enqueue { jobs: vec![j] });
    }
    h.lease(10, "w", &["q"], 2);
    let (record, changes) = stored_clocks(&h, "q");
    assert_eq!(record.tenants.keys().collect::<Vec<_>>(), ["a", "b"]);
    assert_eq!(changes, 0);
    assert_eq!(h.m.tree.get(FORMAT_KEY).unwrap().as_deref(), Some(&[3][..]));

    // The cluster now writes format 4: the next entry converts, and its
    // lease writes its change apart from the record.
    let converted_at = h.index + 1;
    h.m.entry_format(4);
    h.lease(20, "w", &["q"], 1);
    let (record, changes) = stored_clocks(&h, "q");
    assert_eq!(record.tenants.keys().collect::<Vec<_>>(), ["a", "b"]);
    assert_eq!(changes, 1);
    assert_eq!(
        h.m.tree.get(FORMAT_KEY).unwrap().as_deref(),
        Some(&[FORMAT][..])
    );

    // Another node converts at the same index and ends up the same.
    let mut other = Harness::at_format(3);
    for (i, e) in h.log.iter().enumerate() {
        let index = i as u64 + 1;
        if index == converted_at {
            other.m.entry_format(4);
        }
        other.m.apply(index, 1, e).unwrap();
    }
    other.m.commit().unwrap();
    assert_eq!(other.m.digest().unwrap(), h.m.digest().unwrap());

    // Read back from layout 4 (record and change), the clocks lease as
    // the live ones: a, b, c each once more, in the same order.
    other.index = h.index;
    let live: Vec<String> = other
        .lease(30, "w", &["q"], 3)
        .into_iter()
        .map(|j| j.tenant)
        .collect();
    h.m = Machine::open(h.db.open_tree("machine").unwrap()).unwrap();
    let reopened: Vec<String> = h
        .lease(30, "w", &["q"], 3)
        .into_iter()
        .map(|j| j.tenant)
        .collect();
    assert_eq!(reopened, live);
}

#[test]
fn clock_changes_compact_into_the_record_and_read_back_alike() {
    let mut h = Harness::new();
    let jobs = (0..3000)
        .map(|i| {
            let mut j = new_job("q", 3);
            j.tenant = format!("t{}", i % 1500);
            j
        })
        .collect();
    h.run(1, Command::Enqueue { jobs });
    let (mut most, mut compacted) = (0, false);
    for step in 0..40 {
        h.lease(10 + step, "w", &["q"], 64);
        let (_, changes) = stored_clocks(&h, "q");
        compacted |= changes < most;
        most = most.max(changes);
    }
    assert!(
        compacted,
        "the changes never went back into the record ({most} kept)"
    );

    let mut fresh = Harness::new();
    for (i, e) in h.log.iter().enumerate() {
        fresh.m.apply(i as u64 + 1, 1, e).unwrap();
    }
    fresh.m.commit().unwrap();
    assert_eq!(fresh.m.digest().unwrap(), h.m.digest().unwrap());
    fresh.index = h.index;
    let live: Vec<JobId> = fresh
        .lease(100, "w", &["q"], 300)
        .iter()
        .map(|j| j.id)
        .collect();
    h.m = Machine::open(h.db.open_tree("machine").unwrap()).unwrap();
    let reopened: Vec<JobId> = h
        .lease(100, "w", &["q"], 300)
        .iter()
        .map(|j| j.id)
        .collect();
    assert_eq!(live.len(), 300);
    assert_eq!(reopened, live);
}

#[test]
fn a_tree_of_another_layout_is_refused_with_what_to_do() {
    let h = Harness::new();
    // Layout 1: job records without their payload, and no layout mark.
    let old = h.db.open_tree("old").unwrap();
    old.insert(key(JOB, 1), b"job".to_vec()).unwrap();
    let err = Machine::open(old).err().expect("must refuse");
    assert!(matches!(err, MachineError::Format { .. }), "{err}");
    assert!(err.to_string().contains("empty data dir"), "{err}");

    let newer = h.db.open_tree("newer").unwrap();
    newer.insert(FORMAT_KEY, &[FORMAT + 1]).unwrap();
    assert!(matches!(
        Machine::open(newer),
        Err(MachineError::Format { .. })
    ));

    // The mark survives a reopen, so a used tree opens again.
    drop(h.m);
    let tree = h.db.open_tree("machine").unwrap();
    assert_eq!(
        tree.get(FORMAT_KEY).unwrap().as_deref(),
        Some(&[FORMAT][..])
    );
    Machine::open(tree).expect("same layout opens");
}

mod props {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        Enqueue(u8, u64, Option<u8>, bool, Option<u8>),
        Control(u8),
        Lease(u32),
        Complete(usize),
        Fail(usize),
        Tick(u64),
        Purge(u32, u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (
                1u8..=5,
                0u64..3,
                proptest::option::of(0u8..4),
                any::<bool>(),
                proptest::option::of(0u8..2),
            )
                .prop_map(|(p, d, k, x, c)| Op::Enqueue(p, d * 100, k, x, c)),
            (0u8..4).prop_map(Op::Control),
            (1u32..4).prop_map(Op::Lease),
            (0usize..8).prop_map(Op::Complete),
            (0usize..8).prop_map(Op::Fail),
            (0u64..1500).prop_map(Op::Tick),
            (1u32..6, 0u64..3000).prop_map(|(n, b)| Op::Purge(n, b)),
        ]
    }

    fn leased_by_key(h: &Harness) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for item in h.m.tree.scan_prefix([JOB]) {
            let (k, v) = item.unwrap();
            let job = decode_job(&k, &v).unwrap();
            if job.state == JobState::Leased {
                if let Some((key, _)) = crate::job::JobKeys::of(&job.labels).concurrency {
                    *out.entry(key.to_string()).or_default() += 1;
                }
            }
        }
        out
    }

    /// After a lease of up to `asked` jobs from "q" (not paused): no ready
    /// job it could have taken is better than one it took, and if it took
    /// fewer than asked with room under the queue's limit, none is left.
    fn check_lease_order(
        h: &Harness,
        leased: &[Job],
        asked: u32,
        now: u64,
        x_paused: bool,
    ) -> Result<(), TestCaseError> {
        let effective = |j: &Job| scheduler::aged(j.priority, j.run_at_ms, now, Some(50));
        let by_key = leased_by_key(h);
        let mut total_leased = 0;
        let mut waiting = Vec::new();
        for item in h.m.tree.scan_prefix([JOB]) {
            let (k, v) = item.unwrap();
            let job = decode_job(&k, &v).unwrap();
            match job.state {
                JobState::Leased => total_leased += 1,
                JobState::Ready => {
                    let key_full = crate::job::JobKeys::of(&job.labels)
                        .concurrency
                        .is_some_and(|(key, _)| by_key.get(key).copied().unwrap_or(0) >= 2);
                    let tenant_held = x_paused && job.tenant == "x";
                    // A rate key's job may wait for its turn (the due index
                    // is checked against a scan instead).
                    let rate_limited = job.labels.contains_key(crate::job::RATE_KEY_LABEL);
                    if !(key_full || tenant_held || rate_limited) {
                        waiting.push(job);
                    }
                }
                _ => {}
            }
        }
        if total_leased >= 3 {
            return Ok(());
        }
        if (leased.len() as u32) < asked {
            prop_assert!(
                waiting.is_empty(),
                "left {:?} behind",
                waiting.iter().map(|j| j.id).collect::<Vec<_>>()
            );
        }
        // The job a lease took ran at its own (earlier) run_at; its
        // effective priority then was at least what it is now.
        if let Some(worst) = leased.iter().map(&effective).max() {
            for j in &waiting {
                prop_assert!(
                    effective(j) >= worst,
                    "job {} (priority {} now) was left for worse",
                    j.id,
                    effective(j)
                );
            }
        }
        Ok(())
    }

    /// The machine's blocked counts summed by reason, as
    /// [`Machine::blocked_by_scan`] gives them.
    fn blocked_by_reason(m: &Machine) -> BTreeMap<String, BTreeMap<blocked::BlockReason, u64>> {
        let mut out: BTreeMap<String, BTreeMap<blocked::BlockReason, u64>> = BTreeMap::new();
        for (queue, held) in m.stats().blocked_jobs {
            for b in held {
                *out.entry(queue.clone())
                    .or_default()
                    .entry(b.reason)
                    .or_default() += b.jobs;
            }
        }
        out
    }

    #[derive(Debug, Clone)]
    enum HoldOp {
        /// Queue (0-1), tenant (0-1), run (none, r1, r2), key k or none.
        Enqueue(u8, u8, Option<u8>, bool),
        Lease(u8, u32),
        /// Complete the i-th held job at this cost (millionths of a USD).
        Complete(usize, u64),
        /// Fail the i-th held job with this class.
        Fail(usize, u8),
        /// Pause or resume: queue q0 (0, 1), tenant a (2, 3).
        Control(u8),
        /// Raise run r1 or r2 of tenant a (or b) past what it used.
        Override(u8, u8),
        ResetBreakers,
        Tick(u64),
    }

    fn hold_op() -> impl Strategy<Value = HoldOp> {
        prop_oneof![
            4 => (0u8..2, 0u8..2, proptest::option::of(1u8..3), any::<bool>())
                .prop_map(|(q, t, r, k)| HoldOp::Enqueue(q, t, r, k)),
            3 => (0u8..2, 1u32..4).prop_map(|(q, n)| HoldOp::Lease(q, n)),
            2 => (0usize..6, 0u64..25_000).prop_map(|(i, c)| HoldOp::Complete(i, c)),
            3 => (0usize..6, 0u8..4).prop_map(|(i, c)| HoldOp::Fail(i, c / 3)),
            1 => (0u8..4).prop_map(HoldOp::Control),
            1 => (0u8..2, 1u8..3).prop_map(|(t, r)| HoldOp::Override(t, r)),
            1 => Just(HoldOp::ResetBreakers),
            1 => (0u64..2_000).prop_map(HoldOp::Tick),
        ]
    }

    /// Queues q0 (concurrency limit 2) and q1 (a breaker at two failures
    /// of a class), runs with a cost budget, tenant b with a daily cap and
    /// a concurrency key of 1.
    fn hold_policies() -> Command {
        let mut policies = crate::policies::Policies {
            jobs: CFG,
            budgets: crate::policies::Budgets {
                cost_micros: Some(15_000),
                ..Default::default()
            },
            ..Default::default()
        };
        policies.queues.insert(
            "q0".into(),
            crate::policies::QueuePolicy {
                concurrency_limit: Some(2),
                ..Default::default()
            },
        );
        policies.queues.insert(
            "q1".into(),
            crate::policies::QueuePolicy {
                breaker: Some(crate::policies::QueueBreaker {
                    threshold: Some(2),
                    window_ms: Some(10_000),
                    cooldown_ms: Some(1_000),
                    ..Default::default()
                }),
                ..Default::default()
            },
        );
        policies.tenants.insert(
            "b".into(),
            crate::policies::TenantPolicy {
                budgets: crate::policies::Budgets {
                    daily_cost_cap_micros: Some(40_000),
                    ..Default::default()
                },
                ..Default::default()
            },
        );
        policies.keys.insert(
            "k".into(),
            crate::policies::KeyLimit {
                concurrency: Some(1),
                rate: None,
            },
        );
        Command::SetPolicies { policies }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// The blocked counts by reason equal a scan of every ready job,
        /// whatever holds them (pauses, breakers, budgets, daily caps, key
        /// and queue limits), and a replayed or reopened machine counts
        /// the same.
        #[test]
        fn blocked_counts_equal_a_scan(ops in proptest::collection::vec(hold_op(), 1..70)) {
            use crate::command::{QueueAction, QueueScope};
            let mut h = Harness::new();
            h.run(0, hold_policies());
            let mut now = 1_000u64;
            let mut held: Vec<(JobId, u32)> = Vec::new();
            for op in ops {
                now += 10;
                match op {
                    HoldOp::Enqueue(q, t, r, k) => {
                        let mut j = new_job(&format!("q{q}"), 3);
                        j.tenant = ["a", "b"][usize::from(t)].into();
                        if let Some(r) = r {
                            j.run_id = format!("r{r}");
                        }
                        if k {
                            j.labels.insert(crate::job::CONCURRENCY_KEY_LABEL.into(), "k".into());
                        }
                        h.run(now, Command::Enqueue { jobs: vec![j] });
                    }
                    HoldOp::Lease(q, n) => {
                        for j in h.lease(now, "w", &[&format!("q{q}")], n) {
                            held.push((j.id, j.attempts));
                        }
                    }
                    HoldOp::Complete(i, cost) if i < held.len() => {
                        let (id, attempt) = held.remove(i);
                        let usage = crate::command::Usage { cost_micros: cost, named: Default::default() };
                        let items = vec![(Completion { job_id: id, attempt, result: Bytes::new() }, usage)];
                        h.run(now, Command::CompleteWithUsage { worker: "w".into(), items });
                    }
                    HoldOp::Fail(i, class) if i < held.len() => {
                        let (id, attempt) = held.remove(i);
                        let items = vec![Failure {
                            job_id: id,
                            attempt,
                            error_class: format!("c{class}"),
                            message: "no".into(),
                        }];
                        h.run(now, Command::Fail { worker: "w".into(), items });
                    }
                    HoldOp::Control(kind) => {
                        let (scope, action) = match kind {
                            0 => (QueueScope::Queue("q0".into()), QueueAction::Pause),
                            1 => (QueueScope::Queue("q0".into()), QueueAction::Resume),
                            2 => (QueueScope::Tenant("a".into()), QueueAction::Pause),
                            _ => (QueueScope::Tenant("a".into()), QueueAction::Resume),
                        };
                        h.run(now, Command::Control(crate::command::Control { scope, action }));
                    }
                    HoldOp::Override(t, r) => {
                        h.run(now, Command::OverrideRun(crate::command::OverrideRun {
                            tenant: ["a", "b"][usize::from(t)].into(),
                            run: format!("r{r}"),
                            limits: Box::new(crate::policies::Budgets {
                                cost_micros: Some(1_000_000),
                                ..Default::default()
                            }),
                        }));
                    }
                    HoldOp::ResetBreakers => {
                        h.run(now, Command::ResetBreakers(crate::command::ResetBreakers { scope: None }));
                    }
                    HoldOp::Tick(dt) => {
                        now += dt;
                        h.run(now, Command::Tick);
                    }
                    _ => {}
                }
                prop_assert_eq!(blocked_by_reason(&h.m), h.m.blocked_by_scan());
            }
            // Every node counts alike: one that replays the log, and one
            // that reopens the tree.
            let mut fresh = Harness::new();
            for (i, e) in h.log.iter().enumerate().skip(1) {
                fresh.m.apply(i as u64 + 1, 1, e).unwrap();
            }
            fresh.m.commit().unwrap();
            prop_assert_eq!(fresh.m.stats().blocked_jobs, h.m.stats().blocked_jobs);
            h.m = Machine::open(h.db.open_tree("machine").unwrap()).unwrap();
            prop_assert_eq!(fresh.m.stats().blocked_jobs, h.m.stats().blocked_jobs);
            prop_assert_eq!(blocked_by_reason(&h.m), h.m.blocked_by_scan());
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        /// Counts always match the records, no job is leased twice at once,
        /// nothing paused or over a queue's or a key's concurrency limit is
        /// leased, a lease takes the best jobs (priority after aging) and
        /// leaves none it could have taken, and a replay gives the same
        /// digest.
        #[test]
        fn invariants_hold(ops in proptest::collection::vec(op(), 1..60), format in 3u8..=4) {
            use crate::command::{QueueAction, QueueScope};
            let mut h = Harness::at_format(format);
            let mut policies = crate::policies::Policies { jobs: CFG, ..Default::default() };
            policies.queues.insert("q".into(), crate::policies::QueuePolicy {
                concurrency_limit: Some(3),
                aging_after_ms: Some(50),
                ..Default::default()
            });
            policies.tenants.insert("x".into(), crate::policies::TenantPolicy { weight: 2, ..Default::default() });
            policies.keys.insert("k".into(), crate::policies::KeyLimit { concurrency: Some(2), rate: None });
            policies.keys.insert("r0".into(), crate::policies::KeyLimit { concurrency: None, rate: Some(crate::policies::Rate { count: 2, period_ms: 100 }) });
            policies.keys.insert("r1".into(), crate::policies::KeyLimit { concurrency: None, rate: Some(crate::policies::Rate { count: 1, period_ms: 250 }) });
            h.run(0, Command::SetPolicies { policies });
            let (mut queue_paused, mut x_paused) = (false, false);
            let mut now = 0u64;
            let mut held: Vec<(JobId, u32)> = Vec::new();
            for op in ops {
                now += 10;
                match op {
                    Op::Control(kind) => {
                        let (scope, action) = match kind {
                            0 => (QueueScope::Queue("q".into()), QueueAction::Pause),
                            1 => (QueueScope::Queue("q".into()), QueueAction::Resume),
                            2 => (QueueScope::Tenant("x".into()), QueueAction::Pause),
                            _ => (QueueScope::Tenant("x".into()), QueueAction::Resume),
                        };
                        match kind {
                            0 => queue_paused = true,
                            1 => queue_paused = false,
                            2 => x_paused = true,
                            _ => x_paused = false,
                        }
                        h.run(now, Command::Control(crate::command::Control { scope, action }));
                    }
                    Op::Enqueue(p, d, k, x, c) => {
                        let mut j = new_job("q", p);
                        if let Some(c) = c {
                            j.labels.insert(crate::job::CONCURRENCY_KEY_LABEL.into(), format!("k{c}"));
                        }
                        // Some jobs also wait for a rate key's turn.
                        if let Some(r) = k.filter(|k| *k < 2) {
                            j.labels.insert(crate::job::RATE_KEY_LABEL.into(), format!("r{r}"));
                        }
                        if x {
                            j.tenant = "x".into();
                        }
                        j.delay_ms = d;
                        if let Some(k) = k {
                            j.idempotency_key = format!("k{k}");
                        }
                        h.run(now, Command::Enqueue { jobs: vec![j] });
                    }
                    Op::Lease(n) => {
                        let leased = h.lease(now, "w", &["q"], n);
                        if !queue_paused {
                            check_lease_order(&h, &leased, n, now, x_paused)?;
                        }
                        for j in leased {
                            prop_assert!(!queue_paused, "leased from a paused queue");
                            prop_assert!(!(x_paused && j.tenant == "x"), "leased a paused tenant's job");
                            // Whoever held this job before holds a stale attempt now.
                            prop_assert!(held.iter().all(|(id, a)| *id != j.id || *a < j.attempts));
                            held.push((j.id, j.attempts));
                        }
                    }
                    Op::Complete(i) if i < held.len() => { let (id, a) = held.remove(i); let _ = h.complete(now, id, a); }
                    Op::Fail(i) if i < held.len() => { let (id, a) = held.remove(i); let _ = h.fail(now, id, a); }
                    Op::Tick(dt) => { now += dt; h.run(now, Command::Tick); }
                    Op::Purge(limit, max_bytes) => {
                        let retention = Retention { finished_ms: 300, dead_ms: 600, idempotency_ms: 400, max_finished_bytes: max_bytes };
                        h.run(now, Command::Purge { retention, limit });
                    }
                    _ => {}
                }
                // Counts agree with the stored records.
                let mut counts = QueueCounts::default();
                let mut leased_ids = std::collections::HashSet::new();
                for item in h.m.tree.scan_prefix([JOB]) {
                    let (_, v) = item.unwrap();
                    let job: Job = decode(b"j", &v).unwrap();
                    *counts.slot(job.state, job.priority) += 1;
                    if job.state == JobState::Leased {
                        prop_assert!(leased_ids.insert(job.id));
                        prop_assert!(job.lease.is_some());
                    }
                }
                let stats = h.m.stats();
                prop_assert_eq!(stats.queues.get("q").cloned().unwrap_or_default(), counts.clone());
                prop_assert!(counts.leased <= 3, "over the concurrency limit: {}", counts.leased);
                for (key, n) in leased_by_key(&h) {
                    prop_assert!(n <= 2, "{n} leased of key {key}, over its limit of 2");
                }
                // Every finished job is indexed once, and the byte total adds up.
                let mut indexed = 0u64;
                let mut bytes = 0u64;
                for prefix in [b'F', b'D'] {
                    for item in h.m.tree.scan_prefix([prefix]) {
                        let (k, v) = item.unwrap();
                        let at = u64::from_be_bytes(k[1..9].try_into().unwrap());
                        let jobs: Vec<(JobId, u64)> = decode(&k, &v).unwrap();
                        for (id, b) in jobs {
                            let job = h.m.reader().job(id).unwrap();
                            prop_assert!(job.is_some_and(|j| j.state.is_finished() && j.finished_at_ms == at), "index names a live job");
                            indexed += 1;
                            bytes += b;
                        }
                    }
                }
                prop_assert_eq!(indexed, counts.succeeded + counts.dead + counts.cancelled);
                // The rate keys' due index says what a scan of them says.
                prop_assert_eq!(h.m.rate_due(), &h.m.rate_due_by_scan());
                prop_assert_eq!(blocked_by_reason(&h.m), h.m.blocked_by_scan());
                prop_assert_eq!(bytes, h.m.finished_bytes);
            }
            let mut fresh = Harness::at_format(format);
            for (i, e) in h.log.iter().enumerate() {
                fresh.m.apply(i as u64 + 1, 1, e).unwrap();
            }
            fresh.m.commit().unwrap();
            prop_assert_eq!(fresh.m.digest().unwrap(), h.m.digest().unwrap());
            prop_assert_eq!(fresh.m.stats().blocked_jobs, h.m.stats().blocked_jobs);
            // The clocks read back from the tree lease as the live ones do.
            fresh.index = h.index;
            let live: Vec<JobId> = fresh.lease(now + 10, "w2", &["q"], 3).iter().map(|j| j.id).collect();
            h.m = Machine::open(h.db.open_tree("machine").unwrap()).unwrap();
            let reopened: Vec<JobId> = h.lease(now + 10, "w2", &["q"], 3).iter().map(|j| j.id).collect();
            prop_assert_eq!(reopened, live);
        }
    }
}

#[test]
fn held_names_the_jobs_leased_to_a_worker_and_changes_nothing() {
    let mut h = Harness::new();
    let a = h.enqueue(0, "q", 3);
    let b = h.enqueue(0, "q", 3);
    let c = h.enqueue(0, "q", 3);
    h.lease(0, "w1", &["q"], 2);
    h.lease(0, "w2", &["q"], 1);
    let held = |h: &mut Harness, w: &str| match h.run(1, Command::Held { worker: w.into() }) {
        Outcome::Leased(jobs) => jobs
            .iter()
            .map(|j| (j.job.id, j.job.attempts))
            .collect::<Vec<_>>(),
        other => panic!("{other:?}"),
    };
    let before = h.m.digest().unwrap();
    assert_eq!(held(&mut h, "w1"), vec![(a, 1), (b, 1)]);
    assert_eq!(held(&mut h, "w2"), vec![(c, 1)]);
    assert_eq!(held(&mut h, "nobody"), vec![]);
    assert_eq!(h.m.digest().unwrap(), before, "held changes nothing");
    h.complete(2, a, 1).unwrap();
    assert_eq!(held(&mut h, "w1"), vec![(b, 1)]);
    // A heartbeat moves the lease's deadline, not its holder.
    h.run(
        3,
        Command::Heartbeat {
            worker: "w1".into(),
            leases: vec![LeaseBeat {
                job_id: b,
                attempt: 1,
                progress: None,
            }],
        },
    );
    assert_eq!(held(&mut h, "w1"), vec![(b, 1)]);
    // An expired lease is no longer held; a reopened machine rebuilds the index.
    h.run(60_000, Command::Tick);
    assert_eq!(held(&mut h, "w1"), vec![]);
    h.lease(60_001, "w3", &["q"], 1);
    h.m.commit().unwrap();
    let mut reopened = Machine::open(h.m.tree().clone()).unwrap();
    match reopened
        .apply(
            99,
            1,
            &LogEntry {
                at_ms: 60_002,
                commands: vec![Command::Held {
                    worker: "w3".into(),
                }],
            },
        )
        .unwrap()
        .remove(0)
    {
        Outcome::Leased(jobs) => assert_eq!(jobs.len(), 1),
        other => panic!("{other:?}"),
    }
}

const KEEP: Retention = Retention {
    finished_ms: 1_000,
    dead_ms: 5_000,
    idempotency_ms: 3_000,
    max_finished_bytes: u64::MAX,
};

fn purge(h: &mut Harness, at: u64, retention: Retention) -> (u32, u32, bool) {
    match h.run(
        at,
        Command::Purge {
            retention,
            limit: 100,
        },
    ) {
        Outcome::Purged {
            jobs,
            idempotency_records,
            more,
        } => (jobs, idempotency_records, more),
        other => panic!("{other:?}"),
    }
}

#[test]
fn finished_jobs_are_purged_after_their_retention() {
    let mut h = Harness::new();
    let done = h.enqueue(0, "q", 3);
    let dead = h.enqueue(0, "q", 3);
    // Elsewhere, so the retries of `dead` below lease it, not these.
    let live = h.enqueue(0, "elsewhere", 3);
    let mut keyed = new_job("elsewhere", 3);
    keyed.idempotency_key = "once".into();
    h.run(
        0,
        Command::Enqueue {
            jobs: vec![keyed.clone()],
        },
    );
    h.lease(0, "w", &["q"], 2);
    h.complete(100, done, 1).unwrap();
    // `dead` dies on its first failure here: retries exhausted.
    let mut job = h.job(dead);
    for attempt in 1..=CFG.max_retries + 1 {
        if attempt > 1 {
            h.run(job.run_at_ms, Command::Tick);
            h.lease(job.run_at_ms, "w", &["q"], 1);
        }
        h.fail(job.run_at_ms.max(100), dead, attempt).unwrap();
        job = h.job(dead);
    }
    assert_eq!(job.state, JobState::Dead);
    let died = job.finished_at_ms;
    assert!(h.m.finished_bytes > 0);

    assert!(
        !h.m.purge_due(100 + 999, &KEEP).unwrap(),
        "nothing is old enough yet"
    );
    assert!(h.m.purge_due(100 + 1_000, &KEEP).unwrap());
    assert_eq!(purge(&mut h, 100 + 1_000, KEEP), (1, 0, false));
    assert!(h.m.reader().job(done).unwrap().is_none(), "purged: gone");
    assert!(
        h.m.reader().job(dead).unwrap().is_some(),
        "dead jobs are kept longer"
    );
    assert!(h.m.reader().job(live).unwrap().is_some());
    assert_eq!(h.m.stats().queues["q"].succeeded, 0);

    let at = died + 5_000;
    assert_eq!(
        purge(&mut h, at, KEEP),
        (1, 1, false),
        "the dead job, and the key past its TTL"
    );
    assert!(h.m.reader().job(dead).unwrap().is_none());
    assert_eq!(h.m.finished_bytes, 0);
    assert_eq!(h.m.stats().queues["q"].dead, 0);
    assert!(
        !h.m.purge_due(at + 1_000_000, &KEEP).unwrap(),
        "nothing left to purge"
    );
    // The key's TTL ended: the same key makes a new job.
    match h.run(at, Command::Enqueue { jobs: vec![keyed] }) {
        Outcome::Enqueued(v) => assert!(!v[0].duplicate),
        other => panic!("{other:?}"),
    }
}

#[test]
fn finished_jobs_over_the_byte_bound_go_oldest_first() {
    let mut h = Harness::new();
    let ids: Vec<JobId> = (0..5).map(|_| h.enqueue(0, "q", 3)).collect();
    h.lease(0, "w", &["q"], 5);
    for (i, &id) in ids.iter().enumerate() {
        h.complete(10 + i as u64, id, 1).unwrap();
    }
    let each = h.m.finished_bytes / 5;
    let bound = Retention {
        max_finished_bytes: each * 2,
        ..KEEP
    };
    assert!(h.m.purge_due(20, &bound).unwrap());
    assert_eq!(purge(&mut h, 20, bound), (3, 0, false));
    let left: Vec<bool> = ids
        .iter()
        .map(|&id| h.m.reader().job(id).unwrap().is_some())
        .collect();
    assert_eq!(left, vec![false, false, false, true, true]);
    assert!(h.m.finished_bytes <= each * 2 + 5);
}

#[test]
fn a_purge_stops_at_its_limit_and_says_there_is_more() {
    let mut h = Harness::new();
    let ids: Vec<JobId> = (0..150).map(|_| h.enqueue(0, "q", 3)).collect();
    h.lease(0, "w", &["q"], 150);
    for &id in &ids {
        h.complete(10, id, 1).unwrap();
    }
    assert_eq!(purge(&mut h, 5_000, KEEP), (100, 0, true));
    assert_eq!(purge(&mut h, 5_000, KEEP), (50, 0, false));
    assert_eq!(h.m.finished_bytes, 0);
}

fn record(action: &str) -> crate::command::AuditRecord {
    crate::command::AuditRecord {
        who: "alice".into(),
        role: "operate".into(),
        action: action.into(),
        target: "job 1".into(),
        reason: "why not".into(),
        outcome: String::new(),
    }
}

#[test]
fn an_audited_command_applies_and_its_record_says_how_it_ended() {
    let mut h = Harness::new();
    let id = h.enqueue(10, "q", 3);
    let cancel = |id| Command::Audit {
        record: record("job.cancel"),
        command: Some(crate::command::Audited::Cancel(crate::command::Cancel {
            id,
        })),
    };
    assert_eq!(
        h.run(20, cancel(id)),
        Outcome::Cancelled(Ok(JobState::Ready))
    );
    assert!(matches!(h.run(30, cancel(id)), Outcome::Cancelled(Err(_))));
    // A refused cancel (above) is not recorded.
    let page = audit::page(&h.m.tree, None, 10).unwrap();
    assert!(page.next.is_none());
    let seen: Vec<(u64, &str, &str)> = page
        .records
        .iter()
        .map(|(_, e)| {
            (
                e.at_ms,
                e.record.action.as_str(),
                e.record.outcome.split(':').next().unwrap(),
            )
        })
        .collect();
    assert_eq!(seen, [(20, "job.cancel", "ok")]);
    let recorded = || Command::Audit {
        record: record("snapshot"),
        command: None,
    };
    h.run(50, recorded());
    h.run(60, recorded());
    // Purged by age, oldest first, a bounded slice at a time.
    assert!(h.m.audit_purge_due(100, 50).unwrap());
    h.run(
        100,
        Command::PurgeAudit {
            keep_ms: 45,
            limit: 1,
        },
    );
    h.run(
        100,
        Command::PurgeAudit {
            keep_ms: 45,
            limit: 10,
        },
    );
    let page = audit::page(&h.m.tree, None, 10).unwrap();
    assert_eq!(
        page.records.len(),
        1,
        "only the record within 45 ms of 100 stays"
    );
    assert!(!h.m.audit_purge_due(100, 45).unwrap());
}

fn queue_policy(q: &str, policy: crate::policies::QueuePolicy) -> Command {
    let mut policies = crate::policies::Policies {
        jobs: CFG,
        ..Default::default()
    };
    policies.queues.insert(q.into(), policy);
    Command::SetPolicies { policies }
}

#[test]
fn a_queue_over_its_depth_sheds_low_priorities_first_and_changes_nothing() {
    let mut h = Harness::new();
    h.run(
        1,
        queue_policy(
            "q",
            crate::policies::QueuePolicy {
                max_depth: Some(4),
                shed: [(5, 0.5)].into_iter().collect(),
                ..Default::default()
            },
        ),
    );
    h.enqueue(2, "q", 5);
    h.enqueue(3, "q", 5);
    let before = h.m.digest().unwrap();
    let shed = h.run(
        4,
        Command::Enqueue {
            jobs: vec![new_job("q", 5)],
        },
    );
    assert!(
        matches!(
            &shed,
            Outcome::Rejected(Refusal::Shed {
                depth: 2,
                limit: 2,
                ..
            })
        ),
        "{shed:?}"
    );
    assert_eq!(
        h.m.digest().unwrap(),
        before,
        "a shed enqueue changes nothing"
    );
    h.enqueue(5, "q", 1);
    h.enqueue(6, "q", 1);
    // A batch that would pass the depth is refused whole.
    let batch = h.run(
        7,
        Command::Enqueue {
            jobs: vec![new_job("q", 1), new_job("other", 1)],
        },
    );
    assert!(
        matches!(batch, Outcome::Rejected(Refusal::Shed { limit: 4, .. })),
        "{batch:?}"
    );
    assert_eq!(h.m.stats().queues.get("other"), None);
}

#[test]
fn paused_queues_lease_nothing_draining_ones_take_nothing_and_limits_hold() {
    use crate::command::{QueueAction, QueueScope};
    let mut h = Harness::new();
    h.run(
        1,
        queue_policy(
            "q",
            crate::policies::QueuePolicy {
                concurrency_limit: Some(2),
                ..Default::default()
            },
        ),
    );
    for t in 0..4 {
        h.enqueue(2 + t, "q", 3);
    }
    let control = |action| {
        Command::Control(crate::command::Control {
            scope: QueueScope::Queue("q".into()),
            action,
        })
    };
    assert_eq!(
        h.run(10, control(QueueAction::Pause)),
        Outcome::Controlled(vec!["q".into()])
    );
    assert!(h.lease(11, "w", &["q"], 10).is_empty(), "paused");
    h.run(12, control(QueueAction::Resume));
    assert_eq!(
        h.lease(13, "w", &["q"], 10).len(),
        2,
        "the concurrency limit"
    );
    assert!(h.lease(14, "w", &["q"], 10).is_empty());
    h.run(15, control(QueueAction::Drain));
    let refused = h.run(
        16,
        Command::Enqueue {
            jobs: vec![new_job("q", 3)],
        },
    );
    assert!(
        matches!(refused, Outcome::Rejected(Refusal::Draining { .. })),
        "{refused:?}"
    );
    // Draining leases on.
    let done = h.m.reader().job(1).unwrap().unwrap();
    h.complete(17, done.id, 1).unwrap();
    assert_eq!(h.lease(18, "w", &["q"], 10).len(), 1);
    // Controls survive a restart.
    let reopened = Machine::open(h.m.tree().clone()).unwrap();
    assert!(reopened.stats().draining.contains("q"));
    h.run(
        19,
        Command::Control(crate::command::Control {
            scope: QueueScope::All,
            action: QueueAction::Resume,
        }),
    );
    assert!(h.m.stats().draining.is_empty());
}

#[test]
fn aging_lets_a_waiting_low_priority_job_go_first_and_sla_misses_are_counted() {
    let mut h = Harness::new();
    h.run(
        1,
        queue_policy(
            "q",
            crate::policies::QueuePolicy {
                aging_after_ms: Some(10_000),
                sla_ms: Some(20_000),
                ..Default::default()
            },
        ),
    );
    let old = h.enqueue(2, "q", 5);
    let fresh = h.enqueue(35_000, "q", 1);
    let leased = h.lease(40_002, "w", &["q"], 1);
    assert_eq!(leased[0].id, old, "aged from 5 to 1, and older");
    let leased = h.lease(40_003, "w", &["q"], 1);
    assert_eq!(leased[0].id, fresh);
    let stats = h.m.stats();
    assert_eq!(
        stats.sla_missed["q"],
        [0, 0, 0, 0, 1],
        "only the old one waited past 20 s"
    );
    assert!(h
        .job(old)
        .events
        .iter()
        .any(|e| matches!(e.kind, EventKind::WaitedPastSla { .. })));
}

fn keyed(queue: &str, priority: u8, label: &str, key: &str) -> NewJob {
    let mut j = new_job(queue, priority);
    j.labels.insert(label.into(), key.into());
    j
}

fn key_policies(prefix: &str, limit: crate::policies::KeyLimit) -> Command {
    let mut policies = crate::policies::Policies {
        jobs: CFG,
        ..Default::default()
    };
    policies.keys.insert(prefix.into(), limit);
    Command::SetPolicies { policies }
}

fn enqueue_all(h: &mut Harness, at: u64, jobs: Vec<NewJob>) -> Vec<JobId> {
    match h.run(at, Command::Enqueue { jobs }) {
        Outcome::Enqueued(v) => v.into_iter().map(|e| e.id).collect(),
        o => panic!("unexpected {o:?}"),
    }
}

#[test]
fn a_concurrency_key_leases_at_most_its_limit_and_parked_jobs_come_back_in_order() {
    use crate::job::CONCURRENCY_KEY_LABEL as CK;
    let mut h = Harness::new();
    h.run(
        1,
        key_policies(
            "api:",
            crate::policies::KeyLimit {
                concurrency: Some(2),
                rate: None,
            },
        ),
    );
    let a = enqueue_all(
        &mut h,
        2,
        (0..5).map(|_| keyed("q", 3, CK, "api:a")).collect(),
    );
    let other = h.enqueue(3, "q", 5);
    // A key no prefix names is not limited.
    let free = enqueue_all(&mut h, 3, vec![keyed("q", 4, CK, "web:x"); 3]);
    let leased: Vec<JobId> = h.lease(4, "w", &["q"], 10).iter().map(|j| j.id).collect();
    let mut expected = vec![a[0], a[1]];
    expected.extend(&free);
    expected.push(other);
    assert_eq!(leased, expected, "two of api:a, then the rest by priority");
    let view = h.m.reader();
    assert_eq!(
        view.waiting(&h.job(a[2])).unwrap().as_deref(),
        Some("limit api:a")
    );
    assert_eq!(view.waiting(&h.job(other)).unwrap(), None);
    assert!(h.lease(5, "w", &["q"], 10).is_empty());
    assert!(
        h.m.stats().blocked.contains("q"),
        "every ready job is parked: workers need not ask"
    );
    // A heartbeat of a held job frees nothing.
    h.run(
        6,
        Command::Heartbeat {
            worker: "w".into(),
            leases: vec![LeaseBeat {
                job_id: a[0],
                attempt: 1,
                progress: None,
            }],
        },
    );
    assert!(h.lease(6, "w", &["q"], 10).is_empty());
    h.complete(7, a[0], 1).unwrap();
    assert!(!h.m.stats().blocked.contains("q"));
    assert_eq!(view.waiting(&h.job(a[2])).unwrap(), None, "back in line");
    // A reopened machine parks the same jobs and picks alike.
    h.m.commit().unwrap();
    let digest = h.m.digest().unwrap();
    let mut reopened = Machine::open(h.m.tree().clone()).unwrap();
    assert_eq!(reopened.digest().unwrap(), digest);
    let lease = |m: &mut Machine, index| {
        let entry = LogEntry {
            at_ms: 8,
            commands: vec![Command::Lease {
                worker: "w".into(),
                queues: vec!["q".into()],
                max: 10,
            }],
        };
        match m.apply(index, 1, &entry).unwrap().remove(0) {
            Outcome::Leased(v) => v.iter().map(|l| l.job.id).collect::<Vec<_>>(),
            o => panic!("{o:?}"),
        }
    };
    let index = h.index + 1;
    assert_eq!(lease(&mut reopened, index), vec![a[2]]);
    assert_eq!(lease(&mut h.m, index), vec![a[2]]);
    assert_eq!(reopened.digest().unwrap(), h.m.digest().unwrap());
    // A job's own limit is used over the config's.
    let mut own = keyed("q", 3, CK, "api:b");
    own.labels
        .insert(crate::job::CONCURRENCY_LIMIT_LABEL.into(), "1".into());
    enqueue_all(&mut h, 9, vec![own.clone(), own]);
    h.index = index;
    assert_eq!(h.lease(10, "w", &["q"], 10).len(), 1);
}

#[test]
fn a_rate_key_leases_its_count_then_one_per_interval() {
    use crate::job::RATE_KEY_LABEL as RK;
    let mut h = Harness::new();
    h.run(
        1,
        key_policies(
            "host:",
            crate::policies::KeyLimit {
                concurrency: None,
                rate: Some(crate::policies::Rate {
                    count: 2,
                    period_ms: 1_000,
                }),
            },
        ),
    );
    let ids = enqueue_all(
        &mut h,
        2,
        (0..6).map(|_| keyed("q", 3, RK, "host:x")).collect(),
    );
    assert_eq!(h.lease(1_000, "w", &["q"], 10).len(), 2, "the burst");
    assert_eq!(
        h.m.reader().waiting(&h.job(ids[2])).unwrap().as_deref(),
        Some("limit host:x (rate)")
    );
    assert_eq!(
        h.m.next_due_ms(),
        Some(1_500),
        "a tick is due at the release"
    );
    assert!(h.lease(1_200, "w", &["q"], 10).is_empty());
    h.run(1_500, Command::Tick);
    let next = h.lease(1_500, "w", &["q"], 10);
    assert_eq!(next.iter().map(|j| j.id).collect::<Vec<_>>(), vec![ids[2]]);
    assert!(h.lease(1_700, "w", &["q"], 10).is_empty());
    // A lease finds released jobs without waiting for a tick.
    assert_eq!(h.lease(2_000, "w", &["q"], 10).len(), 1);
    // Dropping the limit releases the rest at once.
    h.run(
        2_001,
        Command::SetPolicies {
            policies: crate::policies::Policies {
                jobs: CFG,
                ..Default::default()
            },
        },
    );
    assert_eq!(h.lease(2_002, "w", &["q"], 10).len(), 2);
    let mut fresh = Harness::new();
    for (i, e) in h.log.iter().enumerate() {
        fresh.m.apply(i as u64 + 1, 1, e).unwrap();
    }
    fresh.m.commit().unwrap();
    assert_eq!(fresh.m.digest().unwrap(), h.m.digest().unwrap());
}

#[test]
fn a_cancelled_parked_job_leaves_no_hold() {
    use crate::job::CONCURRENCY_KEY_LABEL as CK;
    let mut h = Harness::new();
    h.run(
        1,
        key_policies(
            "k",
            crate::policies::KeyLimit {
                concurrency: Some(1),
                rate: None,
            },
        ),
    );
    let ids = enqueue_all(&mut h, 2, vec![keyed("q", 3, CK, "k1"); 3]);
    assert_eq!(h.lease(3, "w", &["q"], 5).len(), 1);
    assert!(matches!(
        h.run(4, Command::Cancel(crate::command::Cancel { id: ids[1] })),
        Outcome::Cancelled(_)
    ));
    assert!(h.m.tree().get(key(PARKED, ids[1])).unwrap().is_none());
    h.complete(5, ids[0], 1).unwrap();
    let next = h.lease(6, "w", &["q"], 5);
    assert_eq!(next.iter().map(|j| j.id).collect::<Vec<_>>(), vec![ids[2]]);
}

fn retry_policies(entries: Vec<(&str, crate::policies::RetryPolicy)>) -> Command {
    let mut policies = crate::policies::Policies {
        jobs: CFG,
        ..Default::default()
    };
    for (t, r) in entries {
        policies.retry.insert(t.into(), r);
    }
    Command::SetPolicies { policies }
}

fn fail_as(h: &mut Harness, at: u64, id: JobId, attempt: u32, class: &str) {
    let items = vec![Failure {
        job_id: id,
        attempt,
        error_class: class.into(),
        message: format!("{class} happened"),
    }];
    match h.run(
        at,
        Command::Fail {
            worker: "w".into(),
            items,
        },
    ) {
        Outcome::Acks(v) => assert!(v[0].is_ok(), "{v:?}"),
        o => panic!("{o:?}"),
    }
}

#[test]
fn a_no_retry_class_dead_letters_at_once_and_exhausted_jobs_escalate_with_their_history() {
    use crate::policies::{Backoff, RetryPolicy};
    let mut h = Harness::new();
    h.run(
        1,
        retry_policies(vec![(
            "t",
            RetryPolicy {
                max_retries: Some(1),
                backoff: Some(Backoff::Immediate),
                no_retry: vec!["fatal_input".into()],
                escalate_to: Some("review".into()),
                ..Default::default()
            },
        )]),
    );
    // A no_retry class ends the job at once: escalated, since the type says so.
    let a = h.enqueue(2, "q", 3);
    h.lease(3, "w", &["q"], 1);
    fail_as(&mut h, 4, a, 1, "fatal_input");
    let job = h.job(a);
    assert_eq!((job.state, job.queue.as_str()), (JobState::Ready, "review"));
    assert_eq!(
        job.labels
            .get(crate::job::ESCALATED_FROM_LABEL)
            .map(String::as_str),
        Some("q")
    );
    assert_eq!(job.last_error_class, "fatal_input");
    assert!(
        job.events.iter().any(|e| matches!(
            &e.kind,
            EventKind::Failed {
                then: AfterFailed::Escalated { to, why: Exhausted::NoRetryClass },
                class,
                attempt: 1,
                worker,
            } if to == "review" && class == "fatal_input" && worker == "w"
        )),
        "{:?}",
        job.events
    );
    assert_eq!(h.m.stats().queues["q"].pending(), 0);
    // In the review queue it counts retries afresh: one retry (immediate),
    // then the review queue is where it already is, so it is dead.
    let leased = h.lease(5, "w", &["review"], 1);
    assert_eq!(
        leased[0].attempts, 2,
        "the attempt number goes on: it fences leases"
    );
    fail_as(&mut h, 6, a, 2, "boom");
    assert_eq!(h.job(a).state, JobState::Ready, "retried at once");
    h.lease(7, "w", &["review"], 1);
    fail_as(&mut h, 8, a, 3, "boom");
    let job = h.job(a);
    assert_eq!(job.state, JobState::Dead);
    assert!(
        job.events
            .iter()
            .filter(|e| matches!(e.kind, EventKind::Failed { .. }))
            .count()
            == 3,
        "the history is kept: {:?}",
        job.events
    );
    // Without escalation, a type's own max_retries decides.
    h.run(
        9,
        retry_policies(vec![(
            "*",
            RetryPolicy {
                max_retries: Some(0),
                ..Default::default()
            },
        )]),
    );
    let b = h.enqueue(10, "q", 3);
    h.lease(11, "w", &["q"], 1);
    fail_as(&mut h, 12, b, 1, "boom");
    assert_eq!(h.job(b).state, JobState::Dead);
    assert!(matches!(
        h.job(b).events.last().unwrap().kind,
        EventKind::Failed {
            then: AfterFailed::Dead {
                why: Exhausted::OutOfRetries { max_retries: 0 }
            },
            ..
        }
    ));
}

#[test]
fn dead_jobs_replay_with_fresh_retries_purge_and_stuck_leases_requeue() {
    let mut h = Harness::new();
    h.run(
        1,
        retry_policies(vec![(
            "*",
            crate::policies::RetryPolicy {
                max_retries: Some(0),
                ..Default::default()
            },
        )]),
    );
    let a = h.enqueue(2, "q", 3);
    let b = h.enqueue(2, "q", 3);
    let live = h.enqueue(2, "other", 3);
    h.lease(3, "w", &["q"], 2);
    fail_as(&mut h, 4, a, 1, "boom");
    fail_as(&mut h, 4, b, 1, "bad_input");
    let stats = h.m.stats();
    assert_eq!(stats.dead_by_class["q"]["boom"], 1);
    assert_eq!(stats.dead_by_class["q"]["bad_input"], 1);

    // Replay acts only on dead jobs.
    let before = h.m.digest().unwrap();
    match h.run(
        5,
        Command::Replay(crate::command::Replay {
            ids: vec![live, 999],
        }),
    ) {
        Outcome::Replayed(ids) => assert!(ids.is_empty()),
        o => panic!("{o:?}"),
    }
    assert_eq!(
        h.m.digest().unwrap(),
        before,
        "nothing dead named: nothing changed"
    );
    match h.run(6, Command::Replay(crate::command::Replay { ids: vec![a] })) {
        Outcome::Replayed(ids) => assert_eq!(ids, vec![a]),
        o => panic!("{o:?}"),
    }
    let job = h.job(a);
    assert_eq!((job.state, job.attempts), (JobState::Ready, 1));
    assert!(
        job.events
            .iter()
            .any(|e| e.kind.error_class() == Some("boom")),
        "the past is kept"
    );
    assert!(!h.m.stats().dead_by_class["q"].contains_key("boom"));
    // Its retries count afresh: it fails once more and is dead again.
    h.lease(7, "w", &["q"], 1);
    fail_as(&mut h, 8, a, 2, "boom");
    assert_eq!(h.job(a).state, JobState::Dead);

    match h.run(
        9,
        Command::PurgeDead(crate::command::PurgeDead { ids: vec![b, live] }),
    ) {
        Outcome::Removed(n) => assert_eq!(n, 1),
        o => panic!("{o:?}"),
    }
    assert!(h.m.reader().job(b).unwrap().is_none());
    assert!(h.m.reader().job(live).unwrap().is_some());
    // Retention later meets the purged job's index entry and skips it.
    let (jobs, _, _) = purge(&mut h, 10_000_000, KEEP);
    assert_eq!(jobs, 1, "only a (dead again) goes");

    let c = h.enqueue(20, "q", 3);
    h.lease(21, "w", &["q"], 1);
    let requeue = |h: &mut Harness, attempt| match h.run(
        22,
        Command::Requeue(crate::command::Requeue {
            leases: vec![(c, attempt)],
            reason: "stuck".into(),
        }),
    ) {
        Outcome::Requeued(ids) => ids,
        o => panic!("{o:?}"),
    };
    assert!(
        requeue(&mut h, 7).is_empty(),
        "another attempt's lease is not taken"
    );
    assert_eq!(requeue(&mut h, 1), vec![c]);
    assert_eq!(h.job(c).state, JobState::Ready);
    assert_eq!(h.m.stats().totals.requeued_stuck, 1);
    assert!(h.complete(23, c, 1).is_err(), "the old lease is stale");
}

#[test]
fn a_breaker_opens_holds_its_scope_lets_one_probe_through_and_closes_or_reopens() {
    let mut policies = crate::policies::Policies {
        jobs: CFG,
        ..Default::default()
    };
    policies.queues.insert(
        "*".into(),
        crate::policies::QueuePolicy {
            breaker: Some(crate::policies::QueueBreaker {
                threshold: Some(2),
                window_ms: Some(1_000),
                cooldown_ms: Some(500),
                ..Default::default()
            }),
            ..Default::default()
        },
    );
    policies.retry.insert(
        "*".into(),
        crate::policies::RetryPolicy {
            max_retries: Some(0),
            ..Default::default()
        },
    );
    let mut h = Harness::new();
    h.run(1, Command::SetPolicies { policies });
    let ids: Vec<JobId> = (0..6).map(|_| h.enqueue(2, "q", 3)).collect();
    // Two failures of one class within the window open it.
    let leased = h.lease(10, "w", &["q"], 2);
    assert_eq!(
        leased.iter().map(|j| j.id).collect::<Vec<_>>(),
        vec![ids[0], ids[1]]
    );
    fail_as(&mut h, 20, ids[0], 1, "smtp");
    fail_as(&mut h, 30, ids[1], 1, "smtp");
    let scope = ("q".to_string(), "default".to_string(), "smtp".to_string());
    assert_eq!(
        h.m.stats().breakers[&scope].state,
        breaker::BreakerState::Open
    );
    assert_eq!(
        h.m.reader().waiting(&h.job(ids[2])).unwrap().as_deref(),
        Some("held: breaker")
    );
    // Held: the scope's jobs wait; another tenant's are leased.
    let mut other = new_job("q", 3);
    other.tenant = "other".into();
    let other = enqueue_all(&mut h, 35, vec![other])[0];
    let leased = h.lease(40, "w", &["q"], 5);
    assert_eq!(leased.iter().map(|j| j.id).collect::<Vec<_>>(), vec![other]);
    assert!(h.m.stats().blocked.contains("q"), "nothing else to lease");
    h.complete(41, other, 1).unwrap();
    assert_eq!(
        h.m.next_due_ms(),
        Some(530),
        "a tick is due when the cooldown ends"
    );
    // After the cooldown, one job goes through.
    h.run(530, Command::Tick);
    assert_eq!(
        h.m.stats().breakers[&scope].state,
        breaker::BreakerState::HalfOpen
    );
    let probe = h.lease(531, "w", &["q"], 5);
    assert_eq!(probe.len(), 1, "one probe");
    assert!(h.lease(532, "w", &["q"], 5).is_empty());
    // Its failure opens it again.
    fail_as(&mut h, 540, probe[0].id, 1, "smtp");
    assert_eq!(
        h.m.stats().breakers[&scope].state,
        breaker::BreakerState::Open
    );
    // Half-open again; this probe succeeds and closes it.
    h.run(1_040, Command::Tick);
    let probe = h.lease(1_041, "w", &["q"], 5);
    assert_eq!(probe.len(), 1);
    h.complete(1_050, probe[0].id, 1).unwrap();
    assert!(
        !h.m.stats().breakers.contains_key(&scope),
        "closed and forgotten"
    );
    assert_eq!(
        h.lease(1_060, "w", &["q"], 5).len(),
        2,
        "the rest flow again"
    );
    // Reset closes one that is open, and changes nothing when none is.
    fail_as(&mut h, 1_070, ids[4], 1, "smtp");
    fail_as(&mut h, 1_080, ids[5], 1, "smtp");
    assert!(matches!(
        h.run(
            1_090,
            Command::ResetBreakers(crate::command::ResetBreakers {
                scope: Some(scope.clone())
            })
        ),
        Outcome::Removed(1)
    ));
    let before = h.m.digest().unwrap();
    assert!(matches!(
        h.run(
            1_100,
            Command::ResetBreakers(crate::command::ResetBreakers { scope: None })
        ),
        Outcome::Removed(0)
    ));
    assert_eq!(h.m.digest().unwrap(), before);
    // Replay gives the same state.
    let mut fresh = Harness::new();
    for (i, e) in h.log.iter().enumerate() {
        fresh.m.apply(i as u64 + 1, 1, e).unwrap();
    }
    fresh.m.commit().unwrap();
    assert_eq!(fresh.m.digest().unwrap(), h.m.digest().unwrap());
}

#[test]
fn a_lease_past_its_timeout_fails_with_class_timeout_however_well_it_heartbeats() {
    let mut h = Harness::new();
    let mut policies = crate::policies::Policies {
        jobs: CFG,
        ..Default::default()
    };
    policies.queues.insert(
        "q".into(),
        crate::policies::QueuePolicy {
            timeout_ms: Some(500),
            ..Default::default()
        },
    );
    h.run(1, Command::SetPolicies { policies });
    let a = h.enqueue(2, "q", 3);
    let mut own = new_job("q", 3);
    own.labels
        .insert(crate::job::TIMEOUT_LABEL.into(), "5000".into());
    let b = enqueue_all(&mut h, 2, vec![own])[0];
    h.lease(10, "w", &["q"], 2);
    assert_eq!(h.m.next_due_ms(), Some(510));
    let beat = |h: &mut Harness, at| {
        h.run(
            at,
            Command::Heartbeat {
                worker: "w".into(),
                leases: vec![
                    LeaseBeat {
                        job_id: a,
                        attempt: 1,
                        progress: None,
                    },
                    LeaseBeat {
                        job_id: b,
                        attempt: 1,
                        progress: None,
                    },
                ],
            },
        )
    };
    beat(&mut h, 300);
    h.run(400, Command::Tick);
    assert_eq!(h.job(a).state, JobState::Leased);
    h.run(510, Command::Tick);
    let job = h.job(a);
    assert_eq!(
        (job.state, job.last_error_class.as_str()),
        (JobState::Scheduled, "timeout")
    );
    let events = h.m.take_lease_events();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!((events[0].event, events[0].job_id), ("queue_timeout", a));
    // The job's own timeout stands over its queue's.
    assert_eq!(h.job(b).state, JobState::Leased);
    match beat(&mut h, 600) {
        Outcome::Acks(v) => assert!(v[0].is_err() && v[1].is_ok(), "{v:?}"),
        o => panic!("{o:?}"),
    }
    // A reopened machine finds the same deadline.
    h.m.commit().unwrap();
    let reopened = Machine::open(h.m.tree().clone()).unwrap();
    assert_eq!(reopened.next_due_ms(), h.m.next_due_ms());
}

fn budget_policies(budgets: crate::policies::Budgets) -> Command {
    Command::SetPolicies {
        policies: crate::policies::Policies {
            jobs: CFG,
            budgets,
            ..Default::default()
        },
    }
}

fn run_job(tenant: &str, run: &str) -> NewJob {
    NewJob {
        tenant: tenant.into(),
        run_id: run.into(),
        ..new_job("q", 3)
    }
}

fn enqueue_run(h: &mut Harness, at: u64, run: &str) -> Outcome {
    h.run(
        at,
        Command::Enqueue {
            jobs: vec![run_job("acme", run)],
        },
    )
}

fn complete_costing(h: &mut Harness, at: u64, id: JobId, attempt: u32, micros: u64) {
    let usage = crate::command::Usage {
        cost_micros: micros,
        named: [("tokens_in".to_string(), 100)].into_iter().collect(),
    };
    let items = vec![(
        Completion {
            job_id: id,
            attempt,
            result: Bytes::new(),
        },
        usage,
    )];
    match h.run(
        at,
        Command::CompleteWithUsage {
            worker: "w".into(),
            items,
        },
    ) {
        Outcome::Acks(v) => assert!(v[0].is_ok(), "{v:?}"),
        o => panic!("{o:?}"),
    }
}

#[test]
fn a_run_is_held_exactly_at_its_cost_budget_and_an_override_releases_it() {
    let mut h = Harness::new();
    h.run(
        0,
        budget_policies(crate::policies::Budgets {
            cost_micros: Some(50_000),
            ..Default::default()
        }),
    );
    for i in 0..5 {
        enqueue_run(&mut h, 1 + i, "r1");
    }
    for n in 0..3u64 {
        let leased = h.lease(10 + n * 10, "w", &["q"], 1);
        assert_eq!(leased.len(), 1, "job {n} of the run is leased");
        complete_costing(&mut h, 15 + n * 10, leased[0].id, 1, 20_000);
    }
    // 0.06 of 0.05 USD: held after the third, not one job later.
    let run = h.m.reader().run("acme", "r1").unwrap().unwrap();
    assert_eq!(run.over.as_deref(), Some("cost_usd"));
    assert_eq!(run.usage.cost_micros, 60_000);
    assert_eq!(run.usage.named["tokens_in"], 300);
    assert_eq!((run.enqueued, run.succeeded), (5, 3));
    let other = h.enqueue(45, "q", 3);
    let leased = h.lease(50, "w", &["q"], 5);
    assert_eq!(
        leased.iter().map(|j| j.id).collect::<Vec<_>>(),
        vec![other],
        "the held run's jobs wait; others go on"
    );
    match enqueue_run(&mut h, 51, "r1") {
        Outcome::Rejected(Refusal::BudgetExceeded { budget, usage, .. }) => {
            assert_eq!(budget, "cost_usd");
            assert_eq!(usage, "0.06 of 0.05 USD");
        }
        o => panic!("{o:?}"),
    }
    assert!(matches!(
        enqueue_run(&mut h, 52, "r2"),
        Outcome::Enqueued(_)
    ));
    assert_eq!(h.m.stats().budgets.runs_over_budget, 1);
    assert_eq!(h.m.run_totals().exceeded["cost_usd"]["acme"], 1);
    assert!(matches!(
        h.m.take_run_events().first(),
        Some(runs::RunEvent::BudgetExceeded { .. })
    ));

    let unknown = Command::OverrideRun(crate::command::OverrideRun {
        tenant: "acme".into(),
        run: "nope".into(),
        limits: Box::default(),
    });
    assert!(matches!(
        h.run(60, unknown),
        Outcome::Rejected(Refusal::UnknownRun { .. })
    ));
    let raise = Command::OverrideRun(crate::command::OverrideRun {
        tenant: "acme".into(),
        run: "r1".into(),
        limits: Box::new(crate::policies::Budgets {
            cost_micros: Some(100_000),
            ..Default::default()
        }),
    });
    assert_eq!(h.run(61, raise), Outcome::RunBudget { over: None });
    let leased = h.lease(62, "w", &["q"], 5);
    assert_eq!(leased.len(), 3, "the run's two and r2's: {leased:?}");

    // The same log gives the same usage and state on another node.
    let digest = h.m.digest().unwrap();
    let mut fresh = Harness::new();
    for (i, e) in h.log.iter().enumerate() {
        fresh.m.apply(i as u64 + 1, 1, e).unwrap();
    }
    fresh.m.commit().unwrap();
    assert_eq!(fresh.m.digest().unwrap(), digest);
    assert_eq!(
        fresh.m.reader().run("acme", "r1").unwrap(),
        h.m.reader().run("acme", "r1").unwrap()
    );
}

#[test]
fn attempts_and_time_budgets_hold_at_their_limits() {
    let mut h = Harness::new();
    h.run(
        0,
        budget_policies(crate::policies::Budgets {
            attempts: Some(2),
            time_ms: Some(1_000),
            ..Default::default()
        }),
    );
    for i in 0..4 {
        enqueue_run(&mut h, 1 + i, "a");
    }
    assert_eq!(
        h.lease(10, "w", &["q"], 5).len(),
        2,
        "two attempts, no more"
    );
    assert_eq!(
        h.m.reader()
            .run("acme", "a")
            .unwrap()
            .unwrap()
            .over
            .as_deref(),
        Some("attempts")
    );

    let mut h = Harness::new();
    h.run(
        0,
        budget_policies(crate::policies::Budgets {
            time_ms: Some(1_000),
            ..Default::default()
        }),
    );
    for i in 0..3 {
        enqueue_run(&mut h, 1 + i, "t");
    }
    let first = h.lease(10, "w", &["q"], 1)[0].id;
    h.complete(610, first, 1).unwrap();
    let second = h.lease(620, "w", &["q"], 1)[0].id;
    assert!(h
        .m
        .reader()
        .run("acme", "t")
        .unwrap()
        .unwrap()
        .over
        .is_none());
    h.complete(1_020, second, 1).unwrap();
    let run = h.m.reader().run("acme", "t").unwrap().unwrap();
    assert_eq!(
        (run.usage.lease_ms, run.over.as_deref()),
        (1_000, Some("time"))
    );
    assert!(h.lease(1_030, "w", &["q"], 1).is_empty());
    assert_eq!(h.job(second).lease_ms, 400);
}

#[test]
fn a_tenant_over_its_daily_cap_waits_for_the_next_utc_day() {
    const DAY: u64 = 86_400_000;
    let mut h = Harness::new();
    h.run(0, daily_cap_policies(1_000_000));
    let start = 10 * DAY + 1_000;
    for i in 0..3 {
        enqueue_run(&mut h, start + i, "");
    }
    let id = h.lease(start + 10, "w", &["q"], 1)[0].id;
    complete_costing(&mut h, start + 20, id, 1, 1_000_000);
    assert!(h.m.stats().budgets.capped_tenants.contains("acme"));
    assert!(h.lease(start + 30, "w", &["q"], 5).is_empty());
    assert!(matches!(
        enqueue_run(&mut h, start + 40, "x"),
        Outcome::Rejected(Refusal::BudgetExceeded { .. })
    ));
    // Still the same UTC day of the log's time.
    h.run(11 * DAY - 1, Command::Tick);
    assert!(h.lease(11 * DAY - 1, "w", &["q"], 5).is_empty());
    // The next day frees it.
    h.run(11 * DAY, Command::Tick);
    assert!(h.m.stats().budgets.capped_tenants.is_empty());
    assert_eq!(h.lease(11 * DAY + 1, "w", &["q"], 5).len(), 2);
}

fn after(queue: &str, deps: &str, run_anyway: bool) -> NewJob {
    let mut job = new_job(queue, 3);
    job.labels
        .insert(crate::job::AFTER_LABEL.into(), deps.into());
    if run_anyway {
        job.labels
            .insert(crate::job::ON_DEPENDENCY_FAILURE_LABEL.into(), "run".into());
    }
    job
}

fn enqueue_batch(h: &mut Harness, at: u64, jobs: Vec<NewJob>) -> Vec<JobId> {
    match h.run(at, Command::Enqueue { jobs }) {
        Outcome::Enqueued(v) => v.into_iter().map(|e| e.id).collect(),
        o => panic!("{o:?}"),
    }
}

#[test]
fn a_dependency_chain_runs_in_order_and_survives_a_reopen() {
    let mut h = Harness::new();
    let ids = enqueue_batch(
        &mut h,
        1,
        vec![
            new_job("q", 3),
            after("q", "@0", false),
            after("q", "@1", false),
        ],
    );
    let (a, b, c) = (ids[0], ids[1], ids[2]);
    assert_eq!(h.job(b).state, JobState::Waiting);
    assert_eq!((h.job(c).after.clone(), h.job(c).waiting_for), (vec![b], 1));
    assert_eq!(h.m.stats().queues["q"].waiting, 2);
    let leased = h.lease(2, "w", &["q"], 10);
    assert_eq!(leased.iter().map(|j| j.id).collect::<Vec<_>>(), vec![a]);
    // A reopened machine knows who waits for whom.
    let digest = h.m.digest().unwrap();
    h.m = Machine::open(h.db.open_tree("machine").unwrap()).unwrap();
    assert_eq!(h.m.digest().unwrap(), digest);
    h.complete(3, a, 1).unwrap();
    assert_eq!(h.job(b).state, JobState::Ready);
    assert_eq!(h.job(c).state, JobState::Waiting);
    assert!(h
        .job(b)
        .events
        .iter()
        .any(|e| e.kind == EventKind::DependenciesMet));
    assert_eq!(h.lease(4, "w", &["q"], 10)[0].id, b);
    h.complete(5, b, 1).unwrap();
    assert_eq!(h.lease(6, "w", &["q"], 10)[0].id, c);
}

#[test]
fn a_failed_dependency_cancels_its_waiters_unless_they_run_anyway() {
    let mut h = Harness::new();
    h.run(
        0,
        retry_policies(vec![(
            "*",
            crate::policies::RetryPolicy {
                max_retries: Some(0),
                ..Default::default()
            },
        )]),
    );
    let ids = enqueue_batch(
        &mut h,
        1,
        vec![
            new_job("q", 3),
            after("q", "@0", false),
            after("q", "@1", false),
            after("q", "@0", true),
        ],
    );
    let (a, b, c, d) = (ids[0], ids[1], ids[2], ids[3]);
    h.lease(2, "w", &["q"], 1);
    fail_as(&mut h, 3, a, 1, "boom");
    assert_eq!(h.job(a).state, JobState::Dead);
    assert_eq!(h.job(b).state, JobState::Cancelled);
    assert_eq!(h.job(c).state, JobState::Cancelled, "the chain follows");
    assert!(h.job(b).events.iter().any(|e| e.kind
        == EventKind::DependencyFailed {
            job: a,
            state: JobState::Dead
        }));
    assert_eq!(h.job(d).state, JobState::Ready, "runs anyway");
    assert_eq!(h.m.stats().queues["q"].waiting, 0);
}

#[test]
fn bad_dependencies_are_refused_and_change_nothing() {
    let mut h = Harness::new();
    let theirs = match h.run(
        1,
        Command::Enqueue {
            jobs: vec![run_job("other", "")],
        },
    ) {
        Outcome::Enqueued(v) => v[0].id,
        o => panic!("{o:?}"),
    };
    let before = h.m.digest().unwrap();
    for (jobs, mentions) in [
        (vec![after("q", "@0", false)], "@0 must name an earlier job"),
        (
            vec![new_job("q", 3), after("q", "@1", false)],
            "@1 must name an earlier job",
        ),
        (vec![after("q", "999", false)], "job 999 does not exist"),
        (
            vec![after("q", &theirs.to_string(), false)],
            "another tenant",
        ),
    ] {
        match h.run(2, Command::Enqueue { jobs }) {
            Outcome::Rejected(r @ Refusal::BadDependency { .. }) => {
                assert!(r.to_string().contains(mentions), "{r}")
            }
            o => panic!("{o:?}"),
        }
    }
    h.m.commit().unwrap();
    assert_eq!(h.m.digest().unwrap(), before);
}

#[test]
fn raised_policies_release_held_runs() {
    let mut h = Harness::new();
    let attempts = |n| {
        budget_policies(crate::policies::Budgets {
            attempts: Some(n),
            ..Default::default()
        })
    };
    h.run(0, attempts(1));
    enqueue_run(&mut h, 1, "r");
    enqueue_run(&mut h, 2, "r");
    assert_eq!(h.lease(3, "w", &["q"], 5).len(), 1);
    assert!(h.lease(4, "w", &["q"], 5).is_empty(), "held at one attempt");
    h.run(5, attempts(5));
    assert_eq!(
        h.lease(6, "w", &["q"], 5).len(),
        1,
        "released by the new limit"
    );
    assert_eq!(h.m.stats().budgets.runs_over_budget, 0);
}

#[test]
fn a_cancelled_lease_counts_its_time_against_the_run() {
    let mut h = Harness::new();
    enqueue_run(&mut h, 1, "r");
    let id = h.lease(10, "w", &["q"], 1)[0].id;
    assert!(matches!(
        h.run(510, Command::Cancel(crate::command::Cancel { id })),
        Outcome::Cancelled(Ok(JobState::Leased))
    ));
    let run = h.m.reader().run("acme", "r").unwrap().unwrap();
    assert_eq!((run.usage.lease_ms, run.cancelled), (500, 1));
    assert_eq!(h.job(id).lease_ms, 500);
}

#[test]
fn a_waiter_on_a_duplicate_of_a_failed_job_is_cancelled() {
    let mut h = Harness::new();
    h.run(
        0,
        retry_policies(vec![(
            "*",
            crate::policies::RetryPolicy {
                max_retries: Some(0),
                ..Default::default()
            },
        )]),
    );
    let mut keyed = new_job("q", 3);
    keyed.idempotency_key = "k".into();
    let dead = enqueue_batch(&mut h, 1, vec![keyed.clone()])[0];
    h.lease(2, "w", &["q"], 1);
    fail_as(&mut h, 3, dead, 1, "boom");
    assert_eq!(h.job(dead).state, JobState::Dead);
    // The batch's @0 is the duplicate of the dead job.
    let ids = enqueue_batch(&mut h, 4, vec![keyed, after("q", "@0", false)]);
    assert_eq!(ids[0], dead);
    let waiter = h.job(ids[1]);
    assert_eq!(waiter.state, JobState::Cancelled, "{waiter:?}");
    assert!(h.lease(5, "w", &["q"], 5).is_empty());
}

#[test]
fn a_capped_tenant_spending_on_the_next_day_before_a_tick_is_uncapped_everywhere() {
    const DAY: u64 = 86_400_000;
    let mut h = Harness::new();
    h.run(0, daily_cap_policies(1_000));
    for i in 0..3 {
        enqueue_run(&mut h, DAY + i, "");
    }
    let ids: Vec<JobId> = h
        .lease(DAY + 10, "w", &["q"], 2)
        .iter()
        .map(|j| j.id)
        .collect();
    complete_costing(&mut h, DAY + 20, ids[0], 1, 1_000);
    assert!(h.m.stats().budgets.capped_tenants.contains("acme"));
    // The next day, a result with a cost comes before any tick.
    complete_costing(&mut h, 2 * DAY + 1, ids[1], 1, 10);
    assert!(h.m.stats().budgets.capped_tenants.is_empty());
    let digest = h.m.digest().unwrap();
    let reopened = Machine::open(h.db.open_tree("machine").unwrap()).unwrap();
    assert_eq!(reopened.digest().unwrap(), digest);
    assert_eq!(
        reopened.stats().budgets.capped_tenants,
        h.m.stats().budgets.capped_tenants
    );
    assert_eq!(h.lease(2 * DAY + 2, "w", &["q"], 5).len(), 1);
}

/// Policies with tenant acme's daily cost cap, in millionths of a USD.
fn daily_cap_policies(cap_micros: u64) -> Command {
    let mut policies = crate::policies::Policies {
        jobs: CFG,
        ..Default::default()
    };
    policies.tenants.insert(
        "acme".into(),
        crate::policies::TenantPolicy {
            budgets: crate::policies::Budgets {
                daily_cost_cap_micros: Some(cap_micros),
                ..Default::default()
            },
            ..Default::default()
        },
    );
    Command::SetPolicies { policies }
}

#[test]
fn a_switched_off_version_leases_none_of_the_jobs_its_switch_covers() {
    use crate::command::VersionSwitch;
    let mut h = Harness::new();
    let enqueue_for = |h: &mut Harness, queue: &str, tenant: &str| {
        let mut job = new_job(queue, 3);
        job.tenant = tenant.into();
        match h.run(1, Command::Enqueue { jobs: vec![job] }) {
            Outcome::Enqueued(v) => v[0].id,
            o => panic!("unexpected {o:?}"),
        }
    };
    let a = enqueue_for(&mut h, "q", "acme");
    let b = enqueue_for(&mut h, "q", "beta");
    let lease_as = |h: &mut Harness, at: u64, version: &str| -> Vec<JobId> {
        match h.run(
            at,
            Command::LeaseAs {
                worker: format!("w-{version}"),
                version: version.into(),
                queues: vec!["q".into()],
                max: 10,
            },
        ) {
            Outcome::Leased(v) => v.into_iter().map(|l| l.job.id).collect(),
            o => panic!("unexpected {o:?}"),
        }
    };
    let v4_for_acme = VersionSwitch {
        version: "v4".into(),
        queue: Some("q".into()),
        tenant: Some("acme".into()),
    };
    let off = Command::SwitchVersion(crate::command::SwitchVersion {
        switch: v4_for_acme.clone(),
        enabled: false,
    });
    assert_eq!(h.run(2, off.clone()), Outcome::Noop);
    assert_eq!(
        h.run(3, off),
        Outcome::Noop,
        "switching off twice is one switch"
    );
    assert_eq!(
        lease_as(&mut h, 4, "v4"),
        vec![b],
        "v4 gets only the other tenant's job"
    );
    // The switch is replicated state: a reopened node keeps it.
    let digest = h.m.digest().unwrap();
    h.m = Machine::open(h.db.open_tree("machine").unwrap()).unwrap();
    assert_eq!(h.m.digest().unwrap(), digest);
    assert!(h.m.stats().version_switches.contains(&v4_for_acme));
    assert!(
        lease_as(&mut h, 5, "v4").is_empty(),
        "acme's job waits for another version"
    );
    assert_eq!(lease_as(&mut h, 6, "v3"), vec![a], "other versions take it");

    let c = enqueue_for(&mut h, "q", "acme");
    let on = |switch: VersionSwitch| {
        Command::SwitchVersion(crate::command::SwitchVersion {
            switch,
            enabled: true,
        })
    };
    let unknown = VersionSwitch {
        version: "v9".into(),
        queue: None,
        tenant: None,
    };
    assert_eq!(
        h.run(7, on(unknown)),
        Outcome::Rejected(Refusal::NotSwitchedOff {
            switch: "version v9".into()
        })
    );
    assert_eq!(h.run(8, on(v4_for_acme)), Outcome::Noop);
    assert_eq!(lease_as(&mut h, 9, "v4"), vec![c], "switched on again");
    // A plain lease (a worker with no version) is never held back.
    let all = VersionSwitch {
        version: "v4".into(),
        queue: None,
        tenant: None,
    };
    h.run(
        10,
        Command::SwitchVersion(crate::command::SwitchVersion {
            switch: all,
            enabled: false,
        }),
    );
    let d = enqueue_for(&mut h, "q", "acme");
    assert!(lease_as(&mut h, 11, "v4").is_empty());
    assert_eq!(
        h.lease(12, "plain", &["q"], 5)
            .iter()
            .map(|j| j.id)
            .collect::<Vec<_>>(),
        vec![d]
    );
}

#[test]
fn a_command_of_a_newer_format_is_downgraded_or_refused() {
    use crate::command::VersionSwitch;
    let lease = Command::LeaseAs {
        worker: "w".into(),
        version: "v4".into(),
        queues: vec!["q".into()],
        max: 3,
    };
    assert_eq!(lease.min_format(), 2);
    assert_eq!(lease.clone().for_format(2), Some(lease.clone()));
    assert_eq!(
        lease.for_format(1),
        Some(Command::Lease {
            worker: "w".into(),
            queues: vec!["q".into()],
            max: 3
        }),
        "a lease loses its version while the cluster is upgrading"
    );
    let switch = Command::SwitchVersion(crate::command::SwitchVersion {
        switch: VersionSwitch {
            version: "v4".into(),
            queue: None,
            tenant: None,
        },
        enabled: false,
    });
    assert!(
        switch.clone().for_format(1).is_none(),
        "a switch waits for format 2"
    );
    assert_eq!(Command::Tick.min_format(), 1);
}

#[test]
fn a_canary_gets_its_share_and_only_its_share_of_the_queue() {
    use crate::command::CanaryRule;
    let mut h = Harness::new();
    let rule = CanaryRule {
        version: "v4".into(),
        percent: 10,
        max_wait_ms: 60_000,
    };
    let set = Command::SetCanary(crate::command::SetCanary {
        queue: "q".into(),
        rule: Some(rule.clone()),
    });
    assert_eq!(h.run(1, set), Outcome::Noop);
    for _ in 0..20 {
        let jobs = (0..500).map(|_| new_job("q", 3)).collect();
        h.run(2, Command::Enqueue { jobs });
    }
    let lease_as = |h: &mut Harness, at: u64, version: &str, max: u32| -> Vec<JobId> {
        match h.run(
            at,
            Command::LeaseAs {
                worker: format!("w-{version}"),
                version: version.into(),
                queues: vec!["q".into()],
                max,
            },
        ) {
            Outcome::Leased(v) => v.into_iter().map(|l| l.job.id).collect(),
            o => panic!("unexpected {o:?}"),
        }
    };
    let (mut canary, mut control) = (Vec::new(), Vec::new());
    for round in 0..400 {
        let a = lease_as(&mut h, 3, "v4", 50);
        let b = lease_as(&mut h, 3, "v3", 50);
        if a.is_empty() && b.is_empty() {
            break;
        }
        assert!(round < 399, "dispatch did not finish");
        canary.extend(a);
        control.extend(b);
    }
    assert_eq!(
        canary.len() + control.len(),
        10_000,
        "every job dispatched once"
    );
    let share = canary.len() as f64 / 100.0;
    assert!(
        (8.5..=11.5).contains(&share),
        "the canary got {share}% of 10,000"
    );
    assert!(canary.iter().all(|&id| rule.covers(id)), "only its share");
    assert!(
        control.iter().all(|&id| !rule.covers(id)),
        "none of its share"
    );

    // A canary job no canary worker takes goes to the others after max_wait.
    let id = loop {
        let id = h.enqueue(100_000, "q", 3);
        if rule.covers(id) {
            break id;
        }
        lease_as(&mut h, 100_000, "v3", 10);
    };
    assert!(lease_as(&mut h, 100_000 + 59_999, "v3", 10).is_empty());
    assert_eq!(lease_as(&mut h, 100_000 + 60_000, "v3", 10), vec![id]);
    // A rule survives a reopen; ending one that is gone is refused.
    h.m = Machine::open(h.db.open_tree("machine").unwrap()).unwrap();
    assert_eq!(h.m.stats().canaries["q"], rule);
    let end = || {
        Command::SetCanary(crate::command::SetCanary {
            queue: "q".into(),
            rule: None,
        })
    };
    assert_eq!(h.run(200_000, end()), Outcome::Noop);
    assert_eq!(
        h.run(200_001, end()),
        Outcome::Rejected(Refusal::NoCanary { queue: "q".into() })
    );
}

#[test]
fn every_prefix_names_one_record_kind() {
    let mut seen = std::collections::BTreeMap::new();
    for (name, byte) in super::keys::PREFIXES {
        if let Some(other) = seen.insert(*byte, *name) {
            panic!(
                "{name} and {other} share the prefix {:?}",
                char::from(*byte)
            );
        }
    }
    assert!(seen.len() >= 29);
}

#[test]
fn a_worker_is_quarantined_at_its_failure_rate_once_it_sent_enough() {
    use super::quarantine::judge;
    let policy = crate::policies::QuarantinePolicy {
        failure_rate: 0.5,
        window_ms: 60_000,
        min_jobs: 10,
        for_ms: 60_000,
        restart: false,
    };
    assert!(!judge(&policy, 0, 9), "9 failures are under min_jobs");
    assert!(judge(&policy, 0, 10));
    assert!(judge(&policy, 5, 5), "at the rate");
    assert!(!judge(&policy, 6, 4), "under the rate");
    assert!(!judge(&policy, 0, 0));
    assert!(judge(&policy, u64::MAX, u64::MAX), "no overflow");
}

/// The ids of up to `max` jobs of "q" leased to worker "w".
fn lease_ids(h: &mut Harness, at: u64, max: u32) -> Vec<JobId> {
    let command = Command::Lease {
        worker: "w".into(),
        queues: vec!["q".into()],
        max,
    };
    match h.run(at, command) {
        Outcome::Leased(v) => v.into_iter().map(|l| l.job.id).collect(),
        o => panic!("unexpected {o:?}"),
    }
}

/// One job of `tenant` in each state, in a run: dead, succeeded (with a
/// result), leased, scheduled, and ready (with an idempotency key). Other
/// tenants' jobs must not be ready.
fn jobs_in_every_state(h: &mut Harness, at: u64, tenant: &str) -> Vec<JobId> {
    let job = |delay_ms: u64, key: &str| NewJob {
        tenant: tenant.into(),
        run_id: format!("run-of-{tenant}"),
        payload: Bytes::from(format!("payload-of-{tenant}")),
        idempotency_key: key.into(),
        delay_ms,
        ..new_job("q", PRIORITY_DEFAULT)
    };
    let mut ids = enqueue_all(h, at, vec![job(0, "")]);
    for attempt in 1..=3u64 {
        let t = at + 2_000 * attempt;
        if attempt > 1 {
            h.run(t, Command::Tick);
        }
        assert_eq!(lease_ids(h, t, 1), vec![ids[0]]);
        h.fail(t + 1, ids[0], attempt as u32).unwrap();
    }
    assert_eq!(h.job(ids[0]).state, JobState::Dead);
    let t = at + 10_000;
    ids.extend(enqueue_all(
        h,
        t,
        vec![job(0, ""), job(0, ""), job(600_000, "")],
    ));
    assert_eq!(lease_ids(h, t + 1, 10), ids[1..3].to_vec());
    h.complete(t + 2, ids[1], 1).unwrap();
    ids.extend(enqueue_all(
        h,
        t + 3,
        vec![job(0, &format!("key-of-{tenant}"))],
    ));
    ids
}

/// Whether any committed record outside the audit log holds `needle`.
fn records_holding(h: &Harness, needle: &[u8]) -> Vec<String> {
    let holds = |b: &[u8]| b.windows(needle.len()).any(|w| w == needle);
    h.m.tree()
        .iter()
        .map(|r| r.unwrap())
        .filter(|(k, _)| k[0] != keys::AUDIT)
        .filter(|(k, v)| holds(k) || holds(v))
        .map(|(k, _)| String::from_utf8_lossy(&k).into_owned())
        .collect()
}

#[test]
fn erasing_a_tenant_leaves_no_record_naming_it_and_others_as_they_were() {
    let mut h = Harness::new();
    let pause = |tenant: &str| {
        Command::Control(crate::command::Control {
            scope: crate::command::QueueScope::Tenant(tenant.into()),
            action: crate::command::QueueAction::Pause,
        })
    };
    let kept = jobs_in_every_state(&mut h, 0, "kept");
    // Paused, so its ready job waits while the other tenant's are leased.
    h.run(50_000, pause("kept"));
    let gone = jobs_in_every_state(&mut h, 100_000, "gone");
    h.run(200_000, pause("gone"));
    h.run(
        200_001,
        Command::SwitchVersion(crate::command::SwitchVersion {
            switch: crate::command::VersionSwitch {
                version: "v2".into(),
                queue: None,
                tenant: Some("gone".into()),
            },
            enabled: false,
        }),
    );
    assert!(!records_holding(&h, b"gone").is_empty());
    let kept_before: Vec<Job> = kept.iter().map(|id| h.job(*id)).collect();

    // Slices of two job records at a time, then the rest one run a time.
    let (mut after, mut erased, mut slices) = (0, 0, 0);
    loop {
        slices += 1;
        assert!(slices < 100);
        let command = Command::EraseTenantJobs(crate::command::EraseTenantJobs {
            tenant: "gone".into(),
            after,
            limit: 2,
        });
        match h.run(300_000, command) {
            Outcome::TenantJobsErased { jobs, next } => {
                erased += jobs;
                match next {
                    Some(n) => after = n,
                    None => break,
                }
            }
            o => panic!("unexpected {o:?}"),
        }
    }
    assert_eq!(erased, 5);
    let mut rest = crate::command::ErasedRecords::default();
    for _ in 0..10 {
        let command = Command::EraseTenant(crate::command::EraseTenant {
            tenant: "gone".into(),
            limit: 1,
        });
        match h.run(300_001, command) {
            Outcome::TenantErased(r) => {
                rest.runs += r.runs;
                rest.other += r.other;
                rest.clocks += r.clocks;
                if !r.more {
                    break;
                }
            }
            o => panic!("unexpected {o:?}"),
        }
    }
    assert_eq!(rest.runs, 1, "{rest:?}");
    assert_eq!(rest.other, 2, "the pause and the version switch: {rest:?}");
    assert_eq!(rest.clocks, 1, "{rest:?}");
    assert_eq!(records_holding(&h, b"gone"), Vec::<String>::new());
    for id in &gone {
        assert_eq!(h.m.reader().job(*id).unwrap(), None);
    }
    let kept_after: Vec<Job> = kept.iter().map(|id| h.job(*id)).collect();
    assert_eq!(kept_after, kept_before);
    assert!(!records_holding(&h, b"payload-of-kept").is_empty());
    // A tenant of that name starts afresh: not paused, its key unused.
    let again = enqueue_all(
        &mut h,
        300_002,
        vec![NewJob {
            tenant: "gone".into(),
            idempotency_key: "key-of-gone".into(),
            ..new_job("q", PRIORITY_DEFAULT)
        }],
    );
    assert!(!gone.contains(&again[0]));
    assert_eq!(lease_ids(&mut h, 300_003, 10), again, "kept is paused");

    // Replayed from the log, a machine comes to the same store.
    let digest = h.m.digest().unwrap();
    let mut fresh = Harness::new();
    for (i, entry) in h.log.iter().enumerate() {
        fresh.m.apply(i as u64 + 1, 1, entry).unwrap();
    }
    fresh.m.commit().unwrap();
    assert_eq!(fresh.m.digest().unwrap(), digest);
}

fn lease_as(h: &mut Harness, at: u64, version: &str) {
    let command = Command::LeaseAs {
        worker: format!("w-{version}"),
        version: version.into(),
        queues: vec!["q".into()],
        max: 1,
    };
    assert!(matches!(h.run(at, command), Outcome::Leased(_)));
}

#[test]
fn versions_are_seen_first_and_last_to_the_minute_and_only_on_layout_4() {
    let mut old = Harness::at_format(3);
    lease_as(&mut old, 1_000, "v1");
    assert!(
        old.m.stats().versions_seen.is_empty(),
        "a format-3 build wrote none"
    );

    let mut h = Harness::new();
    let before = h.m.digest().unwrap();
    lease_as(&mut h, 1_000, "v1");
    let after_first = h.m.digest().unwrap();
    assert_ne!(before, after_first);
    // Within the minute: nothing written.
    lease_as(&mut h, 30_000, "v1");
    assert_eq!(h.m.digest().unwrap(), after_first);
    lease_as(&mut h, 61_000, "v1");
    lease_as(&mut h, 62_000, "v2");
    let seen = h.m.stats().versions_seen;
    assert_eq!(
        seen["v1"],
        versions::Seen {
            first_ms: 1_000,
            last_ms: 61_000
        }
    );
    assert_eq!(
        seen["v2"],
        versions::Seen {
            first_ms: 62_000,
            last_ms: 62_000
        }
    );

    // Bounded: the version seen longest ago makes room.
    for i in 0..versions::SEEN_KEPT {
        lease_as(&mut h, 100_000 + i as u64, &format!("many-{i}"));
    }
    let seen = h.m.stats().versions_seen;
    assert_eq!(seen.len(), versions::SEEN_KEPT);
    assert!(!seen.contains_key("v1") && !seen.contains_key("v2"));

    // Kept across a reopen.
    let tree = h.db.open_tree("machine").unwrap();
    let reopened = Machine::open(tree).unwrap();
    assert_eq!(reopened.stats().versions_seen, seen);
}

#[test]
fn large_payloads_are_spilled_read_back_carried_by_snapshots_and_removed() {
    let dir = tempfile::tempdir().unwrap();
    let db = sled::open(dir.path()).unwrap();
    let spill = crate::spill::Spill::new(dir.path());
    let files = spill.dir("machine");
    let mut m = Machine::open_spilling(db.open_tree("machine").unwrap(), files).unwrap();
    let big = Bytes::from(vec![7u8; SPILL_MIN + 1]);
    let mut large = new_job("q", PRIORITY_DEFAULT);
    large.payload = big.clone();
    let run = |m: &mut Machine, index: u64, command: Command| {
        let entry = LogEntry {
            at_ms: index,
            commands: vec![command],
        };
        let out = m.apply(index, 1, &entry).unwrap().remove(0);
        m.commit().unwrap();
        out
    };
    let jobs = vec![large, new_job("q", PRIORITY_DEFAULT)];
    run(&mut m, 1, Command::Enqueue { jobs });
    let spilled = dir.path().join("spill/machine");
    let count = || std::fs::read_dir(&spilled).unwrap().count();
    assert_eq!(count(), 1, "only the large payload has a file");
    assert!(m.tree().get(key(PAYLOAD, 1)).unwrap().is_none());
    let stored = m.tree().get(key(SPILLED, 1)).unwrap().unwrap();
    assert!(
        Marker::decode(&stored).is_some(),
        "the tree holds its marker, where a build before spilling looks for nothing"
    );
    assert_eq!(m.reader().job_and_payload(1).unwrap().unwrap().1, big);

    // A snapshot carries the bytes; a node loading it spills them again,
    // to the same records.
    let records: Vec<_> = m
        .start_capture()
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(records
        .iter()
        .any(|(k, v)| k[..] == key(PAYLOAD, 1) && v[..] == big[..]));
    let other = spill.dir("machine.9");
    let tree = db.open_tree("machine.9").unwrap();
    for (k, v) in records {
        let (k, v) = stored_form(&other, k.to_vec(), v.to_vec()).unwrap();
        tree.insert(k, v).unwrap();
    }
    let loaded = Machine::open_spilling(tree, other).unwrap();
    assert_eq!(loaded.digest().unwrap(), m.digest().unwrap());
    assert_eq!(loaded.reader().job_and_payload(1).unwrap().unwrap().1, big);

    // A lease hands it out.
    let lease = |max| Command::Lease {
        worker: "w".into(),
        queues: vec!["q".into()],
        max,
    };
    let leased = run(&mut m, 2, lease(2));
    let Outcome::Leased(leased) = leased else {
        panic!("unexpected {leased:?}")
    };
    let payload_of = |id| {
        leased
            .iter()
            .find(|l| l.job.id == id)
            .unwrap()
            .payload
            .clone()
    };
    assert_eq!(payload_of(1), big);
    assert_eq!(payload_of(2), Bytes::from_static(b"payload"));

    // A damaged file leaves its job out of the lease's answer and is
    // reported; the lease is state like any other, and the node goes on.
    let mut large = new_job("q", PRIORITY_DEFAULT);
    large.payload = big.clone();
    run(&mut m, 3, Command::Enqueue { jobs: vec![large] });
    std::fs::write(spilled.join(format!("{:020}-0", 3)), b"damaged").unwrap();
    let leased = run(&mut m, 4, lease(1));
    assert!(
        matches!(&leased, Outcome::Leased(v) if v.is_empty()),
        "{leased:?}"
    );
    let unreadable = m.take_unreadable_payloads();
    assert_eq!(unreadable.len(), 1);
    assert_eq!(unreadable[0].0, 3);
    assert!(unreadable[0].1.contains("damaged"), "{unreadable:?}");
    assert_eq!(m.reader().job(3).unwrap().unwrap().state, JobState::Leased);

    // Erased: the file goes once the erase is durable, not before.
    run(
        &mut m,
        5,
        Command::EraseTenantJobs(crate::command::EraseTenantJobs {
            tenant: "default".into(),
            after: 0,
            limit: 100,
        }),
    );
    assert!(m.tree().get(key(SPILLED, 1)).unwrap().is_none());
    assert_eq!(count(), 2);
    // As the node's flush does it.
    let dropped = spill.before_flush();
    db.flush().unwrap();
    spill.after_flush(dropped);
    spill.settle();
    assert_eq!(count(), 0);
}
