//! Config fixtures: every invalid one must produce exactly its `.expected` text from
//! `sidekick validate`; every valid one must validate and build.

use std::path::{Path, PathBuf};
use std::process::Command;

fn fixtures(dir: &str) -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/config")
        .join(dir);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no fixtures in {}", root.display());
    files
}

fn relative(path: &Path) -> String {
    path.strip_prefix(env!("CARGO_MANIFEST_DIR"))
        .unwrap()
        .display()
        .to_string()
}

fn validate(path: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_sidekick"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["validate", "--config", &relative(path)])
        .env_remove("VENDOR_API_KEY")
        .output()
        .unwrap()
}

#[test]
fn invalid_fixtures_report_exactly_their_expected_errors() {
    for path in fixtures("invalid") {
        let expected = std::fs::read_to_string(path.with_extension("expected"))
            .unwrap_or_else(|_| panic!("{} has no .expected file", path.display()));
        let out = validate(&path);
        assert_eq!(out.status.code(), Some(1), "{}", path.display());
        assert_eq!(
            String::from_utf8_lossy(&out.stderr),
            expected,
            "{}",
            path.display()
        );
    }
}

#[test]
fn valid_fixtures_validate_and_build() {
    let registry = sidekick::registry();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for path in fixtures("valid") {
        let out = validate(&path);
        assert!(
            out.status.success(),
            "{}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).ends_with("config is valid\n"));
        build_on_free_ports(&registry, &runtime, &path);
    }
}

/// Builds a fixture's plan with every listener moved to a free loopback port, so the
/// test passes while a Sidekick (or anything else) holds the usual ports.
fn build_on_free_ports(
    registry: &sidekick_collector::component::Registry,
    runtime: &tokio::runtime::Runtime,
    path: &Path,
) {
    let mut text = std::fs::read_to_string(path).unwrap();
    for host in ["0.0.0.0:", "1.2.3.4:", "localhost:"] {
        text = text.replace(host, "127.0.0.1:");
    }
    for port in [4317, 4318, 8888, 8889, 13133, 1234] {
        text = text.replace(&format!("127.0.0.1:{port}"), "127.0.0.1:0");
    }
    let env = |_: &str| None;
    let mut plan = sidekick::plan(&text, &relative(path), registry, &env).unwrap();
    plan.telemetry.metrics.readers.clear();
    plan.telemetry.metrics.address = Some("127.0.0.1:0".into());
    let _guard = runtime.enter();
    match plan.build(sidekick_collector::telemetry::Telemetry::new()) {
        Ok(_) => {}
        // A percentage limit needs the container's cgroup limit, which a Pod has and a
        // development machine may not.
        Err(e) if e.to_string().contains("needs a container memory limit") => {}
        Err(e) => panic!("{}: {e}", path.display()),
    }
}

/// Configs written for the OpenTelemetry Collector (the Operator's sidecar sample, the
/// Helm chart's agent preset, collector-contrib's Kubernetes example, the exporters' and
/// the OTLP receiver's config tests) load as they are: options with no meaning for a
/// sidecar are warnings that say why, never errors.
#[test]
fn collector_configs_validate_and_build() {
    let registry = sidekick::registry();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut warnings = String::new();
    for path in fixtures("collector") {
        let out = validate(&path);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{}: {stderr}", path.display());
        assert!(String::from_utf8_lossy(&out.stdout).ends_with("config is valid\n"));
        warnings.push_str(&stderr);
        build_on_free_ports(&registry, &runtime, &path);
    }
    for expected in [
        "exporters.otlp.balancer_name: has no effect in Sidekick",
        "exporters.otlp.batcher: has no effect in Sidekick: the Collector renamed it: write sending_queue.batch",
        "receivers.otlp.protocols.grpc.keepalive.enforcement_policy: has no effect",
        "processors.k8sattributes.pod_association: has no effect in Sidekick: Sidekick reads its own Pod from the downward API",
        "extract.metadata[3]: k8s.cluster.name is not available to a sidecar",
        "service.telemetry.logs.sampling: has no effect in Sidekick",
        "exporters.prometheusremotewrite/2.max_batch_request_parallelism: has no effect",
    ] {
        assert!(warnings.contains(expected), "missing warning {expected:?} in\n{warnings}");
    }
    // Options that Sidekick implements are not warned about.
    for implemented in [
        "keepalive.server_parameters.time",
        "cors",
        "exporters.otlp.keepalive",
    ] {
        assert!(
            !warnings.contains(implemented),
            "{implemented} warned:\n{warnings}"
        );
    }
}

#[test]
fn built_in_config_builds() {
    let registry = sidekick::registry();
    let env = |name: &str| match name {
        "SIDEKICK_OTLP_GRPC_ENDPOINT"
        | "SIDEKICK_OTLP_HTTP_ENDPOINT"
        | "SIDEKICK_ADMIN_ENDPOINT" => Some("127.0.0.1:0".to_string()),
        _ => None,
    };
    let plan = sidekick::plan(sidekick::DEFAULT_CONFIG, "default", &registry, &env).unwrap();
    assert!(plan.warnings.is_empty(), "{:?}", plan.warnings);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _guard = runtime.enter();
    plan.build(sidekick_collector::telemetry::Telemetry::new())
        .unwrap();
}

#[test]
fn a_taken_port_fails_at_start_with_the_component_named() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = std::env::temp_dir().join(format!("sidekick-port-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("taken.yaml");
    std::fs::write(
        &file,
        format!("receivers:\n  otlp:\n    protocols:\n      grpc:\n        endpoint: 127.0.0.1:{port}\nexporters:\n  debug:\nservice:\n  pipelines:\n    traces: {{receivers: [otlp], exporters: [debug]}}\n  telemetry:\n    metrics: {{address: 127.0.0.1:0}}\n"),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sidekick"))
        .arg("--config")
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "receivers.otlp: protocols.grpc.endpoint: cannot listen on 127.0.0.1:{port}"
        )),
        "{stderr}"
    );
}

