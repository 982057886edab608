use super::*;

fn op(yaml: serde_json::Value) -> Operator {
    let c: OperatorConfig = serde_json::from_value(yaml).unwrap();
    Operator::new(&c).unwrap()
}

fn entry(line: &str) -> Entry {
    Entry {
        body: Value::String(line.into()),
        ..Entry::default()
    }
}

#[test]
fn json_with_timestamp_and_severity() {
    let ops = [op(serde_json::json!({
        "type": "json_parser",
        "timestamp": {"parse_from": "attributes.ts", "layout": "%Y-%m-%dT%H:%M:%S%z"},
        "severity": {"parse_from": "attributes.level"}
    }))];
    let mut e = entry(r#"{"msg":"hi","level":"warning","ts":"2024-05-01T12:00:00Z","n":3}"#);
    assert_eq!(run(&ops, &mut e, "x.log"), Outcome::default());
    assert_eq!(e.attributes["msg"], "hi");
    assert_eq!(e.attributes["n"], 3);
    assert_eq!(e.time_ns, Some(1_714_564_800_000_000_000));
    assert_eq!((e.severity, e.severity_text.as_str()), (13, "warning"));
    // The body stays the line.
    assert!(e.body.as_str().unwrap().starts_with('{'));

    let mut bad = entry("not json");
    assert_eq!(run(&ops, &mut bad, "x.log").failed, Some(0));
    assert_eq!(bad, entry("not json"));
}

#[test]
fn regex_move_remove_add_and_mapping() {
    let regex = op(serde_json::json!({"type": "regex_parser",
        "regex": r#"^(?P<ip>\S+) \S+ \S+ \[(?P<time>[^\]]+)\] "(?P<method>\S+) (?P<path>\S+) \S+" (?P<status>\d+)"#,
        "timestamp": {"parse_from": "attributes.time", "layout": "%d/%b/%Y:%H:%M:%S %z"}}));
    let severity = op(
        serde_json::json!({"type": "severity_parser", "parse_from": "attributes.status",
        "mapping": {"error": {"min": 500, "max": 599}, "warn": [{"min": 400, "max": 499}], "info": "200"}}),
    );
    // A field with brackets is refused.
    let c: OperatorConfig = serde_json::from_value(
        serde_json::json!({"type": "move", "from": "attributes.path", "to": "attr.x"}),
    )
    .unwrap();
    assert_eq!(Operator::new(&c).unwrap_err().field, "to");
    let ops = [
        regex,
        severity,
        op(
            serde_json::json!({"type": "move", "from": "attributes.path", "to": "attributes.url_path"}),
        ),
        op(serde_json::json!({"type": "remove", "field": "attributes.time"})),
        op(serde_json::json!({"type": "add", "field": "resource.service.name", "value": "nginx"})),
    ];
    let mut e =
        entry(r#"10.0.0.1 - - [01/May/2024:14:00:00 +0200] "GET /index.html HTTP/1.1" 503 12"#);
    assert_eq!(run(&ops, &mut e, "access.log"), Outcome::default());
    assert_eq!(e.attributes["ip"], "10.0.0.1");
    assert_eq!(e.attributes["url_path"], "/index.html");
    assert!(!e.attributes.contains_key("path") && !e.attributes.contains_key("time"));
    assert_eq!(e.severity, 17);
    assert_eq!(e.time_ns, Some(1_714_564_800_000_000_000));
    assert_eq!(e.resource["service"]["name"], "nginx");
}

#[test]
fn container_formats_and_pod_from_path() {
    let ops = [op(serde_json::json!({"type": "container"}))];
    let path = "/var/log/pods/shop_web-7d4_0c1b-22/nginx/3.log";
    let mut d = entry(r#"{"log":"hello\n","stream":"stderr","time":"2024-05-01T12:00:00.5Z"}"#);
    assert_eq!(run(&ops, &mut d, path), Outcome::default());
    assert_eq!(d.body, "hello");
    assert_eq!(d.attributes["log.iostream"], "stderr");
    assert_eq!(d.time_ns, Some(1_714_564_800_500_000_000));
    assert_eq!(d.resource["k8s.pod.name"], "web-7d4");
    assert_eq!(d.resource["k8s.namespace.name"], "shop");
    assert_eq!(d.resource["k8s.container.restart_count"], "3");
    let mut c = entry("2024-05-01T12:00:00.000000001Z stdout P part one");
    assert_eq!(
        run(&ops, &mut c, path),
        Outcome {
            failed: None,
            partial: true
        }
    );
    assert_eq!(c.body, "part one");
    let mut garbage = entry("\u{fffd}\u{fffd} nothing");
    assert_eq!(run(&ops, &mut garbage, "/tmp/x.log").failed, Some(0));
}

#[test]
fn misconfigured_operators_name_the_key() {
    let e = |v: serde_json::Value| {
        let c: OperatorConfig = serde_json::from_value(v).unwrap();
        Operator::new(&c).unwrap_err()
    };
    assert_eq!(e(serde_json::json!({"type": "csv_parser"})).field, "type");
    assert_eq!(
        e(serde_json::json!({"type": "remove", "regex": "x"})).field,
        "regex"
    );
    assert_eq!(
        e(serde_json::json!({"type": "regex_parser", "regex": "("})).field,
        "regex"
    );
    assert_eq!(
        e(serde_json::json!({"type": "regex_parser", "regex": "a+"})).field,
        "regex"
    );
    assert_eq!(
        e(serde_json::json!({"type": "json_parser", "output": "x"})).field,
        "output"
    );
    assert_eq!(
        e(serde_json::json!({"type": "json_parser", "on_error": "drop"})).field,
        "on_error"
    );
    assert_eq!(
        e(serde_json::json!({"type": "severity_parser", "mapping": {"loud": "x"}})).field,
        "mapping"
    );
}
