//! Images, audio (speech out, a multipart upload in), moderations and rerank through Sluice:
//! forwarded with the deployment's model and credentials, priced per unit as LiteLLM prices
//! them (per image or pixel, character, second, search unit), the spend on the caller's key;
//! then the OpenAI SDK's own calls for the same routes.

mod support;

use std::path::Path;

use serde_json::{Value, json};
use support::*;

fn config(mock: &MockProvider) -> String {
    let host = format!("http://{}", mock.addr);
    format!(
        r#"
model_list:
  - model_name: dalle
    litellm_params: {{model: openai/dall-e-3, api_base: "{host}/v1", api_key: sk-img, input_cost_per_image: 0.04}}
  - model_name: dalle-azure
    litellm_params: {{model: azure/dall-e-3, api_base: "{host}", api_key: az-key, api_version: "2024-02-01"}}
  - model_name: tts
    litellm_params: {{model: openai/tts-1, api_base: "{host}/v1", api_key: sk-tts}}
  - model_name: whisper
    litellm_params: {{model: openai/whisper-1, api_base: "{host}/v1", api_key: sk-stt}}
  - model_name: moderation
    litellm_params: {{model: openai/omni-moderation-latest, api_base: "{host}/v1", api_key: sk-mod}}
  - model_name: rerank-cohere
    litellm_params: {{model: cohere/rerank-english-v3.0, api_base: "{host}", api_key: co-key}}
  - model_name: rerank-vllm
    litellm_params: {{model: hosted_vllm/bge-reranker, api_base: "{host}/v1", input_cost_per_query: 0.001}}
general_settings:
  master_key: {MASTER_KEY}
  database_url: {db}
  proxy_batch_write_at: 0.2
sluice_settings:
  threads: 1
"#,
        db = test_database_url(),
    )
}

