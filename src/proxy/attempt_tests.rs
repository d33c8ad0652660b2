//! The attempt seam on its own: `Attempt::run` against real HTTP upstreams (the mock provider
//! and raw servers), with no client session at all, so nothing an attempt does can reach a
//! client. What a router needs of each outcome is asserted: status, class, the client's error
//! body, `retry-after`, and whether the provider may have received (and billed) the request.

use std::future::{Pending, Ready, pending, ready};
use std::sync::Arc;

use bytes::Bytes;
use filters::request::RequestView;
use filters::route::RoutePlan;
use sluice_mock::{MockConfig, MockProvider, RawBehavior, RawServer};

use super::{Attempt, Failed, Failure, Reply};
use crate::app::App;
use crate::config::env::Env;
use crate::config::{Overrides, load_str};
use crate::pricing::PriceTable;
use crate::providers::translate::ErrorClass;
use crate::proxy::ctx::Ctx;

const SECRET: &str = "sk-unit-attempt-secret-4711";

/// A gateway with one deployment of model group `m` at `api_base` (timeout 0.5 s).
fn app(api_base: &str) -> Arc<App> {
    let yaml = format!(
        "model_list:\n  - model_name: m\n    litellm_params: {{model: openai/gpt-4o, api_base: \"{api_base}\", api_key: {SECRET}, timeout: 0.5}}\n"
    );
    let prices = PriceTable::load().expect("price table");
    let (config, _) = load_str(
        &yaml,
        &Env::fixed(std::iter::empty::<(&str, &str)>()),
        &Overrides::default(),
        &prices,
        false,
    )
    .expect("config");
    Arc::new(App::new(config, Arc::new(prices), None))
}

fn ctx(app: &Arc<App>) -> Ctx {
    let mut ctx = Ctx::new(app.track_request());
    ctx.request_id = "req-1".into();
    ctx
}

fn plan(app: &App) -> RoutePlan {
    app.config
        .router
        .plan("m", &mut fastrand::Rng::with_seed(1))
        .expect("model group m")
}

const BODY: &[u8] = br#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;

/// Prepares and runs one attempt; `gone` stands for the client (pending: still there).
async fn run<G: std::future::Future + Unpin + Send>(
    app: &Arc<App>,
    mut gone: G,
) -> Result<(u16, bool), Failure> {
    let plan = plan(app);
    let body = Bytes::from_static(BODY);
    let view = RequestView::parse(&body).expect("request");
    let (options, tags) = (Default::default(), Default::default());
    let request = crate::proxy::group::Request {
        view: &view,
        body: &body,
        endpoint: filters::Endpoint::ChatCompletions,
        options: &options,
        tags: &tags,
        history: &[],
    };
    let client = pingora::http::RequestHeader::build("POST", b"/v1/chat/completions", None)
        .expect("request header");
    let attempt = Attempt::prepare(app, &plan, 0, &request, &client)
        .unwrap_or_else(|e| panic!("prepare: {}", e.message));
    let ctx = ctx(app);
    let answer = attempt.run(&ctx, &mut gone).await?;
    let status = answer.head.status.as_u16();
    let json = answer
        .head
        .content_type
        .as_ref()
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    attempt.release(answer.up).await;
    Ok((status, json))
}

fn still_there() -> Pending<()> {
    pending()
}

fn failed(outcome: Result<(u16, bool), Failure>) -> Failed {
    match outcome {
        Ok((status, _)) => panic!("the attempt succeeded ({status})"),
        Err(Failure::ClientGone) => panic!("the attempt saw the client leave"),
        Err(Failure::Failed(f)) => *f,
    }
}

fn message(failed: &Failed) -> String {
    match &failed.reply {
        Reply::Gateway(e) => e.message.clone(),
        Reply::Upstream { body, .. } => String::from_utf8_lossy(body).into_owned(),
    }
}

#[tokio::test]
async fn a_success_is_an_answer_with_its_head() {
    let mock = MockProvider::start(MockConfig::default()).await;
    let app = app(&mock.api_base());
    let outcome = run(&app, still_there()).await;
    assert!(matches!(outcome, Ok((200, true))), "{:?}", outcome.is_ok());
    assert_eq!(mock.calls(), 1);
}

