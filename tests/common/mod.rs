//! Running the real `sidekick` binary in tests: start it with a YAML config, learn the
//! addresses it bound (from its JSON log lines), stop it with SIGTERM.

#![allow(dead_code)] // each test file uses a different part

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub struct Sidekick {
    child: Child,
    pub grpc: Option<SocketAddr>,
    pub http: Option<SocketAddr>,
    pub admin: SocketAddr,
    lines: Arc<Mutex<Vec<String>>>,
    _config: TempFile,
}

/// A file removed when dropped.
pub struct TempFile(pub PathBuf);

impl TempFile {
    pub fn new(name: &str, contents: &str) -> TempFile {
        TempFile::bytes(name, contents.as_bytes())
    }

    pub fn bytes(name: &str, contents: &[u8]) -> TempFile {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "sidekick-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, contents).unwrap();
        TempFile(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(dir) = self.0.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Telemetry settings every test config appends: JSON logs (parsed here) and an admin
/// endpoint on a free port.
pub const TEST_TELEMETRY: &str =
    "  telemetry:\n    logs:\n      encoding: json\n    metrics:\n      address: 127.0.0.1:0\n";

impl Sidekick {
    /// Starts `sidekick --config <yaml>` and waits until it has said where it listens.
    /// `yaml` should end inside `service:` so [`TEST_TELEMETRY`] can follow.
    pub fn start(yaml: &str) -> Sidekick {
        Self::start_with_env(yaml, &[])
    }

    /// [`Sidekick::start`] with extra environment variables for the process.
    pub fn start_with_env(yaml: &str, env: &[(&str, &str)]) -> Sidekick {
        Self::start_with_telemetry(yaml, TEST_TELEMETRY, env)
    }

    /// [`Sidekick::start_with_env`] with its own `telemetry:` block (which must keep JSON
    /// logs and an admin address, as [`TEST_TELEMETRY`] has them).
    pub fn start_with_telemetry(yaml: &str, telemetry: &str, env: &[(&str, &str)]) -> Sidekick {
        Self::start_with_args(yaml, telemetry, env, &[])
    }

    /// [`Sidekick::start_with_telemetry`] with extra command-line arguments.
    pub fn start_with_args(
        yaml: &str,
        telemetry: &str,
        env: &[(&str, &str)],
        args: &[&str],
    ) -> Sidekick {
        let config = TempFile::new("sidekick.yaml", &format!("{yaml}{telemetry}"));
        let mut child = Command::new(env!("CARGO_BIN_EXE_sidekick"))
            .arg("--config")
            .arg(&config.0)
            .args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start sidekick");
        let stderr = child.stderr.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&lines);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let started = Instant::now();
        let mut sk = Sidekick {
            child,
            grpc: None,
            http: None,
            admin: "0.0.0.0:0".parse().unwrap(),
            lines,
            _config: config,
        };
        loop {
            let ready = sk.lines().iter().any(|l| l.contains("everything is ready"));
            if ready {
                for line in sk.lines() {
                    let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
                        continue;
                    };
                    let address = v["address"].as_str().and_then(|a| a.parse().ok());
                    let message = v["message"].as_str().unwrap_or("");
                    match (message, v["endpoint"].as_str()) {
                        (m, Some("grpc")) if m.starts_with("listening") => sk.grpc = address,
                        (m, Some("http")) if m.starts_with("listening") => sk.http = address,
                        (m, _) if m.starts_with("admin endpoint listening") => {
                            sk.admin = address.unwrap()
                        }
                        _ => {}
                    }
                }
                if sk.admin.port() != 0 {
                    return sk;
                }
            }
            if let Ok(Some(status)) = sk.child.try_wait() {
                panic!(
                    "sidekick exited with {status} during start:\n{}",
                    sk.lines().join("\n")
                );
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "sidekick did not start:\n{}",
                sk.lines().join("\n")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM and waits for the exit.
    pub fn terminate(&mut self) -> ExitStatus {
        self.signal("TERM")
    }

    /// Sends the signal `name` (`kill -NAME`) and waits for the exit.
    pub fn signal(&mut self, name: &str) -> ExitStatus {
        self.send_signal(name);
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                // Let the reader thread take the last lines.
                std::thread::sleep(Duration::from_millis(50));
                return status;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "sidekick did not stop:\n{}",
                self.lines().join("\n")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends the signal `name` (`kill -NAME`) and returns at once.
    pub fn send_signal(&self, name: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(ok.success());
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// The config file it runs, which a test may rewrite.
    pub fn config_path(&self) -> &std::path::Path {
        &self._config.0
    }

    /// Waits until a log line contains `text` (after the first `skip` lines that do).
    pub fn wait_for_line(&self, text: &str, skip: usize) {
        let started = Instant::now();
        while self.lines().iter().filter(|l| l.contains(text)).count() <= skip {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "no line with {text:?}:\n{}",
                self.lines().join("\n")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the process with SIGKILL, as an OOM kill or a node failure would, and
    /// waits for it to be gone.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The admin endpoint's `/metrics` page.
    pub fn metrics(&self) -> String {
        http_get(self.admin, "/metrics").1
    }
}

impl Drop for Sidekick {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub use sidekick_testkit::http_get;

/// The value of one series on a Prometheus text page.
pub fn metric_value(page: &str, series: &str) -> Option<f64> {
    page.lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
        })
        .and_then(|v| v.trim().parse().ok())
}

/// A multi-threaded runtime for test-side async work (the sink, raw clients).
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// The value of attribute `key` among decoded OTLP attributes.
pub fn attr<'a>(
    attrs: &'a [opentelemetry_proto::tonic::common::v1::KeyValue],
    key: &str,
) -> Option<&'a opentelemetry_proto::tonic::common::v1::any_value::Value> {
    attrs
        .iter()
        .find(|kv| kv.key == key)?
        .value
        .as_ref()?
        .value
        .as_ref()
}
