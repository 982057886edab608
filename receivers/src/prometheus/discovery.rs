//! Targets found at start: the Pod's own `prometheus.io/*` annotations, read from the
//! downward-API file, become one more scrape config.

use std::collections::BTreeMap;

use sidekick_collector::component::BuildError;

use super::{Config, ScrapeConfig, StaticConfig};

/// The scrape config Pod annotations ask for, if they ask for one.
pub fn from_annotations(
    text: &str,
    job: &str,
    prefix: &str,
) -> Result<Option<ScrapeConfig>, String> {
    let (pairs, _) = sidekick_transport::downward::parse(text);
    let get = |k: &str| {
        let key = format!("{prefix}/{k}");
        pairs
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.as_str())
    };
    if get("scrape") != Some("true") {
        return Ok(None);
    }
    let port = get("port")
        .ok_or_else(|| format!("{prefix}/scrape is true but {prefix}/port is missing"))?;
    let port: u16 = port
        .parse()
        .map_err(|_| format!("{prefix}/port \"{port}\" is not a port number"))?;
    let scheme = get("scheme").unwrap_or("http");
    if !matches!(scheme, "http" | "https") {
        return Err(format!(
            "{prefix}/scheme \"{scheme}\" must be http or https"
        ));
    }
    let path = get("path").unwrap_or("/metrics");
    Ok(Some(ScrapeConfig {
        job_name: job.to_string(),
        metrics_path: if path.starts_with('/') {
            path.to_string()
        } else {
            format!("/{path}")
        },
        scheme: scheme.to_string(),
        static_configs: vec![StaticConfig {
            targets: vec![format!("127.0.0.1:{port}")],
            labels: BTreeMap::new(),
        }],
        ..ScrapeConfig::default()
    }))
}

/// The scrape config the Pod's annotations ask for, when `pod_annotations` is on and
/// they ask for one; a file that cannot be read is logged and skipped.
pub(super) fn annotated(config: &Config, name: &str) -> Result<Option<ScrapeConfig>, BuildError> {
    if !config.pod_annotations {
        return Ok(None);
    }
    let file = config
        .pod_annotations_file
        .as_deref()
        .unwrap_or("/etc/podinfo/annotations");
    let job = config.pod_annotations_job.as_deref().unwrap_or("app");
    let prefix = config
        .pod_annotations_prefix
        .as_deref()
        .unwrap_or("prometheus.io");
    match std::fs::read_to_string(file) {
        Err(e) => {
            tracing::warn!(receiver = %name, file, error = %e, "cannot read the Pod's annotations; not scraping by annotation")
        }
        Ok(text) => match from_annotations(&text, job, prefix) {
            Ok(Some(sc)) => {
                tracing::info!(receiver = %name, scrape_target = %sc.static_configs[0].targets[0], path = %sc.metrics_path, "scraping the app as its Pod annotations ask");
                return Ok(Some(sc));
            }
            Ok(None) => {
                tracing::info!(receiver = %name, prefix, "Pod annotations do not ask for scraping (<prefix>/scrape is not \"true\")")
            }
            Err(e) => return Err(BuildError::new(format!("pod annotations in {file}: {e}"))),
        },
    }
    Ok(None)
}
