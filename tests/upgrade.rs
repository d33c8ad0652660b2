//! Binary upgrade under load (docs/operations.md): a new Sluice started with `--upgrade` takes
//! the listening socket from the running one when it is sent SIGQUIT; the old one finishes what
//! it has in flight (streams included), books its spend and exits. Clients notice nothing: no
//! failed or reset request, every stream whole, every call's cost booked once.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use parking_lot::Mutex;
use serde_json::{Value, json};
use support::*;

const SIGQUIT: i32 = 3;

fn port_of(gw: &Gateway) -> u16 {
    gw.url("").rsplit(':').next().unwrap().parse().unwrap()
}

/// Output tokens cost 0.01 each (`priced_config`): what `usage` costs.
fn cost_of(usage: &Value) -> f64 {
    usage["completion_tokens"].as_f64().unwrap() * 0.01
}

/// Short chat requests at concurrency 16 until [`Load::finish`], each client keeping its
/// connections alive; every answer's cost added to `spent`.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failures: Arc<Mutex<Vec<String>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(url: &str, key: &str, model: &str, spent: Arc<Mutex<f64>>) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let failures = Arc::new(Mutex::new(Vec::<String>::new()));
        let tasks = (0..16)
            .map(|_| {
                let (stop, ok, spent, failures) =
                    (stop.clone(), ok.clone(), spent.clone(), failures.clone());
                let (url, key, model) = (url.to_string(), key.to_string(), model.to_string());
                tokio::spawn(async move {
                    let http = reqwest::Client::new();
                    while !stop.load(Ordering::Relaxed) {
                        let sent = http
                            .post(&url)
                            .bearer_auth(&key)
                            .json(&json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}))
                            .send()
                            .await;
                        let answer = match sent {
                            Ok(r) if r.status() == 200 => {
                                r.json::<Value>().await.map_err(|e| e.to_string())
                            }
                            Ok(r) => Err(format!("status {}", r.status())),
                            Err(e) => Err(format!("{e:?}")),
                        };
                        match answer {
                            Ok(a) => {
                                ok.fetch_add(1, Ordering::Relaxed);
                                *spent.lock() += cost_of(&a["usage"]);
                            }
                            Err(e) => failures.lock().push(e),
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            ok,
            failures,
            tasks,
        }
    }

    fn served(&self) -> u64 {
        self.ok.load(Ordering::Relaxed)
    }

    /// Stops the load; asserts nothing failed; returns how many requests succeeded.
    async fn finish(self, old: &Gateway, new_logs: &str) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            task.await.unwrap();
        }
        let failures = self.failures.lock().clone();
        assert!(
            failures.is_empty(),
            "{} failed request(s), first: {:?}\n--- old ---\n{}\n--- new ---\n{new_logs}",
            failures.len(),
            failures.first(),
            old.logs(),
        );
        self.ok.load(Ordering::Relaxed)
    }
}

type Streams = Vec<tokio::task::JoinHandle<Result<(), String>>>;

/// `n` streams of 20 events 200 ms apart, asking for usage; each stream's cost added to `spent`.
fn slow_streams(url: &str, key: &str, n: usize, spent: Arc<Mutex<f64>>) -> Streams {
    (0..n)
        .map(|_| {
            let (url, key, spent) = (url.to_string(), key.to_string(), spent.clone());
            tokio::spawn(async move {
                let resp = reqwest::Client::new()
                    .post(&url)
                    .bearer_auth(&key)
                    .json(&json!({"model": "gpt-4o", "stream": true, "stream_options": {"include_usage": true},
                                  "messages": [{"role": "user", "content": "hi"}],
                                  "mock": {"chunks": 20, "chunk_delay_ms": 200}}))
                    .send()
                    .await
                    .map_err(|e| format!("{e:?}"))?;
                if resp.status() != 200 {
                    return Err(format!("stream status {}", resp.status()));
                }
                let mut body = resp.bytes_stream();
                let mut text = String::new();
                while let Some(chunk) = body.next().await {
                    text.push_str(&String::from_utf8_lossy(&chunk.map_err(|e| format!("{e:?}"))?));
                }
                if !text.trim_end().ends_with("data: [DONE]") {
                    return Err(format!("stream cut short: {text}"));
                }
                let usage: Value = text
                    .lines()
                    .filter_map(|l| l.strip_prefix("data: "))
                    .filter_map(|d| serde_json::from_str::<Value>(d).ok())
                    .find(|v| v["usage"].is_object())
                    .map(|v| v["usage"].clone())
                    .ok_or("no usage in the stream")?;
                *spent.lock() += cost_of(&usage);
                Ok(())
            })
        })
        .collect()
}

