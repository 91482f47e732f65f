//! Erasing a tenant on a real 3-node cluster: with its jobs in every state
//! (succeeded with a result, dead, leased to a live worker, scheduled,
//! ready with an idempotency key, in a run), `drover tenants erase` leaves
//! no record of it in any tree of any node's store once the log has moved
//! past the erasure, and the other tenant's jobs read exactly as before.

mod common;

use std::time::Duration;

use common::*;
use drover::client::Producer;

/// Names that occur nowhere else, so a scan for them finds only the
/// tenant's own records.
const GONE: &str = "tenantgone5151";
const MARKER: &str = "erasure-marker-5151";
const KEPT: &str = "tenantkept7373";

fn job(tenant: &str, queue: &str, payload: &str) -> drover::proto::v1::NewJob {
    drover::proto::v1::NewJob {
        tenant: tenant.into(),
        run_id: format!("run-{tenant}"),
        job_type: "t".into(),
        ..new_job(queue, payload)
    }
}

/// Enqueues one job of `tenant` per state on the queue a worker serves
/// ("work") or none does ("idle"); answers (id, state it reaches).
async fn jobs_in_every_state(p: &mut Producer, tenant: &str) -> Vec<(u64, &'static str)> {
    // Only the erased tenant's payloads carry the marker.
    let mark = if tenant == GONE { MARKER } else { "" };
    let marked = |what: &str| format!("{what}:{tenant}:{mark}");
    let mut ready = job(tenant, "idle", &marked("ready"));
    ready.idempotency_key = format!("key-{tenant}");
    let mut scheduled = job(tenant, "idle", &marked("later"));
    scheduled.delay_ms = 3_600_000;
    let jobs = vec![
        (job(tenant, "work", &marked("ok")), "succeeded"),
        (job(tenant, "work", &marked("fail")), "dead"),
        (job(tenant, "work", &marked("hold")), "leased"),
        (scheduled, "scheduled"),
        (ready, "ready"),
    ];
    let (new, states): (Vec<_>, Vec<_>) = jobs.into_iter().unzip();
    let ids = p.enqueue(new).await.unwrap();
    ids.into_iter().map(|e| e.id).zip(states).collect()
}

