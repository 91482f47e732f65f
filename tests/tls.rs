//! TLS on real sockets: a client that trusts the cluster CA gets in, one
//! that does not (or speaks plain TCP) is refused; with `peer_mtls`, peer
//! traffic without a certificate the CA signed is refused; and a 3-node
//! cluster with TLS, mutual TLS and tokens elects a leader and replicates.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::*;
use drover::api::types::StatsBody;
use drover::client::admin::AdminClient;
use drover::client::{ClientTls, Credentials, Producer};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};

struct Pki {
    dir: tempfile::TempDir,
    ca: (rcgen::Certificate, KeyPair),
}

/// A leaf certificate for 127.0.0.1 and localhost, signed by `issuer`,
/// written as `FILE.pem` and `FILE-key.pem` in `dir`.
fn write_leaf(
    dir: &std::path::Path,
    issuer: &(rcgen::Certificate, KeyPair),
    file: &str,
    not_after: Option<(i32, u8, u8)>,
) {
    let mut p =
        CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
    if let Some((y, m, d)) = not_after {
        p.not_after = rcgen::date_time_ymd(y, m, d);
    }
    let key = KeyPair::generate().unwrap();
    let cert = p.signed_by(&key, &issuer.0, &issuer.1).unwrap();
    std::fs::write(dir.join(format!("{file}.pem")), cert.pem()).unwrap();
    std::fs::write(dir.join(format!("{file}-key.pem")), key.serialize_pem()).unwrap();
}

/// Midnight UTC of a date, as Unix seconds.
fn unix(y: i32, m: u32, d: u32) -> i64 {
    chrono::NaiveDate::from_ymd_opt(y, m, d)
        .unwrap()
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc()
        .timestamp()
}

impl Pki {
    /// A CA, a node certificate it signed (for 127.0.0.1 and localhost),
    /// and a client certificate from another CA.
    fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let ca = |name: &str| {
            let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
            p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            p.distinguished_name.push(DnType::CommonName, name);
            let key = KeyPair::generate().unwrap();
            let cert = p.self_signed(&key).unwrap();
            (cert, key)
        };
        let cluster_ca = ca("drover test CA");
        std::fs::write(dir.path().join("ca.pem"), cluster_ca.0.pem()).unwrap();
        write_leaf(dir.path(), &cluster_ca, "node", None);
        let rogue_ca = ca("someone else");
        write_leaf(dir.path(), &rogue_ca, "rogue", None);
        Pki {
            dir,
            ca: cluster_ca,
        }
    }

    /// A new node certificate from the cluster CA over the old files.
    fn renew_node(&self, not_after: (i32, u8, u8)) {
        write_leaf(self.dir.path(), &self.ca, "node", Some(not_after));
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn read(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.path(name)).unwrap()
    }

    fn tls_config(&self, peer_mtls: bool) -> String {
        format!(
            "[tls]\ncert = {:?}\nkey = {:?}\nca = {:?}\npeer_mtls = {peer_mtls}\n",
            self.path("node.pem"),
            self.path("node-key.pem"),
            self.path("ca.pem")
        )
    }

    fn client(&self, identity: Option<&str>) -> ClientTls {
        ClientTls {
            ca: self.read("ca.pem"),
            identity: identity.map(|n| {
                (
                    self.read(&format!("{n}.pem")),
                    self.read(&format!("{n}-key.pem")),
                )
            }),
        }
    }

    fn reqwest(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .use_rustls_tls()
            .add_root_certificate(reqwest::Certificate::from_pem(&self.read("ca.pem")).unwrap())
            .build()
            .unwrap()
    }
}

fn https(url: &str) -> String {
    url.replace("http://", "https://")
}

fn install_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

