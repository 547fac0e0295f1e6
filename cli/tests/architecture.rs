//! Architecture invariants (ARCHITECTURE.md), checked on the real
//! dependency graph rather than stated in prose.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde_json::Value;

fn metadata() -> Value {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let out = std::process::Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--locked", "--manifest-path"])
        .arg(workspace.join("Cargo.toml"))
        .output()
        .expect("run cargo metadata");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Package name → names of the packages it depends on as a normal
/// (non-dev, non-build) dependency.
fn normal_edges(meta: &Value) -> (BTreeMap<String, String>, BTreeMap<String, Vec<String>>) {
    let names: BTreeMap<String, String> = meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["id"].as_str().unwrap().to_owned(), p["name"].as_str().unwrap().to_owned()))
        .collect();
    let mut edges = BTreeMap::new();
    for node in meta["resolve"]["nodes"].as_array().unwrap() {
        let deps = node["deps"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["dep_kinds"].as_array().unwrap().iter().any(|k| k["kind"].is_null()))
            .map(|d| d["pkg"].as_str().unwrap().to_owned())
            .collect();
        edges.insert(node["id"].as_str().unwrap().to_owned(), deps);
    }
    (names, edges)
}

fn closure(root: &str, names: &BTreeMap<String, String>, edges: &BTreeMap<String, Vec<String>>) -> BTreeSet<String> {
    let start = names.iter().find(|(_, n)| *n == root).map(|(id, _)| id.clone()).expect("package exists");
    let (mut seen, mut stack) = (BTreeSet::new(), vec![start]);
    while let Some(id) = stack.pop() {
        if seen.insert(id.clone()) {
            stack.extend(edges[&id].iter().cloned());
        }
    }
    seen.into_iter().map(|id| names[&id].clone()).collect()
}

#[test]
fn protocol_crates_are_sans_io() {
    // Invariant 1: psi, pir, mpc-engine, learning, zk-proofs depend on neither tokio,
    // tonic nor prost, directly or through anything else.
    let meta = metadata();
    let (names, edges) = normal_edges(&meta);
    for krate in ["stayput-psi", "stayput-pir", "stayput-mpc-engine", "stayput-learning", "stayput-zk-proofs"] {
        let deps = closure(krate, &names, &edges);
        let forbidden: Vec<&String> =
            deps.iter().filter(|d| ["tokio", "tonic", "prost", "hyper", "mio"].contains(&d.as_str())).collect();
        assert!(forbidden.is_empty(), "{krate} pulls in {forbidden:?}");
    }
}

#[test]
fn only_proto_holds_prost_types() {
    // Invariant 2: only the proto crate depends on prost directly.
    let meta = metadata();
    for package in meta["packages"].as_array().unwrap() {
        let name = package["name"].as_str().unwrap();
        if !name.starts_with("stayput-") || name == "stayput-proto" {
            continue;
        }
        for dep in package["dependencies"].as_array().unwrap() {
            let dep_name = dep["name"].as_str().unwrap();
            assert!(!["prost", "prost-types", "tonic-prost"].contains(&dep_name), "{name} depends on {dep_name}");
        }
    }
}

#[test]
fn protocol_crates_forbid_unsafe_code() {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    for krate in ["psi", "pir", "mpc-engine", "learning", "zk-proofs"] {
        let lib = std::fs::read_to_string(workspace.join(krate).join("src/lib.rs")).unwrap();
        assert!(lib.contains("#![forbid(unsafe_code)]"), "{krate}/src/lib.rs must forbid unsafe code");
    }
}

