//! The workload that owns a Pod, worked out from its name and labels without asking the
//! API server: `k8s.deployment.name`, `k8s.replicaset.name`, `k8s.statefulset.name`,
//! `k8s.daemonset.name`, `k8s.job.name`, `k8s.cronjob.name`.

/// Resource attribute name → value.
pub type Attrs = Vec<(&'static str, String)>;

fn label<'a>(labels: &'a [(String, String)], key: &str) -> Option<&'a str> {
    labels
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// Kubernetes' random name suffixes use these characters (no vowels, no 0, 1, 3).
fn is_suffix_char(c: char) -> bool {
    "bcdfghjklmnpqrstvwxz2456789".contains(c)
}

fn strip_suffix(name: &str, ok: impl Fn(&str) -> bool) -> Option<&str> {
    let (base, suffix) = name.rsplit_once('-')?;
    (!base.is_empty() && ok(suffix)).then_some(base)
}

/// Works out the owning workload from the Pod's name and (if known) labels.
pub fn derive(pod_name: &str, labels: &[(String, String)]) -> Attrs {
    let mut out = Attrs::new();
    if pod_name.is_empty() {
        return out;
    }
    // Deployment → ReplicaSet `<deployment>-<pod-template-hash>` → Pod `<rs>-<5 chars>`.
    if let Some(hash) = label(labels, "pod-template-hash") {
        if let Some(rs) = strip_suffix(pod_name, |s| s.len() == 5 && s.chars().all(is_suffix_char))
        {
            out.push(("k8s.replicaset.name", rs.to_string()));
            if let Some(dep) = rs.strip_suffix(&format!("-{hash}")) {
                out.push(("k8s.deployment.name", dep.to_string()));
            }
        }
        return out;
    }
    // Jobs (and CronJobs: `<cronjob>-<scheduled minutes>`).
    if let Some(job) =
        label(labels, "batch.kubernetes.io/job-name").or_else(|| label(labels, "job-name"))
    {
        out.push(("k8s.job.name", job.to_string()));
        if let Some(cron) = strip_suffix(job, |s| {
            s.len() >= 8 && s.chars().all(|c| c.is_ascii_digit())
        }) {
            out.push(("k8s.cronjob.name", cron.to_string()));
        }
        return out;
    }
    // StatefulSet pods are `<set>-<ordinal>`; DaemonSet pods `<set>-<5 chars>`; both have
    // a controller-revision-hash.
    if label(labels, "statefulset.kubernetes.io/pod-name").is_some()
        || label(labels, "apps.kubernetes.io/pod-index").is_some()
    {
        if let Some(set) = strip_suffix(pod_name, |s| {
            !s.is_empty() && s.chars().all(|c| c.is_ascii_digit())
        }) {
            out.push(("k8s.statefulset.name", set.to_string()));
        }
        return out;
    }
    if label(labels, "controller-revision-hash").is_some()
        && label(labels, "pod-template-generation").is_some()
    {
        if let Some(ds) = strip_suffix(pod_name, |s| s.len() == 5 && s.chars().all(is_suffix_char))
        {
            out.push(("k8s.daemonset.name", ds.to_string()));
        }
        return out;
    }
    // No labels to go by: the Deployment naming rule `<deployment>-<hash>-<suffix>`.
    if labels.is_empty() {
        if let Some(rs) = strip_suffix(pod_name, |s| s.len() == 5 && s.chars().all(is_suffix_char))
        {
            if let Some(dep) = strip_suffix(rs, |s| {
                (6..=10).contains(&s.len()) && s.chars().all(is_suffix_char)
            }) {
                out.push(("k8s.replicaset.name", rs.to_string()));
                out.push(("k8s.deployment.name", dep.to_string()));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn workloads() {
        assert_eq!(
            derive(
                "checkout-7d9f8b6c5-x2k9q",
                &l(&[("pod-template-hash", "7d9f8b6c5"), ("app", "checkout")])
            ),
            vec![
                ("k8s.replicaset.name", "checkout-7d9f8b6c5".into()),
                ("k8s.deployment.name", "checkout".into())
            ]
        );
        assert_eq!(
            derive("my-api-5c7b9d8f6f-bz8wq", &[]),
            vec![
                ("k8s.replicaset.name", "my-api-5c7b9d8f6f".into()),
                ("k8s.deployment.name", "my-api".into())
            ]
        );
        assert_eq!(
            derive(
                "web-2",
                &l(&[
                    ("statefulset.kubernetes.io/pod-name", "web-2"),
                    ("controller-revision-hash", "web-6d")
                ])
            ),
            vec![("k8s.statefulset.name", "web".into())]
        );
        assert_eq!(
            derive(
                "agent-x7k2p",
                &l(&[
                    ("controller-revision-hash", "6b9"),
                    ("pod-template-generation", "1")
                ])
            ),
            vec![("k8s.daemonset.name", "agent".into())]
        );
        assert_eq!(
            derive(
                "backup-28471230-qz5vd",
                &l(&[("job-name", "backup-28471230")])
            ),
            vec![
                ("k8s.job.name", "backup-28471230".into()),
                ("k8s.cronjob.name", "backup".into())
            ]
        );
        assert_eq!(derive("standalone", &[]), vec![]);
    }
}