#[tokio::test]
async fn a_client_that_trusts_the_ca_gets_in_and_others_do_not() {
    install_provider();
    let pki = Pki::new();
    let node = TestNode::start(&pki.tls_config(false));
    let url = https(&node.grpc);

    let creds = Credentials::new(None, Some(pki.client(None))).unwrap();
    let mut p = Producer::connect_with(&url, &creds).await.unwrap();
    let ids = p.enqueue(vec![new_job("tls", "over tls")]).await.unwrap();
    assert_eq!(ids.len(), 1);

    // The admin API on the same port and on the HTTP port.
    for base in [https(&node.grpc), https(&node.http)] {
        let resp = pki
            .reqwest()
            .get(format!("{base}/api/v1/jobs/{}", ids[0].id))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{base}");
    }

    // No CA to check the node with: refused before anything is sent.
    assert!(Producer::connect(&url).await.is_err());
    let no_roots = reqwest::Client::builder().use_rustls_tls().build().unwrap();
    assert!(no_roots.get(format!("{url}/health")).send().await.is_err());
    // Plain TCP to a TLS port.
    let plain = async {
        Producer::connect(&node.grpc)
            .await?
            .enqueue(vec![new_job("tls", "x")])
            .await
    };
    assert!(plain.await.is_err());
    assert!(reqwest::get(format!("{}/health", node.grpc)).await.is_err());
}

async fn peer_members_call(url: &str, creds: &Credentials) -> Result<(), tonic::Status> {
    let channel = creds
        .endpoint(url)
        .map_err(tonic::Status::internal)?
        .connect()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let mut client =
        drover::proto::v1::peer_service_client::PeerServiceClient::new(creds.wrap(channel));
    client
        .members(drover::proto::v1::MembersRequest {
            header: Some(drover::proto::v1::PeerHeader {
                cluster_id: "drover".into(),
                from: 2,
                ..Default::default()
            }),
        })
        .await
        .map(drop)
}

#[tokio::test]
async fn with_peer_mtls_peer_traffic_needs_a_certificate_the_ca_signed() {
    install_provider();
    let pki = Pki::new();
    let node = TestNode::start(&pki.tls_config(true));
    let url = https(&node.grpc);

    let anonymous = Credentials::new(None, Some(pki.client(None))).unwrap();
    let err = peer_members_call(&url, &anonymous).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err}");
    assert!(err.message().contains("certificate"), "{err}");

    let peer = Credentials::new(None, Some(pki.client(Some("node")))).unwrap();
    if let Err(e) = peer_members_call(&url, &peer).await {
        assert_ne!(e.code(), tonic::Code::Unauthenticated, "{e}");
    }

    // A certificate from another CA fails the handshake itself.
    let rogue = Credentials::new(None, Some(pki.client(Some("rogue")))).unwrap();
    assert!(peer_members_call(&url, &rogue).await.is_err());

    // Clients need no certificate: producers and the admin API still work.
    let mut p = Producer::connect_with(&url, &anonymous).await.unwrap();
    p.enqueue(vec![new_job("tls", "x")]).await.unwrap();
}

fn stats_leader(s: &StatsBody) -> u64 {
    s.node.leader_id
}

