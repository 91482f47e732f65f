//! Wall-clock steps and skewed nodes, under libfaketime (Debian's
//! `faketime` package): a node's clock offset is read from a file the test
//! changes, its monotonic clock is left alone. Durations (leases, delays)
//! must follow real time whatever the wall clocks say.
//!
//! Ignored by default (they need the library); `.ci/run` installs it and
//! runs them: `cargo test --test clocks -- --ignored`.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::*;

/// A fake wall clock for the nodes it is applied to: an offset from the
/// real clock ("+0", "+1h", "-1h", "+10"), changed while they run.
struct FakeClock {
    _dir: tempfile::TempDir,
    file: PathBuf,
}

impl FakeClock {
    fn new(offset: &str) -> FakeClock {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("offset");
        let clock = FakeClock { _dir: dir, file };
        clock.set(offset);
        clock
    }

    fn set(&self, offset: &str) {
        std::fs::write(&self.file, format!("{offset}\n")).unwrap();
        // libfaketime reads the file again at most once a second.
        std::thread::sleep(Duration::from_millis(1200));
    }

    fn apply(&self, node: &mut TestNode) {
        let lib = libfaketime();
        node.env.extend([
            ("LD_PRELOAD".to_string(), lib),
            (
                "FAKETIME_TIMESTAMP_FILE".to_string(),
                self.file.display().to_string(),
            ),
            ("FAKETIME_DONT_FAKE_MONOTONIC".into(), "1".into()),
            ("FAKETIME_CACHE_DURATION".into(), "1".into()),
        ]);
    }
}

fn libfaketime() -> String {
    if let Ok(path) = std::env::var("DROVER_TEST_LIBFAKETIME") {
        return path;
    }
    let found = ["x86_64-linux-gnu", "aarch64-linux-gnu"]
        .iter()
        .map(|arch| format!("/usr/lib/{arch}/faketime/libfaketimeMT.so.1"))
        .find(|p| std::path::Path::new(p).exists());
    found.expect("libfaketime not found: apt-get install faketime (or set DROVER_TEST_LIBFAKETIME)")
}

fn enqueue_delayed(server: &str, queue: &str, delay: &str) -> u64 {
    let v = drover_json(
        &[
            "enqueue",
            "--queue",
            queue,
            "--payload",
            "x",
            "--delay",
            delay,
            "--json",
        ],
        server,
    );
    v[0]["id"]
        .as_u64()
        .or_else(|| v["id"].as_u64())
        .unwrap_or_else(|| panic!("no id in {v}"))
}