#[test]
fn cli_answers_help_version_and_bad_arguments() {
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_sidekick"))
            .args(args)
            .output()
            .unwrap()
    };
    let help = run(&["--help"]);
    assert!(help.status.success());
    assert!(String::from_utf8_lossy(&help.stdout).contains("sidekick validate"));
    let version = run(&["--version"]);
    assert_eq!(
        String::from_utf8_lossy(&version.stdout),
        format!("sidekick {}\n", env!("CARGO_PKG_VERSION"))
    );
    let bad = run(&["--confgi", "x.yaml"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr)
        .starts_with("sidekick: unexpected argument \"--confgi\""));
    let missing = run(&["validate", "--config", "/nonexistent/sidekick.yaml"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr)
        .contains("cannot read config file /nonexistent/sidekick.yaml"));
    let components = run(&["components"]);
    assert!(String::from_utf8_lossy(&components.stdout)
        .contains("receivers: filelog, otlp, prometheus"));
    let default = run(&["default-config"]);
    assert_eq!(
        String::from_utf8_lossy(&default.stdout),
        sidekick::DEFAULT_CONFIG
    );
}

#[test]
fn example_configs_validate() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        n += 1;
        let out = Command::new(env!("CARGO_BIN_EXE_sidekick"))
            .args(["validate", "--config"])
            .arg(&path)
            .env(
                "SIDEKICK_REMOTE_WRITE_URL",
                "http://prometheus:9090/api/v1/write",
            )
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(n > 0);
}

/// Every component module's doc shows a YAML example; each must load with the kind's own
/// config type (so the docs cannot drift from the code).
#[test]
fn documented_examples_load() {
    use sidekick_collector::config::{node, ComponentId, Value};

    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    let mut stack: Vec<PathBuf> = [
        "receivers/src",
        "processors/src",
        "exporters/src",
        "collector/src",
    ]
    .iter()
    .map(|d| root.join(d))
    .collect();
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let p = entry.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|e| e == "rs") {
                files.push(p);
            }
        }
    }
    let registry = sidekick::registry();
    let env = |_: &str| Some("example".to_string());
    let mut checked = 0;
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let mut block: Option<String> = None;
        for line in text.lines() {
            let doc = line
                .trim_start()
                .strip_prefix("//!")
                .or_else(|| line.trim_start().strip_prefix("///"));
            let Some(doc) = doc else { continue };
            let doc = doc.strip_prefix(' ').unwrap_or(doc);
            match (&mut block, doc.trim()) {
                (None, "```yaml") => block = Some(String::new()),
                (Some(b), "```") => {
                    let yaml = std::mem::take(b);
                    block = None;
                    let (tree, _) = node::parse(&yaml, &env)
                        .unwrap_or_else(|e| panic!("{}: {e}\n{yaml}", file.display()));
                    let Value::Map(sections) = &tree.value else {
                        continue;
                    };
                    for (section, entries) in sections {
                        let section = section.as_str().unwrap();
                        let Value::Map(entries) = &entries.value else {
                            continue;
                        };
                        for (id, config) in entries {
                            let id: ComponentId = id.as_str().unwrap().parse().unwrap();
                            let path = format!("{section}.{id}");
                            let result = match section {
                                "receivers" => registry.receivers[id.kind()]
                                    .load(config, &path)
                                    .map(|_| ()),
                                "processors" => registry.processors[id.kind()]
                                    .load(config, &path)
                                    .map(|_| ()),
                                "exporters" => registry.exporters[id.kind()]
                                    .load(config, &path)
                                    .map(|_| ()),
                                "extensions" => registry.extensions[id.kind()]
                                    .load(config, &path)
                                    .map(|_| ()),
                                _ => Ok(()),
                            };
                            if let Err(e) = result {
                                panic!(
                                    "{}: example for {path} does not load: {e:?}",
                                    file.display()
                                );
                            }
                            checked += 1;
                        }
                    }
                }
                (Some(b), _) => {
                    b.push_str(doc);
                    b.push('\n');
                }
                (None, _) => {}
            }
        }
    }
    assert!(checked >= 12, "only {checked} documented examples found");
}