async fn finish_streams(streams: Streams, old: &Gateway) {
    for stream in streams {
        stream
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("{e}\n--- old ---\n{}", old.logs()));
    }
}

async fn new_key(gw: &Gateway) -> String {
    let (status, _, key) = gw
        .client()
        .post_json("/key/generate", &json!({"max_budget": 10_000}))
        .await;
    assert_eq!(status, 200, "{key}");
    key["key"].as_str().unwrap().to_string()
}

/// Waits until the key's spend is `want` (both processes' batches written).
async fn spend_reaches(gw: &Gateway, key: &str, want: f64, served: u64) {
    let admin = gw.client();
    let booked = eventually(Duration::from_secs(15), || async {
        let (_, info) = admin.get_json(&format!("/key/info?key={key}")).await;
        let spend = info["info"]["spend"].as_f64()?;
        ((spend - want).abs() < 1e-6).then_some(spend)
    })
    .await;
    let (_, info) = admin.get_json(&format!("/key/info?key={key}")).await;
    assert!(
        booked.is_some(),
        "spend {} after {served} calls and the streams costing {want}",
        info["info"]["spend"]
    );
}

/// Kills a process the test did not start itself (the one a reload started) when dropped.
struct Reaped(Option<i32>);

impl Drop for Reaped {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            let _ = std::process::Command::new("kill")
                .arg("-9")
                .arg(pid.to_string())
                .status();
        }
    }
}