/// Every record in every tree of a stopped node's store that holds one of
/// `needles`, but for the audit log's (which names the tenant erased).
fn records_holding(data_dir: &std::path::Path, needles: &[&str]) -> Vec<String> {
    let db = sled::open(data_dir).expect("open the stopped node's store");
    let holds = |b: &[u8]| {
        needles
            .iter()
            .any(|n| b.windows(n.len()).any(|w| w == n.as_bytes()))
    };
    let mut found = Vec::new();
    for name in db.tree_names() {
        let tree = db.open_tree(&name).unwrap();
        let machine = &name[..] == drover::store::DEFAULT_MACHINE_TREE.as_bytes();
        for item in tree.iter() {
            let (k, v) = item.unwrap();
            if machine && k.first() == Some(&b'A') {
                continue;
            }
            if holds(&k) || holds(&v) {
                found.push(format!(
                    "tree {:?} key {:?}",
                    String::from_utf8_lossy(&name),
                    String::from_utf8_lossy(&k)
                ));
            }
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erasing_a_tenant_leaves_no_record_of_it_on_any_node_and_others_as_they_were() {
    // A short log and frequent snapshots, so the entries that carried the
    // tenant's jobs are compacted away soon after the erasure.
    let mut cluster = TestCluster::start(
        3,
        "[raft]\nlog_keep_entries = 10\nsnapshot_every = 20\n[retry.t]\nmax_retries = 0\n",
    );
    let leader = cluster.leader().await;
    let server = cluster.nodes[leader].grpc.clone();
    let mut p = Producer::connect(&server).await.unwrap();
    let gone = jobs_in_every_state(&mut p, GONE).await;
    let kept = jobs_in_every_state(&mut p, KEPT).await;
    let _worker = exec_worker_with(
        &server,
        "work",
        "w1",
        r#"p=$(cat); case "$p" in ok*) echo "result of $p";; fail*) exit 3;; hold*) sleep 60;; esac"#,
        &["--concurrency", "4"],
    );
    for (id, state) in gone.iter().chain(&kept) {
        wait_state_within(&cluster.nodes[leader], *id, state, Duration::from_secs(30)).await;
    }
    // Paused: the pause goes with it.
    drover_ok(&["tenants", "pause", GONE], &server);
    cluster.converged().await;
    // Everything of the other tenant that does not move by itself (the
    // leased job's heartbeats do), as every node shows it.
    let still: Vec<u64> = kept
        .iter()
        .filter(|(_, s)| *s != "leased")
        .map(|(id, _)| *id)
        .collect();
    let mut before: Vec<Vec<serde_json::Value>> = Vec::new();
    for n in &cluster.nodes {
        let mut jobs = Vec::new();
        for id in &still {
            jobs.push(serde_json::to_value(job_body(n, *id).await).unwrap());
        }
        before.push(jobs);
    }

    // Bad input first: no reason, a name that is not one.
    let no_reason = drover_cli(&["tenants", "erase", GONE], &server, "");
    assert!(!no_reason.status.success());
    assert!(String::from_utf8_lossy(&no_reason.stderr).contains("--reason"));
    let bad = drover_cli(
        &["tenants", "erase", "no such/name", "--reason", "x"],
        &server,
        "",
    );
    assert!(!bad.status.success());

    // Through a follower: the erasure is forwarded, replicated, audited.
    let follower = (leader + 1) % 3;
    let out = drover_cli(
        &["tenants", "erase", GONE, "--reason", "erasure request 42"],
        &cluster.nodes[follower].grpc,
        "",
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains(&format!(
            "erased tenant {GONE} on every node: 5 jobs, 1 runs"
        )),
        "{text}"
    );
    let audit = drover_json(&["audit", "--json"], &server);
    let record = audit["records"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["action"] == "tenants.erase")
        .unwrap_or_else(|| panic!("no tenants.erase record: {audit}"));
    assert_eq!(record["reason"], "erasure request 42");
    assert!(!record.to_string().contains(MARKER), "{record}");

    // Each node: the tenant's jobs are gone, the other's read as before.
    for (n, before) in cluster.nodes.iter().zip(&before) {
        for (id, _) in &gone {
            wait_for("the erased job gone", Duration::from_secs(20), || async {
                match try_job(n, *id).await {
                    Err(_) => Ok(()),
                    Ok(j) => Err(format!("still {:?}", j.state)),
                }
            })
            .await;
        }
        for (id, was) in still.iter().zip(before) {
            assert_eq!(&serde_json::to_value(job_body(n, *id).await).unwrap(), was);
        }
    }
    // Enough entries after it that every node compacts the erasure's
    // entries and the ones before out of its log and snapshots again.
    for i in 0..60 {
        p.enqueue(vec![job(KEPT, "idle", &format!("filler {i}"))])
            .await
            .unwrap();
    }
    cluster.converged().await;
    drop(_worker);
    for n in &mut cluster.nodes {
        n.terminate();
    }
    for (i, n) in cluster.nodes.iter().enumerate() {
        let found = records_holding(&n.data_dir(), &[GONE, MARKER]);
        assert!(
            found.is_empty(),
            "node {}: records that still name the erased tenant: {found:?}",
            i + 1
        );
        // The store did hold the other tenant: the scan reads it.
        assert!(!records_holding(&n.data_dir(), &[KEPT]).is_empty());
        // Nor do the snapshots the node keeps hold its data (they hold the
        // audit log, whose erasure record names it).
        let snapshots = std::fs::read_dir(n.data_dir().join("snapshots")).unwrap();
        for file in snapshots {
            let path = file.unwrap().path();
            let bytes = std::fs::read(&path).unwrap();
            let named = bytes.windows(MARKER.len()).any(|w| w == MARKER.as_bytes());
            assert!(
                !named,
                "node {}: {} holds the erased tenant's data",
                i + 1,
                path.display()
            );
        }
    }
}
