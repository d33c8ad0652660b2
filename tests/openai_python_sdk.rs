//! The official OpenAI Python SDK against the gateway (chat, streams, completions, embeddings,
//! models, errors), in a virtualenv this test creates under `target/` on first use.

mod support;

use std::path::Path;

use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_openai_python_sdk_works_against_sluice() {
    let python = tokio::task::spawn_blocking(support::python_with_openai)
        .await
        .unwrap();
    let mock = MockProvider::start(MockConfig::default()).await;
    let gw = Gateway::start(&basic_config(&mock)).await;
    let stdout = run_script(&python, "openai_sdk_check.py", &gw).await;
    assert!(stdout.contains("checks passed"), "{stdout}");
    // Five successful model calls reached the provider once each, the one that got a 429
    // three times (LiteLLM's default num_retries: 2, after the provider's retry-after); the
    // auth and routing errors never did.
    assert_eq!(mock.calls(), 8);
}

/// A LiteLLM user's key-management script (tests/sdk/key_management_check.py): teams, users and
/// keys with budgets over the admin API, the keys used with the OpenAI SDK until their budget
/// stops them, spend visible on key, team, user and spend logs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_litellm_key_management_script_runs_unchanged() {
    let python = tokio::task::spawn_blocking(support::python_with_openai)
        .await
        .unwrap();
    let mock = MockProvider::start(MockConfig::default()).await;
    let gw = Gateway::start(&priced_config(&mock, "", "", "")).await;
    let stdout = run_script(&python, "key_management_check.py", &gw).await;
    assert!(stdout.contains("key management checks passed"), "{stdout}");
}

/// Runs `tests/sdk/<script>` against the gateway with the master key; its stdout, once it
/// succeeded (else the test fails with its output and the gateway's log).
async fn run_script(python: &Path, script: &str, gw: &Gateway) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/sdk")
        .join(script);
    let output = tokio::process::Command::new(python)
        .arg(&path)
        .arg(gw.url(""))
        .arg(MASTER_KEY)
        .output()
        .await
        .unwrap_or_else(|e| panic!("run {script}: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{script} failed:\n{stdout}\n{stderr}\n--- gateway log ---\n{}",
        gw.logs()
    );
    stdout
}