#[tokio::test]
async fn a_provider_error_is_typed_with_its_retry_after() {
    let body = r#"{"error":{"message":"Rate limit reached for key sk-unit-attempt-secret-4711","type":"requests","param":null,"code":"rate_limit_exceeded"}}"#;
    let reply = format!(
        "HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\nRetry-After: 7\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let server = RawServer::start(RawBehavior::Reply(Bytes::from(reply))).await;
    let app = app(&server.api_base());
    let f = failed(run(&app, still_there()).await);
    assert_eq!(f.status, 429);
    assert_eq!(f.class, ErrorClass::RateLimited);
    assert_eq!(
        f.retry_after.as_ref().map(|v| v.as_bytes()),
        Some(&b"7"[..])
    );
    assert!(f.may_have_received);
    let Reply::Upstream { head, body } = f.reply else {
        panic!("a provider's error is relayed, not replaced")
    };
    let text = String::from_utf8_lossy(&body);
    assert!(text.contains("Rate limit reached"), "{text}");
    assert!(!text.contains(SECRET), "the key is redacted: {text}");
    let head = head.finish();
    assert_eq!(head.status.as_u16(), 429);
    assert_eq!(
        head.headers.get("retry-after").map(|v| v.as_bytes()),
        Some(&b"7"[..])
    );
}

#[tokio::test]
async fn a_context_window_error_is_classed_for_fallback() {
    let body = r#"{"error":{"message":"This model's maximum context length is 8192 tokens.","type":"invalid_request_error","param":"messages","code":"context_length_exceeded"}}"#;
    let reply = format!(
        "HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let server = RawServer::start(RawBehavior::Reply(Bytes::from(reply))).await;
    let app = app(&server.api_base());
    let f = failed(run(&app, still_there()).await);
    assert_eq!(f.status, 400);
    assert_eq!(f.class, ErrorClass::ContextWindowExceeded);
    assert!(f.retry_after.is_none());
}

#[tokio::test]
async fn an_unreachable_provider_cannot_have_the_request() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let app = app(&format!("http://127.0.0.1:{port}/v1"));
    let f = failed(run(&app, still_there()).await);
    assert_eq!(f.status, 502);
    assert_eq!(f.class, ErrorClass::Unavailable);
    assert!(!f.may_have_received, "nothing was sent");
    assert!(matches!(f.reply, Reply::Gateway(_)));
    assert!(
        message(&f).contains("connection refused"),
        "{}",
        message(&f)
    );
}

#[tokio::test]
async fn a_connection_closed_after_the_request_is_not_sent_again() {
    let server = RawServer::start(RawBehavior::Close).await;
    let app = app(&server.api_base());
    let f = failed(run(&app, still_there()).await);
    assert_eq!(f.status, 502);
    assert_eq!(f.class, ErrorClass::Unavailable);
    assert!(f.may_have_received, "the request went out whole");
    assert_eq!(server.connections(), 1, "sent once");
}

#[tokio::test]
async fn a_silent_provider_times_out() {
    let server = RawServer::start(RawBehavior::Hang).await;
    let app = app(&server.api_base());
    let f = failed(run(&app, still_there()).await);
    assert_eq!(f.status, 408, "LiteLLM's litellm.Timeout");
    assert_eq!(f.class, ErrorClass::Timeout);
    assert!(f.may_have_received);
    assert!(
        f.elapsed >= std::time::Duration::from_millis(450),
        "{:?}",
        f.elapsed
    );
    assert!(message(&f).contains("0.5s"), "{}", message(&f));
}

#[tokio::test]
async fn a_client_that_leaves_ends_the_attempt() {
    let server = RawServer::start(RawBehavior::Hang).await;
    let app = app(&server.api_base());
    let gone: Ready<()> = ready(());
    let outcome = run(&app, gone).await;
    assert!(matches!(outcome, Err(Failure::ClientGone)));
}

#[tokio::test]
async fn a_redirect_is_not_an_answer() {
    let server = RawServer::start(RawBehavior::Reply(Bytes::from_static(
        b"HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1/login\r\nContent-Length: 0\r\n\r\n",
    )))
    .await;
    let app = app(&server.api_base());
    let f = failed(run(&app, still_there()).await);
    assert_eq!(f.status, 502);
    assert!(message(&f).contains("HTTP status 302"), "{}", message(&f));
}

#[tokio::test]
async fn a_plain_text_error_gets_the_api_error_shape() {
    let server = RawServer::start(RawBehavior::Reply(Bytes::from_static(
        b"HTTP/1.1 401 Unauthorized\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\nbad api token",
    )))
    .await;
    let app = app(&server.api_base());
    let f = failed(run(&app, still_there()).await);
    assert_eq!(f.status, 401);
    assert_eq!(f.class, ErrorClass::Auth);
    let Reply::Upstream { body, .. } = f.reply else {
        panic!("a provider's error is relayed")
    };
    let v: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
    assert_eq!(v["error"]["type"], "authentication_error");
    assert_eq!(
        v["error"]["message"],
        "upstream deployment answered 401: bad api token"
    );
}
