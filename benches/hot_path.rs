//! Criterion benchmarks for the pieces every request goes through: body validation and the
//! `model` splice, auth, routing, SSE rewriting per event, JSON response rewriting, metrics and
//! the access-log line. Run: `cargo bench --bench hot_path`.

/// The gateway's allocator, so the figures are the ones the binary sees.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use criterion::{BenchmarkId, Criterion, Throughput, black_box, criterion_group, criterion_main};
use filters::auth::MasterKeyAuth;
use filters::request::RequestView;
use filters::route::{Deployment, Router};
use sluice::access_log::{AccessEntry, format_json};
use sluice::metrics::{Metrics, RequestLabels, RequestOutcome};
use sluice::providers::sse::{SseRewriter, quote, rewrite_json_response};

const CHAT: &str = r#"{"model":"gpt-4o","messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Hello, how are you today?"}]}"#;

fn chat_with_content(bytes: usize) -> Bytes {
    let content = "x".repeat(bytes);
    Bytes::from(format!(
        r#"{{"model":"gpt-4o","temperature":0.2,"messages":[{{"role":"user","content":"{content}"}}],"stream":true}}"#
    ))
}

fn request_body(c: &mut Criterion) {
    let mut g = c.benchmark_group("request");
    for size in [0usize, 64 * 1024, 1024 * 1024] {
        let body = if size == 0 {
            Bytes::from_static(CHAT.as_bytes())
        } else {
            chat_with_content(size)
        };
        g.throughput(Throughput::Bytes(body.len() as u64));
        g.bench_with_input(
            BenchmarkId::new("parse_and_validate", body.len()),
            &body,
            |b, body| b.iter(|| RequestView::parse(black_box(body)).unwrap()),
        );
        let view = RequestView::parse(&body).unwrap();
        g.bench_with_input(
            BenchmarkId::new("rewrite_model", body.len()),
            &body,
            |b, body| b.iter(|| view.rewrite(black_box(body), "gpt-4o-mini", true)),
        );
    }
    g.finish();
}

/// Polls a future that completes without waiting (the master-key check never awaits).
fn now<F: std::future::Future>(f: F) -> F::Output {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match std::pin::pin!(f).poll(&mut cx) {
        std::task::Poll::Ready(v) => v,
        std::task::Poll::Pending => unreachable!("the master-key check does not wait"),
    }
}

fn auth_and_route(c: &mut Criterion) {
    let auth = MasterKeyAuth::new(Some("sk-bench-master-key"), None);
    let mut headers = http::HeaderMap::new();
    headers.insert(
        "authorization",
        "Bearer sk-bench-master-key".parse().unwrap(),
    );
    c.bench_function("auth/master_key", |b| {
        b.iter(|| now(auth.authenticate(black_box(&headers))).unwrap())
    });

    let deployment = |id: &str, rpm: u64| {
        Arc::new(Deployment {
            id: id.into(),
            index: 0,
            model_name: "gpt-4o".into(),
            provider: "openai".into(),
            upstream_model: "gpt-4o-mini".into(),
            api_base: "http://127.0.0.1:18080/v1".into(),
            public_api_base: "http://127.0.0.1:18080/v1".into(),
            api_key: None,
            weight: None,
            rpm: Some(rpm),
            tpm: None,
            order: None,
            timeout: Duration::from_secs(600),
            stream_timeout: None,
            extra_headers: vec![],
        })
    };
    let router = Router::new(
        vec![deployment("a", 600), deployment("b", 400)],
        HashMap::new(),
    );
    let mut rng = fastrand::Rng::with_seed(1);
    c.bench_function("route/plan_two_deployments", |b| {
        b.iter(|| router.plan(black_box("gpt-4o"), &mut rng).unwrap())
    });
}

