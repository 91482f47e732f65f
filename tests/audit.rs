//! The audit log over real sockets: changes made through the admin API are
//! recorded with who, what, why and how they ended, paged newest first, and
//! removed after `jobs.audit_retention`.

mod common;

use std::time::Duration;

use common::*;
use drover::api::types::{AuditPageBody, ErrorBody};

fn tokens(extra: &str) -> (TestNode, String, String) {
    let (admin, admin_hash) = drover::token::generate().unwrap();
    let (ops, ops_hash) = drover::token::generate().unwrap();
    let node = TestNode::start(&format!(
        "{extra}[[tokens]]\nname = \"root\"\nrole = \"admin\"\nhash = \"{admin_hash}\"\n[[tokens]]\nname = \"alice\"\nrole = \"operate\"\nhash = \"{ops_hash}\"\n"
    ));
    (node, admin, ops)
}

#[tokio::test]
async fn changes_are_recorded_with_who_what_why_and_outcome() {
    let (node, admin, ops) = tokens("");
    let out = drover_cli(
        &["enqueue", "--queue", "q", "--payload", "x"],
        &node.grpc,
        &admin,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();

    let out = drover_cli(
        &["jobs", "cancel", &id, "--reason", "stuck since noon"],
        &node.grpc,
        &ops,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A refused cancel changes nothing, the audit log included.
    let out = drover_cli(&["jobs", "cancel", &id], &node.grpc, &ops);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already_finished"));
    let out = drover_cli(&["cluster", "add", "9", "127.0.0.1:1"], &node.grpc, &admin);
    assert!(!out.status.success());
    // A backup is recorded.
    let file = node.dir.path().join("backup.snap");
    let out = drover_cli(
        &[
            "snapshot",
            "save",
            file.to_str().unwrap(),
            "--reason",
            "nightly",
        ],
        &node.grpc,
        &admin,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = drover_cli(&["audit", "--json"], &node.grpc, &ops);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let page: AuditPageBody = serde_json::from_slice(&out.stdout).unwrap();
    let records = &page.records;
    let summary: Vec<(String, String, String, String)> = records
        .iter()
        .map(|r| {
            (
                r.who.clone(),
                r.action.clone(),
                r.reason.clone(),
                r.outcome.split(':').next().unwrap().to_string(),
            )
        })
        .collect();
    let s = |a: &str, b: &str, c: &str, d: &str| (a.into(), b.into(), c.into(), d.into());
    assert_eq!(
        summary,
        vec![
            s("root", "snapshot", "nightly", "ok"),
            s("alice", "job.cancel", "stuck since noon", "ok"),
        ],
        "newest first"
    );
    assert_eq!(records[1].target, format!("job {id}"));

    // Paging: one at a time, following `next`.
    let as_ops = node.admin_as(&ops);
    let mut seen = Vec::new();
    let mut before: Option<String> = None;
    for _ in 0..5 {
        let mut path = "/api/v1/audit?limit=1".to_string();
        if let Some(b) = &before {
            path.push_str(&format!("&before={b}"));
        }
        let page: AuditPageBody = as_ops.get(&path).await.unwrap();
        seen.push(page.records[0].action.clone());
        match page.next {
            Some(n) => before = Some(n),
            None => break,
        }
    }
    assert_eq!(seen, ["snapshot", "job.cancel"]);

    // A bad cursor is the caller's mistake, named.
    let http = reqwest::Client::new();
    let resp = http
        .get(format!("{}/api/v1/audit?before=zz", node.http))
        .bearer_auth(&ops)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let body: ErrorBody = resp.json().await.unwrap();
    assert_eq!(
        body.error.details.get("field").and_then(|f| f.as_str()),
        Some("before"),
        "{body:?}"
    );
}

#[tokio::test]
async fn audit_records_are_removed_after_their_retention() {
    let (node, admin, _) = tokens("[jobs]\naudit_retention = \"2s\"\n");
    let http = reqwest::Client::new();
    let resp = http
        .get(format!("{}/api/v1/snapshot", node.http))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let as_admin = node.admin_as(&admin);
    let count = || async {
        let page: AuditPageBody = as_admin.get("/api/v1/audit").await.unwrap();
        page.records.len()
    };
    assert_eq!(count().await, 1);
    wait_for(
        "the audit record to expire",
        Duration::from_secs(20),
        || async {
            match count().await {
                0 => Ok(()),
                n => Err(format!("{n} records left")),
            }
        },
    )
    .await;
}
