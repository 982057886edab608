//! OTTL functions checked against the Collector's documented examples and test tables.

use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{span, Span, Status};
use prost::Message;

use super::compile::{condition, statement};
use super::item::{Context, Item};

fn kv(k: &str, v: any_value::Value) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue { value: Some(v) }),
        ..Default::default()
    }
}

fn s(v: &str) -> any_value::Value {
    any_value::Value::StringValue(v.into())
}

fn attr<'a>(attrs: &'a [KeyValue], k: &str) -> Option<&'a any_value::Value> {
    attrs
        .iter()
        .rev()
        .find(|a| a.key == k)
        .and_then(|a| a.value.as_ref()?.value.as_ref())
}

fn span_with(attrs: Vec<KeyValue>) -> Span {
    Span {
        trace_id: vec![0x5b; 16],
        span_id: vec![0xee; 8],
        name: "GET /users".into(),
        kind: span::SpanKind::Server as i32,
        start_time_unix_nano: 1_000,
        end_time_unix_nano: 6_000,
        attributes: attrs,
        status: Some(Status {
            code: 2,
            message: "boom".into(),
        }),
        ..Default::default()
    }
}

/// Runs `statements` on the span in the span context, with `resource` around it.
fn run_span(span: &Span, resource: &Resource, statements: &[&str]) -> Span {
    let bytes = span.encode_to_vec();
    let res = resource.encode_to_vec();
    let mut item = Item::new(Context::Span, &bytes);
    item.resource = &res;
    for text in statements {
        let st = statement(text, Context::Span).unwrap_or_else(|e| panic!("{text}: {e}"));
        st.run(&mut item).unwrap_or_else(|e| panic!("{text}: {e}"));
    }
    Span::decode(item.msg.as_ref()).expect("valid span")
}

fn run_log(log: &LogRecord, statements: &[&str]) -> Result<LogRecord, String> {
    let bytes = log.encode_to_vec();
    let mut item = Item::new(Context::Log, &bytes);
    for text in statements {
        let st = statement(text, Context::Log).map_err(|e| e.to_string())?;
        st.run(&mut item)?;
    }
    Ok(LogRecord::decode(item.msg.as_ref()).expect("valid log"))
}

fn holds(cond: &str, span: &Span) -> bool {
    let bytes = span.encode_to_vec();
    let item = Item::new(Context::Span, &bytes);
    condition(cond, Context::Span)
        .unwrap_or_else(|e| panic!("{cond}: {e}"))
        .matches(&item)
        .unwrap_or_else(|e| panic!("{cond}: {e}"))
}

/// The map of the Collector's tests for limit/truncate_all/keep_keys.
fn test_map() -> Vec<KeyValue> {
    vec![
        kv("test", s("hello world")),
        kv("test2", any_value::Value::IntValue(3)),
        kv("test3", any_value::Value::BoolValue(true)),
    ]
}

fn keys(attrs: &[KeyValue]) -> Vec<&str> {
    attrs.iter().map(|a| a.key.as_str()).collect()
}

#[test]
fn set_writes_and_ignores_nil() {
    let sp = span_with(vec![kv("http.method", s("GET"))]);
    let res = Resource {
        attributes: vec![kv("http.route", s("/users"))],
        ..Default::default()
    };
    let out = run_span(
        &sp,
        &res,
        &[
            r#"set(attributes["env"], "prod")"#,
            r#"set(name, resource.attributes["http.route"])"#,
            r#"set(attributes["missing"], attributes["nope"])"#,
            r#"set(attributes["test"], "pass") where attributes["test"] == nil"#,
            r#"set(attributes["test"], "again") where attributes["test"] == nil"#,
            r#"set(status.code, STATUS_CODE_OK)"#,
            r#"set(attributes["nested"]["a"], 1)"#,
        ],
    );
    assert_eq!(attr(&out.attributes, "env"), Some(&s("prod")));
    assert_eq!(out.name, "/users");
    assert_eq!(attr(&out.attributes, "missing"), None);
    assert_eq!(attr(&out.attributes, "test"), Some(&s("pass")));
    assert_eq!(
        out.status.as_ref().map(|s| (s.code, s.message.as_str())),
        Some((1, "boom"))
    );
    assert_eq!(attr(&out.attributes, "http.method"), Some(&s("GET")));
    assert_eq!(out.trace_id, sp.trace_id, "untouched fields stay");
    let Some(any_value::Value::KvlistValue(nested)) = attr(&out.attributes, "nested") else {
        panic!("nested map expected")
    };
    assert_eq!(
        attr(&nested.values, "a"),
        Some(&any_value::Value::IntValue(1))
    );
}

