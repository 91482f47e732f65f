//! Who may call what, over real sockets: every HTTP route (as the router
//! is built from them) and every gRPC method (as the proto declares them)
//! is called with no token, a wrong token and each role's token, and
//! answers only the roles its rule names. A new route or rpc without a rule
//! fails here.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::raw_grpc;
use common::*;
use drover::api::auth::{Access, GRPC_ROUTES};
use drover::api::types::{EnqueuedBody, ErrorBody, JobsPageBody};
use drover::config::Role;

/// A node with one token per role; returns it and the tokens by role.
fn node_with_tokens() -> (TestNode, Vec<(Role, String)>) {
    let mut config = String::new();
    let mut tokens = Vec::new();
    for role in Role::ALL {
        let (token, hash) = drover::token::generate().unwrap();
        config.push_str(&format!(
            "[[tokens]]\nname = \"{}-token\"\nrole = \"{}\"\nhash = \"{hash}\"\n",
            role.as_str(),
            role.as_str()
        ));
        tokens.push((role, token));
    }
    (TestNode::start(&config), tokens)
}

/// Whose credentials a call carries.
#[derive(Debug, Clone)]
enum Who {
    Nobody,
    Stranger,
    Role(Role, String),
}

impl Who {
    fn header(&self) -> Option<String> {
        match self {
            Who::Nobody => None,
            Who::Stranger => Some(
                "Bearer drv_0000000000000000000000000000000000000000000000000000000000000000"
                    .into(),
            ),
            Who::Role(_, t) => Some(format!("Bearer {t}")),
        }
    }

    /// What the rule says this caller gets: Ok (passes auth), or the HTTP
    /// status of the refusal.
    fn expect(&self, access: Access) -> Result<(), u16> {
        // These nodes leave /metrics open (protect_metrics = false).
        if access == Access::Open || access == Access::Metrics {
            return Ok(());
        }
        match self {
            Who::Nobody | Who::Stranger => Err(401),
            Who::Role(role, _) if access.allows(*role) => Ok(()),
            Who::Role(..) => Err(403),
        }
    }
}

fn everyone(tokens: &[(Role, String)]) -> Vec<Who> {
    let mut all = vec![Who::Nobody, Who::Stranger];
    all.extend(tokens.iter().map(|(r, t)| Who::Role(*r, t.clone())));
    all
}

/// A concrete path and body for a route.
fn concrete(path: &str) -> (String, Option<serde_json::Value>) {
    let p = path.replace("{queue}", "q").replace("{id}", "1");
    let body = match path {
        "/api/v1/queues/{queue}/jobs" => Some(serde_json::json!({"payload": "x"})),
        "/api/v1/cluster/members" => Some(serde_json::json!({"id": 9, "addr": "127.0.0.1:1"})),
        "/api/v1/cluster/transfer-leader" => Some(serde_json::json!({"id": 1})),
        _ => None,
    };
    (p, body)
}

