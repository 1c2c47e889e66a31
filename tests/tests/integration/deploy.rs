//! The manifests in deploy/: valid for Kubernetes (checked offline against the API schemas by
//! `kubernetes-validate`), and least-privilege as documented.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use serde_json::Value;
use tests::in_ci;

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

fn manifests() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(deploy_dir())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

/// `python3` with the test tools on its path (`cargo xtask setup` installs them).
fn python() -> Command {
    let mut cmd = Command::new("python3");
    if let Some(p) = std::env::var_os("BELLOWS_PYTHONPATH") {
        cmd.env("PYTHONPATH", p);
    }
    cmd
}

/// Whether kubernetes-validate runs; panics in CI when it does not.
fn validator_available(test: &str) -> bool {
    let ok = python()
        .args(["-m", "kubernetes_validate", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        let why = "kubernetes-validate is not installed (run `cargo xtask setup`)";
        assert!(!in_ci(), "{test}: {why}");
        eprintln!("skipping {test}: {why}");
    }
    ok
}

/// Every YAML document of a file, as JSON (through PyYAML, which kubernetes-validate brings).
fn documents(path: &Path) -> Vec<Value> {
    let out = python()
        .args([
            "-c",
            "import json,sys,yaml; print(json.dumps(list(yaml.safe_load_all(open(sys.argv[1])))))",
        ])
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn manifests_validate_against_the_kubernetes_schemas() {
    if !validator_available("manifests_validate_against_the_kubernetes_schemas") {
        return;
    }
    let files = manifests();
    assert!(files.len() >= 3, "{files:?}");
    for version in ["1.29.0", "1.33.0"] {
        let out = python()
            .args(["-m", "kubernetes_validate", "--strict", "-k", version])
            .args(&files)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "Kubernetes {version}:\n{text}");
        assert!(!text.contains("ERROR"), "{text}");
    }
}

#[test]
fn the_daemonset_is_least_privilege_and_wired_to_its_config() {
    if !validator_available("the_daemonset_is_least_privilege_and_wired_to_its_config") {
        return;
    }
    let ds = &documents(&deploy_dir().join("daemonset.yaml"))[0];
    assert_eq!(ds["kind"], "DaemonSet");
    let spec = &ds["spec"]["template"]["spec"];
    assert_eq!(spec["hostPID"], true);
    assert_eq!(spec["serviceAccountName"], "bellows");
    let c = &spec["containers"][0];
    let sc = &c["securityContext"];
    assert_eq!(sc["privileged"], false);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]));
    let mut caps: Vec<&str> = sc["capabilities"]["add"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    caps.sort();
    assert_eq!(
        caps,
        [
            "BPF",
            "CHECKPOINT_RESTORE",
            "DAC_READ_SEARCH",
            "PERFMON",
            "SYSLOG",
            "SYS_PTRACE",
            "SYS_RESOURCE"
        ]
    );
    // Every added capability says why, in a comment above it.
    let text = std::fs::read_to_string(deploy_dir().join("daemonset.yaml")).unwrap();
    for cap in &caps {
        let line = text
            .lines()
            .position(|l| l.trim() == format!("- {cap}"))
            .unwrap_or_else(|| panic!("{cap} not listed on its own line"));
        let above = text.lines().nth(line - 1).unwrap().trim();
        assert!(above.starts_with('#'), "{cap} has no reason above it");
    }
    let env = &c["env"][0];
    assert_eq!(env["name"], "NODE_NAME");
    assert_eq!(env["valueFrom"]["fieldRef"]["fieldPath"], "spec.nodeName");
    assert_eq!(
        c["args"],
        serde_json::json!(["run", "--config", "/etc/bellows/bellows.toml"])
    );
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    // The ConfigMap the pod mounts exists and holds bellows.toml, which `bellows run` accepts.
    let cm = &documents(&deploy_dir().join("configmap.yaml"))[0];
    let mounted = spec["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "config")
        .unwrap();
    assert_eq!(mounted["configMap"]["name"], cm["metadata"]["name"]);
    // (agent's run::config tests check that this bellows.toml passes `bellows run`'s validation.)
    assert!(cm["data"]["bellows.toml"]
        .as_str()
        .unwrap()
        .contains("[pyroscope]"));
    // The only host path is the cgroup tree: the exec hook is a raw tracepoint, so tracefs is
    // not needed, and nothing else of the host is mounted.
    let host_paths: Vec<&str> = spec["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v["hostPath"]["path"].as_str())
        .collect();
    assert_eq!(host_paths, ["/sys/fs/cgroup"]);
    // The RBAC grants read access to pods and nothing else on pods.
    let rbac = documents(&deploy_dir().join("rbac.yaml"));
    let role = rbac.iter().find(|d| d["kind"] == "ClusterRole").unwrap();
    let pods = role["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["resources"] == serde_json::json!(["pods"]))
        .unwrap();
    assert_eq!(pods["verbs"], serde_json::json!(["get", "list", "watch"]));
}
