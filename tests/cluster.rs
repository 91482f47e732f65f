//! Three real node processes on loopback: replication through followers,
//! failover under load with a history check, full restarts and catch-up.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::load::*;
use common::*;
use drover::api::types::{AddMemberBody, MembersBody, StatsBody, WorkersBody};
use drover::client::worker::{self, JobError, WorkerOptions};
use drover::client::Producer;
use tokio::sync::watch;

/// Short leases so jobs whose holder vanished come back quickly.
const CLUSTER: &str = "[jobs]\nheartbeat_timeout = \"2s\"\n";

#[tokio::test]
async fn a_job_enqueued_on_one_follower_is_done_through_another() {
    let c = TestCluster::start(3, CLUSTER);
    let leader = c.leader().await;
    let (f1, f2) = ((leader + 1) % 3, (leader + 2) % 3);

    let mut p = Producer::connect(&c.nodes[f1].grpc).await.unwrap();
    let mut ids: Vec<u64> = p
        .enqueue(vec![new_job("repl", "payload"); 20])
        .await
        .unwrap()
        .iter()
        .map(|j| j.id)
        .collect();
    // An enqueue stream on a follower forwards each request too.
    let mut stream = p.enqueue_stream().await.unwrap();
    for _ in 0..5 {
        let got = stream
            .enqueue(vec![new_job("repl", "streamed")])
            .await
            .unwrap();
        ids.push(got[0].id);
    }
    // The follower answered after applying the entry itself: its client
    // reads its own write there.
    assert_eq!(job_state(&c.nodes[f1], ids[0]).await, "ready");

    let runs = Arc::new(Mutex::new(Vec::new()));
    let (stop_tx, stop) = watch::channel(false);
    let w = recording_worker(&c.nodes[f2].grpc, "w-follower", "repl", runs.clone(), stop);
    all_succeeded(&c.nodes[leader], &ids).await;
    stop_tx.send_replace(true);
    let report = w.await.unwrap().unwrap();
    assert_eq!(report.completed, 25);
    assert_eq!(report.refused, 0);
    c.converged().await;

    // Every node answers membership with the leader's view.
    let m = members_of(&c.nodes[f2]).await;
    assert_eq!(m.leader_id, leader as u64 + 1, "{m:?}");
    let members = &m.members;
    assert_eq!(members.len(), 3, "{m:?}");
    assert!(
        members
            .iter()
            .all(|x| x.reachable == Some(true) && x.match_index > Some(0)),
        "{m:?}"
    );
}

/// How a test takes the leader away.
#[derive(Clone, Copy, PartialEq)]
enum Stop {
    /// SIGKILL: no goodbye.
    Kill,
    /// SIGTERM: it hands its lead over, its workers move, it exits 0.
    Term,
}