#[tokio::test]
async fn every_http_route_answers_only_the_roles_its_rule_names() {
    let (node, tokens) = node_with_tokens();
    let http = reqwest::Client::new();
    let producer = &tokens.iter().find(|(r, _)| *r == Role::Producer).unwrap().1;
    // Job 1 belongs to the producer, so its cancel passes the handler too.
    let resp = http
        .post(format!("{}/api/v1/queues/q/jobs", node.http))
        .bearer_auth(producer)
        .json(&serde_json::json!({"payload": "mine"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);

    let rules = drover::api::http::rules();
    assert!(rules.len() >= 14, "the route list is the router's");
    let mut checked = 0;
    for rule in &rules {
        let (path, body) = concrete(rule.path);
        for who in everyone(&tokens) {
            let mut req = http.request(rule.method.clone(), format!("{}{path}", node.http));
            if let Some(h) = who.header() {
                req = req.header("authorization", h);
            }
            if let Some(b) = &body {
                req = req.json(b);
            }
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            match who.expect(rule.access) {
                Ok(()) => assert!(
                    status != 401 && status != 403,
                    "{} {path} as {who:?}: {status}, the rule ({:?}) lets it in",
                    rule.method,
                    rule.access
                ),
                Err(want) => {
                    assert_eq!(
                        status, want,
                        "{} {path} as {who:?} ({:?})",
                        rule.method, rule.access
                    );
                    let body: ErrorBody = resp.json().await.unwrap();
                    let code = if want == 401 {
                        "unauthenticated"
                    } else {
                        "permission_denied"
                    };
                    assert_eq!(body.error.code, code, "{body:?}");
                }
            }
            checked += 1;
        }
    }
    println!("{checked} HTTP calls checked");
}

#[tokio::test]
async fn a_producer_cancels_its_own_jobs_only() {
    let (node, tokens) = node_with_tokens();
    let token = |role: Role| tokens.iter().find(|(r, _)| *r == role).unwrap().1.clone();
    let http = reqwest::Client::new();
    let enqueue = |t: String| {
        http.post(format!("{}/api/v1/queues/q/jobs", node.http))
            .bearer_auth(t)
            .json(
                &serde_json::json!({"payload": "x", "labels": {"drover.token": "producer-token"}}),
            )
            .send()
    };
    let by_admin: EnqueuedBody = enqueue(token(Role::Admin))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let by_producer: EnqueuedBody = enqueue(token(Role::Producer))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let cancel = |id: u64| {
        http.post(format!("{}/api/v1/jobs/{id}/cancel", node.http))
            .bearer_auth(token(Role::Producer))
            .send()
    };
    // The admin's job claimed the producer's label; the node dropped it.
    // So the producer may neither read nor cancel it.
    let read = |id: u64| {
        http.get(format!("{}/api/v1/jobs/{id}", node.http))
            .bearer_auth(token(Role::Producer))
            .send()
    };
    assert_eq!(read(by_admin.id).await.unwrap().status(), 403);
    assert_eq!(read(by_producer.id).await.unwrap().status(), 200);
    let mut p = drover::client::Producer::connect_with(
        &node.grpc,
        &drover::client::Credentials::new(Some(&token(Role::Producer)), None).unwrap(),
    )
    .await
    .unwrap();
    let err = p.get(by_admin.id).await.unwrap_err();
    assert!(err.to_string().contains("only its own"), "{err}");
    let resp = cancel(by_admin.id).await.unwrap();
    assert_eq!(resp.status(), 403);
    let resp = cancel(by_producer.id).await.unwrap();
    assert_eq!(resp.status(), 200);
}

/// The rpcs the proto declares, as gRPC paths.
fn proto_rpcs() -> BTreeSet<String> {
    let proto = include_str!("../proto/drover/v1/drover.proto");
    let mut service = "";
    let mut out = BTreeSet::new();
    for line in proto.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("service ") {
            service = rest.split_whitespace().next().unwrap_or("");
        } else if let Some(rest) = line.strip_prefix("rpc ") {
            let method = rest.split('(').next().unwrap_or("").trim();
            out.insert(format!("/drover.v1.{service}/{method}"));
        }
    }
    out
}

#[test]
fn every_rpc_of_the_proto_has_a_rule() {
    let ruled: BTreeSet<String> = GRPC_ROUTES.iter().map(|(p, _)| p.to_string()).collect();
    assert_eq!(
        proto_rpcs(),
        ruled,
        "each rpc needs a line in api::auth::GRPC_ROUTES"
    );
}

#[tokio::test]
async fn every_grpc_method_answers_only_the_roles_its_rule_names() {
    let (node, tokens) = node_with_tokens();
    let mut checked = 0;
    for (path, access) in GRPC_ROUTES {
        for who in everyone(&tokens) {
            let auth = who.header();
            let headers: Vec<(&str, &str)> = auth
                .as_deref()
                .map(|h| vec![("authorization", h)])
                .unwrap_or_default();
            // One empty message: decodes as a default request of any type.
            let reply = raw_grpc::call_with_headers(
                &node.grpc,
                path,
                &headers,
                vec![raw_grpc::frame(&[])],
                Duration::from_secs(5),
                1,
            )
            .await;
            let status = reply.grpc_status;
            match who.expect(*access) {
                Ok(()) => assert!(
                    status != Some(16) && status != Some(7),
                    "{path} as {who:?}: grpc-status {status:?} {}, the rule ({access:?}) lets it in",
                    reply.grpc_message
                ),
                Err(401) => assert_eq!(status, Some(16), "{path} as {who:?}: {}", reply.grpc_message),
                Err(_) => assert_eq!(status, Some(7), "{path} as {who:?}: {}", reply.grpc_message),
            }
            checked += 1;
        }
    }
    println!("{checked} gRPC calls checked");
}

#[test]
fn openapi_documents_every_route_and_no_other() {
    use utoipa::OpenApi;
    let doc = drover::api::http::openapi::ApiDoc::openapi();
    let mut documented = BTreeSet::new();
    for (path, item) in &doc.paths.paths {
        for (m, op) in [
            ("GET", &item.get),
            ("POST", &item.post),
            ("PUT", &item.put),
            ("DELETE", &item.delete),
            ("PATCH", &item.patch),
        ] {
            if op.is_some() {
                documented.insert(format!("{m} {path}"));
            }
        }
    }
    let routed: BTreeSet<String> = drover::api::http::rules()
        .iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert_eq!(documented, routed);
}

#[tokio::test]
async fn without_tokens_a_node_refuses_a_public_address() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("open.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\ngrpc_addr = \"0.0.0.0:0\"\n",
            dir.path().join("data")
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_drover"))
        .args(["serve", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("grpc_addr") && err.contains("tokens"), "{err}");
}

#[tokio::test]
async fn a_token_over_its_rate_limit_gets_429_with_retry_after() {
    let (token, hash) = drover::token::generate().unwrap();
    let node = TestNode::start(&format!(
        "[[tokens]]\nname = \"slow\"\nrole = \"read\"\nhash = \"{hash}\"\nrate_limit = 1\nburst = 2\n"
    ));
    let http = reqwest::Client::new();
    let mut statuses = Vec::new();
    for _ in 0..5 {
        let resp = http
            .get(format!("{}/api/v1/stats?stale=ok", node.http))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        statuses.push(resp.status().as_u16());
        if resp.status() == 429 {
            assert!(resp.headers().contains_key("retry-after"));
            let body: ErrorBody = resp.json().await.unwrap();
            assert_eq!(body.error.code, "rate_limited");
        }
    }
    assert_eq!(&statuses[..2], &[200, 200], "{statuses:?}");
    assert!(statuses.contains(&429), "{statuses:?}");
}

#[tokio::test]
async fn protected_metrics_need_a_read_token() {
    let (token, hash) = drover::token::generate().unwrap();
    let node = TestNode::start(&format!(
        "protect_metrics = true\n[[tokens]]\nname = \"prom\"\nrole = \"read\"\nhash = \"{hash}\"\n"
    ));
    let http = reqwest::Client::new();
    let url = format!("{}/metrics", node.http);
    assert_eq!(http.get(&url).send().await.unwrap().status(), 401);
    let resp = http.get(&url).bearer_auth(&token).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    // The probes stay open.
    let health = http
        .get(format!("{}/health", node.http))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
}

#[tokio::test]
async fn a_producer_token_may_be_limited_per_tenant() {
    let (token, hash) = drover::token::generate().unwrap();
    let node = TestNode::start(&format!(
        "[[tokens]]\nname = \"app\"\nrole = \"producer\"\nhash = \"{hash}\"\ntenant_rate_limit = 1\ntenant_burst = 2\n"
    ));
    let http = reqwest::Client::new();
    let enqueue = |tenant: &'static str| {
        http.post(format!("{}/api/v1/queues/q/jobs", node.http))
            .bearer_auth(&token)
            .json(&serde_json::json!({"payload": "x", "tenant": tenant}))
            .send()
    };
    let mut flood = Vec::new();
    for _ in 0..4 {
        flood.push(enqueue("noisy").await.unwrap().status().as_u16());
    }
    assert_eq!(&flood[..2], &[201, 201], "{flood:?}");
    assert!(flood.contains(&429), "{flood:?}");
    // Another tenant of the same token is not held back by the first.
    assert_eq!(enqueue("quiet").await.unwrap().status(), 201);
}

/// Spellings of a path that a router might take for another: none of them
/// reaches a route without a token.
#[tokio::test]
async fn odd_spellings_of_paths_reach_nothing_without_a_token() {
    let (node, _tokens) = node_with_tokens();
    let http = reqwest::Client::new();
    for (method, path) in [
        ("GET", "/api/v1/stats/"),
        ("GET", "//api/v1/stats"),
        ("GET", "/api/v1//stats"),
        ("GET", "/api/v1/%73tats"),
        ("GET", "/API/V1/STATS"),
        ("GET", "/api/v1/./stats"),
        ("GET", "/api/v1/jobs/../stats"),
        ("HEAD", "/api/v1/stats"),
        ("OPTIONS", "/api/v1/stats"),
        ("GET", "/api/v1/snapshot?x=/health"),
        ("POST", "/drover.v1.PeerService/Members"),
        ("POST", "/drover.v1.PeerService/Members/"),
        (
            "POST",
            "/drover.v1.ProducerService/Enqueue/../../drover.v1.PeerService/Members",
        ),
    ] {
        let resp = http
            .request(method.parse().unwrap(), format!("{}{path}", node.http))
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        assert!(
            status == 401 || status == 404 || status == 405,
            "{method} {path}: {status}"
        );
    }
}

#[tokio::test]
async fn the_rate_limit_counts_each_message_of_an_enqueue_stream() {
    let (token, hash) = drover::token::generate().unwrap();
    let node = TestNode::start(&format!(
        "[[tokens]]\nname = \"app\"\nrole = \"producer\"\nhash = \"{hash}\"\nrate_limit = 1\nburst = 3\n"
    ));
    let creds = drover::client::Credentials::new(Some(&token), None).unwrap();
    let p = drover::client::Producer::connect_with(&node.grpc, &creds)
        .await
        .unwrap();
    let mut stream = p.enqueue_stream().await.unwrap();
    let mut refused = 0;
    for _ in 0..6 {
        if let Err(e) = stream.enqueue(vec![new_job("q", "x")]).await {
            assert!(e.to_string().contains("rate limit"), "{e}");
            refused += 1;
        }
    }
    assert!(refused >= 2, "{refused} of 6 refused");
}

/// SIGHUP reloads the tokens and the log level and says what changed,
/// including keys that take a restart; a broken file changes nothing.
/// Neither tokens nor payloads reach the log, even at debug level.
#[tokio::test]
async fn sighup_reloads_tokens_and_log_level_and_the_log_never_holds_secrets() {
    let (admin, admin_hash) = drover::token::generate().unwrap();
    let (reader, reader_hash) = drover::token::generate().unwrap();
    let entry = |name: &str, role: &str, hash: &str| {
        format!("[[tokens]]\nname = \"{name}\"\nrole = \"{role}\"\nhash = \"{hash}\"\n")
    };
    let mut node = TestNode::prepare("127.0.0.1:0", &entry("root", "admin", &admin_hash));
    let log = node.dir.path().join("node.log");
    node.log_file = Some(log.clone());
    node.spawn();
    let (pid, http) = (node.pid(), node.http.clone());
    let stats = |token: String| {
        let url = format!("{http}/api/v1/stats");
        async move {
            reqwest::Client::new()
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(stats(reader.clone()).await, 401);
    let secret_payload = "payload-that-must-not-be-logged";
    drover_ok(
        &[
            "enqueue",
            "--queue",
            "q",
            "--payload",
            secret_payload,
            "--token",
            &admin,
        ],
        &node.grpc,
    );

    let hup_and_wait = |event: &'static str| {
        signal(pid, libc::SIGHUP);
        let log = log.clone();
        async move {
            wait_for(
                &format!("{event} in the log"),
                Duration::from_secs(20),
                || async {
                    let text = std::fs::read_to_string(&log).unwrap_or_default();
                    if text.contains(event) {
                        Ok(text)
                    } else {
                        Err(text.lines().last().unwrap_or("").to_string())
                    }
                },
            )
            .await
        }
    };
    // Add the reader, debug logging, and a key that takes a restart.
    node.extra_config = format!(
        "shutdown_grace = \"3s\"\n{}{}",
        entry("root", "admin", &admin_hash),
        entry("reader", "read", &reader_hash)
    );
    let config = node.write_config();
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace("level = \"info,raft=warn\"", "level = \"debug,raft=warn\""),
    )
    .unwrap();
    let text = hup_and_wait("config_restart_needed").await;
    assert!(
        text.contains("tokens_reloaded") && text.contains("reader"),
        "{text}"
    );
    assert!(text.contains("log_level_changed"), "{text}");
    assert!(text.contains("shutdown_grace"), "{text}");
    assert_eq!(stats(reader.clone()).await, 200);
    assert_eq!(stats(admin.clone()).await, 200);
    // A wrong token at debug level: refused and logged, the token not.
    assert_eq!(stats("not-a-real-token-xyz".into()).await, 401);

    // The root token goes; then a broken file keeps the reader working.
    node.extra_config = entry("reader", "read", &reader_hash);
    node.write_config();
    hup_and_wait("removed=[\"root\"]").await;
    assert_eq!(stats(admin.clone()).await, 401);
    std::fs::write(&config, "node_id = \"not a number\"\n").unwrap();
    hup_and_wait("config_reload_failed").await;
    assert_eq!(stats(reader.clone()).await, 200);

    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("request_refused"),
        "debug logging took effect: {text}"
    );
    for secret in [
        admin.as_str(),
        reader.as_str(),
        "not-a-real-token-xyz",
        secret_payload,
    ] {
        assert!(!text.contains(secret), "the log holds {secret:?}");
    }
}

