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
