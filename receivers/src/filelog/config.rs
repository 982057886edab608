//! The `filelog` receiver's configuration: its keys, their checks, and the factory that
//! builds the receiver.

use super::*;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Glob patterns of the files to read (required).
    pub include: Vec<String>,
    /// Glob patterns of files not to read, even when `include` matches them.
    pub exclude: Vec<String>,
    /// `end` (default): files found at start are read from their end; `beginning`: from
    /// their start. Files that appear later are always read from their start.
    pub start_at: String,
    /// How often files are looked for and read. Default 200ms.
    pub poll_interval: ConfigDuration,
    /// `log.file.name` on each record. Default true.
    pub include_file_name: bool,
    /// `log.file.path` on each record. Default false.
    pub include_file_path: bool,
    /// Longest entry, e.g. `1MiB` (default); longer ones are cut there and counted.
    pub max_log_size: SizeSetting,
    /// Files followed at once, at most. Default 1024.
    pub max_concurrent_files: usize,
    /// `utf-8` (default; invalid bytes are replaced) or `nop` (bytes as they are).
    pub encoding: String,
    /// Bytes that identify a file. Default `1kb`.
    pub fingerprint_size: SizeSetting,
    /// A partial last line or multiline entry is sent after this long without new data.
    /// Default 500ms.
    pub force_flush_period: ConfigDuration,
    pub multiline: Option<Multiline>,
    /// Attributes added to every record, and the resource's attributes.
    pub attributes: BTreeMap<String, Value>,
    pub resource: BTreeMap<String, Value>,
    pub operators: Vec<OperatorConfig>,
    /// A `file_storage` extension where offsets are kept, so that after a restart each
    /// file is read on from where it was.
    pub storage: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            include: Vec::new(),
            exclude: Vec::new(),
            start_at: "end".into(),
            poll_interval: ConfigDuration::from_millis(200),
            include_file_name: true,
            include_file_path: false,
            max_log_size: SizeSetting(1 << 20),
            max_concurrent_files: 1024,
            encoding: "utf-8".into(),
            fingerprint_size: SizeSetting(1000),
            force_flush_period: ConfigDuration::from_millis(500),
            multiline: None,
            attributes: BTreeMap::new(),
            resource: BTreeMap::new(),
            operators: Vec::new(),
            storage: None,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Multiline {
    /// An entry starts at a line matching this.
    pub line_start_pattern: Option<String>,
    /// An entry ends at a line matching this.
    pub line_end_pattern: Option<String>,
}

/// A size in bytes, written as a number or with a unit (`1MiB`, `16KB`, `1kb`).
#[derive(Debug, Clone, Copy)]
pub struct SizeSetting(pub usize);

impl<'de> Deserialize<'de> for SizeSetting {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        let text = match &v {
            Value::Number(n) => n.to_string(),
            Value::String(s) => s.clone(),
            _ => return Err(serde::de::Error::custom("write a size, e.g. 1MiB")),
        };
        let t = text.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let n: usize = t[..split].parse().map_err(|_| {
            serde::de::Error::custom(format!("invalid size \"{text}\": write e.g. 1MiB"))
        })?;
        let mult = match t[split..].trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "kb" | "kib" => 1 << 10,
            "mb" | "mib" => 1 << 20,
            "gb" | "gib" => 1 << 30,
            _ => {
                return Err(serde::de::Error::custom(format!(
                    "invalid size \"{text}\": units are B, KiB, MiB, GiB"
                )))
            }
        };
        Ok(SizeSetting(n.saturating_mul(mult)))
    }
}

pub(super) fn regex(field: &str, text: &Option<String>) -> Result<Option<Regex>, FieldError> {
    text.as_deref()
        .map(|t| Regex::new(t).map_err(|e| FieldError::new(field, e.to_string())))
        .transpose()
}

impl Config {
    fn operators(&self) -> Result<Vec<Operator>, FieldError> {
        self.operators
            .iter()
            .enumerate()
            .map(|(i, c)| {
                Operator::new(c)
                    .map_err(|e| FieldError::new(format!("operators[{i}].{}", e.field), e.message))
            })
            .collect()
    }

    fn splitting(&self) -> Result<Splitting, FieldError> {
        let m = self.multiline.clone().unwrap_or_default();
        Ok(Splitting {
            max_log_size: self.max_log_size.0,
            line_start: regex("multiline.line_start_pattern", &m.line_start_pattern)?,
            line_end: regex("multiline.line_end_pattern", &m.line_end_pattern)?,
            force_flush: self.force_flush_period.get(),
        })
    }
}

