use std::collections::HashMap;

use super::*;

fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |k: &str| map.get(k).cloned()
}

fn attr(attrs: &[KeyValue], key: &str) -> Option<String> {
    attrs.iter().find(|kv| kv.key == key).and_then(|kv| {
        match kv.value.as_ref()?.value.as_ref()? {
            any_value::Value::StringValue(s) => Some(s.clone()),
            _ => None,
        }
    })
}

fn dir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!(
        "sidekick-k8s-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn env_files_and_workload() {
    let d = dir();
    std::fs::write(
        d.join("labels"),
        "app=\"checkout\"\npod-template-hash=\"7d9f8b6c5\"\nteam=\"payments\"\n",
    )
    .unwrap();
    std::fs::write(d.join("annotations"), "prometheus.io/scrape=\"true\"\n").unwrap();
    let config = Config {
        labels_file: d.join("labels").display().to_string(),
        annotations_file: d.join("annotations").display().to_string(),
        labels: vec!["app".into()],
        annotations: vec!["*".into()],
        otel_resource_attributes: true,
        ..Config::default()
    };
    let p = PodAttributes::new(
        config,
        &env(&[
            ("K8S_POD_NAME", "checkout-7d9f8b6c5-x2k9q"),
            ("K8S_NAMESPACE", "shop"),
            ("K8S_POD_UID", "1f2e"),
            ("K8S_NODE_NAME", "node-a"),
            ("K8S_POD_IP", "10.0.0.7"),
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                "deployment.environment.name=prod,team%20name=a%2Cb",
            ),
            ("OTEL_SERVICE_NAME", "checkout-svc"),
        ]),
    );
    let a = &p.attributes;
    assert_eq!(
        attr(a, "k8s.pod.name").as_deref(),
        Some("checkout-7d9f8b6c5-x2k9q")
    );
    assert_eq!(attr(a, "k8s.namespace.name").as_deref(), Some("shop"));
    assert_eq!(attr(a, "k8s.pod.uid").as_deref(), Some("1f2e"));
    assert_eq!(attr(a, "k8s.node.name").as_deref(), Some("node-a"));
    assert_eq!(attr(a, "k8s.pod.ip").as_deref(), Some("10.0.0.7"));
    assert_eq!(attr(a, "k8s.pod.label.app").as_deref(), Some("checkout"));
    assert_eq!(
        attr(a, "k8s.pod.label.team"),
        None,
        "only configured labels"
    );
    assert_eq!(
        attr(a, "k8s.pod.annotation.prometheus.io/scrape").as_deref(),
        Some("true")
    );
    assert_eq!(attr(a, "k8s.deployment.name").as_deref(), Some("checkout"));
    assert_eq!(
        attr(a, "k8s.replicaset.name").as_deref(),
        Some("checkout-7d9f8b6c5")
    );
    assert_eq!(
        attr(a, "deployment.environment.name").as_deref(),
        Some("prod")
    );
    assert_eq!(attr(a, "team name").as_deref(), Some("a,b"));
    assert_eq!(attr(a, "service.name").as_deref(), Some("checkout-svc"));
    assert!(p.missing.is_empty(), "{:?}", p.missing);
    let _ = std::fs::remove_dir_all(d);
}

#[test]
fn the_apps_own_values_win_unless_overridden() {
    let p = PodAttributes::new(
        Config {
            labels_file: "/nonexistent/labels".into(),
            overrides: vec!["k8s.namespace.name".into()],
            ..Config::default()
        },
        &env(&[("K8S_POD_NAME", "p"), ("K8S_NAMESPACE", "real")]),
    );
    assert_eq!(
        p.missing,
        vec![
            "$K8S_POD_UID",
            "$K8S_NODE_NAME",
            "$K8S_POD_IP",
            "/nonexistent/labels"
        ]
    );
    let mut resource = vec![
        string_kv("k8s.pod.name", "app-says"),
        string_kv("k8s.namespace.name", "app-says"),
    ];
    p.apply(&mut resource);
    assert_eq!(attr(&resource, "k8s.pod.name").as_deref(), Some("app-says"));
    assert_eq!(
        attr(&resource, "k8s.namespace.name").as_deref(),
        Some("real")
    );
}

#[test]
fn labels_file_changes_are_picked_up() {
    use sidekick_collector::payload::TracesSignal;
    let d = dir().join("reload");
    std::fs::create_dir_all(&d).unwrap();
    let labels = d.join("labels");
    std::fs::write(&labels, "version=\"1\"\n").unwrap();
    let mut p = PodAttributes::new(
        Config {
            labels_file: labels.display().to_string(),
            labels: vec!["*".into()],
            reload_interval: Duration::from_millis(1),
            ..Config::default()
        },
        &env(&[]),
    );
    let mut batch = sidekick_testkit::gen::traces(0, 1, 1);
    p.edit::<TracesSignal>(&mut batch);
    let res = |b: &Batch<TracesSignal>| {
        b.to_request().unwrap().resource_spans[0]
            .resource
            .clone()
            .unwrap()
            .attributes
    };
    assert_eq!(
        attr(&res(&batch), "k8s.pod.label.version").as_deref(),
        Some("1")
    );
    std::fs::write(&labels, "version=\"2\"\n").unwrap();
    std::thread::sleep(std::time::Duration::from_millis(5));
    let mut next = sidekick_testkit::gen::traces(1, 1, 1);
    p.edit::<TracesSignal>(&mut next);
    assert_eq!(
        attr(&res(&next), "k8s.pod.label.version").as_deref(),
        Some("2")
    );
    assert!(
        next.decoded().is_none(),
        "resources edited, batch still encoded"
    );
    let _ = std::fs::remove_dir_all(d);
}