#[tokio::test]
async fn a_three_node_cluster_over_mutual_tls_with_tokens_elects_and_replicates() {
    install_provider();
    let pki = Pki::new();
    let (peer_token, peer_hash) = drover::token::generate().unwrap();
    let (admin_token, admin_hash) = drover::token::generate().unwrap();
    let extra = format!(
        "peer_token = \"{peer_token}\"\n{}[[tokens]]\nname = \"cluster\"\nrole = \"peer\"\nhash = \"{peer_hash}\"\n[[tokens]]\nname = \"admin\"\nrole = \"admin\"\nhash = \"{admin_hash}\"\n",
        pki.tls_config(true)
    );
    let cluster = TestCluster::start(3, &extra);
    let http = pki.reqwest();
    let as_admin = Credentials::new(Some(&admin_token), Some(pki.client(None))).unwrap();
    let stats = |n: &TestNode| {
        let admin = AdminClient::new(&https(&n.http), &as_admin, "").unwrap();
        async move { admin.get::<StatsBody>("/api/v1/stats?stale=ok").await.ok() }
    };
    let leader = wait_for("a leader over TLS", Duration::from_secs(30), || async {
        let mut seen = Vec::new();
        for n in &cluster.nodes {
            seen.push(stats(n).await.map(|s| stats_leader(&s)).unwrap_or(0));
        }
        match seen[0] {
            l if l != 0 && seen.iter().all(|x| *x == l) => Ok(l),
            _ => Err(format!("leaders seen {seen:?}")),
        }
    })
    .await;
    // Through a follower, so forwarding runs over mutual TLS too.
    let follower = if leader == 1 { 1 } else { 0 };
    let creds = Credentials::new(Some(&admin_token), Some(pki.client(None))).unwrap();
    let mut p = Producer::connect_with(&https(&cluster.nodes[follower].grpc), &creds)
        .await
        .unwrap();
    let ids = p
        .enqueue(
            (0..20)
                .map(|i| new_job("tls", &format!("job {i}")))
                .collect(),
        )
        .await
        .unwrap();
    assert_eq!(ids.len(), 20);
    let last = ids.last().unwrap().id;
    for n in &cluster.nodes {
        wait_for("the job on every node", Duration::from_secs(20), || async {
            let resp = http
                .get(format!("{}/api/v1/jobs/{last}", https(&n.http)))
                .bearer_auth(&admin_token)
                .send()
                .await
                .map_err(|e| e.to_string())?;
            if resp.status() == 200 {
                Ok(())
            } else {
                Err(format!("{}", resp.status()))
            }
        })
        .await;
    }
    // Each node looks at what its peers serve: all show node.pem here.
    let node1 = &cluster.nodes[0];
    let own = expiry_gauge(&pki, node1, "node").await;
    assert!(own.is_some());
    for peer in ["peer-2", "peer-3"] {
        wait_for(
            "the peers' certificates looked at",
            Duration::from_secs(30),
            || async {
                match expiry_gauge(&pki, node1, peer).await {
                    e if e == own => Ok(()),
                    e => Err(format!("{peer}: {e:?}, own {own:?}")),
                }
            },
        )
        .await;
    }
    // Without the admin token the same request is refused.
    let resp = http
        .get(format!(
            "{}/api/v1/jobs/{last}",
            https(&cluster.nodes[0].http)
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
}

/// A TLS mismatch gets one clear error that names the fix, on `status`
/// (the admin API), `enqueue` (gRPC) and `worker` alike: plain http://
/// against a TLS node, https:// without a CA, and a CA that did not sign
/// the node's certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_mismatch_names_the_fix_on_every_command() {
    let pki = Pki::new();
    let node = TestNode::start(&pki.tls_config(false));
    let plain = node.grpc.clone();
    let tls = https(&node.grpc);
    let wrong_ca = pki.path("rogue.pem");
    let wrong_ca = wrong_ca.to_str().unwrap();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_drover"))
            .args(args)
            .env_remove("DROVER_CA")
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?} failed");
        assert_ne!(
            out.status.code(),
            None,
            "{args:?} was not killed by a signal (SIGPIPE)"
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    for cmd in [
        vec!["status"],
        vec!["enqueue", "--queue", "q", "--payload", "x"],
    ] {
        let with = |server: &str, ca: Option<&str>| {
            let mut a: Vec<&str> = cmd.clone();
            a.extend(["--server", server]);
            if let Some(ca) = ca {
                a.extend(["--ca", ca]);
            }
            a.iter().map(|s| s.to_string()).collect::<Vec<String>>()
        };
        let said = run(&with(&plain, None)
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>());
        assert!(
            said.contains("use an https:// address"),
            "{cmd:?} over http: {said}"
        );
        let said = run(&with(&tls, None)
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>());
        assert!(said.contains("--ca"), "{cmd:?} without a CA: {said}");
        let said = run(&with(&tls, Some(wrong_ca))
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>());
        assert!(
            said.contains("did not sign"),
            "{cmd:?} with a wrong CA: {said}"
        );
    }
    // A worker keeps trying (the node may be restarting), saying why.
    let mut worker = std::process::Command::new(env!("CARGO_BIN_EXE_drover"))
        .args([
            "worker", "--queue", "q", "--exec", "cat", "--server", &plain,
        ])
        .env("DROVER_LOG", "warn")
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stderr = worker.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut seen = Vec::new();
    let found = loop {
        match rx.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now())) {
            Ok(line) if line.contains("use an https:// address") => break true,
            Ok(line) => seen.push(line),
            Err(_) => break false,
        }
    };
    let _ = worker.kill();
    let _ = worker.wait();
    assert!(found, "the worker says what to do: {seen:?}");
}

