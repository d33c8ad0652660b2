//! The command line: `sluice check`, start-up refusal with every problem listed, start-up
//! warnings for keys Sluice does not act on, and a clear error when the port is taken.

mod support;

use std::process::Command;
use std::time::Duration;

use support::*;

fn write(yaml: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!(
        "sluice-cli-{}-{}.yaml",
        std::process::id(),
        fastrand_name()
    ));
    std::fs::write(&path, yaml).unwrap();
    path
}

fn fastrand_name() -> u64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

fn sluice(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(args)
        .env_remove("LITELLM_MASTER_KEY")
        .env_remove("OPENAI_API_KEY")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const BROKEN: &str = r#"
model_list:
  - model_name: a
    litellm_params:
      model: openai/x
      rpm: lots
  - model_name: b
    litellm_params:
      model: opnai/gpt-4o
router_settings:
  routing_strategy: simple-shufle
general_settings:
  master_key: sk-1
  max_request_size_mb: -3
"#;

#[test]
fn check_lists_every_problem_with_its_path_and_fails() {
    let path = write(BROKEN);
    let (code, _, stderr) = sluice(&["check", "--config", path.to_str().unwrap()]);
    assert_eq!(code, 2, "{stderr}");
    for expected in [
        "error: model_list[0].litellm_params.rpm: must be a whole number >= 0, got \"lots\"",
        "error: model_list[1].litellm_params.model: cannot tell which provider serves \"opnai/gpt-4o\" (did you mean provider \"openai\"?)",
        "error: router_settings.routing_strategy: unknown routing strategy \"simple-shufle\" (did you mean \"simple-shuffle\"?)",
        "error: general_settings.max_request_size_mb: must be a positive number, got -3",
        "4 problem(s)",
    ] {
        assert!(
            stderr.contains(expected),
            "missing {expected:?} in:\n{stderr}"
        );
    }
    // The server refuses to start on the same file, with the same report.
    let (code, _, stderr) = sluice(&[
        "--config",
        path.to_str().unwrap(),
        "--port",
        &free_port().to_string(),
    ]);
    assert_eq!(code, 2);
    assert!(stderr.contains("Sluice did not start"));
    assert!(stderr.contains("model_list[0].litellm_params.rpm"));
}

#[test]
fn check_accepts_litellm_keys_it_does_not_act_on_and_suggests_fixes() {
    let path = write(
        r#"
model_list:
  - model_name: a
    litellm_params:
      model: openai/x
      api_base: http://127.0.0.1:9/v1
      num_retries: 2
      use_litellm_proxy: true
litellm_settings:
  modify_params: true
  success_callback: ["prometheus", "langfuse"]
router_settings:
  num_retries: 3
  optional_pre_call_checks: ["prompt_caching"]
  fallbacks: [{"a": ["b"]}]
general_settings:
  master_key: sk-1
  master_kye: oops
  store_model_in_db: true
"#,
    );
    let (code, stdout, stderr) = sluice(&["check", "--config", path.to_str().unwrap()]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.contains(
            "warning: general_settings.master_kye: unknown key (did you mean `master_key`?)"
        ),
        "{stdout}"
    );
    let ignored = stdout
        .lines()
        .find(|l| l.contains("does not act on yet"))
        .expect("one line lists ignored keys");
    for key in [
        "litellm_settings.modify_params",
        "router_settings.optional_pre_call_checks",
        "general_settings.store_model_in_db",
        "model_list[0].litellm_params.use_litellm_proxy",
    ] {
        assert!(ignored.contains(key), "{key} not in {ignored}");
    }
    // Retries are acted on (docs/routing.md): not in the list.
    for key in [
        "router_settings.num_retries",
        "litellm_params.num_retries",
        "router_settings.fallbacks",
    ] {
        assert!(!ignored.contains(key), "{key} in {ignored}");
    }
    assert!(
        stdout.contains("callback \"langfuse\" is not supported"),
        "{stdout}"
    );
    assert!(stdout.contains("config OK: 1 deployment(s) in 1 model group(s)"));

    let (code, _, stderr) = sluice(&["check", "--strict", "--config", path.to_str().unwrap()]);
    assert_eq!(code, 2, "--strict makes unknown keys errors");
    assert!(
        stderr.contains("error: general_settings.master_kye"),
        "{stderr}"
    );
}

#[test]
fn a_missing_config_file_is_a_clear_error() {
    let (code, _, stderr) = sluice(&["check", "--config", "/nonexistent/config.yaml"]);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("cannot read config file /nonexistent/config.yaml"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_up_warnings_are_logged_and_a_taken_port_fails_fast() {
    let mock = MockProvider::start(MockConfig::default()).await;
    let config = format!(
        "{}router_settings:\n  routing_strategy: least-busy\n  optional_pre_call_checks: [prompt_caching]\n",
        basic_config(&mock)
    );
    let gw = Gateway::start(&config).await;
    let logs = gw.logs();
    // least-busy is a strategy Sluice routes with: no warning about it.
    assert!(!logs.contains("least-busy"), "{logs}");
    assert!(
        logs.contains("router_settings.optional_pre_call_checks"),
        "{logs}"
    );

    // Same port again: refuse with a message instead of hanging.
    let mut second = Gateway::spawn(&config, gw.port, &[], &[]);
    let status = second
        .wait_exit(Duration::from_secs(10))
        .await
        .expect("second instance exits");
    assert_eq!(status.code(), Some(1));
    assert!(
        second
            .logs()
            .contains(&format!("cannot listen on 127.0.0.1:{}", gw.port)),
        "{}",
        second.logs()
    );
}

#[test]
fn the_example_configs_are_valid_under_strict() {
    for file in ["config/example.yaml", "config/reference.yaml"] {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
        let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(["check", "--strict", "--config"])
            .arg(&path)
            .env("OPENAI_API_KEY", "sk-example")
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{file}: {text}");
        assert!(!text.contains("unknown key"), "{file}: {text}");
    }
}