/// Producers and workers on every node; the leader goes away under load.
/// Acknowledged jobs are never lost, no lease goes to two workers, and the
/// old leader rejoins and converges.
async fn losing_the_leader_under_load(how: Stop) {
    let mut c = TestCluster::start(3, CLUSTER);
    let old_leader = c.leader().await;
    let runs: Runs = Arc::new(Mutex::new(Vec::new()));
    let load = Load::start(&c, "load", 4, 5000);
    let (stop_tx, stop) = watch::channel(false);
    let workers: Vec<_> = (0..2)
        .map(|i| {
            recording_worker(
                &rotated(&c, i + 1),
                &format!("w{i}"),
                "load",
                runs.clone(),
                stop.clone(),
            )
        })
        .collect();

    let before = Instant::now();
    load.wait_acked(0, 200, "some jobs to be acknowledged")
        .await;
    let stopped_at = load.acked_count();
    match how {
        Stop::Kill => c.nodes[old_leader].kill(),
        Stop::Term => {
            // Blocks this thread only; producers and workers run on.
            let status = tokio::task::block_in_place(|| c.nodes[old_leader].terminate());
            assert!(
                status.success(),
                "SIGTERM should end the node with 0: {status}"
            );
        }
    }
    let new_leader = c.leader().await;
    assert_ne!(new_leader, old_leader);
    // Producers carry on through the new leader.
    load.wait_acked(
        stopped_at,
        200,
        "enqueues to continue after the leader left",
    )
    .await;
    if how == Stop::Term {
        // Workers of the stopped node were told to go, and did.
        let gone = (old_leader + 1) as u64;
        wait_for(
            "both workers on the nodes that stayed",
            Duration::from_secs(20),
            || async {
                let v = c.nodes[new_leader]
                    .try_body::<WorkersBody>("/api/v1/workers")
                    .await?;
                let on: Vec<(String, u64)> = v
                    .workers
                    .iter()
                    .map(|w| (w.worker_id.clone(), w.node_id))
                    .collect();
                let moved = on.len() == 2 && on.iter().all(|(_, node)| *node != gone);
                if moved {
                    Ok(())
                } else {
                    Err(format!("{on:?}"))
                }
            },
        )
        .await;
    }
    let (acked, unknown) = load.stop().await;
    eprintln!("load ran {:?}", before.elapsed());
    check_history(&c.nodes[new_leader], "load", &acked, unknown, &runs).await;
    stop_tx.send_replace(true);
    for w in workers {
        w.await.unwrap().unwrap();
    }
    // The old leader comes back, steps down and converges.
    c.nodes[old_leader].spawn();
    c.converged().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_under_load_loses_no_acknowledged_job() {
    losing_the_leader_under_load(Stop::Kill).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_on_the_leader_under_load_exits_0_moves_workers_and_loses_nothing() {
    losing_the_leader_under_load(Stop::Term).await;
}

#[tokio::test]
async fn restarting_every_node_keeps_everything() {
    let mut c = TestCluster::start(3, CLUSTER);
    c.leader().await;
    let mut p = Producer::connect(&c.servers()).await.unwrap();
    let mut ids = Vec::new();
    for _ in 0..10 {
        ids.extend(
            p.enqueue(vec![new_job("keep", "x"); 50])
                .await
                .unwrap()
                .iter()
                .map(|j| j.id),
        );
    }
    let before = c.converged().await;
    for n in c.nodes.iter_mut() {
        n.kill();
    }
    for n in c.nodes.iter_mut() {
        n.spawn();
    }
    let leader = c.leader().await;
    let after = c.converged().await;
    assert!(
        after >= before,
        "applied index went back from {before} to {after}"
    );
    for id in ids {
        assert_eq!(job_state(&c.nodes[leader], id).await, "ready");
    }
}

#[tokio::test]
async fn a_node_that_was_down_catches_up_by_snapshot() {
    // A short log and frequent snapshots, so the leader compacts past the
    // entries the stopped node would need.
    let mut c = TestCluster::start(
        3,
        "[jobs]\nheartbeat_timeout = \"2s\"\n[raft]\nlog_keep_entries = 20\nsnapshot_every = 50\n",
    );
    let leader = c.leader().await;
    let down = (leader + 1) % 3;
    c.nodes[down].kill();
    let mut p = Producer::connect(&c.nodes[leader].grpc).await.unwrap();
    let mut last = 0;
    for _ in 0..200 {
        last = p.enqueue(vec![new_job("catch", "y"); 5]).await.unwrap()[4].id;
    }
    c.nodes[down].spawn();
    c.converged().await;
    assert_eq!(job_state(&c.nodes[down], last).await, "ready");
    let snaps: Vec<_> = std::fs::read_dir(c.nodes[down].data_dir().join("snapshots"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        snaps.iter().any(|n| n.starts_with("snap-")),
        "the node caught up without installing a snapshot: {snaps:?}"
    );
}

#[tokio::test]
async fn large_payloads_reach_every_node_by_log_and_by_snapshot() {
    // Payloads over 128 KiB live in files of their own (spill/); a node
    // that was down gets them in a snapshot, which carries their bytes,
    // and spills them again to the same records (the digests agree).
    let mut c = TestCluster::start(
        3,
        "[jobs]\nheartbeat_timeout = \"2s\"\n[raft]\nlog_keep_entries = 10\nsnapshot_every = 20\n",
    );
    let leader = c.leader().await;
    let down = (leader + 1) % 3;
    c.nodes[down].kill();
    let mut p = Producer::connect(&c.nodes[leader].grpc).await.unwrap();
    let payload = |i: usize| format!("{i:07}").repeat(30_000);
    let mut ids = Vec::new();
    for i in 0..40 {
        ids.push(
            p.enqueue(vec![new_job("large", &payload(i))])
                .await
                .unwrap()[0]
                .id,
        );
    }
    c.nodes[down].spawn();
    c.converged().await;
    let spilled = |n: &TestNode| {
        std::fs::read_dir(n.data_dir().join("spill"))
            .into_iter()
            .flatten()
            .flatten()
            .filter(|d| d.file_name().to_string_lossy().starts_with("machine"))
            .flat_map(|d| std::fs::read_dir(d.path()).unwrap().flatten())
            .count()
    };
    for n in &c.nodes {
        assert_eq!(
            spilled(n),
            ids.len(),
            "one payload file per job on every node"
        );
        let (status, job) = get_json(&format!("{}/api/v1/jobs/{}", n.http, ids[7])).await;
        assert_eq!(status, 200, "{job}");
        assert_eq!(job["payload"].as_str(), Some(payload(7).as_str()));
    }
    let snaps = std::fs::read_dir(c.nodes[down].data_dir().join("snapshots"))
        .unwrap()
        .count();
    assert!(snaps > 0, "the node caught up without a snapshot");
}

async fn members_of(node: &TestNode) -> MembersBody {
    node.body("/api/v1/cluster/members").await
}

#[tokio::test]
async fn members_are_added_and_removed_under_load() {
    // Frequent snapshots, so one from before the new node joined exists and
    // must not be the one it is sent.
    let mut c = TestCluster::start(
        3,
        "[jobs]\nheartbeat_timeout = \"2s\"\n[raft]\nsnapshot_every = 20\nlog_keep_entries = 10\n",
    );
    let leader = c.leader().await;
    let load = Load::start(&c, "members", 1, 20_000);

    // A fourth node joins through a follower's admin API.
    let new = c.start_joining(CLUSTER);
    let addr = c.nodes[new].grpc_addr.clone();
    let via = &c.nodes[(leader + 1) % 3];
    let add = AddMemberBody {
        id: new as u64 + 1,
        addr,
    };
    let added: Result<MembersBody, _> = via.admin().post("/api/v1/cluster/members", &add).await;
    assert!(added.is_ok(), "{added:?}");
    let m = members_of(&c.nodes[leader]).await;
    let voters = m.members.iter().filter(|x| x.voter).count();
    assert_eq!(voters, 4, "{m:?}");

    // Removing a follower; then the cluster runs on without it.
    let gone = (leader + 2) % 3;
    let resp = reqwest::Client::new()
        .delete(format!(
            "{}/api/v1/cluster/members/{}",
            c.nodes[leader].http,
            gone + 1
        ))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{:?}", resp.text().await);
    c.nodes[gone].kill();
    let m = members_of(&c.nodes[leader]).await;
    assert_eq!(m.members.len(), 3, "{m:?}");

    let (acked, _) = load.stop().await;
    let applied = c.converged().await;
    assert!(applied > 0);
    assert!(!acked.is_empty());
    for id in acked.iter().step_by(50) {
        assert_eq!(
            job_state(&c.nodes[new], *id).await,
            "ready",
            "job {id} on the new node"
        );
    }

    // With one of the three voters down, removing another live one would
    // leave no reachable majority: refused, naming the way out.
    let other = (0..c.nodes.len())
        .find(|&i| i != leader && i != gone && i != new)
        .unwrap();
    c.nodes[other].kill();
    c.wait_unreachable(leader, other as u64 + 1).await;
    let resp = reqwest::Client::new()
        .delete(format!(
            "{}/api/v1/cluster/members/{}",
            c.nodes[leader].http,
            new + 1
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 409);
    let text = resp.text().await.unwrap();
    assert!(text.contains("--force"), "{text}");
    // The leader itself cannot be removed before handing over leadership.
    let resp = reqwest::Client::new()
        .delete(format!(
            "{}/api/v1/cluster/members/{}",
            c.nodes[new].http,
            leader + 1
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 409, "{:?}", resp.text().await);
}

#[tokio::test]
async fn leadership_moves_on_request() {
    let c = TestCluster::start(3, CLUSTER);
    let leader = c.leader().await;
    let target = (leader + 1) % 3;
    let resp = reqwest::Client::new()
        .post(format!(
            "{}/api/v1/cluster/transfer-leader",
            c.nodes[(leader + 2) % 3].http
        ))
        .json(&serde_json::json!({"id": target + 1}))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{:?}", resp.text().await);
    assert_eq!(c.leader().await, target);
    // And the cluster still takes writes.
    let mut p = Producer::connect(&c.servers()).await.unwrap();
    p.enqueue(vec![new_job("moved", "a")]).await.unwrap();
}

#[tokio::test]
async fn current_reads_need_a_leader_and_stale_ones_do_not() {
    let mut c = TestCluster::start(3, CLUSTER);
    let leader = c.leader().await;
    let f = (leader + 1) % 3;
    let mut p = Producer::connect(&c.nodes[leader].grpc).await.unwrap();
    let id = p.enqueue(vec![new_job("reads", "r")]).await.unwrap()[0].id;
    // A follower's current read sees the write at once (read index).
    assert_eq!(job_state(&c.nodes[f], id).await, "ready");
    let (code, _) = get_json(&format!("{}/api/v1/stats", c.nodes[f].http)).await;
    assert_eq!(code, 200);

    // Alone, the follower cannot confirm what is current: it says so, and
    // still answers a stale read.
    c.nodes[leader].kill();
    c.nodes[(leader + 2) % 3].kill();
    let (code, body) = get_error(&format!("{}/api/v1/stats", c.nodes[f].http)).await;
    assert_eq!(code, 503, "{body:?}");
    assert!(body.error.message.contains("no leader"), "{body:?}");
    let (code, body) = get_json(&format!("{}/api/v1/stats?stale=ok", c.nodes[f].http)).await;
    assert_eq!(code, 200, "{body}");
    let stats: StatsBody = serde_json::from_value(body).expect("a stats body");
    assert_eq!(
        stats.queues.get("reads").map(|q| q.ready[2]),
        Some(1),
        "{stats:?}"
    );
    let (code, _) = get_json(&format!("{}/api/v1/stats?stale=maybe", c.nodes[f].http)).await;
    assert_eq!(code, 400);
}

/// The leader each running node names (0 for none), read without a leader.
async fn leaders_seen(c: &TestCluster, which: &[usize]) -> Vec<u64> {
    let mut seen = Vec::new();
    for &i in which {
        let s = c.nodes[i]
            .try_body::<StatsBody>("/api/v1/stats?stale=ok")
            .await;
        seen.push(s.map_or(0, |s| s.node.leader_id));
    }
    seen
}

#[tokio::test]
async fn an_isolated_leader_takes_no_writes_and_rejoins_without_divergence() {
    let (c, proxies) = TestCluster::start_with_proxies(3, CLUSTER).await;
    let old = c.leader().await;
    let mut acked = Vec::new();
    let mut p = Producer::connect(&c.nodes[old].grpc).await.unwrap();
    acked.extend(
        p.enqueue(vec![new_job("part", "before"); 10])
            .await
            .unwrap()
            .iter()
            .map(|j| j.id),
    );

    // Cut every link to and from the leader.
    for ((from, to), proxy) in &proxies {
        if *from == old || *to == old {
            proxy.cut();
        }
    }
    let majority: Vec<usize> = (0..3).filter(|&i| i != old).collect();
    let new = wait_for(
        "the majority to elect a new leader",
        Duration::from_secs(30),
        || async {
            let seen = leaders_seen(&c, &majority).await;
            match seen[0] {
                l if l != 0 && l != old as u64 + 1 && seen.iter().all(|&x| x == l) => {
                    Ok(l as usize - 1)
                }
                _ => Err(format!("{seen:?}")),
            }
        },
    )
    .await;

    // The majority goes on taking writes.
    let mut pm = Producer::connect(&c.nodes[majority[0]].grpc).await.unwrap();
    for _ in 0..5 {
        acked.extend(
            pm.enqueue(vec![new_job("part", "during")])
                .await
                .unwrap()
                .iter()
                .map(|j| j.id),
        );
    }
    // The isolated old leader accepts none: the write never commits there.
    let mut pl = Producer::connect(&c.nodes[old].grpc).await.unwrap();
    let attempt = tokio::time::timeout(
        Duration::from_secs(3),
        pl.enqueue(vec![new_job("part", "minority")]),
    )
    .await;
    assert!(
        !matches!(attempt, Ok(Ok(_))),
        "the minority side acknowledged a write: {attempt:?}"
    );

    // Heal: the old leader steps down, follows the new one, and every node
    // ends with the same state.
    for proxy in proxies.values() {
        proxy.heal();
    }
    wait_for(
        "all nodes to follow the new leader",
        Duration::from_secs(30),
        || async {
            let seen = leaders_seen(&c, &[0, 1, 2]).await;
            if seen
                .iter()
                .all(|&x| x != 0 && x != old as u64 + 1 && x == seen[0])
            {
                Ok(())
            } else {
                Err(format!("{seen:?}"))
            }
        },
    )
    .await;
    c.converged().await;
    for id in acked {
        assert_eq!(job_state(&c.nodes[old], id).await, "ready", "job {id}");
    }
    let s: StatsBody = c.nodes[new].body("/api/v1/stats").await;
    assert_eq!(s.queues.get("part").map(|q| q.ready[2]), Some(15), "{s:?}");
}

#[tokio::test]
async fn five_nodes_survive_losing_two() {
    let mut c = TestCluster::start(5, CLUSTER);
    let leader = c.leader().await;
    let mut p = Producer::connect(&c.servers()).await.unwrap();
    let before = p.enqueue(vec![new_job("five", "a"); 10]).await.unwrap();
    // Lose the leader and one follower: three of five are still a quorum.
    c.nodes[leader].kill();
    c.nodes[(leader + 1) % 5].kill();
    let new = c.leader().await;
    assert!(new != leader && new != (leader + 1) % 5);
    let after = p.enqueue(vec![new_job("five", "b"); 10]).await.unwrap();
    for j in before.iter().chain(after.iter()) {
        assert_eq!(job_state(&c.nodes[new], j.id).await, "ready");
    }
    c.converged().await;
}

#[tokio::test]
async fn a_worker_keeps_its_job_across_a_failover_by_heartbeating_it() {
    let mut c = TestCluster::start(3, "[jobs]\nheartbeat_timeout = \"6s\"\n");
    let leader = c.leader().await;
    let mut p = Producer::connect(&c.servers()).await.unwrap();
    let id = p
        .enqueue(vec![new_job("keep-lease", "slow")])
        .await
        .unwrap()[0]
        .id;

    // The worker starts on the leader, then falls back to the others.
    let runs = Arc::new(Mutex::new(Vec::new()));
    let (started_tx, mut started) = tokio::sync::mpsc::unbounded_channel();
    let seen = runs.clone();
    let handler = move |job: drover::client::worker::Job| {
        seen.lock().unwrap().push((job.job_id, job.attempt));
        let _ = started_tx.send(());
        async move {
            tokio::time::sleep(Duration::from_secs(3)).await;
            Ok::<_, JobError>(Bytes::from_static(b"done"))
        }
    };
    let mut opts = WorkerOptions::new(rotated(&c, leader), "w-keep", vec!["keep-lease".into()], 1);
    opts.reconnect_delay = Duration::from_millis(100);
    let (stop_tx, stop) = watch::channel(false);
    let w = tokio::spawn(worker::run(opts, handler, stop));
    tokio::time::timeout(Duration::from_secs(20), started.recv())
        .await
        .expect("the job was never leased");

    // The leader dies while the job runs; the lease it granted outlives it.
    c.nodes[leader].kill();
    let new = c.leader().await;
    wait_state_within(&c.nodes[new], id, "succeeded", Duration::from_secs(30)).await;
    stop_tx.send_replace(true);
    let report = w.await.unwrap().unwrap();
    assert_eq!(report.refused, 0, "{report:?}");
    assert_eq!(*runs.lock().unwrap(), vec![(id, 1)], "the job ran again");
    let job = job_body(&c.nodes[new], id).await;
    assert_eq!(job.attempts, 1, "{job:?}");
}

/// A leader stopped with SIGTERM hands its lead over first (so writes move
/// on without waiting out an election timeout), exits 0, and loses nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_stopped_with_sigterm_hands_over_its_lead() {
    let mut c = TestCluster::start(3, "");
    let first = c.leader().await;
    // Restart one follower with its log in a file, then make it lead.
    let node = (first + 1) % 3;
    let log = c.nodes[node].dir.path().join("node.log");
    c.nodes[node].kill();
    c.nodes[node].log_file = Some(log.clone());
    c.nodes[node].spawn();
    c.converged().await;
    let to = (node + 1).to_string();
    let out = drover_cli(
        &["cluster", "transfer-leader", &to, "--reason", "test"],
        &c.nodes[first].grpc,
        "",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(c.leader().await, node);
    let mut p = Producer::connect(&c.servers()).await.unwrap();
    let ids: Vec<u64> = p
        .enqueue(vec![new_job("q", "x"); 50])
        .await
        .unwrap()
        .iter()
        .map(|e| e.id)
        .collect();

    let status = c.nodes[node].terminate();
    assert!(status.success(), "{status}");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("leadership_transferred"), "{text}");
    let leader = c.leader().await;
    assert_ne!(leader, node);
    for id in ids {
        assert_eq!(job_state(&c.nodes[leader], id).await, "ready");
    }
}
