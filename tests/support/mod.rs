//! Test harness: the real `sluice` binary as a child process on a free port, configured with a
//! LiteLLM YAML file, in front of the mock provider (in-process, real HTTP).
// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub use sluice_mock::{MockConfig, MockProvider};

pub mod services;

pub const MASTER_KEY: &str = "sk-test-master-1234";

static SEQ: AtomicU64 = AtomicU64::new(0);

/// A running gateway process.
pub struct Gateway {
    pub port: u16,
    child: Option<Child>,
    log_path: PathBuf,
    config_path: PathBuf,
}

/// A free TCP port on 127.0.0.1 (released before the gateway binds it), never one this test
/// process handed out before: the kernel may give the same ephemeral port to two `bind(0)`s in
/// a row, and two gateways of parallel tests on one port answer each other's health checks.
pub fn free_port() -> u16 {
    static GIVEN: parking_lot::Mutex<Vec<u16>> = parking_lot::const_mutex(Vec::new());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port");
        let mut given = GIVEN.lock();
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

fn scratch_file(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join("sluice-tests");
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir.join(format!(
        "{}-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::SeqCst),
        name
    ))
}

impl Gateway {
    /// Starts the gateway with this config and waits until it answers.
    pub async fn start(config_yaml: &str) -> Gateway {
        Self::start_with(config_yaml, &[], &[]).await
    }

    /// Starts with extra command-line arguments and environment variables.
    pub async fn start_with(config_yaml: &str, args: &[&str], env: &[(&str, &str)]) -> Gateway {
        let mut last_logs = String::new();
        for _ in 0..3 {
            let port = free_port();
            let mut gateway = Gateway::spawn(config_yaml, port, args, env);
            match gateway.wait_until_up(Duration::from_secs(20)).await {
                Ok(()) => return gateway,
                Err(logs) => last_logs = logs,
            }
        }
        panic!("gateway did not start:\n{last_logs}");
    }

    /// Spawns without waiting (for tests of start-up failures).
    pub fn spawn(config_yaml: &str, port: u16, args: &[&str], env: &[(&str, &str)]) -> Gateway {
        let config_path = scratch_file("config.yaml");
        std::fs::write(&config_path, config_yaml).expect("write config");
        let log_path = scratch_file("gateway.log");
        let log = std::fs::File::create(&log_path).expect("log file");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sluice"));
        cmd.arg("--config")
            .arg(&config_path)
            .arg("--host")
            .arg("127.0.0.1")
            .arg("--port")
            .arg(port.to_string())
            .args(args)
            .env_remove("OPENAI_API_KEY")
            .env_remove("LITELLM_MASTER_KEY")
            .env_remove("RUST_LOG")
            .env_remove("PORT")
            .env_remove("HOST")
            .env_remove("DATABASE_URL")
            .env_remove("REDIS_URL")
            .env_remove("REDIS_HOST")
            // Each gateway gets its own SQLite key store unless the test names one.
            .env("SLUICE_DATABASE_PATH", scratch_file("sluice.db"))
            .env("SLUICE_SPEND_SPOOL_DIR", scratch_file("spend-spool"))
            .stdout(Stdio::from(log.try_clone().expect("log clone")))
            .stderr(Stdio::from(log));
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn sluice");
        Gateway {
            port,
            child: Some(child),
            log_path,
            config_path,
        }
    }

    async fn wait_until_up(&mut self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        let client = reqwest::Client::new();
        while Instant::now() < deadline {
            if let Some(status) = self.try_exit_status() {
                return Err(format!("exited with {status}\n{}", self.logs()));
            }
            // Up when this process says it listens and the port answers: the answer alone
            // could come from another process on the port while this one is still starting.
            if self.logs().contains("Sluice is listening")
                && let Ok(r) = client.get(self.url("/health/liveliness")).send().await
                && r.status() == 200
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(format!("no answer within {timeout:?}\n{}", self.logs()))
    }

    /// The config file the gateway was started with.
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.port, path)
    }

    /// A client that sends the master key.
    pub fn client(&self) -> Client {
        Client {
            base: self.url(""),
            http: reqwest::Client::new(),
            key: Some(MASTER_KEY.to_string()),
        }
    }

    pub fn logs(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log_path) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    pub fn try_exit_status(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Sends a signal to the gateway process.
    pub fn signal(&self, signal: i32) {
        // Safety-free: libc::kill is a plain syscall wrapper; the pid is our own child.
        let pid = self.pid() as i32;
        assert!(pid > 0);
        let rc = unsafe_free_kill(pid, signal);
        assert_eq!(rc, 0, "kill({pid}, {signal}) failed");
    }

    /// Waits for the process to exit.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(s) = self.try_exit_status() {
                return Some(s);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }

    /// The `/metrics` text.
    /// `/metrics` once every earlier request has been logged: a client has its whole
    /// response before the gateway's logging phase records it, so this waits (up to 5 s) for
    /// the scrape itself to be the only request in flight.
    pub async fn metrics(&self) -> String {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let text = self.metrics_now().await;
            if text.lines().any(|l| l == "litellm_in_flight_requests 1") {
                return text;
            }
            if Instant::now() > deadline {
                eprintln!("requests were still in flight when /metrics was read");
                return text;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `/metrics` as it is now (requests may still be in flight).
    pub async fn metrics_now(&self) -> String {
        reqwest::get(self.url("/metrics"))
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics text")
    }
}

/// `kill(2)` through the `kill` command, so the tests need no unsafe code.
fn unsafe_free_kill(pid: i32, signal: i32) -> i32 {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .expect("run kill");
    if status.success() { 0 } else { 1 }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_file(&self.config_path);
        if !std::thread::panicking() {
            let _ = std::fs::remove_file(&self.log_path);
        } else {
            eprintln!("gateway log kept at {}", self.log_path.display());
        }
    }
}

/// A small HTTP client bound to the gateway.
#[derive(Clone)]
pub struct Client {
    pub base: String,
    pub http: reqwest::Client,
    pub key: Option<String>,
}

impl Client {
    pub fn without_key(mut self) -> Client {
        self.key = None;
        self
    }

    pub fn post(&self, path: &str) -> reqwest::RequestBuilder {
        let r = self.http.post(format!("{}{path}", self.base));
        match &self.key {
            Some(k) => r.bearer_auth(k),
            None => r,
        }
    }

    pub fn get(&self, path: &str) -> reqwest::RequestBuilder {
        let r = self.http.get(format!("{}{path}", self.base));
        match &self.key {
            Some(k) => r.bearer_auth(k),
            None => r,
        }
    }

    pub fn delete(&self, path: &str) -> reqwest::RequestBuilder {
        let r = self.http.delete(format!("{}{path}", self.base));
        match &self.key {
            Some(k) => r.bearer_auth(k),
            None => r,
        }
    }

    /// POSTs JSON and returns status, headers and parsed body.
    pub async fn post_json(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> (u16, reqwest::header::HeaderMap, serde_json::Value) {
        let resp = self.post(path).json(body).send().await.expect("request");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.expect("body");
        let json = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
        (status, headers, json)
    }

    pub async fn get_json(&self, path: &str) -> (u16, serde_json::Value) {
        let resp = self.get(path).send().await.expect("request");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("body");
        (
            status,
            serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
        )
    }
}

/// The PostgreSQL the tests use (the test script starts it): `SLUICE_TEST_DATABASE_URL`, else
/// the local server's `test` database.
pub fn test_database_url() -> String {
    std::env::var("SLUICE_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// The Redis the tests use: `SLUICE_TEST_REDIS_URL`, else the local server.
pub fn test_redis_url() -> String {
    std::env::var("SLUICE_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A fresh scratch path (for SQLite files shared between gateway runs).
pub fn scratch_path(name: &str) -> PathBuf {
    scratch_file(name)
}

/// A config with one model group `gpt-4o` on the mock (deployment model `gpt-4o-mini`) and an
/// embeddings group, master key on.
pub fn basic_config(mock: &MockProvider) -> String {
    format!(
        r#"
model_list:
  - model_name: gpt-4o
    litellm_params:
      model: openai/gpt-4o-mini
      api_base: {base}
      api_key: sk-upstream-secret
  - model_name: text-embedding
    litellm_params:
      model: openai/text-embedding-3-small
      api_base: {base}
      api_key: sk-upstream-secret
    model_info:
      mode: embedding
  - model_name: instruct
    litellm_params:
      model: text-completion-openai/gpt-3.5-turbo-instruct
      api_base: {base}
      api_key: sk-upstream-secret
general_settings:
  master_key: {MASTER_KEY}
sluice_settings:
  threads: 1
"#,
        base = mock.api_base()
    )
}

/// A config with prices (`gpt-4o`: no input cost, 0.01 per output token, so the mock's five
/// completion tokens cost 0.05 per call), an embeddings group, the master key and spend written
/// every 0.2 s. `database`, `extra_general` and `router` are YAML lines added to
/// `general_settings` and `router_settings`.
pub fn priced_config(
    mock: &MockProvider,
    database: &str,
    extra_general: &str,
    router: &str,
) -> String {
    format!(
        r#"
model_list:
  - model_name: gpt-4o
    litellm_params:
      model: openai/gpt-4o-mini
      api_base: {base}
      api_key: sk-upstream
      input_cost_per_token: 0
      output_cost_per_token: 0.01
  - model_name: text-embedding
    litellm_params:
      model: openai/text-embedding-3-small
      api_base: {base}
      api_key: sk-upstream
    model_info:
      mode: embedding
general_settings:
  master_key: {MASTER_KEY}
  proxy_batch_write_at: 0.2
{database}{extra_general}
router_settings:
  routing_strategy: simple-shuffle
{router}
sluice_settings:
  threads: 2
"#,
        base = mock.api_base()
    )
}

/// Asserts the OpenAI error envelope and returns the message.
pub fn error_message(body: &serde_json::Value, status: u16) -> String {
    let err = &body["error"];
    assert!(err.is_object(), "not an OpenAI error body: {body}");
    assert_eq!(err["code"], status.to_string(), "{body}");
    assert!(
        err.get("type").is_some() && err.get("param").is_some(),
        "{body}"
    );
    err["message"].as_str().expect("message").to_string()
}

/// `target/sdk-venv` with the pinned SDK installed; created once.
pub fn python_with_openai() -> PathBuf {
    // Tests of one binary run in parallel threads: create the venv once.
    static PYTHON: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    PYTHON.get_or_init(create_sdk_venv).clone()
}

fn create_sdk_venv() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let venv = root.join("target").join("sdk-venv");
    let python = venv.join("bin").join("python");
    let requirements = root.join("tests").join("sdk").join("requirements.txt");
    let stamp = venv.join(".requirements");
    let wanted = std::fs::read_to_string(&requirements).expect("requirements.txt");
    if std::fs::read_to_string(&stamp).ok().as_deref() == Some(wanted.as_str()) && python.exists() {
        return python;
    }
    let status = std::process::Command::new("python3")
        .args(["-m", "venv", "--clear"])
        .arg(&venv)
        .status()
        .expect("python3 is needed for the SDK test (scripts/test installs it)");
    assert!(status.success(), "python3 -m venv failed");
    let status = std::process::Command::new(&python)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "-r",
        ])
        .arg(&requirements)
        .status()
        .expect("pip");
    assert!(
        status.success(),
        "installing the OpenAI SDK failed (PyPI must be reachable)"
    );
    std::fs::write(&stamp, wanted).expect("stamp");
    python
}

/// Polls `f` every 100 ms until it returns `Some`, for up to `timeout` (tests wait on an
/// observable event this way, never on a fixed sleep).
pub async fn eventually<T, F, Fut>(timeout: Duration, mut f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A client of `gw` that sends `key` instead of the master key.
pub fn as_key(gw: &Gateway, key: &str) -> Client {
    Client {
        key: Some(key.to_string()),
        ..gw.client()
    }
}
