//! The shape of the library: every `crate::X` path written in a top-level
//! module's files is an arrow from it to `X`, and the arrows form no
//! circle, so each module sits on the ones below it. The client (linked
//! into workers and producers) reaches nothing of the server.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Top-level module -> the top-level modules its files name.
fn arrows() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut stack = vec![src.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            let rel = path
                .strip_prefix(&src)
                .unwrap()
                .to_string_lossy()
                .to_string();
            if rel.starts_with("bin") {
                continue;
            }
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let top = rel
                .split('/')
                .next()
                .unwrap()
                .trim_end_matches(".rs")
                .to_string();
            if top == "lib" {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let names = out.entry(top.clone()).or_default();
            let mut rest = text.as_str();
            while let Some(i) = rest.find("crate::") {
                rest = &rest[i + "crate::".len()..];
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                let grouped = rest.starts_with('{');
                if grouped {
                    // `use crate::{a, b::c}`: each first segment.
                    let group = &rest[1..rest.find('}').unwrap_or(rest.len())];
                    for part in group.split(',') {
                        let first: String = part
                            .trim()
                            .chars()
                            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                            .collect();
                        if !first.is_empty() && first != top {
                            names.insert(first);
                        }
                    }
                } else if !name.is_empty() && name != top {
                    names.insert(name);
                }
            }
        }
    }
    out
}

/// A circle through `from`, if there is one.
fn circle(
    arrows: &BTreeMap<String, BTreeSet<String>>,
    from: &str,
    at: &str,
    path: &mut Vec<String>,
    seen: &mut BTreeSet<String>,
) -> Option<Vec<String>> {
    for next in arrows.get(at).into_iter().flatten() {
        if next == from {
            let mut found = path.clone();
            found.push(next.clone());
            return Some(found);
        }
        if seen.insert(next.clone()) {
            path.push(next.clone());
            if let Some(c) = circle(arrows, from, next, path, seen) {
                return Some(c);
            }
            path.pop();
        }
    }
    None
}

#[test]
fn no_circle_among_the_top_level_modules() {
    let arrows = arrows();
    assert!(arrows.len() > 20, "the walk found {} modules", arrows.len());
    let mut circles = Vec::new();
    for module in arrows.keys() {
        let mut path = vec![module.clone()];
        if let Some(c) = circle(&arrows, module, module, &mut path, &mut BTreeSet::new()) {
            circles.push(c.join(" -> "));
        }
    }
    assert!(
        circles.is_empty(),
        "import circles (move the shared name down to the module that owns it):\n{}",
        circles.join("\n")
    );
}

#[test]
fn the_client_reaches_nothing_of_the_server() {
    let arrows = arrows();
    let allowed: BTreeSet<&str> = ["wire", "proto", "clock", "shutdown"].into();
    let reached: Vec<&String> = arrows["client"]
        .iter()
        .filter(|m| !allowed.contains(m.as_str()))
        .collect();
    assert!(reached.is_empty(), "the client imports {reached:?}");
}
