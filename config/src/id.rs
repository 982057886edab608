//! Component ids (`kind[/name]`) and pipeline ids (`signal[/name]`).

use std::fmt;
use std::str::FromStr;

/// The three kinds of telemetry a pipeline carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Signal {
    Traces,
    Metrics,
    Logs,
}

impl Signal {
    pub const ALL: [Signal; 3] = [Signal::Traces, Signal::Metrics, Signal::Logs];

    pub fn as_str(self) -> &'static str {
        match self {
            Signal::Traces => "traces",
            Signal::Metrics => "metrics",
            Signal::Logs => "logs",
        }
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `kind` or `kind/name`, e.g. `otlp`, `otlp/backend`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ComponentId {
    kind: String,
    name: Option<String>,
}

impl ComponentId {
    pub fn kind(&self) -> &str {
        &self.kind
    }

    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }
}

impl FromStr for ComponentId {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (kind, name) = match s.split_once('/') {
            Some((k, n)) => (k, Some(n)),
            None => (s, None),
        };
        let mut chars = kind.chars();
        let kind_ok = matches!(chars.next(), Some(c) if c.is_ascii_alphabetic())
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !kind_ok {
            return Err(format!(
                "invalid component id \"{s}\": write kind or kind/name, where kind is letters, digits and _"
            ));
        }
        if let Some(n) = name {
            if n.is_empty() || n.trim() != n {
                return Err(format!(
                    "invalid component id \"{s}\": the name after / must not be empty or padded"
                ));
            }
        }
        Ok(ComponentId {
            kind: kind.to_string(),
            name: name.map(str::to_string),
        })
    }
}

impl fmt::Display for ComponentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            Some(n) => write!(f, "{}/{}", self.kind, n),
            None => f.write_str(&self.kind),
        }
    }
}

/// `traces`, `metrics/scraped`, …
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PipelineId {
    pub signal: Signal,
    pub name: Option<String>,
}

impl FromStr for PipelineId {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let id: ComponentId = s.parse()?;
        let signal = match id.kind() {
            "traces" => Signal::Traces,
            "metrics" => Signal::Metrics,
            "logs" => Signal::Logs,
            other => {
                return Err(crate::error::unknown(
                    "pipeline signal",
                    other,
                    &["traces", "metrics", "logs"],
                ))
            }
        };
        Ok(PipelineId {
            signal,
            name: id.name,
        })
    }
}

impl fmt::Display for PipelineId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            Some(n) => write!(f, "{}/{}", self.signal, n),
            None => write!(f, "{}", self.signal),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ids() {
        let id: ComponentId = "otlp/backend-1".parse().unwrap();
        assert_eq!((id.kind(), id.name()), ("otlp", Some("backend-1")));
        assert_eq!(id.to_string(), "otlp/backend-1");
        assert!("otlp/".parse::<ComponentId>().is_err());
        assert!("9x".parse::<ComponentId>().is_err());
        let p: PipelineId = "metrics/scraped".parse().unwrap();
        assert_eq!(p.signal, Signal::Metrics);
        assert_eq!(
            "trace".parse::<PipelineId>().unwrap_err(),
            "unknown pipeline signal \"trace\"; did you mean \"traces\"?"
        );
    }
}
