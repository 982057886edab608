//! The Kubernetes material in `deploy/` must agree with the code: ports, probe paths,
//! downward-API variable names and file paths, annotations, and a config that validates.

use std::collections::HashMap;

use sidekick_collector::config::node::{self, Node, Value};
use sidekick_processors::k8s_attributes::{Config as K8sConfig, EnvNames};

fn docs(file: &str) -> Vec<Node> {
    let text =
        std::fs::read_to_string(format!("{}/deploy/{file}", env!("CARGO_MANIFEST_DIR"))).unwrap();
    text.split("\n---\n")
        .map(|d| node::parse(d, &HashMap::<String, String>::new()).unwrap().0)
        .collect()
}

fn at<'a>(n: &'a Node, path: &str) -> &'a Node {
    path.split('.').fold(n, |n, k| {
        n.get(k).unwrap_or_else(|| panic!("no {k} in {path}"))
    })
}

fn items(n: &Node) -> &[Node] {
    match &n.value {
        Value::Seq(items) => items,
        other => panic!("expected a list, found {other:?}"),
    }
}

fn s<'a>(n: &'a Node, path: &str) -> &'a str {
    at(n, path)
        .as_str()
        .unwrap_or_else(|| panic!("{path} is not a value"))
}

/// A map entry whose key contains dots (annotations, `config.yaml`).
fn key<'a>(n: &'a Node, map: &str, k: &str) -> &'a str {
    at(n, map)
        .get(k)
        .and_then(Node::as_str)
        .unwrap_or_else(|| panic!("no {k} in {map}"))
}

fn check(file: &str, pod_spec_path: &str, pod_meta_path: &str) {
    let d = docs(file);
    let configmap = d.iter().find(|n| s(n, "kind") == "ConfigMap").unwrap();
    let workload = d.iter().find(|n| s(n, "kind") != "ConfigMap").unwrap();
    let spec = at(workload, pod_spec_path);
    let meta = at(workload, pod_meta_path);

    // Sidekick is a native sidecar: an init container that keeps running.
    let sidecar = items(at(spec, "initContainers"))
        .iter()
        .find(|c| s(c, "name") == "sidekick")
        .unwrap();
    assert_eq!(s(sidecar, "restartPolicy"), "Always");
    let ports: Vec<&str> = items(at(sidecar, "ports"))
        .iter()
        .map(|p| s(p, "containerPort"))
        .collect();
    assert_eq!(ports, vec!["4317", "4318", "8888", "8889"]);
    assert_eq!(s(sidecar, "livenessProbe.httpGet.path"), "/healthz");
    assert_eq!(s(sidecar, "readinessProbe.httpGet.path"), "/readyz");
    assert_eq!(s(sidecar, "livenessProbe.httpGet.port"), "8888");

    // The downward-API variables are the ones the k8s_attributes processor reads.
    let names = EnvNames::default();
    let env: Vec<&str> = items(at(sidecar, "env"))
        .iter()
        .map(|e| s(e, "name"))
        .collect();
    for var in [
        &names.pod_name,
        &names.namespace,
        &names.pod_uid,
        &names.node_name,
        &names.pod_ip,
    ] {
        assert!(
            env.contains(&var.as_str()),
            "{file}: {var} missing from the sidecar's env"
        );
    }
    // And the volume files are where it looks for them.
    let defaults = K8sConfig::default();
    let mount = items(at(sidecar, "volumeMounts"))
        .iter()
        .find(|m| s(m, "name") == "podinfo")
        .unwrap();
    let volume = items(at(spec, "volumes"))
        .iter()
        .find(|v| s(v, "name") == "podinfo")
        .unwrap();
    for item in items(at(volume, "downwardAPI.items")) {
        let path = format!("{}/{}", s(mount, "mountPath"), s(item, "path"));
        assert!(
            path == defaults.labels_file || path == defaults.annotations_file,
            "{file}: {path}"
        );
    }

    // The app sends OTLP to the sidecar.
    let app = items(at(spec, "containers"))
        .iter()
        .find(|c| s(c, "name") == "app")
        .unwrap();
    let otlp = items(at(app, "env"))
        .iter()
        .find(|e| s(e, "name") == "OTEL_EXPORTER_OTLP_ENDPOINT")
        .unwrap();
    assert_eq!(s(otlp, "value"), "http://localhost:4317");

    // Prometheus is pointed at Sidekick's scrape port; Sidekick at the app's.
    assert_eq!(key(meta, "annotations", "prometheus.io/port"), "8889");
    assert_eq!(key(meta, "annotations", "prometheus.io/path"), "/metrics");
    let app_port = s(&items(at(app, "ports"))[0], "containerPort");
    assert_eq!(key(meta, "annotations", "sidekick.io/port"), app_port);

    // The ConfigMap's config validates and listens where the manifest says.
    let config = key(configmap, "data", "config.yaml");
    let env = |_: &str| None;
    let plan = sidekick::plan(config, file, &sidekick::registry(), &env);
    assert!(plan.is_ok(), "{}", plan.err().unwrap());
    assert!(
        config.contains("endpoint: 127.0.0.1:4317") && config.contains("endpoint: 0.0.0.0:8889")
    );
    assert!(config.contains("address: 0.0.0.0:8888"));
    assert!(config.contains("pod_annotations_prefix: sidekick.io"));
    let mount = items(at(sidecar, "volumeMounts"))
        .iter()
        .find(|m| s(m, "name") == "sidekick-config")
        .unwrap();
    assert_eq!(
        items(at(sidecar, "args"))[1].as_str(),
        Some(format!("{}/config.yaml", s(mount, "mountPath")).as_str())
    );
}

#[test]
fn pod_manifest_agrees_with_the_code() {
    check("pod.yaml", "spec", "metadata");
}

#[test]
fn deployment_manifest_agrees_with_the_code() {
    check(
        "deployment.yaml",
        "spec.template.spec",
        "spec.template.metadata",
    );
}

#[test]
fn dockerfile_runs_as_non_root_with_the_known_ports() {
    let text = std::fs::read_to_string(format!("{}/deploy/Dockerfile", env!("CARGO_MANIFEST_DIR")))
        .unwrap();
    assert!(text.contains("USER nonroot"));
    assert!(text.contains("EXPOSE 4317 4318 8888 8889"));
    assert!(text.contains("cargo build --release"));
}
