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
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sdk/openai_sdk_check.py");
    let base = gw.url("");
    let output = tokio::process::Command::new(&python)
        .arg(&script)
        .arg(&base)
        .arg(MASTER_KEY)
        .output()
        .await
        .expect("run the SDK script");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "SDK checks failed:\n{stdout}\n{stderr}\n--- gateway log ---\n{}",
        gw.logs()
    );
    assert!(stdout.contains("checks passed"), "{stdout}");
    // Five successful model calls and the one that got a 429 reached the provider; the auth and
    // routing errors did not.
    assert_eq!(mock.calls(), 6);
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
    // Five completion tokens at 0.01: 0.05 per call.
    let config = format!(
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
general_settings:
  master_key: {MASTER_KEY}
  proxy_batch_write_at: 0.2
"#,
        base = mock.api_base()
    );
    let gw = Gateway::start(&config).await;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sdk/key_management_check.py");
    let output = tokio::process::Command::new(&python)
        .arg(&script)
        .arg(gw.url(""))
        .arg(MASTER_KEY)
        .output()
        .await
        .expect("run the key-management script");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "key-management script failed:\n{stdout}\n{stderr}\n--- gateway log ---\n{}",
        gw.logs()
    );
    assert!(stdout.contains("key management checks passed"), "{stdout}");
}
