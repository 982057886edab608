//! The Kubernetes material in `deploy/` must agree with the code: ports, probe paths,
//! downward-API variable names and file paths, annotations, and a config that validates;
//! and with itself: the OTLP protocol against the port, the Pods' user against the image's.

use std::collections::HashMap;

use sidekick_collector::config::node::{self, Node, Value};
use sidekick_processors::k8s_attributes::{Config as K8sConfig, EnvNames};

fn read(file: &str) -> String {
    std::fs::read_to_string(format!("{}/deploy/{file}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

fn docs(file: &str) -> Vec<Node> {
    read(file)
        .split("\n---\n")
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

/// A number or boolean, which Kubernetes wants unquoted.
fn plain<'a>(n: &'a Node, path: &str) -> &'a str {
    match &at(n, path).value {
        Value::Scalar { text, plain: true } => text,
        other => panic!("{path} is not an unquoted value: {other:?}"),
    }
}

/// A map entry whose key contains dots (annotations, `config.yaml`).
fn key<'a>(n: &'a Node, map: &str, k: &str) -> &'a str {
    at(n, map)
        .get(k)
        .and_then(Node::as_str)
        .unwrap_or_else(|| panic!("no {k} in {map}"))
}

/// The init containers and containers of a Pod spec.
fn containers(spec: &Node) -> impl Iterator<Item = &Node> {
    ["initContainers", "containers"]
        .into_iter()
        .filter_map(|k| spec.get(k))
        .flat_map(items)
}

/// The user and group of the final `USER uid:gid` in deploy/Dockerfile: numbers (the
/// kubelet cannot check `runAsNonRoot` against a name) and not root.
fn image_user() -> (String, String) {
    let text = read("Dockerfile");
    let user = text
        .lines()
        .filter_map(|l| l.strip_prefix("USER "))
        .next_back()
        .expect("no USER in deploy/Dockerfile")
        .trim();
    let (uid, gid) = user
        .split_once(':')
        .unwrap_or_else(|| panic!("USER {user} is not uid:gid"));
    for id in [uid, gid] {
        assert!(
            id.parse::<u32>().is_ok_and(|id| id > 0),
            "USER {user}: {id} is not a numeric, non-root id"
        );
    }
    (uid.to_string(), gid.to_string())
}