/// The `drover_tls_cert_expiry_timestamp_seconds` series for `cert` on the
/// node's `/metrics` page (over TLS, checked against the CA).
async fn expiry_gauge(pki: &Pki, node: &TestNode, cert: &str) -> Option<i64> {
    let page = pki
        .reqwest()
        .get(format!("{}/metrics", https(&node.http)))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    metric_value(
        &page,
        &format!("drover_tls_cert_expiry_timestamp_seconds{{cert=\"{cert}\"}}"),
    )
    .map(|v| v as i64)
}

#[tokio::test]
async fn sighup_serves_a_renewed_certificate_and_a_bad_file_keeps_the_old_one() {
    install_provider();
    let pki = Pki::new();
    pki.renew_node((2031, 1, 2));
    let mut node = TestNode::prepare("127.0.0.1:0", &pki.tls_config(false));
    node.log_file = Some(node.dir.path().join("node.log"));
    node.spawn();
    let served = || drover::api::certs::served_expiry(&node.grpc);
    assert_eq!(served().await, Ok(unix(2031, 1, 2)));
    assert_eq!(
        expiry_gauge(&pki, &node, "node").await,
        Some(unix(2031, 1, 2))
    );
    // rcgen's CAs run to 4096.
    assert_eq!(
        expiry_gauge(&pki, &node, "ca").await,
        Some(unix(4096, 1, 1))
    );

    // Renewed over the same paths: served after SIGHUP, gauge and all.
    pki.renew_node((2032, 3, 4));
    signal(node.pid(), libc::SIGHUP);
    wait_for(
        "the renewed certificate served",
        Duration::from_secs(20),
        || async {
            match served().await {
                Ok(at) if at == unix(2032, 3, 4) => Ok(()),
                other => Err(format!("served {other:?}")),
            }
        },
    )
    .await;
    assert_eq!(
        expiry_gauge(&pki, &node, "node").await,
        Some(unix(2032, 3, 4))
    );
    assert_eq!(node.log_count("tls_reloaded"), 1, "{}", node.log_text());
    // A client that trusts the CA gets in on the new certificate.
    let resp = pki
        .reqwest()
        .get(format!("{}/health", https(&node.http)))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);

    // A certificate file that does not read: the old one stays in effect.
    std::fs::write(pki.path("node.pem"), "not a certificate\n").unwrap();
    signal(node.pid(), libc::SIGHUP);
    wait_for("the reload refused", Duration::from_secs(20), || async {
        match node.log_count("tls_reload_failed") {
            0 => Err("not yet".to_string()),
            _ => Ok(()),
        }
    })
    .await;
    let log = node.log_text();
    assert!(
        log.contains("tls.cert") && log.contains("holds no PEM certificate"),
        "{log}"
    );
    assert_eq!(served().await, Ok(unix(2032, 3, 4)));
    assert_eq!(
        expiry_gauge(&pki, &node, "node").await,
        Some(unix(2032, 3, 4))
    );
    // A key that is not the certificate's: refused too, the old pair kept.
    pki.renew_node((2033, 5, 6));
    let other_key = KeyPair::generate().unwrap();
    std::fs::write(pki.path("node-key.pem"), other_key.serialize_pem()).unwrap();
    signal(node.pid(), libc::SIGHUP);
    wait_for(
        "the mismatched key refused",
        Duration::from_secs(20),
        || async {
            match node.log_count("tls_reload_failed") {
                n if n >= 2 => Ok(()),
                _ => Err("not yet".to_string()),
            }
        },
    )
    .await;
    assert!(
        node.log_text().contains("does not go with tls.cert"),
        "{}",
        node.log_text()
    );
    assert_eq!(served().await, Ok(unix(2032, 3, 4)));
}