impl ReceiverConfig for Config {
    const SIGNALS: &'static [SignalKind] = &[SignalKind::Logs];

    fn storage_uses(&self) -> Vec<(String, String)> {
        self.storage
            .iter()
            .map(|s| ("storage".to_string(), s.clone()))
            .collect()
    }

    fn validate(&self) -> Vec<FieldError> {
        let mut out = Vec::new();
        if self.include.is_empty() {
            out.push(FieldError::new(
                "include",
                "list the files to read, e.g. include: [/var/log/app/*.log]",
            ));
        }
        for (field, list) in [("include", &self.include), ("exclude", &self.exclude)] {
            for (i, p) in list.iter().enumerate() {
                if let Err(e) = glob::Pattern::new(p) {
                    out.push(FieldError::new(format!("{field}[{i}]"), e.to_string()));
                }
            }
        }
        if !matches!(self.start_at.as_str(), "end" | "beginning") {
            out.push(FieldError::new(
                "start_at",
                format!("\"{}\" is not end or beginning", self.start_at),
            ));
        }
        if !matches!(
            self.encoding.to_ascii_lowercase().as_str(),
            "utf-8" | "utf8" | "nop"
        ) {
            out.push(FieldError::new(
                "encoding",
                format!(
                    "encoding \"{}\" is not supported: write utf-8 or nop",
                    self.encoding
                ),
            ));
        }
        if self.max_log_size.0 == 0 {
            out.push(FieldError::new("max_log_size", "must be more than 0"));
        }
        if self.fingerprint_size.0 < 16 {
            out.push(FieldError::new(
                "fingerprint_size",
                "must be at least 16 bytes to tell files apart",
            ));
        }
        if self.max_concurrent_files == 0 {
            out.push(FieldError::new(
                "max_concurrent_files",
                "must be at least 1",
            ));
        }
        if self.poll_interval.is_zero() {
            out.push(FieldError::new("poll_interval", "must be more than 0"));
        }
        if let Some(m) = &self.multiline {
            if m.line_start_pattern.is_some() == m.line_end_pattern.is_some() {
                out.push(FieldError::new(
                    "multiline",
                    "set exactly one of line_start_pattern and line_end_pattern",
                ));
            }
        }
        if let Err(e) = self.splitting() {
            out.push(e);
        }
        if let Err(e) = self.operators() {
            out.push(e);
        }
        out
    }

    fn build(self, ctx: &BuildContext) -> Result<Box<dyn Receiver>, BuildError> {
        let to_build = |e: FieldError| BuildError::new(format!("{}: {}", e.field, e.message));
        let operators = self.operators().map_err(to_build)?;
        let splitting = self.splitting().map_err(to_build)?;
        let exclude = self
            .exclude
            .iter()
            .map(|p| glob::Pattern::new(p).map_err(|e| BuildError::new(format!("exclude: {e}"))))
            .collect::<Result<Vec<_>, _>>()?;
        let name = ctx.id.to_string();
        let storage = ctx.storage(self.storage.as_deref(), "storage")?;
        let labels = [("receiver", name.as_str()), ("transport", "file")];
        let t = ctx.telemetry;
        let resource: Map<String, Value> = self.resource.clone().into_iter().collect();
        let mut resource_bytes = Vec::new();
        encode::attributes(&mut resource_bytes, 1, &resource);
        Ok(Box::new(FileLog {
            counters: Counters {
                accepted: t.counter(
                    "otelcol_receiver_accepted_log_records",
                    "Items successfully pushed into the pipeline.",
                    &labels,
                ),
                refused: t.counter(
                    "otelcol_receiver_refused_log_records",
                    "Items that could not be pushed into the pipeline.",
                    &labels,
                ),
                truncated: t.counter(
                    "sidekick_filelog_truncated_entries",
                    "Log entries cut at max_log_size.",
                    &[("receiver", name.as_str())],
                ),
                open: t.gauge(
                    "sidekick_filelog_open_files",
                    "Files the filelog receiver follows now.",
                    &[("receiver", name.as_str())],
                ),
                telemetry: t.clone(),
                failures: Vec::new(),
            },
            name,
            exclude,
            operators,
            splitting,
            resource,
            resource_bytes,
            nop: self.encoding.eq_ignore_ascii_case("nop"),
            storage,
            limit_warned: std::sync::atomic::AtomicBool::new(false),
            config: self,
        }))
    }
}