/// A Register on a raw Work stream with `token`: the gRPC status it ends
/// with, or None if the node took it.
async fn register_with(
    node: &TestNode,
    token: &str,
    worker_id: &str,
    queues: &[&str],
) -> (Option<i32>, String) {
    use prost::Message;
    let register = drover::proto::v1::WorkerMessage {
        msg: Some(drover::proto::v1::worker_message::Msg::Register(
            drover::proto::v1::Register {
                worker_id: worker_id.into(),
                queues: queues.iter().map(|q| q.to_string()).collect(),
                capacity: 1,
                ..Default::default()
            },
        )),
    }
    .encode_to_vec();
    let auth = format!("Bearer {token}");
    let reply = raw_grpc::call_with_headers(
        &node.grpc,
        "/drover.v1.WorkerService/Work",
        &[("authorization", auth.as_str())],
        vec![raw_grpc::frame(&register)],
        Duration::from_secs(2),
        1,
    )
    .await;
    // grpc-message is percent-encoded.
    let raw = reply.grpc_message.as_bytes();
    let mut message = Vec::new();
    let mut i = 0;
    while i < raw.len() {
        let hex = raw
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match (raw[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(b)) => {
                message.push(b);
                i += 3;
            }
            (c, _) => {
                message.push(c);
                i += 1;
            }
        }
    }
    (
        reply.grpc_status,
        String::from_utf8_lossy(&message).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scoped_tokens_reach_only_their_tenants_queues_and_worker_ids() {
    let mut config = String::new();
    let mut token = std::collections::BTreeMap::new();
    for (name, role, scope) in [
        (
            "acme-p",
            "producer",
            "tenants = [\"acme\"]\nqueues = [\"emails\", \"render-*\"]\n",
        ),
        ("any-p", "producer", ""),
        ("acme-reader", "read", "tenants = [\"acme\"]\n"),
        ("mail", "worker", "queues = [\"emails\"]\n"),
        (
            "render-fleet",
            "worker",
            "queues = [\"render-*\"]\nworker_prefix = \"render-\"\n",
        ),
        ("plain-w", "worker", ""),
    ] {
        let (secret, hash) = drover::token::generate().unwrap();
        config.push_str(&format!(
            "[[tokens]]\nname = \"{name}\"\nrole = \"{role}\"\nhash = \"{hash}\"\n{scope}"
        ));
        token.insert(name, secret);
    }
    let node = TestNode::start(&config);
    let http = reqwest::Client::new();
    let enqueue = |who: &str, tenant: &str, queue: &str| {
        http.post(format!("{}/api/v1/queues/{queue}/jobs", node.http))
            .bearer_auth(&token[who])
            .json(&serde_json::json!({"payload": "x", "tenant": tenant}))
            .send()
    };
    // A producer scoped to acme is refused for globex, and outside its queues.
    let acme = enqueue("acme-p", "acme", "emails").await.unwrap();
    assert_eq!(acme.status(), 201);
    let acme: EnqueuedBody = acme.json().await.unwrap();
    assert_eq!(
        enqueue("acme-p", "acme", "render-3d")
            .await
            .unwrap()
            .status(),
        201
    );
    let refused = enqueue("acme-p", "globex", "emails").await.unwrap();
    assert_eq!(refused.status(), 403);
    let text = refused.text().await.unwrap();
    assert!(
        text.contains("tenants scope") && text.contains("globex"),
        "{text}"
    );
    let refused = enqueue("acme-p", "acme", "billing").await.unwrap();
    assert_eq!(refused.status(), 403);
    assert!(refused.text().await.unwrap().contains("queues scope"));
    // And over gRPC alike.
    let mut p = drover::client::Producer::connect_with(
        &node.grpc,
        &drover::client::Credentials::new(Some(&token["acme-p"]), None).unwrap(),
    )
    .await
    .unwrap();
    let job = drover::proto::v1::NewJob {
        tenant: "globex".into(),
        ..new_job("emails", "x")
    };
    let err = p.enqueue(vec![job]).await.unwrap_err().to_string();
    assert!(err.contains("tenants scope"), "{err}");
    // Without scopes nothing changes.
    let globex = enqueue("any-p", "globex", "emails").await.unwrap();
    assert_eq!(globex.status(), 201);
    let globex: EnqueuedBody = globex.json().await.unwrap();

    // A reader scoped to acme reads acme's jobs only.
    let read = |id: u64| {
        http.get(format!("{}/api/v1/jobs/{id}", node.http))
            .bearer_auth(&token["acme-reader"])
            .send()
    };
    assert_eq!(read(acme.id).await.unwrap().status(), 200);
    let refused = read(globex.id).await.unwrap();
    assert_eq!(refused.status(), 403);
    assert!(refused.text().await.unwrap().contains("tenants scope"));
    let listed: JobsPageBody = node
        .admin_as(&token["acme-reader"])
        .get("/api/v1/jobs?queue=emails")
        .await
        .unwrap();
    let tenants: BTreeSet<String> = listed.jobs.iter().map(|j| j.tenant.clone()).collect();
    assert_eq!(tenants, BTreeSet::from(["acme".to_string()]), "{listed:?}");

    // A worker scoped to emails may not serve render queues, nor take an
    // id that is not its own.
    let denied = tonic::Code::PermissionDenied as i32;
    let (status, message) = register_with(&node, &token["mail"], "mail-1", &["render-3d"]).await;
    assert_eq!(status, Some(denied), "{message}");
    assert!(message.contains("queues scope"), "{message}");
    let (status, message) = register_with(&node, &token["mail"], "render-1", &["emails"]).await;
    assert_eq!(status, Some(denied), "{message}");
    assert!(
        message.contains("worker_id starts with \"mail\""),
        "{message}"
    );
    let (status, message) = register_with(
        &node,
        &token["render-fleet"],
        "render-gpu-1",
        &["render-3d"],
    )
    .await;
    assert_eq!(status, None, "its own prefix is taken: {message}");
    let (status, _) =
        register_with(&node, &token["render-fleet"], "render-fleet-1", &["emails"]).await;
    assert_eq!(status, Some(denied));
    // An unscoped worker token registers any id, as before.
    let (status, message) = register_with(&node, &token["plain-w"], "anything", &["emails"]).await;
    assert_eq!(status, None, "{message}");
}
