//! Errors that say where they are: a dotted path into the document and, when the YAML
//! parser gave one, the line and column.

use std::fmt;

use crate::node::Mark;

/// One problem in a config document.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// Dotted path of the offending value, e.g. `receivers.otlp.protocols.grpc.endpoint`.
    pub path: String,
    /// Where the value starts in the file, when known.
    pub mark: Option<Mark>,
    pub message: String,
}

impl ConfigError {
    pub fn new(path: impl Into<String>, mark: Option<Mark>, message: impl Into<String>) -> Self {
        ConfigError {
            path: path.into(),
            mark,
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(mark) = self.mark {
            write!(f, "{}:{}: ", mark.line, mark.column)?;
        }
        if self.path.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Every problem found in a document, in file order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Errors(pub Vec<ConfigError>);

impl Errors {
    pub fn push(&mut self, error: ConfigError) {
        self.0.push(error);
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `Ok(value)` when nothing was recorded, the sorted errors otherwise.
    pub fn into_result<T>(mut self, value: T) -> Result<T, Errors> {
        if self.0.is_empty() {
            Ok(value)
        } else {
            self.0.sort_by_key(|e| e.mark.map(|m| (m.line, m.column)));
            self.0.dedup();
            Err(self)
        }
    }
}

impl fmt::Display for Errors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Errors {}

impl From<ConfigError> for Errors {
    fn from(e: ConfigError) -> Self {
        Errors(vec![e])
    }
}

/// The candidate closest to `word` by edit distance, if it is close enough to be a
/// plausible misspelling.
pub fn nearest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let limit = (word.len() / 3).max(2);
    candidates
        .into_iter()
        .map(|c| (edit_distance(word, c), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = if ca == *cb {
                prev
            } else {
                1 + prev.min(row[j]).min(cur)
            };
            prev = cur;
        }
    }
    row[b.len()]
}

/// "unknown X `word`" with a suggestion or the list of valid choices.
pub fn unknown(what: &str, word: &str, valid: &[&str]) -> String {
    match nearest(word, valid.iter().copied()) {
        Some(s) => format!("unknown {what} \"{word}\"; did you mean \"{s}\"?"),
        None if valid.is_empty() => format!("unknown {what} \"{word}\""),
        None => format!(
            "unknown {what} \"{word}\"; expected one of: {}",
            valid.join(", ")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_finds_misspellings_only() {
        let keys = ["endpoint", "protocols", "max_recv_msg_size_mib"];
        assert_eq!(nearest("endpont", keys), Some("endpoint"));
        assert_eq!(nearest("protocol", keys), Some("protocols"));
        assert_eq!(nearest("colour", keys), None);
    }

    #[test]
    fn unknown_lists_choices_when_nothing_is_close() {
        assert_eq!(
            unknown("field", "zzz", &["a_b", "c_d"]),
            "unknown field \"zzz\"; expected one of: a_b, c_d"
        );
    }
}

/// A problem in one field of a component's config, relative to the component.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Dotted path inside the component, e.g. `protocols.grpc.endpoint`; empty for the
    /// component as a whole.
    pub field: String,
    pub message: String,
    /// Accepted, but worth telling the operator (an option with no effect here): a
    /// warning does not fail the config.
    pub warning: bool,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            message: message.into(),
            warning: false,
        }
    }

    /// A warning about `field`: the config still loads.
    pub fn warning(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError {
            warning: true,
            ..FieldError::new(field, message)
        }
    }

    /// A warning for an option the OpenTelemetry Collector has that means nothing for a
    /// sidecar: `why` says what Sidekick does instead.
    pub fn no_effect(field: impl Into<String>, why: &str) -> Self {
        FieldError::warning(field, format!("has no effect in Sidekick: {why}"))
    }
}

/// Building failed: a socket could not be bound, a file could not be read, …
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct BuildError(pub String);

impl BuildError {
    pub fn new(message: impl Into<String>) -> Self {
        BuildError(message.into())
    }
}