#[test]
fn delete_keep_and_matching_keys() {
    let sp = span_with(vec![
        kv("http.request.header.authorization", s("secret")),
        kv("user.Password", s("x")),
        kv("http.method", s("GET")),
        kv("http.route", s("/a")),
    ]);
    let out = run_span(
        &sp,
        &Resource::default(),
        &[
            r#"delete_key(attributes, "http.request.header.authorization")"#,
            r#"delete_matching_keys(attributes, "(?i).*password.*")"#,
        ],
    );
    assert_eq!(keys(&out.attributes), ["http.method", "http.route"]);
    let out = run_span(
        &sp,
        &Resource::default(),
        &[r#"keep_keys(attributes, ["http.method"])"#],
    );
    assert_eq!(keys(&out.attributes), ["http.method"]);
}

#[test]
fn limit_follows_the_collector_table() {
    let cases: &[(&str, &[&str])] = &[
        ("limit(attributes, 1, [])", &["test"]),
        ("limit(attributes, 0, [])", &[]),
        ("limit(attributes, 100, [])", &["test", "test2", "test3"]),
        ("limit(attributes, 3, [])", &["test", "test2", "test3"]),
        (r#"limit(attributes, 2, ["test3"])"#, &["test", "test3"]),
        (
            r#"limit(attributes, 2, ["test", "test3"])"#,
            &["test", "test3"],
        ),
        (r#"limit(attributes, 1, ["te"])"#, &["test"]),
        (
            r#"limit(attributes, 2, ["te", "test3"])"#,
            &["test", "test3"],
        ),
    ];
    for (st, want) in cases {
        let out = run_span(&span_with(test_map()), &Resource::default(), &[st]);
        assert_eq!(keys(&out.attributes), *want, "{st}");
    }
    let e = statement(r#"limit(attributes, 1, ["test", "test"])"#, Context::Span).unwrap_err();
    assert!(e.message.contains("priority keys"), "{e}");
    assert!(statement("limit(attributes, -1, [])", Context::Span).is_err());
}

#[test]
fn truncate_all_follows_the_collector_table() {
    for (limit, want) in [(1, "h"), (0, ""), (11, "hello world"), (100, "hello world")] {
        let st = format!("truncate_all(attributes, {limit})");
        let out = run_span(&span_with(test_map()), &Resource::default(), &[&st]);
        assert_eq!(attr(&out.attributes, "test"), Some(&s(want)), "{st}");
        assert_eq!(
            attr(&out.attributes, "test2"),
            Some(&any_value::Value::IntValue(3))
        );
    }
    let out = run_span(
        &span_with(vec![kv("a", s("héllo"))]),
        &Resource::default(),
        &[r#"truncate_all(attributes, 2)"#],
    );
    assert_eq!(
        attr(&out.attributes, "a"),
        Some(&s("h")),
        "cut on a character boundary"
    );
    let out = run_span(
        &span_with(vec![kv("a", s("hello world"))]),
        &Resource::default(),
        &[r#"truncate_all(attributes, 8, truncation_marker = "...")"#],
    );
    assert_eq!(attr(&out.attributes, "a"), Some(&s("hello...")));
    let e = statement("truncate_all(attributes, -1)", Context::Span).unwrap_err();
    assert!(e.message.contains("cannot be negative"), "{e}");
}

#[test]
fn replace_pattern_follows_the_collector_table() {
    let input = "application passwd=sensitivedtata otherarg=notsensitive key1 key2";
    let cases = [
        (
            r#"passwd\\=[^\\s]*(\\s?)"#,
            "passwd=*** ",
            "application passwd=*** otherarg=notsensitive key1 key2",
        ),
        (
            r#"key[^\\s]*(\\s?)"#,
            "**** ",
            "application passwd=sensitivedtata otherarg=notsensitive **** **** ",
        ),
        (
            r#"(\\w+)=(\\w+)"#,
            "$1:$2",
            "application passwd:sensitivedtata otherarg:notsensitive key1 key2",
        ),
        (
            r#"passwd\\=[^\\s]*\\s?"#,
            "$1",
            "application otherarg=notsensitive key1 key2",
        ),
    ];
    for (pattern, replacement, want) in cases {
        let st = format!(r#"replace_pattern(attributes["a"], "{pattern}", "{replacement}")"#);
        let out = run_span(
            &span_with(vec![kv("a", s(input))]),
            &Resource::default(),
            &[&st],
        );
        assert_eq!(attr(&out.attributes, "a"), Some(&s(want)), "{st}");
    }
    // With SHA256 and a format: the expanded group is hashed and formatted.
    let out = run_span(
        &span_with(vec![kv("a", s("abc"))]),
        &Resource::default(),
        &[r#"replace_pattern(attributes["a"], "b", "$0", SHA256, "<%s>")"#],
    );
    let hashed = "3e23e8160039594a33894f6564e1b1348bbd7a0088d42c4acb73eeaed59c009d";
    assert_eq!(
        attr(&out.attributes, "a"),
        Some(&s(&format!("a<{hashed}>c")))
    );
    // A target that is not a string is left alone.
    let out = run_span(
        &span_with(test_map()),
        &Resource::default(),
        &[r#"replace_pattern(attributes["test2"], "3", "4")"#],
    );
    assert_eq!(
        attr(&out.attributes, "test2"),
        Some(&any_value::Value::IntValue(3))
    );
}

#[test]
fn replace_all_patterns_on_values_and_keys() {
    let sp = span_with(vec![
        kv("path", s("/account/1234/x")),
        kv("kube_pod_name", s("p")),
        kv("n", any_value::Value::IntValue(1)),
    ]);
    let out = run_span(
        &sp,
        &Resource::default(),
        &[
            r#"replace_all_patterns(attributes, "value", "/account/\\d{4}", "/account/{accountId}")"#,
            r#"replace_all_patterns(attributes, "key", "^kube_([0-9A-Za-z]+_)", "k8s.$1.")"#,
        ],
    );
    assert_eq!(
        attr(&out.attributes, "path"),
        Some(&s("/account/{accountId}/x"))
    );
    assert_eq!(attr(&out.attributes, "k8s.pod_.name"), Some(&s("p")));
    assert_eq!(
        attr(&out.attributes, "n"),
        Some(&any_value::Value::IntValue(1))
    );
}

#[test]
fn merge_maps_follows_the_collector_table() {
    let cases = [
        (
            "upsert",
            r#"{"attr2": "value2"}"#,
            vec![("attr1", "value1"), ("attr2", "value2")],
        ),
        (
            "upsert",
            r#"{"attr1": "value3", "attr2": "value2"}"#,
            vec![("attr1", "value3"), ("attr2", "value2")],
        ),
        (
            "insert",
            r#"{"attr2": "value2"}"#,
            vec![("attr1", "value1"), ("attr2", "value2")],
        ),
        (
            "insert",
            r#"{"attr1": "value3", "attr2": "value2"}"#,
            vec![("attr1", "value1"), ("attr2", "value2")],
        ),
        (
            "update",
            r#"{"attr2": "value2"}"#,
            vec![("attr1", "value1")],
        ),
        (
            "update",
            r#"{"attr1": "value3"}"#,
            vec![("attr1", "value3")],
        ),
    ];
    for (strategy, source, want) in cases {
        let st = format!(r#"merge_maps(attributes, {source}, "{strategy}")"#);
        let out = run_span(
            &span_with(vec![kv("attr1", s("value1"))]),
            &Resource::default(),
            &[&st],
        );
        let got: Vec<(&str, &any_value::Value)> = out
            .attributes
            .iter()
            .map(|a| {
                (
                    a.key.as_str(),
                    a.value.as_ref().and_then(|v| v.value.as_ref()).unwrap(),
                )
            })
            .collect();
        let want: Vec<(&str, any_value::Value)> =
            want.into_iter().map(|(k, v)| (k, s(v))).collect();
        let want: Vec<(&str, &any_value::Value)> = want.iter().map(|(k, v)| (*k, v)).collect();
        assert_eq!(got, want, "{st}");
    }
    assert!(statement(r#"merge_maps(attributes, {}, "replace")"#, Context::Span).is_err());
}

#[test]
fn merge_maps_with_parse_json_of_the_body() {
    let log = LogRecord {
        body: Some(AnyValue {
            value: Some(s(
                r#"{"attr1": "a", "n": 1, "nested": {"attr3": true}, "list": [1, "x"]}"#,
            )),
        }),
        ..Default::default()
    };
    let out = run_log(
        &log,
        &[r#"merge_maps(attributes, ParseJSON(body), "upsert") where IsMatch(body, "^\\{")"#],
    )
    .unwrap();
    assert_eq!(attr(&out.attributes, "attr1"), Some(&s("a")));
    assert_eq!(
        attr(&out.attributes, "n"),
        Some(&any_value::Value::DoubleValue(1.0)),
        "JSON numbers are doubles"
    );
    let out = run_log(
        &log,
        &[r#"set(attributes["nested.attr3"], ParseJSON(body)["nested"]["attr3"])"#],
    )
    .unwrap();
    assert_eq!(
        attr(&out.attributes, "nested.attr3"),
        Some(&any_value::Value::BoolValue(true))
    );
    // Not JSON: an error for error_mode to handle.
    let bad = LogRecord {
        body: Some(AnyValue {
            value: Some(s("{not json")),
        }),
        ..Default::default()
    };
    assert!(run_log(
        &bad,
        &[r#"merge_maps(attributes, ParseJSON(body), "upsert")"#]
    )
    .is_err());
    let deep = "[".repeat(100) + &"]".repeat(100);
    let deep = LogRecord {
        body: Some(AnyValue {
            value: Some(s(&deep)),
        }),
        ..Default::default()
    };
    let e = run_log(&deep, &[r#"set(attributes["x"], ParseJSON(body))"#]).unwrap_err();
    assert!(e.contains("deeper"), "{e}");
}

#[test]
fn converters_follow_the_collector_examples() {
    let log = LogRecord {
        body: Some(AnyValue {
            value: Some(s("A|B|C")),
        }),
        attributes: vec![
            kv("http.method", s("GET")),
            kv("http.path", s("/x")),
            kv("code", s("50")),
            kv("f", any_value::Value::DoubleValue(2.7)),
        ],
        ..Default::default()
    };
    let out = run_log(
        &log,
        &[
            r#"set(attributes["c1"], Concat([attributes["http.method"], attributes["http.path"]], ": "))"#,
            r#"set(attributes["c2"], Concat(["hello", nil, "world"], ""))"#,
            r#"set(attributes["c3"], Concat(["hello", 1, true], " "))"#,
            r#"set(attributes["c4"], Concat([0x00000000000000000ed2e63cbe71f5a8], ""))"#,
            r#"set(attributes["split"], Split(body, "|"))"#,
            r#"set(attributes["second"], Split(body, "|")[1])"#,
            r#"set(attributes["i1"], Int(attributes["code"]))"#,
            r#"set(attributes["i2"], Int(attributes["f"]))"#,
            r#"set(attributes["i3"], Int(true))"#,
            r#"set(attributes["i4"], Int("2.0"))"#,
            r#"set(attributes["d"], Double("2.0"))"#,
            r#"set(attributes["s1"], String(55.0))"#,
            r#"set(attributes["s2"], String(0x7b))"#,
            r#"set(attributes["s3"], String([1, 2, 3]))"#,
            r#"set(attributes["s4"], String(false))"#,
            r#"set(attributes["h"], SHA256("hello world"))"#,
            r#"set(attributes["len"], Len(body))"#,
            r#"set(attributes["low"], ToLowerCase("MyMetricName"))"#,
            r#"set(attributes["up"], ToUpperCase("MyMetricName"))"#,
        ],
    )
    .unwrap();
    let a = &out.attributes;
    assert_eq!(attr(a, "c1"), Some(&s("GET: /x")));
    assert_eq!(attr(a, "c2"), Some(&s("hello<nil>world")));
    assert_eq!(attr(a, "c3"), Some(&s("hello 1 true")));
    assert_eq!(attr(a, "c4"), Some(&s("00000000000000000ed2e63cbe71f5a8")));
    let Some(any_value::Value::ArrayValue(list)) = attr(a, "split") else {
        panic!("list")
    };
    assert_eq!(list.values.len(), 3);
    assert_eq!(attr(a, "second"), Some(&s("B")));
    assert_eq!(attr(a, "i1"), Some(&any_value::Value::IntValue(50)));
    assert_eq!(attr(a, "i2"), Some(&any_value::Value::IntValue(2)));
    assert_eq!(attr(a, "i3"), Some(&any_value::Value::IntValue(1)));
    assert_eq!(
        attr(a, "i4"),
        None,
        "Int(\"2.0\") is nil, so set does nothing"
    );
    assert_eq!(attr(a, "d"), Some(&any_value::Value::DoubleValue(2.0)));
    assert_eq!(attr(a, "s1"), Some(&s("55")));
    assert_eq!(attr(a, "s2"), Some(&s("7b")));
    assert_eq!(attr(a, "s3"), Some(&s("[1,2,3]")));
    assert_eq!(attr(a, "s4"), Some(&s("false")));
    assert_eq!(
        attr(a, "h"),
        Some(&s(
            "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9"
        ))
    );
    assert_eq!(attr(a, "len"), Some(&any_value::Value::IntValue(5)));
    assert_eq!(attr(a, "low"), Some(&s("mymetricname")));
    assert_eq!(attr(a, "up"), Some(&s("MYMETRICNAME")));
    assert!(
        run_log(&log, &[r#"set(attributes["x"], SHA256(1))"#]).is_err(),
        "SHA256 takes strings"
    );
}

#[test]
fn split_is_go_strings_split() {
    let log = LogRecord::default();
    let out = run_log(
        &log,
        &[
            r#"set(attributes["a"], Split("", "|"))"#,
            r#"set(attributes["b"], Split("A|B|C", ""))"#,
            r#"set(attributes["c"], Split("", ""))"#,
        ],
    )
    .unwrap();
    let len = |k| match attr(&out.attributes, k) {
        Some(any_value::Value::ArrayValue(l)) => l.values.len(),
        _ => usize::MAX,
    };
    assert_eq!((len("a"), len("b"), len("c")), (1, 5, 0));
}

#[test]
fn conditions_compare_as_ottl_does() {
    let sp = span_with(vec![
        kv("http.route", s("/health")),
        kv("n", any_value::Value::IntValue(3)),
        kv("d", any_value::Value::DoubleValue(3.0)),
        kv("flag", any_value::Value::BoolValue(true)),
    ]);
    assert!(holds(r#"attributes["http.route"] == "/health""#, &sp));
    assert!(
        holds(r#"attributes["n"] == 3.0 and attributes["d"] == 3"#, &sp),
        "int and double compare as numbers"
    );
    assert!(
        holds(r#"attributes["n"] != "3""#, &sp),
        "unlike types are unequal"
    );
    assert!(!holds(r#"attributes["n"] < "4""#, &sp), "and unordered");
    assert!(holds(r#"attributes["missing"] == nil"#, &sp));
    assert!(holds(
        r#"kind == SPAN_KIND_SERVER and status.code == STATUS_CODE_ERROR"#,
        &sp
    ));
    assert!(holds(
        r#"end_time_unix_nano - start_time_unix_nano > 4000"#,
        &sp
    ));
    assert!(holds(
        r#"IsMatch(name, "^GET") and not IsMatch(name, "POST")"#,
        &sp
    ));
    assert!(
        holds(r#"IsMatch(attributes["n"], "3")"#, &sp),
        "IsMatch converts non-strings"
    );
    assert!(
        !holds(r#"IsMatch(attributes["missing"], ".*")"#, &sp),
        "nil never matches"
    );
    assert!(holds(r#"attributes["flag"]"#, &sp));
    assert!(holds(
        r#"not (IsMatch(name, "http_.*") and kind > 3) or false"#,
        &sp
    ));
    assert!(holds(
        r#"trace_id.string == "5b5b5b5b5b5b5b5b5b5b5b5b5b5b5b5b""#,
        &sp
    ));
    assert!(holds(
        r#"IsString(name) and IsInt(kind) and IsDouble(attributes["d"]) and IsBool(attributes["flag"]) and IsMap(attributes) and not IsList(name)"#,
        &sp
    ));
    // Math mixing int and double is an error, as in the Collector.
    let bytes = sp.encode_to_vec();
    let item = Item::new(Context::Span, &bytes);
    assert!(condition("kind + 1.5 > 0", Context::Span)
        .unwrap()
        .matches(&item)
        .is_err());
}

#[test]
fn editors_reach_span_events_and_the_parent_span() {
    let mut sp = span_with(vec![]);
    sp.events = vec![span::Event {
        name: "exception".into(),
        attributes: vec![kv("grpc", any_value::Value::BoolValue(true))],
        ..Default::default()
    }];
    let bytes = sp.encode_to_vec();
    let event_bytes = sp.events[0].encode_to_vec();
    let mut item = Item::new(Context::SpanEvent, &event_bytes);
    item.parent = &bytes;
    let c = condition(
        r#"span.name == "GET /users" and attributes["grpc"] == true"#,
        Context::SpanEvent,
    )
    .unwrap();
    assert!(c.matches(&item).unwrap());
    statement(r#"set(attributes["from"], span.name)"#, Context::SpanEvent)
        .unwrap()
        .run(&mut item)
        .unwrap();
    let event = span::Event::decode(item.msg.as_ref()).unwrap();
    assert_eq!(attr(&event.attributes, "from"), Some(&s("GET /users")));
}