/// Log time from the job's enqueue to its first lease.
fn waited_ms(j: &serde_json::Value) -> u64 {
    let leased = j["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "leased")
        .unwrap_or_else(|| panic!("never leased: {j}"));
    leased["at_ms"].as_u64().unwrap() - j["enqueued_at_ms"].as_u64().unwrap()
}

fn requeues(j: &serde_json::Value) -> usize {
    j["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "requeued")
        .count()
}

/// A job delayed by 5 s runs after 5 s of real time: not at once (a clock
/// stepped ahead), not an hour later (a clock stepped back).
async fn five_seconds_are_five_seconds(node: &TestNode, queue: &str) {
    let started = Instant::now();
    let id = enqueue_delayed(&node.grpc, queue, "5s");
    let j = wait_state_json_within(node, id, "succeeded", Duration::from_secs(30)).await;
    let real = started.elapsed();
    // Broken, it ran at once (a clock ahead) or waited out the offset of
    // a clock behind (10 s, an hour); working, it runs at about 5 s.
    assert!(
        (4500..9000).contains(&real.as_millis()),
        "a 5 s delay ran after {real:?} of real time: {j}"
    );
    let log = waited_ms(&j);
    assert!(
        (5_000..7_000).contains(&log),
        "a 5 s delay took {log} ms of log time: {j}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs libfaketime (apt-get install faketime); .ci/run runs it"]
async fn a_step_of_the_wall_clock_expires_no_lease_and_fires_no_delay_early() {
    let clock = FakeClock::new("+0");
    let mut node = TestNode::prepare("127.0.0.1:0", "[jobs]\nheartbeat_timeout = \"4s\"\n");
    clock.apply(&mut node);
    node.spawn();
    let long = enqueue_n(&node.grpc, "long", 1)[0];
    let _holder = exec_worker(&node.grpc, "long", "holder", "sleep 14; cat");
    wait_state_within(&node, long, "leased", Duration::from_secs(15)).await;
    let later = enqueue_delayed(&node.grpc, "timed", "30m");
    let _timed = exec_worker(&node.grpc, "timed", "timed", "cat");

    // An hour ahead: nothing expires, nothing fires early.
    let stepped = Instant::now();
    let soon = enqueue_delayed(&node.grpc, "timed", "5s");
    clock.set("+1h");
    assert_eq!(job_json(&node, soon).await["state"], "scheduled");
    let j = wait_state_json_within(&node, soon, "succeeded", Duration::from_secs(30)).await;
    assert!(
        stepped.elapsed() >= Duration::from_millis(4500),
        "ran early: {j}"
    );
    assert!((5_000..7_000).contains(&waited_ms(&j)), "{j}");
    five_seconds_are_five_seconds(&node, "timed").await;

    // An hour behind the real time: durations still run at real speed.
    clock.set("-1h");
    five_seconds_are_five_seconds(&node, "timed").await;

    let j = wait_state_json_within(&node, long, "succeeded", Duration::from_secs(40)).await;
    assert_eq!(j["attempts"], 1, "the held job ran once: {j}");
    assert_eq!(requeues(&j), 0, "its lease never expired: {j}");
    let j = job_json(&node, later).await;
    assert_eq!(j["state"], "scheduled", "the 30 min job waits: {j}");
}

/// Node 3's clock is an hour ahead.
fn skewed_cluster(extra: &str) -> (TestCluster, FakeClock) {
    let clock = FakeClock::new("+1h");
    let mut c = TestCluster::prepare(3, extra);
    clock.apply(&mut c.nodes[2]);
    for n in &mut c.nodes {
        n.log_file = Some(n.dir.path().join("node.log"));
        n.spawn();
    }
    (c, clock)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs libfaketime (apt-get install faketime); .ci/run runs it"]
async fn a_node_an_hour_ahead_never_leads_and_members_name_its_skew() {
    let (c, _clock) = skewed_cluster("");
    let leader = c.leader().await;
    assert_ne!(leader, 2, "the skewed node won an election");
    wait_for(
        "node 3 to find its clock skewed",
        Duration::from_secs(20),
        || async {
            let text = metrics_text(&c.nodes[2]).await;
            if text.contains("drover_clock_skewed 1") {
                Ok(())
            } else {
                Err("drover_clock_skewed not 1".to_string())
            }
        },
    )
    .await;
    // The leader's view names the offset.
    let members = drover_json(&["cluster", "members", "--json"], &c.nodes[leader].grpc);
    let three = members["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == 3)
        .unwrap()
        .clone();
    let offset = three["clock_offset_ms"].as_i64().unwrap_or(0);
    assert!(
        (3_590_000..3_610_000).contains(&offset),
        "node 3's offset as the leader reads it: {members}"
    );
    let table = drover_cli(&["cluster", "members"], &c.nodes[leader].grpc, "");
    let table = String::from_utf8_lossy(&table.stdout).to_string();
    // An hour, less the moment the batch was underway.
    assert!(
        table.contains("+3600.") || table.contains("+3599."),
        "{table}"
    );

    // Asked to lead, it cannot: the others refuse its vote requests.
    let refusals =
        || c.nodes[0].log_count("vote_refused_clock") + c.nodes[1].log_count("vote_refused_clock");
    let before = refusals();
    let _ = drover_cli(
        &["cluster", "transfer-leader", "3"],
        &c.nodes[leader].grpc,
        "",
    );
    wait_for(
        "node 3's vote requests refused",
        Duration::from_secs(20),
        || async {
            let now = refusals();
            if now > before {
                Ok(())
            } else {
                Err(format!(
                    "{now} refusals logged, {before} before the transfer"
                ))
            }
        },
    )
    .await;
    let now = c.leader().await;
    assert_ne!(now, 2, "the skewed node took leadership");
    let three = c.nodes[2].log_text();
    assert!(three.contains("clock_skewed"), "{three}");
    assert!(!three.contains("log_time_taken"), "node 3 led: {three}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs libfaketime (apt-get install faketime); .ci/run runs it"]
async fn with_the_check_off_a_skewed_leader_leaves_durations_at_real_speed() {
    let (c, _clock) = skewed_cluster(
        "[cluster]\nmax_clock_offset = \"0s\"\n[jobs]\nheartbeat_timeout = \"3s\"\n",
    );
    let first = c.leader().await;
    let servers = c.servers();
    let _timed = exec_worker(&servers, "timed", "timed", "cat");
    let transfer =
        |to: usize| drover_ok(&["cluster", "transfer-leader", &to.to_string()], &servers);
    transfer(3);
    wait_for("node 3 to lead", Duration::from_secs(20), || async {
        match c.leader().await {
            2 => Ok(()),
            l => Err(format!("node {} leads", l + 1)),
        }
    })
    .await;
    five_seconds_are_five_seconds(&c.nodes[0], "timed").await;
    let back = if first == 2 { 0 } else { first };
    transfer(back + 1);
    wait_for("leadership back", Duration::from_secs(20), || async {
        match c.leader().await {
            l if l == back => Ok(()),
            l => Err(format!("node {} leads", l + 1)),
        }
    })
    .await;
    five_seconds_are_five_seconds(&c.nodes[0], "timed").await;

    // A dead worker's lease expires after its timeout, not an hour later.
    let held = enqueue_n(&servers, "held", 1)[0];
    let worker = exec_worker(&servers, "held", "doomed", "sleep 60; cat");
    wait_state_within(&c.nodes[0], held, "leased", Duration::from_secs(15)).await;
    drop(worker);
    let died = Instant::now();
    let _next = exec_worker(&servers, "held", "next", "cat");
    let j = wait_state_json_within(&c.nodes[0], held, "succeeded", Duration::from_secs(30)).await;
    assert!(
        died.elapsed() >= Duration::from_millis(2500),
        "expired before its 3 s timeout: {j}"
    );
    assert_eq!(requeues(&j), 1, "{j}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs libfaketime (apt-get install faketime); .ci/run runs it"]
async fn a_failover_from_a_leader_ten_seconds_ahead_expires_no_heartbeated_lease() {
    let clock = FakeClock::new("+10");
    let mut c = TestCluster::prepare(
        3,
        "[cluster]\nmax_clock_offset = \"0s\"\n[jobs]\nheartbeat_timeout = \"3s\"\n",
    );
    clock.apply(&mut c.nodes[0]);
    for n in &mut c.nodes {
        n.spawn();
    }
    let leader = c.leader().await;
    if leader != 0 {
        let out = drover_cli(&["cluster", "transfer-leader", "1"], &c.servers(), "");
        assert!(out.status.success());
        wait_for("node 1 to lead", Duration::from_secs(20), || async {
            match c.leader().await {
                0 => Ok(()),
                l => Err(format!("node {} leads", l + 1)),
            }
        })
        .await;
    }
    // Workers on the followers, holding jobs that take a while and
    // heartbeating every second.
    let followers = format!("{},{}", c.nodes[1].grpc, c.nodes[2].grpc);
    let ids = enqueue_n(&followers, "work", 12);
    let _workers: Vec<Reap> = (0..2)
        .map(|i| {
            exec_worker_with(
                &followers,
                "work",
                &format!("w{i}"),
                "sleep 4; cat",
                &["--concurrency", "3"],
            )
        })
        .collect();
    wait_for("six jobs leased", Duration::from_secs(15), || async {
        let mut leased = 0;
        for &id in &ids {
            if job_json(&c.nodes[1], id).await["state"] == "leased" {
                leased += 1;
            }
        }
        if leased == 6 {
            Ok(())
        } else {
            Err(format!("{leased} leased"))
        }
    })
    .await;
    let _timed = exec_worker(&followers, "timed_after", "t", "cat");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    c.nodes[0].kill();
    let new = c.leader().await;
    assert_ne!(new, 0);
    five_seconds_are_five_seconds(&c.nodes[new], "timed_after").await;
    for &id in &ids {
        let j =
            wait_state_json_within(&c.nodes[new], id, "succeeded", Duration::from_secs(60)).await;
        assert_eq!(requeues(&j), 0, "a heartbeated lease expired: {j}");
        assert_eq!(j["attempts"], 1, "{j}");
    }
}
