//! Layout 2 to 3: job timelines went from lines of text to typed events.
//! A layout-2 tree (a node's own store, or a snapshot or backup an earlier
//! drover wrote) is rewritten in place when the machine opens it; each old
//! line is kept as an [`EventKind::Note`].

use super::*;
use crate::job::{JobEvent, Progress};

/// The layout this drover can bring up to [`FORMAT_BEFORE_CLOCK_KEYS`]
/// (and from there the log brings it to [`FORMAT`]).
pub(super) const FROM: u8 = 2;
/// Records rewritten per batch: bounds the memory a large store needs.
const CHUNK: usize = 2_000;

#[derive(Deserialize)]
struct OldEvent {
    at_ms: u64,
    what: String,
}

/// A job record as layout 2 stored it: [`Job`] with text events.
#[derive(Deserialize)]
struct OldJob {
    id: JobId,
    queue: String,
    job_type: String,
    tenant: String,
    run_id: String,
    priority: u8,
    state: JobState,
    attempts: u32,
    idempotency_key: String,
    labels: BTreeMap<String, String>,
    enqueued_at_ms: u64,
    run_at_ms: u64,
    lease: Option<Lease>,
    progress: Option<Progress>,
    last_error_class: String,
    last_error: String,
    finished_at_ms: u64,
    events: Vec<OldEvent>,
}

impl From<OldJob> for Job {
    fn from(o: OldJob) -> Job {
        Job {
            id: o.id,
            queue: o.queue,
            job_type: o.job_type,
            tenant: o.tenant,
            run_id: o.run_id,
            priority: o.priority,
            state: o.state,
            attempts: o.attempts,
            idempotency_key: o.idempotency_key,
            labels: o.labels,
            enqueued_at_ms: o.enqueued_at_ms,
            run_at_ms: o.run_at_ms,
            lease: o.lease,
            progress: o.progress,
            last_error_class: o.last_error_class,
            last_error: o.last_error,
            finished_at_ms: o.finished_at_ms,
            events: o
                .events
                .into_iter()
                .map(|e| JobEvent {
                    at_ms: e.at_ms,
                    kind: EventKind::Note(e.what),
                })
                .collect(),
            cost_micros: 0,
            usage: BTreeMap::new(),
            lease_ms: 0,
            after: Vec::new(),
            waiting_for: 0,
        }
    }
}

/// Rewrites every job record of a layout-2 tree, then marks it layout 3.
pub(super) fn migrate(tree: &sled::Tree) -> Result<(), MachineError> {
    let end = [JOB + 1];
    let mut start = match tree.get(PROGRESS_KEY)? {
        Some(last) => after(&last),
        None => vec![JOB],
    };
    loop {
        let mut batch = sled::Batch::default();
        let mut last = None;
        for item in tree.range(start.as_slice()..&end[..]).take(CHUNK) {
            let (k, v) = item?;
            let (old, payload): (OldJob, Payload) = decode(&k, &v)?;
            batch.insert(k.clone(), encode(&(Job::from(old), payload)));
            last = Some(k);
        }
        let Some(last) = last else { break };
        batch.insert(PROGRESS_KEY, last.clone());
        tree.apply_batch(batch)?;
        start = after(&last);
    }
    let mut batch = sled::Batch::default();
    batch.remove(PROGRESS_KEY);
    batch.insert(FORMAT_KEY, &[FORMAT_BEFORE_CLOCK_KEYS]);
    tree.apply_batch(batch)?;
    tree.flush()?;
    Ok(())
}

/// The smallest key after `k`.
fn after(k: &[u8]) -> Vec<u8> {
    let mut next = k.to_vec();
    next.push(0);
    next
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Serialize;

    /// Layout 2's job record, written as an earlier drover wrote it.
    #[derive(Serialize)]
    struct WrittenBy2<'a> {
        job: (JobId, &'a str, &'a str, &'a str, &'a str, u8, JobState, u32),
        idempotency_key: &'a str,
        labels: BTreeMap<String, String>,
        times: (u64, u64),
        lease: Option<Lease>,
        progress: Option<Progress>,
        errors: (&'a str, &'a str),
        finished_at_ms: u64,
        events: Vec<(u64, &'a str)>,
    }

    fn old_record(id: JobId) -> Vec<u8> {
        let job = WrittenBy2 {
            job: (id, "q", "t", "default", "", 3, JobState::Dead, 2),
            idempotency_key: "",
            labels: BTreeMap::new(),
            times: (5, 6),
            lease: None,
            progress: None,
            errors: ("boom", "it broke"),
            finished_at_ms: 9,
            events: vec![
                (5, "enqueued"),
                (9, "failed with boom (attempt 2); dead-lettered"),
            ],
        };
        encode(&(job, Payload::Inline(bytes::Bytes::from_static(b"pay"))))
    }

    #[test]
    fn a_layout_2_store_is_rewritten_on_open_and_a_stopped_rewrite_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let tree = db.open_tree("machine").unwrap();
        tree.insert(FORMAT_KEY, &[FROM]).unwrap();
        for id in 1..=5 {
            tree.insert(key(JOB, id), old_record(id)).unwrap();
        }
        // A rewrite that stopped after job 2: 1 and 2 are in the new layout.
        let mut done: Job = decode::<(OldJob, Payload)>(b"", &old_record(1))
            .unwrap()
            .0
            .into();
        done.events.push(JobEvent {
            at_ms: 10,
            kind: EventKind::Replayed,
        });
        for id in 1..=2 {
            done.id = id;
            tree.insert(
                key(JOB, id),
                encode(&(&done, Payload::Inline(bytes::Bytes::new()))),
            )
            .unwrap();
        }
        tree.insert(PROGRESS_KEY, &key(JOB, 2)).unwrap();

        let m = Machine::open(tree.clone()).expect("a layout-2 store opens");
        assert_eq!(
            tree.get(FORMAT_KEY).unwrap().as_deref(),
            Some(&[FORMAT_BEFORE_CLOCK_KEYS][..])
        );
        assert!(tree.get(PROGRESS_KEY).unwrap().is_none());
        let job = |id| m.reader().job(id).unwrap().unwrap();
        assert_eq!(
            job(2).events.last().unwrap().kind,
            EventKind::Replayed,
            "not rewritten twice"
        );
        let old = job(4);
        assert_eq!((old.id, old.state, old.attempts), (4, JobState::Dead, 2));
        assert_eq!(old.last_error_class, "boom");
        assert_eq!(
            old.events[1],
            JobEvent {
                at_ms: 9,
                kind: EventKind::Note("failed with boom (attempt 2); dead-lettered".into())
            }
        );
        drop(m);
        Machine::open(tree).expect("and opens again as layout 3");
    }
}
