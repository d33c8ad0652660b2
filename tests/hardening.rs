//! Hostile or careless clients and misbehaving upstreams: what a fault and abuse probe found,
//! each reproduced against the real gateway. Memory and file descriptors stay bounded, nothing
//! a client sends reaches a provider or a log line unescaped, and every request gets an answer.

mod support;

use std::time::Duration;

use serde_json::json;
use support::*;

/// Config with a wildcard group on the mock and `extra` lines under `sluice_settings`.
fn wildcard_config(mock: &MockProvider, extra_sluice: &str) -> String {
    format!(
        r#"
model_list:
  - model_name: gpt-4o
    litellm_params:
      model: openai/gpt-4o-mini
      api_base: {base}
      api_key: sk-upstream-secret
  - model_name: "openai/*"
    litellm_params:
      model: "openai/*"
      api_base: {base}
      api_key: sk-upstream-secret
general_settings:
  master_key: {MASTER_KEY}
sluice_settings:
  threads: 1
{extra_sluice}
"#,
        base = mock.api_base()
    )
}

/// Made-up model names (unknown, or matched by a wildcard group) never become label values,
/// and however many label combinations clients produce (here through `User-Agent`), the
/// metrics hold at most `metrics_max_label_sets` of them plus one overflow combination. The
/// probe grew `/metrics` from 0.4 MB to 43 MB with 5,000 requests.
#[tokio::test]
async fn clients_cannot_grow_the_metrics_without_bound() {
    let mock = MockProvider::start(MockConfig::default()).await;
    let gw = Gateway::start(&wildcard_config(&mock, "  metrics_max_label_sets: 20")).await;
    let c = gw.client();
    for i in 0..30 {
        let (status, _, _) = c
            .post_json(
                "/v1/chat/completions",
                &json!({"model": format!("made-up-{i}"), "messages": [{"role": "user", "content": "x"}]}),
            )
            .await;
        assert_eq!(status, 400);
        let (status, _, body) = c
            .post_json(
                "/v1/chat/completions",
                &json!({"model": format!("openai/made-up-{i}"), "messages": [{"role": "user", "content": "x"}]}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
    let metrics = gw.metrics().await;
    assert!(
        !metrics.contains("made-up-"),
        "a client's model name became a label value"
    );
    assert!(
        metrics.contains(r#"requested_model="openai/*""#),
        "wildcard requests are counted under their group"
    );
    // A model the wildcard serves that the price table knows keeps its own name.
    let (status, _, _) = c
        .post_json(
            "/v1/chat/completions",
            &json!({"model": "openai/gpt-4o", "messages": [{"role": "user", "content": "x"}]}),
        )
        .await;
    assert_eq!(status, 200);
    assert!(
        gw.metrics()
            .await
            .contains(r#"requested_model="openai/gpt-4o""#)
    );

    // 150 distinct user agents: the first 100 keep their value, the rest share `overflow`,
    // and the owners' figures stay exact (no folding: one key, one model).
    for i in 0..150 {
        let resp = c
            .post("/v1/chat/completions")
            .header("user-agent", format!("agent-{i}"))
            .json(&json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    let metrics = gw.metrics().await;
    let agents: std::collections::HashSet<&str> = metrics
        .lines()
        .filter_map(|l| l.split("user_agent=\"").nth(1))
        .filter_map(|rest| rest.split('"').next())
        .collect();
    assert!(agents.len() <= 101, "{} user_agent values", agents.len());
    assert!(agents.contains("overflow") && agents.contains("agent-0"));

    // 30 virtual keys (owners) against a limit of 20 owner/model combinations: the later ones
    // fold into one overflow combination, and the overflow series still count every request.
    for i in 0..30 {
        let (status, _, k) = c
            .post_json("/key/generate", &json!({"key_alias": format!("k{i}")}))
            .await;
        assert_eq!(status, 200, "{k}");
        let key = as_key(&gw, k["key"].as_str().unwrap());
        let (status, _, body) = key
            .post_json(
                "/v1/chat/completions",
                &json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}]}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
    let metrics = gw.metrics().await;
    let aliases: std::collections::HashSet<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("litellm_proxy_total_requests_metric_total{"))
        .filter_map(|l| l.split("api_key_alias=\"").nth(1))
        .filter_map(|rest| rest.split('"').next())
        .collect();
    assert!(
        aliases.len() <= 21,
        "{} key aliases: {aliases:?}",
        aliases.len()
    );
    assert!(aliases.contains("overflow"));
    let overflowed: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("sluice_metrics_overflowed_requests_total "))
        .expect("overflow counter")
        .parse()
        .unwrap();
    assert!(overflowed >= 10.0, "{overflowed}");
    assert!(metrics.len() < 1024 * 1024, "{} bytes", metrics.len());
    let served: f64 = metrics
        .lines()
        .filter(|l| {
            l.starts_with("litellm_proxy_total_requests_metric_total{")
                && l.contains(r#"status_code="200""#)
        })
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum();
    assert_eq!(served, 211.0);
}

/// A raw connection to the gateway.
async fn connect(gw: &Gateway) -> tokio::net::TcpStream {
    tokio::net::TcpStream::connect(("127.0.0.1", gw.port))
        .await
        .expect("connect")
}

/// Reads until the peer closes (or `limit` passes): the bytes, and whether it closed.
async fn read_until_closed(s: &mut tokio::net::TcpStream, limit: Duration) -> (Vec<u8>, bool) {
    use tokio::io::AsyncReadExt;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => return (out, false),
            Ok(Ok(0)) | Ok(Err(_)) => return (out, true),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
}

/// Reads `n` HTTP/1.1 responses (each with a `content-length`), in order: their statuses and
/// bodies.
async fn read_responses(
    s: &mut tokio::net::TcpStream,
    n: usize,
    limit: Duration,
) -> Vec<(u16, Vec<u8>)> {
    use tokio::io::AsyncReadExt;
    let mut data = Vec::new();
    let mut out = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let deadline = tokio::time::Instant::now() + limit;
    while out.len() < n {
        if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&data[..end]).to_string();
            let length: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .expect("a content-length");
            if data.len() >= end + 4 + length {
                let status = head[9..12].parse().expect("status");
                out.push((status, data[end + 4..end + 4 + length].to_vec()));
                data.drain(..end + 4 + length);
                continue;
            }
        }
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(k)) if k > 0 => data.extend_from_slice(&buf[..k]),
            other => panic!(
                "after {} of {n} responses: {other:?}; unread: {:?}",
                out.len(),
                String::from_utf8_lossy(&data)
            ),
        }
    }
    out
}

/// A connection that sends nothing, one that trickles its header a byte at a time, and an idle
/// keep-alive connection are all closed by their deadlines (here 1 s): the probe kept idle
/// connections open past 200 s and a trickled header past 65 s.
#[tokio::test]
async fn idle_and_slow_connections_are_closed() {
    use tokio::io::AsyncWriteExt;
    let mock = MockProvider::start(MockConfig::default()).await;
    let gw = Gateway::start(&wildcard_config(
        &mock,
        "  client_header_timeout: 1\n  keepalive_timeout: 1",
    ))
    .await;

    let mut silent = connect(&gw).await;
    let started = std::time::Instant::now();
    let (bytes, closed) = read_until_closed(&mut silent, Duration::from_secs(5)).await;
    assert!(
        closed && bytes.is_empty(),
        "a silent connection stayed open"
    );
    assert!(started.elapsed() < Duration::from_secs(3));

    let mut slow = connect(&gw).await;
    let started = std::time::Instant::now();
    let mut closed_early = false;
    for byte in b"GET /health/liveliness HTTP/1.1\r\nHost: x\r\n\r\n" {
        if slow.write_all(&[*byte]).await.is_err() {
            closed_early = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let (bytes, closed) = read_until_closed(&mut slow, Duration::from_secs(3)).await;
    assert!(
        closed_early || (closed && !String::from_utf8_lossy(&bytes).contains(" 200 ")),
        "a header trickled over {:?} was served",
        started.elapsed()
    );
    assert!(started.elapsed() < Duration::from_secs(6));

    let mut idle = connect(&gw).await;
    idle.write_all(b"GET /health/liveliness HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let first = read_responses(&mut idle, 1, Duration::from_secs(2)).await;
    assert_eq!(first[0].0, 200);
    let started = std::time::Instant::now();
    let (_, closed) = read_until_closed(&mut idle, Duration::from_secs(5)).await;
    assert!(closed, "an idle keep-alive connection stayed open");
    assert!(started.elapsed() < Duration::from_secs(4));

    let metrics = gw.metrics().await;
    assert!(metrics.contains(r#"sluice_closed_connections_total{reason="header_timeout"}"#));
}

/// At `max_connections` a new connection gets a 503 and the connections idle in a header wait
/// are closed, so the next one (a health check) is served: the probe's 20,600 idle
/// connections exhausted the file limit and normal requests timed out.
#[tokio::test]
async fn the_connection_limit_makes_room_for_health_checks() {
    use tokio::io::AsyncWriteExt;
    let mock = MockProvider::start(MockConfig::default()).await;
    let gw = Gateway::start(&wildcard_config(&mock, "  max_connections: 20")).await;
    // More idle connections than the limit: those over it are answered 503 at once.
    let mut opened = Vec::new();
    for _ in 0..25 {
        opened.push(connect(&gw).await);
    }
    let mut hogs = Vec::new();
    for mut hog in opened {
        let (bytes, _) = read_until_closed(&mut hog, Duration::from_millis(100)).await;
        if bytes.is_empty() {
            hogs.push(hog);
        } else {
            assert!(bytes.starts_with(b"HTTP/1.1 503"));
        }
    }
    assert_eq!(hogs.len(), 20, "open connections beyond the limit");
    // Once the hogs hold every slot, a new connection gets the 503 (and asks idle ones to
    // close); until they have waited a second they are not idle, then one gets in.
    let refused = std::sync::atomic::AtomicUsize::new(0);
    let full = eventually(Duration::from_secs(5), || async {
        let mut s = connect(&gw).await;
        let (bytes, _) = read_until_closed(&mut s, Duration::from_millis(300)).await;
        bytes.starts_with(b"HTTP/1.1 503").then_some(())
    })
    .await;
    assert!(full.is_some(), "the limit was never reached");
    let served = eventually(Duration::from_secs(10), || {
        let gw = &gw;
        let refused = &refused;
        async move {
            let mut s = connect(gw).await;
            let _ = s
                .write_all(
                    b"GET /health/liveliness HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                )
                .await;
            let (bytes, _) = read_until_closed(&mut s, Duration::from_secs(2)).await;
            let text = String::from_utf8_lossy(&bytes).to_string();
            if text.starts_with("HTTP/1.1 503") {
                assert!(text.contains("Too many open connections"), "{text}");
                refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            text.starts_with("HTTP/1.1 200").then_some(())
        }
    })
    .await;
    assert!(served.is_some(), "no health check got in");
    let mut shed = 0;
    for hog in &mut hogs {
        if read_until_closed(hog, Duration::from_millis(200)).await.1 {
            shed += 1;
        }
    }
    assert!(shed > 0, "no idle connection was closed to make room");
    assert!(
        shed < hogs.len(),
        "all {shed} idle connections were closed to make room for one"
    );
    let metrics = gw.metrics().await;
    assert!(metrics.contains(r#"sluice_closed_connections_total{reason="shed_idle"}"#));
    assert!(metrics.contains(r#"sluice_closed_connections_total{reason="over_limit"}"#));
}

/// Complete requests shorter than the HTTP/2 preface (HAProxy's default `OPTIONS` check, an
/// HTTP/1.0 `GET`) are answered: the probe saw them hang.
#[tokio::test]
async fn requests_shorter_than_the_http2_preface_are_answered() {
    use tokio::io::AsyncWriteExt;
    let mock = MockProvider::start(MockConfig::default()).await;
    let gw = Gateway::start(&wildcard_config(&mock, "")).await;
    for request in [
        &b"OPTIONS / HTTP/1.0\r\n\r\n"[..],
        b"GET / HTTP/1.0\r\n\r\n",
        b"GET /health/liveliness HTTP/1.0\r\n\r\n",
    ] {
        let mut s = connect(&gw).await;
        s.write_all(request).await.unwrap();
        let (bytes, closed) = read_until_closed(&mut s, Duration::from_secs(3)).await;
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            closed && text.starts_with("HTTP/1."),
            "{:?} got {text:?}",
            String::from_utf8_lossy(request)
        );
    }
}

/// Pipelined HTTP/1.1 requests are answered in order, as nginx answers them: two POSTs in one
/// write, then 50. The probe saw the second dropped (or the first logged 499 and the next
/// parsed as `OST`) and 50 get no answer at all.
#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    use tokio::io::AsyncWriteExt;
    let mock = MockProvider::start(MockConfig::default()).await;
    let gw = Gateway::start(&wildcard_config(&mock, "")).await;
    let request = |i: usize| {
        let body = json!({"model": "gpt-4o", "user": format!("u{i}"), "messages": [{"role": "user", "content": format!("n{i}")}]})
            .to_string();
        format!(
            "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {MASTER_KEY}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    };
    for n in [2, 50] {
        let mut s = connect(&gw).await;
        let all: String = (0..n).map(request).collect();
        s.write_all(all.as_bytes()).await.unwrap();
        let responses = read_responses(&mut s, n, Duration::from_secs(10)).await;
        for (i, (status, body)) in responses.iter().enumerate() {
            assert_eq!(*status, 200, "{}", String::from_utf8_lossy(body));
            let body: serde_json::Value = serde_json::from_slice(body).unwrap();
            assert_eq!(body["object"], "chat.completion");
            let _ = i;
        }
        // The mock saw them in order.
        let seen: Vec<String> = mock
            .requests()
            .iter()
            .rev()
            .take(n)
            .rev()
            .map(|r| {
                r.json()["messages"][0]["content"]
                    .as_str()
                    .unwrap_or("")
                    .to_string()
            })
            .collect();
        let expected: Vec<String> = (0..n).map(|i| format!("n{i}")).collect();
        assert_eq!(seen, expected);
    }
}

/// A model name from the request (a wildcard group) never leaves its path segment in the
/// upstream URL, for any provider whose URL carries the model: `..`, `/`, `?` and `#` are
/// percent-encoded. The probe sent `gemini/../../../../canary?x=` and Sluice requested
/// `/v1beta/models/../../../../canary?x=:generateContent` with the operator's key.
#[tokio::test]
async fn model_names_from_requests_stay_in_their_path_segment() {
    use sluice_mock::{RawBehavior, RawServer};
    let upstream = RawServer::start(RawBehavior::OnePerConnection(bytes::Bytes::from_static(
        b"HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
    )))
    .await;
    let host = format!("http://{}", upstream.addr);
    let config = format!(
        r#"
model_list:
  - model_name: "gemini/*"
    litellm_params: {{model: "gemini/*", api_base: "{host}/v1beta", api_key: g-key}}
  - model_name: "azure/*"
    litellm_params: {{model: "azure/*", api_base: "{host}", api_key: az-key, api_version: "2024-10-21"}}
  - model_name: "bedrock/*"
    litellm_params: {{model: "bedrock/*", aws_bedrock_runtime_endpoint: "{host}", aws_access_key_id: AKIDEXAMPLE, aws_secret_access_key: s3cret, aws_region_name: us-west-2}}
general_settings:
  master_key: {MASTER_KEY}
"#
    );
    let gw = Gateway::start(&config).await;
    let c = gw.client();
    let hostile = "../../../../canary?x=#y";
    let cases = [
        (
            "/v1/chat/completions",
            "gemini",
            "POST /v1beta/models/..%2F..%2F..%2F..%2Fcanary%3Fx%3D%23y:generateContent HTTP/1.1",
        ),
        (
            "/v1/embeddings",
            "gemini",
            "POST /v1beta/models/..%2F..%2F..%2F..%2Fcanary%3Fx%3D%23y:batchEmbedContents HTTP/1.1",
        ),
        (
            "/v1/chat/completions",
            "azure",
            "POST /openai/deployments/..%2F..%2F..%2F..%2Fcanary%3Fx%3D%23y/chat/completions?api-version=2024-10-21 HTTP/1.1",
        ),
        (
            "/v1/embeddings",
            "azure",
            "POST /openai/deployments/..%2F..%2F..%2F..%2Fcanary%3Fx%3D%23y/embeddings?api-version=2024-10-21 HTTP/1.1",
        ),
        (
            "/v1/chat/completions",
            "bedrock",
            "POST /model/..%2F..%2F..%2F..%2Fcanary%3Fx%3D%23y/converse HTTP/1.1",
        ),
    ];
    for (route, provider, line) in cases {
        let body = if route.ends_with("embeddings") {
            json!({"model": format!("{provider}/{hostile}"), "input": ["x"]})
        } else {
            json!({"model": format!("{provider}/{hostile}"), "messages": [{"role": "user", "content": "x"}]})
        };
        let before = upstream.requests().len();
        let (status, _, body) = c.post_json(route, &body).await;
        assert!(status >= 400, "{provider} {route}: {status} {body}");
        let requests = upstream.requests();
        assert_eq!(
            requests.len(),
            before + 1,
            "{provider} {route} reached the upstream once"
        );
        let sent = String::from_utf8_lossy(requests.last().unwrap()).to_string();
        let first = sent.lines().next().unwrap_or("");
        assert_eq!(first, line, "{provider} {route}");
    }
    // A whole `..` segment is encoded too (it is all unreserved characters).
    let (_, _, _) = c
        .post_json(
            "/v1/chat/completions",
            &json!({"model": "azure/..", "messages": [{"role": "user", "content": "x"}]}),
        )
        .await;
    let sent = String::from_utf8_lossy(upstream.requests().last().unwrap()).to_string();
    assert!(
        sent.starts_with("POST /openai/deployments/%2E%2E/chat/completions?"),
        "{sent}"
    );
}

/// A provider stream whose event never ends (no line break) is cut off at
/// `max_stream_event_mb` with an OpenAI error event, instead of growing memory without bound
/// (the probe's 80 MB line took 10.7 s of quadratic CPU).
#[tokio::test]
async fn a_stream_event_without_end_is_cut_off() {
    use sluice_mock::{RawBehavior, RawServer};
    let mut reply = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\ndata: {\"choices\":[]}\n\ndata: ".to_vec();
    reply.extend(std::iter::repeat_n(b'a', 4 * 1024 * 1024));
    // The upstream then stalls: the client's stream must end at the limit all the same.
    let upstream = RawServer::start(RawBehavior::ReplyThenHang(bytes::Bytes::from(reply))).await;
    let config = format!(
        r#"
model_list:
  - model_name: gpt-4o
    litellm_params: {{model: openai/gpt-4o, api_base: "http://{}/v1", api_key: k}}
general_settings:
  master_key: {MASTER_KEY}
sluice_settings:
  max_stream_event_mb: 1
"#,
        upstream.addr
    );
    let gw = Gateway::start(&config).await;
    let resp = gw
        .client()
        .post("/v1/chat/completions")
        .json(&json!({"model": "gpt-4o", "stream": true, "messages": [{"role": "user", "content": "x"}]}))
        .timeout(Duration::from_secs(20))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body = resp.text().await.expect("the stream ends at the limit");
    assert!(
        body.len() < 64 * 1024,
        "{} bytes reached the client",
        body.len()
    );
    // The error event, then [DONE] (LiteLLM's end of a failed stream).
    let mut lines = body.trim_end().lines().filter(|l| !l.is_empty()).rev();
    assert_eq!(lines.next(), Some("data: [DONE]"), "{body}");
    let error = lines.next().unwrap_or("");
    assert!(
        error.starts_with("data: {\"error\":") && error.contains("larger than 1 MiB"),
        "{body}"
    );
    // Counted as a failure.
    let metrics = gw.metrics().await;
    assert!(
        metrics.contains("litellm_proxy_failed_requests_metric_total{"),
        "{metrics}"
    );
}

/// A gateway in front of one raw upstream per model group (`name` -> reply bytes).
async fn raw_upstreams(replies: &[(&str, Vec<u8>)]) -> (Gateway, Vec<sluice_mock::RawServer>) {
    use sluice_mock::{RawBehavior, RawServer};
    let mut servers = Vec::new();
    let mut list = String::new();
    for (name, reply) in replies {
        let server = RawServer::start(RawBehavior::Reply(bytes::Bytes::from(reply.clone()))).await;
        list.push_str(&format!(
            "  - model_name: {name}\n    litellm_params: {{model: openai/gpt-4o, api_base: \"http://{}/v1\", api_key: k}}\n",
            server.addr
        ));
        servers.push(server);
    }
    let config = format!("model_list:\n{list}general_settings:\n  master_key: {MASTER_KEY}\n");
    (Gateway::start(&config).await, servers)
}

fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// A provider (or a proxy in between) that compresses its answer although Sluice asks for no
/// compression: the body is decoded, so the client gets readable JSON and SSE and the usage is
/// counted. The probe got gzip bytes with `Content-Encoding` removed.
#[tokio::test]
async fn compressed_answers_are_decoded() {
    let json = br#"{"id":"c1","object":"chat.completion","created":1,"model":"gpt-4o-2024-08-06","choices":[{"index":0,"message":{"role":"assistant","content":"hi there"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}"#;
    let body = gzip(json);
    let mut json_reply = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    json_reply.extend(body);
    let sse = concat!(
        "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hel\"},\"finish_reason\":null}]}\n\n",
        "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo\"},\"finish_reason\":\"stop\"}]}\n\n",
        "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2,\"total_tokens\":5}}\n\n",
        "data: [DONE]\n\n",
    );
    let mut sse_reply =
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Encoding: gzip\r\n\r\n"
            .to_vec();
    sse_reply.extend(gzip(sse.as_bytes()));
    let (gw, _servers) = raw_upstreams(&[("plain", json_reply), ("streamed", sse_reply)]).await;
    let c = gw.client();
    let (status, headers, body) = c
        .post_json(
            "/v1/chat/completions",
            &json!({"model": "plain", "messages": [{"role": "user", "content": "x"}]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["choices"][0]["message"]["content"], "hi there");
    assert_eq!(body["model"], "plain");
    assert!(headers.get("content-encoding").is_none());
    let resp = c
        .post("/v1/chat/completions")
        .json(&json!({"model": "streamed", "stream": true, "messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().get("content-encoding").is_none());
    let text = resp.text().await.unwrap();
    assert!(text.contains("\"content\":\"hel\""), "{text}");
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    let metrics = gw.metrics().await;
    let completion: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("litellm_output_tokens_metric_total{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum();
    assert_eq!(completion, 4.0, "usage of both answers counted");
}

/// A success that is not the API's JSON (an HTML page from a captive portal or a misrouted
/// server) and a status no HTTP API sends (999) are 502 failures, for streams too, not a
/// 200 passed through.
#[tokio::test]
async fn html_pages_and_invalid_statuses_are_bad_gateway() {
    let html = b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 29\r\n\r\n<html><body>Login</body></html>".to_vec();
    let text =
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello".to_vec();
    let weird =
        b"HTTP/1.1 999 Weird\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
            .to_vec();
    let redirect =
        b"HTTP/1.1 302 Found\r\nLocation: http://example.invalid/\r\nContent-Length: 0\r\n\r\n"
            .to_vec();
    let json = br#"{"id":"c1","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}]}"#;
    let mut hints = format!(
        "HTTP/1.1 103 Early Hints\r\nLink: </x>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        json.len()
    )
    .into_bytes();
    hints.extend_from_slice(json);
    let (gw, _servers) = raw_upstreams(&[
        ("html", html),
        ("text", text),
        ("weird", weird),
        ("redirect", redirect),
        ("hints", hints),
    ])
    .await;
    let c = gw.client();
    // An informational answer before the real one is skipped, not a failure.
    let (status, _, body) = c
        .post_json(
            "/v1/chat/completions",
            &json!({"model": "hints", "messages": [{"role": "user", "content": "x"}]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["choices"][0]["message"]["content"], "hi");
    for (model, stream, needle) in [
        ("html", false, "HTML page"),
        ("html", true, "HTML page"),
        (
            "text",
            false,
            "not a JSON object (Content-Type: text/plain)",
        ),
        ("weird", false, "HTTP status 999"),
        ("redirect", false, "HTTP status 302"),
    ] {
        let (status, _, body) = c
            .post_json(
                "/v1/chat/completions",
                &json!({"model": model, "stream": stream, "messages": [{"role": "user", "content": "x"}]}),
            )
            .await;
        assert_eq!(status, 502, "{model} stream={stream}: {body}");
        let message = error_message(&body, 502);
        assert!(message.contains(needle), "{model}: {message}");
    }
}

/// A password in `api_base` is sent as basic auth but never shown: not in
/// `x-litellm-model-api-base`, `/metrics` (unauthenticated), `/model/info` or the spend logs.
#[tokio::test]
async fn passwords_in_api_base_are_never_shown() {
    let mock = MockProvider::start(MockConfig::default()).await;
    let base = mock
        .api_base()
        .replace("http://", "http://proxyuser:s3cr3t-pw@");
    let config = format!(
        r#"
model_list:
  - model_name: gpt-4o
    litellm_params: {{model: openai/gpt-4o, api_base: "{base}"}}
general_settings:
  master_key: {MASTER_KEY}
  proxy_batch_write_at: 0.2
"#
    );
    let gw = Gateway::start(&config).await;
    let c = gw.client();
    let (status, headers, body) = c
        .post_json(
            "/v1/chat/completions",
            &json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let shown = headers["x-litellm-model-api-base"].to_str().unwrap();
    assert!(
        !shown.contains("s3cr3t") && !shown.contains("proxyuser"),
        "{shown}"
    );
    assert!(shown.starts_with("http://127.0.0.1:"), "{shown}");
    // base64("proxyuser:s3cr3t-pw")
    assert_eq!(
        mock.last_request().unwrap().headers["authorization"],
        "Basic cHJveHl1c2VyOnMzY3IzdC1wdw=="
    );
    assert!(!gw.metrics().await.contains("s3cr3t"));
    let (_, info) = c.get_json("/model/info").await;
    assert!(!info.to_string().contains("s3cr3t"), "{info}");
    assert!(info.to_string().contains("127.0.0.1"), "{info}");
    let logs = eventually(Duration::from_secs(5), || async {
        let (_, logs) = c.get_json("/spend/logs").await;
        logs.as_array()
            .is_some_and(|a| !a.is_empty())
            .then_some(logs)
    })
    .await
    .expect("a spend log");
    assert!(!logs.to_string().contains("s3cr3t"), "{logs}");
}

/// An upstream error that echoes the provider key reaches the client with the key redacted,
/// and upstream cookies and credential-like headers are not passed on (LiteLLM passes them on
/// as `llm_provider-set-cookie`, `llm_provider-x-internal-auth`).
#[tokio::test]
async fn upstream_errors_do_not_leak_credentials() {
    use sluice_mock::{RawBehavior, RawServer};
    let body = r#"{"error":{"message":"Incorrect API key provided: sk-operator-key-123456. Check it.","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}"#;
    let reply = format!(
        "HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nSet-Cookie: session=abc; HttpOnly\r\nX-Internal-Auth: internal-token-xyz\r\nX-Request-Id: upstream-1\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let upstream = RawServer::start(RawBehavior::Reply(bytes::Bytes::from(reply))).await;
    let config = format!(
        r#"
model_list:
  - model_name: gpt-4o
    litellm_params: {{model: openai/gpt-4o, api_base: "http://{}/v1", api_key: sk-operator-key-123456}}
general_settings:
  master_key: {MASTER_KEY}
"#,
        upstream.addr
    );
    let gw = Gateway::start(&config).await;
    let (status, headers, body) = gw
        .client()
        .post_json(
            "/v1/chat/completions",
            &json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}]}),
        )
        .await;
    assert_eq!(status, 401);
    let text = body.to_string();
    assert!(!text.contains("sk-operator-key"), "{text}");
    assert!(
        text.contains("Incorrect API key provided: [REDACTED]."),
        "{text}"
    );
    assert!(headers.get("llm_provider-set-cookie").is_none());
    assert!(headers.get("set-cookie").is_none());
    assert!(headers.get("llm_provider-x-internal-auth").is_none());
    assert_eq!(headers["llm_provider-x-request-id"], "upstream-1");
}

/// Requests Pingora's parser refuses (a header name with a space, conflicting lengths) and a
/// body with a bad chunk size get OpenAI's error shape with a 400, not an empty 400 or a
/// silently closed connection.
#[tokio::test]
async fn malformed_requests_get_an_openai_400() {
    use tokio::io::AsyncWriteExt;
    let mock = MockProvider::start(MockConfig::default()).await;
    let gw = Gateway::start(&wildcard_config(&mock, "")).await;
    let chat =
        json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}]}).to_string();
    let bad_chunk = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {MASTER_KEY}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{chat}\r\n0\r\n\r\n"
    );
    for (request, needle) in [
        (
            "GET /health/liveliness HTTP/1.1\r\nBad Header: x\r\n\r\n".to_string(),
            "Malformed HTTP request",
        ),
        (
            "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello".to_string(),
            "Malformed HTTP request",
        ),
        (bad_chunk, "Malformed request body"),
    ] {
        let mut s = connect(&gw).await;
        s.write_all(request.as_bytes()).await.unwrap();
        let responses = read_responses(&mut s, 1, Duration::from_secs(3)).await;
        let (status, body) = &responses[0];
        assert_eq!(*status, 400, "{request:?}");
        let body: serde_json::Value = serde_json::from_slice(body).unwrap();
        let message = error_message(&body, 400);
        assert!(message.contains(needle), "{request:?}: {message}");
        // The reason, never the raw request (it may hold headers a proxy added).
        assert!(
            !message.contains("buf:") && !message.contains("Bad Header") && !message.contains("Host"),
            "{message}"
        );
    }
    // On a kept-alive connection, after a good request (Pingora parses it alone).
    let mut s = connect(&gw).await;
    s.write_all(b"GET /health/liveliness HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(
        read_responses(&mut s, 1, Duration::from_secs(3)).await[0].0,
        200
    );
    s.write_all(b"GET /health/liveliness HTTP/1.1\r\nBad Header: x\r\n\r\n")
        .await
        .unwrap();
    let (status, body) = read_responses(&mut s, 1, Duration::from_secs(3))
        .await
        .remove(0);
    assert_eq!(status, 400);
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert!(error_message(&body, 400).contains("Malformed HTTP request"));
    // The connection still serves other clients' requests normally.
    let (status, _, _) = gw
        .client()
        .post_json(
            "/v1/chat/completions",
            &json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}]}),
        )
        .await;
    assert_eq!(status, 200);
}
