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