#[test]
fn the_coordinator_does_not_depend_on_the_node() {
    // Identity and dialling are shared through stayput-identity, and the
    // whole consortium on loopback is stayput-localnet, so nothing of the
    // node crate reaches the coordinator — directly or transitively, as a
    // normal, build or dev dependency (its tests included).
    let meta = metadata();
    let names: BTreeMap<&str, &str> = meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["id"].as_str().unwrap(), p["name"].as_str().unwrap()))
        .collect();
    let nodes = meta["resolve"]["nodes"].as_array().unwrap();
    let deps = |id: &str, dev: bool| -> Vec<String> {
        let node = nodes.iter().find(|n| n["id"] == id).expect("resolved package");
        node["deps"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["dep_kinds"].as_array().unwrap().iter().any(|k| dev || k["kind"] != "dev"))
            .map(|d| d["pkg"].as_str().unwrap().to_owned())
            .collect()
    };
    let coordinator = names.iter().find(|(_, n)| **n == "stayput-coordinator").map(|(id, _)| *id).unwrap();
    // The coordinator's own dev-dependencies are built for its tests; a
    // dependency's are not.
    let (mut seen, mut stack) = (BTreeSet::new(), deps(coordinator, true));
    while let Some(id) = stack.pop() {
        if seen.insert(id.clone()) {
            stack.extend(deps(&id, false));
        }
    }
    let reached: BTreeSet<&str> = seen.iter().map(|id| names[id.as_str()]).collect();
    assert!(
        !reached.contains("stayput-node"),
        "stayput-coordinator depends on stayput-node; share code through stayput-identity or move it to stayput-localnet"
    );
    assert!(reached.contains("stayput-identity"), "the check no longer sees the coordinator's dependencies");
}

/// The modules a node source file names (`crate::<module>`), among
/// `modules`.
fn named_modules(source: &str, modules: &BTreeSet<String>) -> BTreeSet<String> {
    let mut named = BTreeSet::new();
    for (i, _) in source.match_indices("crate::") {
        let rest = &source[i + "crate::".len()..];
        let name: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
        if modules.contains(&name) {
            named.insert(name);
        }
    }
    // `use crate::{a, b::c}` groups.
    for (i, _) in source.match_indices("crate::{") {
        let group = &source[i + "crate::{".len()..];
        let group = &group[..group.find('}').unwrap_or(group.len())];
        for item in group.split(',') {
            let name = item.trim().split("::").next().unwrap_or_default().trim();
            if modules.contains(name) {
                named.insert(name.to_owned());
            }
        }
    }
    named
}

/// The node's files import each other without a cycle, so its layers
/// read top to bottom (ARCHITECTURE.md): protocols over the serve path
/// and results, over datasets and configuration.
#[test]
fn the_node_has_no_import_cycles() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().join("node/src");
    let mut files = BTreeMap::new();
    for entry in std::fs::read_dir(&src).unwrap().flatten() {
        let path = entry.path();
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        if name == "lib" {
            continue;
        }
        let mut text = if path.is_dir() { String::new() } else { std::fs::read_to_string(&path).unwrap() };
        // A module's own folder (its tests, its submodules) is part of it.
        let folder = src.join(&name);
        if folder.is_dir() {
            for inner in std::fs::read_dir(&folder).unwrap().flatten() {
                text.push_str(&std::fs::read_to_string(inner.path()).unwrap_or_default());
            }
        }
        files.entry(name).or_insert_with(String::new).push_str(&text);
    }
    let modules: BTreeSet<String> = files.keys().cloned().collect();
    let edges: BTreeMap<String, BTreeSet<String>> = files
        .iter()
        .map(|(name, text)| {
            let mut named = named_modules(text, &modules);
            named.remove(name);
            (name.clone(), named)
        })
        .collect();
    // Depth-first search; a back edge is a cycle, reported with its path.
    fn visit(
        at: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(start) = path.iter().position(|p| p == at) {
            let mut cycle = path[start..].to_vec();
            cycle.push(at.to_owned());
            return Some(cycle);
        }
        if done.contains(at) {
            return None;
        }
        path.push(at.to_owned());
        for next in &edges[at] {
            if let Some(cycle) = visit(next, edges, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(at.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    for module in &modules {
        if let Some(cycle) = visit(module, &edges, &mut Vec::new(), &mut done) {
            panic!("node modules import each other in a cycle: {}", cycle.join(" → "));
        }
    }
    assert!(edges["lookup"].contains("serve"), "the checker reads imports: {edges:?}");
}
