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
    // Invariant 1: psi, mpc-engine, zk-proofs depend on neither tokio,
    // tonic nor prost, directly or through anything else.
    let meta = metadata();
    let (names, edges) = normal_edges(&meta);
    for krate in ["stayput-psi", "stayput-pir", "stayput-mpc-engine", "stayput-zk-proofs"] {
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
    for krate in ["psi", "pir", "mpc-engine", "zk-proofs"] {
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
