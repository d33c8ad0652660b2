//! TLS termination with LiteLLM's `--ssl_certfile_path` / `--ssl_keyfile_path`, HTTP/1.1 and
//! HTTP/2 (ALPN) on the same port.

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_http1_and_http2() {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let dir = std::env::temp_dir().join(format!("sluice-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cert_path = dir.join("cert.pem");
    let key_path = dir.join("key.pem");
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.key_pair.serialize_pem()).unwrap();

    let mock = MockProvider::start(MockConfig::default()).await;
    let port = free_port();
    let gw = Gateway::spawn(
        &basic_config(&mock),
        port,
        &[
            "--ssl_certfile_path",
            cert_path.to_str().unwrap(),
            "--ssl_keyfile_path",
            key_path.to_str().unwrap(),
        ],
        &[],
    );
    let root = reqwest::Certificate::from_pem(cert.cert.pem().as_bytes()).unwrap();
    let http1 = reqwest::Client::builder()
        .add_root_certificate(root.clone())
        .http1_only()
        .resolve("localhost", ([127, 0, 0, 1], port).into())
        .build()
        .unwrap();
    let http2 = reqwest::Client::builder()
        .add_root_certificate(root)
        .resolve("localhost", ([127, 0, 0, 1], port).into())
        .build()
        .unwrap();
    let url = |path: &str| format!("https://localhost:{port}{path}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if http1.get(url("/health/liveliness")).send().await.is_ok() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "TLS gateway did not start:\n{}",
            gw.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for (client, version) in [
        (&http1, reqwest::Version::HTTP_11),
        (&http2, reqwest::Version::HTTP_2),
    ] {
        let resp = client
            .post(url("/v1/chat/completions"))
            .bearer_auth(MASTER_KEY)
            .json(&json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.version(), version);
        assert_eq!(resp.status(), 200);
        let body: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(body["model"], "gpt-4o");
    }
    // Plain HTTP on the TLS port is refused.
    assert!(
        reqwest::get(format!("http://127.0.0.1:{port}/health/liveliness"))
            .await
            .is_err()
    );
    let _ = std::fs::remove_dir_all(&dir);
}