fn cost(headers: &reqwest::header::HeaderMap) -> f64 {
    headers
        .get("x-litellm-response-cost")
        .and_then(|v| v.to_str().ok()?.parse().ok())
        .expect("x-litellm-response-cost")
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

/// A multipart form with a `model`, a `file` of `file_bytes` bytes and other text fields.
fn form(model: &str, file_bytes: usize, fields: &[(&str, &str)]) -> (String, Vec<u8>) {
    // Binary, but below 0x80: the mock reads the form as text.
    let file: Vec<u8> = (0..file_bytes).map(|i| (i % 128) as u8).collect();
    form_with_file(model, fields, &file)
}

/// A multipart form with a `model`, other text fields and `file` as the `file` part.
fn form_with_file(model: &str, fields: &[(&str, &str)], file: &[u8]) -> (String, Vec<u8>) {
    let boundary = "sluice-test-boundary";
    let mut body = Vec::new();
    for (name, value) in [("model", model)].iter().chain(fields) {
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
            )
            .as_bytes(),
        );
    }
    body.extend_from_slice(
        format!("--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\nContent-Type: audio/wav\r\n\r\n").as_bytes(),
    );
    body.extend_from_slice(file);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_audio_moderations_and_rerank_are_forwarded_and_priced() {
    let mock = MockProvider::start(MockConfig::default()).await;
    let gw = Gateway::start(&config(&mock)).await;
    let (status, _, key) = gw
        .client()
        .post_json("/key/generate", &json!({"max_budget": 10}))
        .await;
    assert_eq!(status, 200, "{key}");
    let token = key["key"].as_str().unwrap().to_string();
    let client = as_key(&gw, &token);
    let mut spent = 0.0;

    // Images: two at the deployment's own per-image price.
    let (status, headers, body) = client
        .post_json(
            "/v1/images/generations",
            &json!({"model": "dalle", "prompt": "a lighthouse", "n": 2, "size": "1024x1024"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"].as_array().unwrap().len(), 2);
    assert!(close(cost(&headers), 0.08), "{headers:?}");
    spent += 0.08;
    let sent = mock.last_request().unwrap();
    assert_eq!(sent.path, "/v1/images/generations");
    assert_eq!(sent.json()["model"], "dall-e-3");
    assert_eq!(sent.headers["authorization"], "Bearer sk-img");
    // Azure's: the table's per-pixel price for standard 1024x1024 dall-e-3 on Azure.
    let (status, headers, body) = client
        .post_json(
            "/v1/images/generations",
            &json!({"model": "dalle-azure", "prompt": "a lighthouse"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let sent = mock.last_request().unwrap();
    assert_eq!(sent.path, "/openai/deployments/dall-e-3/images/generations");
    let per_pixel = 4.19617e-08 * 1024.0 * 1024.0;
    assert!(close(cost(&headers), per_pixel), "{headers:?}");
    spent += per_pixel;

    // Speech: audio streamed back as it comes, priced per input character.
    let input = "Hello there";
    let resp = client
        .post("/v1/audio/speech")
        .json(&json!({"model": "tts", "input": input, "voice": "alloy", "mock": {"chunks": 3, "chunk_delay_ms": 150}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "audio/mpeg");
    let started = std::time::Instant::now();
    let mut resp = resp;
    let first = resp.chunk().await.unwrap().expect("first audio chunk");
    let first_at = started.elapsed();
    assert!(first.starts_with(b"ID3-0-Hello there"), "{first:?}");
    let mut audio = first.to_vec();
    while let Some(chunk) = resp.chunk().await.unwrap() {
        audio.extend_from_slice(&chunk);
    }
    assert!(
        started.elapsed() >= first_at + std::time::Duration::from_millis(250),
        "the first chunk came before the rest were generated (not buffered)"
    );
    assert_eq!(
        audio,
        b"ID3-0-Hello thereID3-1-Hello thereID3-2-Hello there".to_vec()
    );
    spent += input.chars().count() as f64 * 1.5e-05;

    // Transcription: a multipart upload, `model` replaced in the form, the rest untouched;
    // priced per second of audio.
    let (content_type, upload) = form("whisper", 250, &[("language", "en")]);
    let resp = client
        .post("/v1/audio/transcriptions")
        .header("content-type", content_type)
        .body(upload.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let headers = resp.headers().clone();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["text"], "transcribed 250 bytes with whisper-1");
    assert!(close(cost(&headers), 3.0 * 0.0001), "{headers:?}");
    spent += 3.0 * 0.0001;
    let sent = mock.last_request().unwrap();
    assert_eq!(sent.headers["authorization"], "Bearer sk-stt");
    let renamed =
        String::from_utf8_lossy(&upload).replace("\r\n\r\nwhisper\r\n", "\r\n\r\nwhisper-1\r\n");
    assert_eq!(
        sent.body,
        renamed.as_bytes().to_vec(),
        "only the model changed"
    );
    // As text, when asked.
    let (content_type, upload) = form("whisper", 10, &[("response_format", "text")]);
    let resp = client
        .post("/v1/audio/transcriptions")
        .header("content-type", content_type)
        .body(upload)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    // Plain text says nothing of the audio's length: nothing to price by (documented).
    assert!(close(cost(resp.headers()), 0.0));
    assert_eq!(
        resp.text().await.unwrap(),
        "transcribed 10 bytes with whisper-1"
    );
    // A form without a model is refused before any provider call.
    let calls = mock.calls();
    let resp = client
        .post("/v1/audio/transcriptions")
        .header("content-type", "multipart/form-data; boundary=x")
        .body("--x\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\nabc\r\n--x--\r\n")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(mock.calls(), calls);

    // Moderations: free.
    let (status, headers, body) = client
        .post_json(
            "/v1/moderations",
            &json!({"model": "moderation", "input": "hi"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["results"][0]["flagged"], false);
    assert!(close(cost(&headers), 0.0));

    // Rerank, Cohere's format: to Cohere's rerank API and to an OpenAI-compatible server.
    let rerank = |model: &str| json!({"model": model, "query": "capital of France", "documents": ["Paris", "Berlin", "Rome"], "top_n": 2});
    let (status, headers, body) = client
        .post_json("/v1/rerank", &rerank("rerank-cohere"))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["results"].as_array().map(Vec::len), Some(3), "{body}");
    assert_eq!(mock.last_request().unwrap().path, "/v2/rerank");
    assert_eq!(
        mock.last_request().unwrap().json()["model"],
        "rerank-english-v3.0"
    );
    assert!(close(cost(&headers), 0.002), "{headers:?}");
    let (status, headers, body) = client.post_json("/v2/rerank", &rerank("rerank-vllm")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(mock.last_request().unwrap().path, "/v1/rerank");
    assert!(close(cost(&headers), 0.001), "{headers:?}");
    spent += 0.003;

    // Everything landed on the key.
    let admin = gw.client();
    let booked = eventually(std::time::Duration::from_secs(5), || async {
        let (_, info) = admin.get_json(&format!("/key/info?key={token}")).await;
        let spend = info["info"]["spend"].as_f64()?;
        ((spend - spent).abs() < 1e-6).then_some(spend)
    })
    .await;
    let (_, info) = admin.get_json(&format!("/key/info?key={token}")).await;
    assert!(
        booked.is_some(),
        "key spend reaches {spent}: {}",
        info["info"]["spend"]
    );
}

/// The OpenAI SDK's own calls for the same routes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openai_sdk_generates_images_speaks_transcribes_and_moderates() {
    let mock = MockProvider::start(MockConfig::default()).await;
    let gw = Gateway::start(&config(&mock)).await;
    let python = tokio::task::spawn_blocking(python_with_openai)
        .await
        .unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sdk/media_sdk_check.py");
    let output = tokio::process::Command::new(&python)
        .arg(&script)
        .arg(gw.url(""))
        .arg(MASTER_KEY)
        .output()
        .await
        .expect("run the SDK script");
    assert!(
        output.status.success(),
        "{}\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
        gw.logs()
    );
    let summary: Value = serde_json::from_slice(&output.stdout).expect("one JSON summary");
    assert_eq!(
        summary,
        json!({"images": 2, "speech": "ID3-0-Hi", "transcription": "transcribed 4 bytes with whisper-1", "flagged": false})
    );
}

/// Sends an upload over a raw connection: the head, the body's first `first` bytes, a pause,
/// the rest. Returns the whole response (read until the gateway closes the connection) and
/// when the rest was sent. `close`: ask for `Connection: close`.
async fn raw_upload(
    gw: &Gateway,
    content_type: &str,
    body: &[u8],
    first: usize,
    pause: std::time::Duration,
    close: bool,
) -> (String, std::time::Instant) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let gateway_port: u16 = gw.url("").rsplit(':').next().unwrap().parse().unwrap();
    let mut client = tokio::net::TcpStream::connect(("127.0.0.1", gateway_port))
        .await
        .unwrap();
    let connection = if close { "Connection: close\r\n" } else { "" };
    let head = format!(
        "POST /v1/audio/transcriptions HTTP/1.1\r\nHost: sluice\r\nAuthorization: Bearer {MASTER_KEY}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{connection}\r\n",
        body.len()
    );
    client.write_all(head.as_bytes()).await.unwrap();
    client.write_all(&body[..first]).await.unwrap();
    client.flush().await.unwrap();
    tokio::time::sleep(pause).await;
    let rest_sent_at = std::time::Instant::now();
    // A gateway that refused the upload may have closed the connection already.
    let _ = client.write_all(&body[first..]).await;
    let mut response = Vec::new();
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        client.read_to_end(&mut response),
    )
    .await;
    assert!(
        read.is_ok(),
        "the gateway closes the connection after its answer"
    );
    (
        String::from_utf8_lossy(&response).into_owned(),
        rest_sent_at,
    )
}

/// A provider that records when a request's head arrived and the body it got, and answers a
/// transcription.
async fn recording_provider() -> (
    u16,
    tokio::sync::oneshot::Receiver<(std::time::Instant, Vec<u8>)>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (mut conn, _) = listener.accept().await.unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 65536];
        let head_end = loop {
            let n = conn.read(&mut chunk).await.unwrap();
            assert!(n > 0, "the gateway closed before the request head");
            buf.extend_from_slice(&chunk[..n]);
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
        };
        let head_at = std::time::Instant::now();
        let head = String::from_utf8_lossy(&buf[..head_end]).to_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map(|v| v.trim().parse().unwrap())
            .expect("a Content-Length");
        let mut body = buf[head_end..].to_vec();
        while body.len() < length {
            let n = conn.read(&mut chunk).await.unwrap();
            assert!(n > 0, "the body ended early");
            body.extend_from_slice(&chunk[..n]);
        }
        let answer = r#"{"text":"hello","usage":{"type":"duration","seconds":2}}"#;
        let response = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{answer}",
            answer.len()
        );
        conn.write_all(response.as_bytes()).await.unwrap();
        let _ = tx.send((head_at, body));
    });
    (port, rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transcription_upload_goes_on_while_the_client_is_still_sending_it() {
    let (port, recorded) = recording_provider().await;
    let config = format!(
        r#"
model_list:
  - model_name: whisper
    litellm_params: {{model: openai/whisper-1, api_base: "http://127.0.0.1:{port}/v1", api_key: sk-stt}}
general_settings:
  master_key: {MASTER_KEY}
sluice_settings:
  threads: 1
"#
    );
    let gw = Gateway::start(&config).await;
    let (content_type, body) = form("whisper", 2 * 1024 * 1024, &[("language", "en")]);
    // The form's fields and the first 64 KiB of the file, then a pause before the rest.
    let pause = std::time::Duration::from_millis(1500);
    let (response, rest_sent_at) =
        raw_upload(&gw, &content_type, &body, 64 * 1024, pause, true).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains(r#""text":"hello""#), "{response}");

    let (head_at, upstream_body) = recorded.await.unwrap();
    assert!(
        head_at < rest_sent_at,
        "the provider had the request before the client sent the rest of the file"
    );
    // The same form, with the deployment's model spliced in.
    let spliced = String::from_utf8_lossy(&body)
        .replacen("\r\n\r\nwhisper\r\n", "\r\n\r\nwhisper-1\r\n", 1)
        .into_bytes();
    assert_eq!(upstream_body.len(), spliced.len());
    assert!(
        upstream_body == spliced,
        "the body arrives whole and unchanged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_refused_after_its_form_head_closes_the_connection_instead_of_reading_the_file_as_a_request()
 {
    let mock = MockProvider::start(MockConfig::default()).await;
    let gw = Gateway::start(&config(&mock)).await;
    let (content_type, body) = form("no-such-group", 1024 * 1024, &[]);
    // The refusal comes while most of the file is unsent; then the connection closes.
    let pause = std::time::Duration::from_millis(300);
    let (response, _) = raw_upload(&gw, &content_type, &body, 64 * 1024, pause, false).await;
    assert!(response.starts_with("HTTP/1.1 400"), "{response}");
    assert!(response.contains("no-such-group"), "{response}");
    assert_eq!(mock.calls(), 0);
}

/// A form with a 16 kHz mono 16-bit PCM WAV file of `seconds` and `response_format=text`.
fn wav_form(seconds: usize) -> (String, Vec<u8>) {
    let data = 32_000 * seconds;
    let mut wav = b"RIFF".to_vec();
    wav.extend_from_slice(&(36 + data as u32).to_le_bytes());
    wav.extend_from_slice(b"WAVEfmt ");
    for (value, width) in [
        (16u32, 4),
        (1, 2),
        (1, 2),
        (16_000, 4),
        (32_000, 4),
        (2, 2),
        (16, 2),
    ] {
        wav.extend_from_slice(&value.to_le_bytes()[..width]);
    }
    wav.extend_from_slice(b"data");
    wav.extend_from_slice(&(data as u32).to_le_bytes());
    wav.extend((0..data).map(|i| (i % 100) as u8));
    form_with_file("whisper", &[("response_format", "text")], &wav)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_text_transcription_is_priced_by_the_uploaded_audios_duration() {
    let mock = MockProvider::start(MockConfig::default()).await;
    let gw = Gateway::start(&config(&mock)).await;
    // whisper-1: 0.0001 per second (the price table).
    let (content_type, body) = wav_form(3);
    let resp = gw
        .client()
        .post("/v1/audio/transcriptions")
        .header("content-type", &content_type)
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        close(cost(resp.headers()), 3.0 * 0.0001),
        "{:?}",
        resp.headers()
    );
    assert!(resp.text().await.unwrap().starts_with("transcribed"));

    // Streamed: the file measured as it goes by.
    let (content_type, body) = wav_form(5);
    let pause = std::time::Duration::from_millis(300);
    let (response, _) = raw_upload(&gw, &content_type, &body, 1000, pause, true).await;
    let response = response.to_lowercase();
    assert!(response.starts_with("http/1.1 200"), "{response}");
    let charged: f64 = response
        .lines()
        .find_map(|l| l.strip_prefix("x-litellm-response-cost:"))
        .map(|v| v.trim().parse().unwrap())
        .expect("a cost header");
    assert!(close(charged, 5.0 * 0.0001), "{charged}");
}
