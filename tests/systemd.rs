//! Under systemd (`Type=notify`): the node sends READY=1 only once it
//! serves, with its role in STATUS=, and STOPPING=1 on SIGTERM, to the
//! datagram socket NOTIFY_SOCKET names (here one the test owns).

mod common;

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use common::*;

/// The next datagram holding `what`, reading at most 50.
fn receive(sock: &UnixDatagram, what: &str) -> String {
    let mut buf = [0u8; 4096];
    for _ in 0..50 {
        let n = sock
            .recv(&mut buf)
            .expect("a notification before the timeout");
        let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
        if msg.contains(what) {
            return msg;
        }
    }
    panic!("no {what} among 50 notifications");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_once_serving_and_stopping_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut node = TestNode::prepare("127.0.0.1:0", "");
    node.env
        .push(("NOTIFY_SOCKET".into(), path.display().to_string()));
    node.spawn();
    let ready = receive(&sock, "READY=1");
    assert!(ready.contains("STATUS=role "), "{ready}");
    // It serves by then.
    let (code, _) = get_json(&format!("{}/health", node.http)).await;
    assert_eq!(code, 200);
    let status = node.terminate();
    assert!(status.success(), "{status}");
    let stopping = receive(&sock, "STOPPING=1");
    assert!(stopping.contains("STATUS=stopping"), "{stopping}");
}

/// README's install steps and the unit files agree: the users the units
/// run as are the ones README creates (node and workers apart), the files
/// README installs are where the units read them, with modes that keep the
/// workers out of the node's secrets, the worker's stop timeout fits in
/// its unit's, and the config example's backup dir is writable under
/// ProtectSystem=strict.
#[test]
fn readme_install_steps_and_units_agree() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let read = |p: &str| std::fs::read_to_string(root.join(p)).unwrap();
    let readme = read("README.md");
    let node = read("systemd/drover.service");
    let worker = read("systemd/drover-worker@.service");
    let key = |unit: &str, k: &str| -> Vec<String> {
        unit.lines()
            .filter_map(|l| l.strip_prefix(&format!("{k}=")))
            .map(str::to_string)
            .collect()
    };
    let install = readme
        .split("## Under systemd")
        .nth(1)
        .and_then(|s| s.split("```sh").nth(1))
        .and_then(|s| s.split("```").next())
        .expect("README's install block");
    let (node_user, worker_user) = (&key(&node, "User")[0], &key(&worker, "User")[0]);
    assert_ne!(node_user, worker_user, "workers run apart from the node");
    for user in [node_user, worker_user] {
        assert!(
            install
                .lines()
                .any(|l| l.contains("useradd") && l.trim_end().ends_with(&format!(" {user}"))),
            "README creates user {user}"
        );
    }
    // The node's config: where ExecStart reads it, readable by its group only.
    assert!(key(&node, "ExecStart")[0].contains("--config /etc/drover/drover.toml"));
    assert!(install.contains("install -D -m 0640 -g drover node.toml /etc/drover/drover.toml"));
    // The workers' token file: root only; the unit reads it.
    assert!(key(&worker, "EnvironmentFile")
        .iter()
        .any(|f| f == "-/etc/drover/worker.env"));
    assert!(install.contains("install -m 0600 /dev/null /etc/drover/worker.env"));
    // The stop timeout fits: drover worker --stop-timeout's default.
    let help = std::process::Command::new(env!("CARGO_BIN_EXE_drover"))
        .args(["worker", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout).into_owned();
    let stop = help
        .split("--stop-timeout")
        .nth(1)
        .and_then(|s| s.split("[default: ").nth(1))
        .and_then(|s| s.split(']').next())
        .map(|d| humantime::parse_duration(d).unwrap())
        .expect("--stop-timeout has a default");
    let unit_stop =
        std::time::Duration::from_secs(key(&worker, "TimeoutStopSec")[0].parse().unwrap());
    assert!(
        unit_stop > stop,
        "TimeoutStopSec {unit_stop:?} > --stop-timeout {stop:?}"
    );
    // The config example's backup dir is writable under ProtectSystem=strict.
    let example = read("config/drover.toml");
    let dir = example
        .lines()
        .find_map(|l| l.trim_start_matches(['#', ' ']).strip_prefix("dir = "))
        .map(|d| d.trim_matches('"').to_string())
        .expect("config/drover.toml shows a backup dir");
    assert!(
        key(&node, "ReadWritePaths")
            .iter()
            .any(|p| p.trim_start_matches('-') == dir),
        "ReadWritePaths lists {dir}"
    );
}