fn responses(c: &mut Criterion) {
    let event = br#"data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1727346169,"model":"gpt-4o-mini-2024-07-18","system_fingerprint":"fp_1","choices":[{"index":0,"delta":{"content":" word"},"logprobs":null,"finish_reason":null}]}

"#;
    let mut g = c.benchmark_group("stream");
    g.throughput(Throughput::Elements(1));
    g.bench_function("sse_rewrite_one_event", |b| {
        let mut r = SseRewriter::new("gpt-4o", true);
        let mut out = BytesMut::with_capacity(4096);
        b.iter(|| {
            r.feed(black_box(event), &mut out);
            out.clear();
        })
    });
    let ten: Vec<u8> = event
        .iter()
        .copied()
        .cycle()
        .take(event.len() * 10)
        .collect();
    g.throughput(Throughput::Elements(10));
    g.bench_function("sse_rewrite_ten_events_split_mid_event", |b| {
        let mut r = SseRewriter::new("gpt-4o", true);
        let mut out = BytesMut::with_capacity(8192);
        let cut = ten.len() / 2 + 7;
        b.iter(|| {
            r.feed(black_box(&ten[..cut]), &mut out);
            r.feed(black_box(&ten[cut..]), &mut out);
            out.clear();
        })
    });
    g.finish();

    let chat = Bytes::from_static(br#"{"id":"chatcmpl-mock-0","object":"chat.completion","created":1795309470,"model":"gpt-4o-mini-2024-07-18","system_fingerprint":"fp_mock","choices":[{"index":0,"message":{"role":"assistant","content":"Hello word1 word2 word3 word4","refusal":null,"annotations":[]},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":5,"total_tokens":14}}"#);
    let quoted = quote("gpt-4o");
    let mut g = c.benchmark_group("json_response");
    g.throughput(Throughput::Bytes(chat.len() as u64));
    g.bench_function("chat_completion", |b| {
        b.iter(|| rewrite_json_response(black_box(chat.clone()), &quoted).unwrap())
    });
    let vector: Vec<String> = (0..1536)
        .map(|i| format!("{:.8}", (i as f64 * 0.37).sin() / 10.0))
        .collect();
    let embeddings = Bytes::from(format!(
        r#"{{"object":"list","data":[{{"object":"embedding","index":0,"embedding":[{}]}}],"model":"text-embedding-3-small","usage":{{"prompt_tokens":5,"total_tokens":5}}}}"#,
        vector.join(",")
    ));
    g.throughput(Throughput::Bytes(embeddings.len() as u64));
    g.bench_function("embedding_1536_dims", |b| {
        b.iter(|| rewrite_json_response(black_box(embeddings.clone()), &quoted).unwrap())
    });
    g.finish();
}

fn accounting(c: &mut Criterion) {
    let metrics = Metrics::new();
    let labels = RequestLabels {
        api_key_alias: "None",
        requested_model: "gpt-4o",
        route: "/chat/completions",
        client_ip: "127.0.0.1",
        user_agent: "OpenAI/Python 3.54.0",
        model_id: "1e37c69c6695822c4baa2d00435ad49af8ed5ba027a57987097aa135af401a20",
        model: "gpt-4o-mini",
        model_group: "gpt-4o",
        api_provider: "openai",
        api_base: "http://127.0.0.1:18080/v1",
        litellm_model_name: "openai/gpt-4o-mini",
        ..Default::default()
    };
    let outcome = RequestOutcome {
        status: 200,
        total_seconds: 0.0011,
        upstream_seconds: Some(0.001),
        prompt_tokens: 9,
        completion_tokens: 5,
        reached_deployment: true,
        ..Default::default()
    };
    c.bench_function("metrics/record_request", |b| {
        b.iter(|| metrics.record(black_box(&labels), black_box(&outcome)))
    });
    let entry = AccessEntry {
        request_id: "28fc0356-a12f-4b70-a467-3551f35cd3a5",
        method: "POST",
        path: "/v1/chat/completions",
        status: 200,
        error: "",
        model: "gpt-4o",
        model_group: "gpt-4o",
        model_id: "1e37c69c6695822c4baa2d00435ad49af8ed5ba027a57987097aa135af401a20",
        stream: false,
        duration: Duration::from_micros(1100),
        upstream: Some(Duration::from_micros(1000)),
        ttft: None,
        prompt_tokens: 9,
        completion_tokens: 5,
        bytes: 447,
        client_closed: false,
        client_ip: "127.0.0.1",
        retries: 0,
        attempts: "",
        at: std::time::SystemTime::now(),
    };
    let mut line = String::with_capacity(512);
    c.bench_function("access_log/format_json_line", |b| {
        b.iter(|| {
            line.clear();
            format_json(&mut line, black_box(&entry));
        })
    });
}

/// What a virtual key with a budget adds: counting the prompt, the worst-case reservation and
/// its settlement in the in-process ledger, the cost of the answer.
fn budgets(c: &mut Criterion) {
    use filters::identity::{Limits, ScopeKind};
    use sluice::management::cost;
    use sluice::management::ledger::{Check, LocalLedger};
    cost::warm_up();
    let mut g = c.benchmark_group("budget");
    g.bench_function("prompt_tokens/chat", |b| {
        b.iter(|| cost::prompt_tokens(black_box(CHAT.as_bytes())))
    });
    g.bench_function("quick_shape/chat", |b| {
        b.iter(|| cost::quick_shape(black_box(CHAT.as_bytes())))
    });
    let ledger = LocalLedger::default();
    let checks = [
        Check {
            key: (ScopeKind::Key, "k".repeat(64).into()),
            limits: std::sync::Arc::new(Limits {
                max_budget: Some(1e12),
                rpm_limit: Some(u64::MAX),
                ..Limits::default()
            }),
        },
        Check {
            key: (ScopeKind::Team, "team-1".into()),
            limits: std::sync::Arc::new(Limits {
                max_budget: Some(1e12),
                ..Limits::default()
            }),
        },
    ];
    g.bench_function("ledger/admit_and_settle_key_and_team", |b| {
        b.iter(|| {
            let hold = ledger
                .admit(black_box(&checks), 0.01, 1_000, false)
                .unwrap();
            ledger.settle(&hold, 0.005, 40, 1_000);
        })
    });
    let table = sluice::pricing::PriceTable::load().unwrap();
    let price = table.get("gpt-4o").cloned();
    let usage = filters::Usage {
        prompt_tokens: 25,
        completion_tokens: 12,
        total_tokens: 37,
        prompt_tokens_details: None,
    };
    g.bench_function("cost_of", |b| {
        b.iter(|| cost::cost_of(black_box(&usage), price.as_ref()))
    });
    // The cost and spend headers: the shortest digits from zmij, laid out as Display would,
    // against the Display formatting they replaced.
    let spend = 0.000_123_456_7_f64;
    g.bench_function("float_header/zmij", |b| {
        b.iter(|| sluice::decimal::header_value(black_box(spend)))
    });
    g.bench_function("float_header/display", |b| {
        b.iter(|| http::HeaderValue::from_str(&black_box(spend).to_string()))
    });
    g.finish();
}

/// The routing decision of each strategy for a group of 8 deployments (issue 16's target:
/// under 1 µs): the plan arranged by what the router has seen (latency samples, requests in
/// flight, this minute's usage, prices).
fn strategies(c: &mut Criterion) {
    use sluice::config::{LatencyArgs, RouterSettings, RoutingStrategy};
    use sluice::routing::Health;
    let deployments: Vec<Arc<Deployment>> = (0..8)
        .map(|i| {
            Arc::new(Deployment {
                id: format!("d{i}"),
                index: i,
                model_name: "gpt-4o".into(),
                provider: "openai".into(),
                upstream_model: "gpt-4o-mini".into(),
                api_base: "http://127.0.0.1:18080/v1".into(),
                public_api_base: "http://127.0.0.1:18080/v1".into(),
                api_key: None,
                weight: None,
                rpm: Some(1_000_000),
                tpm: None,
                order: None,
                timeout: Duration::from_secs(600),
                stream_timeout: None,
                extra_headers: vec![],
            })
        })
        .collect();
    let latency = RoutingStrategy::LatencyBased(LatencyArgs::default());
    let health = Health::new(8, RouterSettings::default());
    let now = 1_700_000_000_000;
    for i in 0..8 {
        for n in 0..10 {
            health.record_answer(
                i,
                &latency,
                0.5 + i as f64 / 10.0,
                Some(0.1),
                (10, 20 + n),
                now,
            );
        }
        health.attempt_started(i, now);
    }
    let mut g = c.benchmark_group("route/arrange_8");
    for (name, strategy) in [
        ("simple-shuffle", RoutingStrategy::SimpleShuffle),
        ("least-busy", RoutingStrategy::LeastBusy),
        ("latency-based", latency.clone()),
        ("usage-based", RoutingStrategy::UsageBased),
        ("cost-based", RoutingStrategy::CostBased),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| {
                let mut plan = deployments.clone();
                health.arrange(
                    black_box(&strategy),
                    &mut plan,
                    |i| Some(i as f64),
                    false,
                    now + 1,
                );
                plan
            })
        });
    }
    g.finish();
}

criterion_group!(
    benches,
    request_body,
    auth_and_route,
    responses,
    accounting,
    budgets,
    strategies
);
criterion_main!(benches);
