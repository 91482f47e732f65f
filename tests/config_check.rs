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
