//! Metric and label names: the one sanitiser every part of Sidekick that writes a
//! Prometheus name uses (the exporters' translation, Sidekick's own page).

use std::borrow::Cow;

/// Replaces characters outside `[a-zA-Z0-9_:]` (and `:` too, for labels) with `_`,
/// collapses runs of `_`, and keeps the name from starting with a digit.
pub fn sanitize(s: &str, allow_colon: bool, digit_prefix: &str) -> String {
    let mut out = String::with_capacity(s.len() + 1);
    let mut last_underscore = false;
    for c in s.chars() {
        let ok = c.is_ascii_alphanumeric() || c == '_' || (allow_colon && c == ':');
        let c = if ok { c } else { '_' };
        if c == '_' && last_underscore {
            continue;
        }
        last_underscore = c == '_';
        out.push(c);
    }
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert_str(0, digit_prefix);
    }
    out
}

/// A label name: `[a-zA-Z_][a-zA-Z0-9_]*`; one starting with a digit gets `key_`.
pub fn label_name(key: &str) -> String {
    if key.is_empty() {
        return "key_empty".into();
    }
    sanitize(key, false, "key_")
}

/// [`label_name`], borrowed when the key is already a label name (the common case:
/// no allocation).
pub fn label_name_cow(key: &str) -> Cow<'_, str> {
    let b = key.as_bytes();
    let clean = !b.is_empty()
        && !b[0].is_ascii_digit()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_')
        && !key.contains("__");
    if clean {
        Cow::Borrowed(key)
    } else {
        Cow::Owned(label_name(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_names() {
        assert_eq!(label_name("http.method"), "http_method");
        assert_eq!(label_name("9lives"), "key_9lives");
        assert_eq!(label_name("a..b"), "a_b");
        assert_eq!(label_name(""), "key_empty");
        assert_eq!(label_name("k8s.pod.name"), "k8s_pod_name");
        assert_eq!(label_name("_x"), "_x");
        for key in ["http.method", "9lives", "a__b", "", "ok_name", "_x", "Ünï"] {
            assert_eq!(label_name_cow(key), label_name(key), "{key}");
        }
        assert!(matches!(label_name_cow("ok_name"), Cow::Borrowed(_)));
    }

    #[test]
    fn metric_names_keep_colons() {
        assert_eq!(sanitize("a:b.c", true, "_"), "a:b_c");
        assert_eq!(sanitize("2xx", true, "_"), "_2xx");
    }
}