/// Pod Security Standard "restricted" with the image's user. The Pod and Sidekick's
/// container each state `runAsNonRoot`, the image's `runAsUser`/`runAsGroup` and the
/// `RuntimeDefault` seccomp profile, and Sidekick's root filesystem is read-only. Every
/// container forbids privilege escalation, drops all capabilities, and (by its own
/// setting or the Pod's) runs non-root, not as uid 0, under `RuntimeDefault`.
fn check_security(file: &str, spec: &Node, sidecar: &Node) {
    let (uid, gid) = image_user();
    let pod = at(spec, "securityContext");
    let sidekick = at(sidecar, "securityContext");
    for ctx in [pod, sidekick] {
        assert_eq!(plain(ctx, "runAsNonRoot"), "true", "{file}");
        assert_eq!(
            plain(ctx, "runAsUser"),
            uid,
            "{file}: not the Dockerfile's USER"
        );
        assert_eq!(
            plain(ctx, "runAsGroup"),
            gid,
            "{file}: not the Dockerfile's USER"
        );
        assert_eq!(s(ctx, "seccompProfile.type"), "RuntimeDefault", "{file}");
    }
    assert_eq!(plain(sidekick, "readOnlyRootFilesystem"), "true", "{file}");
    for c in containers(spec) {
        let name = s(c, "name");
        let ctx = at(c, "securityContext");
        assert_eq!(
            plain(ctx, "allowPrivilegeEscalation"),
            "false",
            "{file}: {name}"
        );
        let dropped: Vec<&str> = items(at(ctx, "capabilities.drop"))
            .iter()
            .filter_map(Node::as_str)
            .collect();
        assert_eq!(dropped, ["ALL"], "{file}: {name}");
        // The container's own setting, else the Pod's.
        let own_or_pod = |k: &str| if ctx.get(k).is_some() { ctx } else { pod };
        assert_eq!(
            plain(own_or_pod("runAsNonRoot"), "runAsNonRoot"),
            "true",
            "{file}: {name}"
        );
        assert_ne!(
            plain(own_or_pod("runAsUser"), "runAsUser"),
            "0",
            "{file}: {name}"
        );
        let seccomp = s(own_or_pod("seccompProfile"), "seccompProfile.type");
        assert_eq!(seccomp, "RuntimeDefault", "{file}: {name}");
    }
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
    // But not the start time: the downward API has no field for it.
    for c in containers(spec) {
        for e in c.get("env").map(items).unwrap_or_default() {
            assert_ne!(
                s(e, "name"),
                names.pod_start_time,
                "{file}: {}",
                s(c, "name")
            );
        }
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

    // The app sends OTLP to the sidecar, with the protocol its port serves.
    let app = items(at(spec, "containers"))
        .iter()
        .find(|c| s(c, "name") == "app")
        .unwrap();
    let app_env = |name: &str| {
        items(at(app, "env"))
            .iter()
            .find(|e| s(e, "name") == name)
            .map(|e| s(e, "value"))
            .unwrap_or_else(|| panic!("{file}: no {name} in the app's env"))
    };
    let endpoint = app_env("OTEL_EXPORTER_OTLP_ENDPOINT");
    assert_eq!(endpoint, "http://localhost:4317");
    let port = endpoint.rsplit(':').next().unwrap().trim_end_matches('/');
    let protocol = app_env("OTEL_EXPORTER_OTLP_PROTOCOL");
    let protocol_port = match protocol {
        "grpc" => "4317",
        "http/protobuf" | "http/json" => "4318",
        other => panic!("{file}: unknown OTEL_EXPORTER_OTLP_PROTOCOL {other}"),
    };
    assert_eq!(port, protocol_port, "{file}: {protocol} to {endpoint}");

    check_security(file, spec, sidecar);

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
    let text = read("Dockerfile");
    image_user(); // panics unless USER is a numeric, non-root uid:gid
    assert!(text.contains("EXPOSE 4317 4318 8888 8889"));
    assert!(text.contains("cargo build --profile dist --locked"));
}

#[test]
fn network_policy_lets_only_prometheus_reach_the_exporter_and_nobody_the_admin_port() {
    let deployment = docs("deployment.yaml")
        .into_iter()
        .find(|d| d.get("kind").and_then(Node::as_str) == Some("Deployment"))
        .unwrap();
    let policy = &docs("networkpolicy.yaml")[0];
    assert_eq!(s(policy, "kind"), "NetworkPolicy");
    let name = "app.kubernetes.io/name";
    assert_eq!(
        key(policy, "spec.podSelector.matchLabels", name),
        key(&deployment, "spec.selector.matchLabels", name),
        "the policy selects the Deployment's Pods"
    );
    let app_ports: Vec<&str> = items(at(&deployment, "spec.template.spec.containers"))
        .iter()
        .flat_map(|c| items(at(c, "ports")))
        .map(|p| plain(p, "containerPort"))
        .collect();
    let mut seen = Vec::new();
    for rule in items(at(policy, "spec.ingress")) {
        for port in items(at(rule, "ports")) {
            let port = plain(port, "port");
            seen.push(port);
            match port {
                "8889" => {
                    let from = items(at(rule, "from"));
                    assert!(!from.is_empty(), "the exporter is open to Prometheus only");
                    assert!(from.iter().all(|f| f.get("podSelector").is_some()));
                }
                p if app_ports.contains(&p) => {}
                other => panic!("port {other} is open, but it is not the app's or the exporter's"),
            }
        }
    }
    assert!(seen.contains(&"8889"));
    for closed in ["8888", "4317", "4318"] {
        assert!(
            !seen.contains(&closed),
            "{closed} must not be reachable from outside"
        );
    }
    assert!(
        app_ports.iter().all(|p| seen.contains(p)),
        "the app stays reachable"
    );
}

/// The logs example: the app writes its log files to an emptyDir that Sidekick mounts
/// read-only where its `filelog` receiver looks, and the config's operators parse a real
/// NGINX access-log line.
#[test]
fn logs_sidecar_tails_the_shared_volume_and_parses_nginx_lines() {
    use sidekick_receivers::filelog::operators::{run, Entry, Operator};
    let file = "logs-sidecar.yaml";
    let d = docs(file);
    let configmap = d.iter().find(|n| s(n, "kind") == "ConfigMap").unwrap();
    let pod = d.iter().find(|n| s(n, "kind") == "Pod").unwrap();
    let spec = at(pod, "spec");
    let sidecar = items(at(spec, "initContainers"))
        .iter()
        .find(|c| s(c, "name") == "sidekick")
        .unwrap();
    let app = items(at(spec, "containers"))
        .iter()
        .find(|c| s(c, "name") == "app")
        .unwrap();
    check_security(file, spec, sidecar);

    let config_text = key(configmap, "data", "config.yaml");
    let env = |_: &str| None;
    let plan = sidekick::plan(config_text, file, &sidekick::registry(), &env);
    assert!(plan.is_ok(), "{}", plan.err().unwrap());

    // Both containers mount the same volume: the app where it writes, Sidekick (read-only)
    // where the config's include patterns point.
    let mount_of = |c: &Node| -> (String, bool) {
        let m = items(at(c, "volumeMounts"))
            .iter()
            .find(|m| s(m, "name") == "app-logs")
            .expect("the shared log volume is mounted");
        (
            s(m, "mountPath").to_string(),
            m.get("readOnly").and_then(Node::as_str) == Some("true"),
        )
    };
    let (sidecar_path, read_only) = mount_of(sidecar);
    let (app_path, _) = mount_of(app);
    assert!(read_only, "Sidekick mounts the app's logs read-only");
    assert_eq!(app_path, "/var/log/nginx", "where NGINX writes its logs");
    let volume = items(at(spec, "volumes"))
        .iter()
        .find(|v| s(v, "name") == "app-logs")
        .unwrap();
    assert!(volume.get("emptyDir").is_some());
    let (tree, _) = node::parse(config_text, &HashMap::<String, String>::new()).unwrap();
    let filelog = at(&tree, "receivers.filelog");
    for include in items(at(filelog, "include")) {
        let path = include.as_str().unwrap();
        assert!(
            path.starts_with(&format!("{sidecar_path}/")),
            "{path} is not on the shared volume ({sidecar_path})"
        );
    }

    // The operators, as configured, on a line NGINX writes.
    let config: sidekick_receivers::filelog::Config =
        sidekick_collector::config::from_node(filelog, "receivers.filelog").unwrap();
    let operators: Vec<Operator> = config
        .operators
        .iter()
        .map(|c| Operator::new(c).unwrap())
        .collect();
    let line = r#"10.1.2.3 - - [01/May/2024:14:00:00 +0200] "GET /cart?id=7 HTTP/1.1" 502 157 "-" "curl/8.5.0" "-""#;
    let mut e = Entry {
        body: serde_json::Value::String(line.into()),
        ..Entry::default()
    };
    let outcome = run(&operators, &mut e, "/var/log/app/access.log");
    assert_eq!(outcome.failed, None, "{e:?}");
    assert_eq!(e.attributes["http_response_status_code"], "502");
    assert_eq!(e.attributes["url_path"], "/cart?id=7");
    assert_eq!(e.attributes["user_agent_original"], "curl/8.5.0");
    assert!(!e.attributes.contains_key("time_local"));
    assert_eq!(e.severity, 17, "a 5xx is an error");
    assert_eq!(e.time_ns, Some(1_714_564_800_000_000_000));
}
