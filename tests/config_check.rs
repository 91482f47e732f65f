//! `drover config check FILE` says whether a config would start a node,
//! naming the key that is wrong, without starting one.

use std::process::Command;

fn check(file: &std::path::Path) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_drover"))
        .args(["config", "check"])
        .arg(file)
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("run drover config check");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
fn the_shipped_configs_are_valid() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    for file in [
        "config/drover.toml",
        "config/cluster/node1.toml",
        "config/cluster/node2.toml",
        "config/cluster/node3.toml",
    ] {
        let (ok, text) = check(&root.join(file));
        assert!(ok, "{file}: {text}");
        assert!(text.contains("is valid"), "{text}");
    }
}

#[test]
fn a_bad_config_names_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    for (body, names) in [
        ("[jobs]\nretention = \"0s\"\n", "jobs.retention"),
        (
            "[jobs]\nretention_max_bytes = \"lots\"\n",
            "retention_max_bytes",
        ),
        ("[jobs]\nno_such_key = 1\n", "no_such_key"),
        ("node_id = 0\n", "node_id"),
        (
            "[queues.q]\nquarantine_failure_rate = 1.5\n",
            "quarantine_failure_rate",
        ),
        ("[queues.q]\nquarantine_for = \"0s\"\n", "quarantine_for"),
        (
            "[queues.q]\nworkers = { min = 5, max = 2, expected = 3 }\n",
            "min <= expected <= max",
        ),
        ("[queues.q]\nworkers = { most = 3 }\n", "most"),
        (
            "[queues.q.canary]\nversion = \"v4\"\npercent = 150\n",
            "canary",
        ),
        (
            "[queues.q.canary]\nversion = \"v4\"\npercent = 10\nabort_on = [\"latency\"]\n",
            "latency",
        ),
        (
            "[queues.q.canary]\nversion = \"v4\"\npercent = 10\nmax_duration_ratio = 0.5\n",
            "max_duration_ratio",
        ),
        ("[backup]\nkeep = 0\n", "keep"),
        ("[backup]\nevery = \"soon\"\n", "every"),
        (
            "[tracing]\notlp_endpoint = \"collector:4317\"\n",
            "tracing.otlp_endpoint",
        ),
    ] {
        let file = dir.path().join("bad.toml");
        std::fs::write(&file, body).unwrap();
        let (ok, text) = check(&file);
        assert!(!ok, "{body} was accepted: {text}");
        assert!(text.contains(names), "{body}: {text}");
    }
    let (ok, text) = check(&dir.path().join("missing.toml"));
    assert!(!ok);
    assert!(text.contains("missing.toml"), "{text}");
}

/// The TLS cluster configs are valid once their certificates exist (as
/// `config/cluster-tls/make-certs.sh` makes them), and say which file is
/// missing before.
#[test]
fn the_tls_cluster_configs_are_valid_with_their_certificates() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("config/cluster-tls");
    std::fs::create_dir_all(conf.join("certs")).unwrap();
    let run = |file: &std::path::Path| {
        let out = Command::new(env!("CARGO_BIN_EXE_drover"))
            .args(["config", "check"])
            .arg(file)
            .current_dir(dir.path())
            .env("RUST_BACKTRACE", "0")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.success(), text)
    };
    for n in 1..=3 {
        std::fs::copy(
            root.join(format!("config/cluster-tls/node{n}.toml")),
            conf.join(format!("node{n}.toml")),
        )
        .unwrap();
    }
    let (ok, text) = run(&conf.join("node1.toml"));
    assert!(!ok && text.contains("tls."), "{text}");

    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    std::fs::write(conf.join("certs/ca.pem"), ca_cert.pem()).unwrap();
    for n in 1..=3 {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
            .unwrap()
            .signed_by(&key, &ca_cert, &ca_key)
            .unwrap();
        std::fs::write(conf.join(format!("certs/node{n}.pem")), cert.pem()).unwrap();
        std::fs::write(
            conf.join(format!("certs/node{n}-key.pem")),
            key.serialize_pem(),
        )
        .unwrap();
    }
    for n in 1..=3 {
        let (ok, text) = run(&conf.join(format!("node{n}.toml")));
        assert!(ok && text.contains("TLS"), "node{n}: {text}");
    }
}