/// `sluice reload` for the gateway's config file and port: its exit status and output.
fn reload(gw: &Gateway) -> (std::process::ExitStatus, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("reload")
        .arg("--config")
        .arg(gw.config_path())
        .arg("--host")
        .arg("127.0.0.1")
        .arg("--port")
        .arg(port_of(gw).to_string())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status, text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_binary_upgrade_under_load_fails_no_request_and_books_every_call_once() {
    let mock = MockProvider::start(MockConfig::default()).await;
    let config = priced_config(
        &mock,
        &format!("  database_url: {}\n", test_database_url()),
        "",
        "",
    );
    // systemd's notification socket: each process says it is the main one once it listens.
    let notify_path = scratch_path("notify.sock");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let notify_env = [("NOTIFY_SOCKET", notify_path.to_str().unwrap())];
    let mut old = Gateway::start_with(&config, &[], &notify_env).await;
    let mut said = [0u8; 256];
    let n = notify.recv(&mut said).unwrap();
    assert_eq!(
        std::str::from_utf8(&said[..n]).unwrap(),
        format!("READY=1\nMAINPID={}", old.pid())
    );
    let port = port_of(&old);
    let key = new_key(&old).await;
    let url = old.url("/v1/chat/completions");
    let spent = Arc::new(Mutex::new(0.0f64));
    let load = Load::start(&url, &key, "gpt-4o", spent.clone());
    let streams = slow_streams(&url, &key, 20, spent.clone());
    tokio::time::sleep(Duration::from_millis(500)).await;

    // The new process waits on the upgrade socket; SIGQUIT hands the listener over.
    let new = Gateway::spawn(&config, port, &["--upgrade"], &notify_env);
    let waiting = eventually(Duration::from_secs(20), || async {
        new.logs()
            .contains("waiting for the running Sluice's listening sockets")
            .then_some(())
    })
    .await;
    assert!(waiting.is_some(), "new process:\n{}", new.logs());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let handed_over = Instant::now();
    old.signal(SIGQUIT);
    let up = eventually(Duration::from_secs(20), || async {
        new.logs().contains("Sluice is listening").then_some(())
    })
    .await;
    assert!(up.is_some(), "new process:\n{}", new.logs());
    let n = notify.recv(&mut said).unwrap();
    assert_eq!(
        std::str::from_utf8(&said[..n]).unwrap(),
        format!("READY=1\nMAINPID={}", new.pid()),
        "the new process tells systemd it is the main one"
    );
    let exit = old.wait_exit(Duration::from_secs(30)).await;
    assert!(
        exit.is_some_and(|s| s.success()),
        "the old process exits when drained ({exit:?}):\n{}",
        old.logs()
    );
    assert!(handed_over.elapsed() < Duration::from_secs(20));
    let served_before = load.served();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let served = load.finish(&old, &new.logs()).await;
    finish_streams(streams, &old).await;
    assert!(
        served > served_before,
        "the new process served the load after the old one left ({served_before} then {served})"
    );
    // Both processes booked their calls: the key's spend is the sum of every answer's cost.
    let want = *spent.lock();
    spend_reaches(&new, &key, want, served).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reload_under_load_takes_a_changed_config_and_refuses_a_broken_one() {
    let mock = MockProvider::start(MockConfig::default()).await;
    let second = MockProvider::start(MockConfig::default()).await;
    let database = format!("  database_url: {}\n", test_database_url());
    let config = priced_config(&mock, &database, "", "");
    let mut old = Gateway::start(&config).await;
    let key = new_key(&old).await;
    let url = old.url("/v1/chat/completions");
    let spent = Arc::new(Mutex::new(0.0f64));
    let load = Load::start(&url, &key, "gpt-4o", spent.clone());
    let streams = slow_streams(&url, &key, 10, spent.clone());
    tokio::time::sleep(Duration::from_millis(300)).await;

    // A config that would not start: refused, and the running process is untouched.
    std::fs::write(old.config_path(), "model_list: 5\n").unwrap();
    let (status, said) = reload(&old);
    assert_eq!(status.code(), Some(2), "{said}");
    assert!(said.contains("model_list"), "{said}");
    assert!(old.try_exit_status().is_none(), "still running");

    // A changed config: a group added, the existing one's api_base moved to another server.
    let changed = priced_config(&second, &database, "", "").replacen(
        "model_list:\n",
        "model_list:\n  - model_name: added\n    litellm_params:\n      model: openai/gpt-4o-mini\n      api_base: SECOND\n      api_key: sk-upstream\n      output_cost_per_token: 0.01\n",
        1,
    );
    let changed = changed.replace("SECOND", &second.api_base());
    std::fs::write(old.config_path(), &changed).unwrap();
    let (status, said) = reload(&old);
    let new_pid: Option<i32> = said
        .split("to pid ")
        .nth(1)
        .and_then(|r| r.trim().parse().ok());
    let _reaped = Reaped(new_pid);
    assert!(status.success(), "{said}\n--- old ---\n{}", old.logs());
    assert!(new_pid.is_some(), "{said}");
    let exit = old.wait_exit(Duration::from_secs(30)).await;
    assert!(
        exit.is_some_and(|s| s.success()),
        "the old process exits when drained ({exit:?}):\n{}",
        old.logs()
    );
    let served = load
        .finish(&old, "(the new process logs to the old one's output)")
        .await;
    finish_streams(streams, &old).await;
    assert!(served > 0);

    // Requests after the reload are routed by the new config.
    let client = as_key(&old, &key);
    let (status, _, answer) = client
        .post_json(
            "/v1/chat/completions",
            &json!({"model": "added", "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    let on_second = second.calls();
    let (status, _, answer) = client
        .post_json(
            "/v1/chat/completions",
            &json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        second.calls(),
        on_second + 1,
        "gpt-4o now goes to the new api_base"
    );
    *spent.lock() += 2.0 * cost_of(&answer["usage"]);
    let want = *spent.lock();
    spend_reaches(&old, &key, want, served).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigquit_without_a_new_process_waiting_is_ignored_and_the_gateway_keeps_serving() {
    let mock = MockProvider::start(MockConfig::default()).await;
    let gw = Gateway::start(&basic_config(&mock)).await;
    gw.signal(SIGQUIT);
    let logged = eventually(Duration::from_secs(5), || async {
        gw.logs().contains("SIGQUIT ignored").then_some(())
    })
    .await;
    assert!(logged.is_some(), "{}", gw.logs());
    let (status, _, _) = gw
        .client()
        .post_json(
            "/v1/chat/completions",
            &json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    assert_eq!(status, 200, "still serving");
}
