use std::collections::HashMap;

use sidekick_collector::config::{from_node, node};
use sidekick_collector::payload::TracesSignal;
use sidekick_testkit::gen::traces;

use super::*;

fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let vars: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |name| vars.get(name).cloned()
}

fn detectors(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

#[test]
fn each_detector_finds_its_attributes_and_a_later_one_wins() {
    let vars = env(&[
        (
            "OTEL_RESOURCE_ATTRIBUTES",
            "service.name=checkout,deployment.environment.name=prod%20eu,host.name=from-env",
        ),
        ("K8S_NODE_NAME", "node-7"),
    ]);
    let host = || Some("checkout-7d9f8b6c5-x2k9q".to_string());
    let found = detect(&detectors(&["env", "system", "k8snode"]), &vars, &host);
    assert_eq!(
        found,
        [
            ("service.name".to_string(), "checkout".to_string()),
            ("deployment.environment.name".into(), "prod eu".into()),
            ("host.name".into(), "checkout-7d9f8b6c5-x2k9q".into()),
            ("os.type".into(), "linux".into()),
            ("k8s.node.name".into(), "node-7".into()),
        ]
    );
    // The other order: env's host.name wins over the system's.
    let found = detect(&detectors(&["system", "env"]), &vars, &host);
    assert!(found.contains(&("host.name".into(), "from-env".into())));
    // Nothing set, nothing found (and no panic).
    assert!(detect(&detectors(&["env", "k8snode"]), &env(&[]), &|| None).is_empty());
}

#[test]
fn cloud_detectors_and_misspellings_are_refused_by_name() {
    let (root, _) = node::parse(
        "detectors: [env, ec2, sytem]\nsystem:\n  hostname_sources: [dns, os]\n",
        &HashMap::new(),
    )
    .unwrap();
    let c: Config = from_node(&root, "processors.resourcedetection").unwrap();
    let problems: Vec<String> = c
        .validate()
        .iter()
        .map(|p| format!("{}: {}", p.field, p.message))
        .collect();
    assert_eq!(problems.len(), 3, "{problems:?}");
    assert!(problems[0].starts_with("detectors[1]: the ec2 detector asks a metadata service"));
    assert_eq!(
        problems[1],
        "detectors[2]: unknown detector \"sytem\"; did you mean \"system\"?"
    );
    assert!(problems[2].starts_with("system.hostname_sources[0]: \"dns\" is not supported"));
    assert!(Config::default().validate()[0]
        .message
        .starts_with("name at least one detector"));
}

fn resource_attributes(batch: &Batch<TracesSignal>) -> Vec<(String, String)> {
    let request = batch.to_request().unwrap();
    request.resource_spans[0]
        .resource
        .as_ref()
        .unwrap()
        .attributes
        .iter()
        .map(|kv| {
            let value = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(any_value::Value::StringValue(s)) => s.clone(),
                other => format!("{other:?}"),
            };
            (kv.key.clone(), value)
        })
        .collect()
}

#[test]
fn override_decides_whether_an_attribute_the_data_has_is_replaced() {
    let original = traces(0, 1, 2);
    let before = resource_attributes(&original);
    let (key, _) = before[0].clone();
    for override_ in [true, false] {
        let mut edit = Detected {
            attributes: [(key.as_str(), "detected"), ("os.type", "linux")]
                .iter()
                .map(|(k, v)| KeyValue {
                    key: k.to_string(),
                    value: Some(AnyValue {
                        value: Some(any_value::Value::StringValue(v.to_string())),
                    }),
                    ..Default::default()
                })
                .collect(),
            override_,
        };
        let mut batch = original.clone();
        Edit::<TracesSignal>::edit(&mut edit, &mut batch);
        let after = resource_attributes(&batch);
        let value = &after.iter().find(|(k, _)| *k == key).unwrap().1;
        match override_ {
            true => assert_eq!(value, "detected"),
            false => assert_eq!(value, &before[0].1),
        }
        assert!(after.contains(&("os.type".into(), "linux".into())));
        assert_eq!(batch.len(), 2);
    }
}
