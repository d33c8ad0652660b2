//! Provider pass-through routes (`/openai/*`, `/anthropic/*`, `/gemini/*`, `/azure/*`,
//! `/cohere/*`, `/bedrock/*`, `/vllm/*`, `/mistral/*`, `/openrouter/*`), run inside Pingora's
//! `request_filter`: a client using a provider's own SDK authenticates with its Sluice key,
//! and its request goes on unchanged to the provider configured for the route
//! (`config::pass_through`), with the gateway's credential in place of the Sluice key (Bedrock
//! re-signed with SigV4). The answer is relayed as it arrives, streams included; its usage is
//! read on the way (`providers::pass_through_usage`) for spend, budgets and metrics.
//!
//! Only the configured host is ever connected to: the client picks the path under the
//! provider's base (no `..` segments), never the host.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use filters::ApiError;
use filters::endpoint::PassThroughProvider;
use filters::route::Deployment;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use pingora::protocols::http::client::HttpSession;
use pingora::protocols::http::v1::client::HttpSession as Http1Session;
use pingora::proxy::Session;
use serde_json::Value;

use super::attempt::{
    HOP_BY_HOP, STALE_CONNECTION_RETRIES, USER_AGENT, read_final_header, write_head_and_body,
};
use super::ctx::Ctx;
use super::headers::{CONTENT_TYPE, ResponseHead, request_wire_head};
use super::respond;
use crate::app::App;
use crate::config::UpstreamUrl;
use crate::config::pass_through::{PassThroughAuth, PassThroughTarget};
use crate::providers::content_encoding::BodyDecoder;
use crate::providers::pass_through_usage::UsageSniffer;
use crate::upstream::ResolvedPeer;

/// What a pass-through request leaves for `logging`: the spend log's and the metrics' view of
/// where it went, and its model's prices.
#[derive(Debug)]
pub struct PassThroughRecord {
    /// The provider, the model (when the price table knows it, so clients cannot grow the
    /// metrics' labels) and the public base URL, in a deployment's shape.
    pub deployment: Arc<Deployment>,
    /// The model the price table prices it by (the answer's, else the request's), when the
    /// table knows one, and the table's provider prefix for it.
    pub priced_model: Option<String>,
    pub price_provider: &'static str,
}

impl PassThroughRecord {
    /// The model's prices.
    pub fn price<'a>(&self, app: &'a App) -> Option<&'a crate::config::ModelPrice> {
        let model = self.priced_model.as_deref()?;
        app.prices.lookup(self.price_provider, model, None)
    }
}

/// Request headers that carry the caller's Sluice key or describe this hop: never sent on.
const NOT_FORWARDED: &[&str] = &[
    "host",
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "content-length",
    "accept-encoding",
    "authorization",
    "api-key",
    "x-api-key",
    "x-goog-api-key",
    "x-litellm-api-key",
    "ocp-apim-subscription-key",
];

/// Where one request goes: the base, its upstream endpoint, and how it is authenticated.
struct Destination<'a> {
    base: &'a UpstreamUrl,
    peer: Arc<ResolvedPeer>,
    host_header: &'a str,
    auth: PassThroughAuth,
    /// The path under the base (a Bedrock model group's id replaced by its deployment's).
    path: String,
    /// The provider's model when the path named a model group (its deployment's).
    group_model: Option<String>,
}

/// Serves one pass-through request.
pub async fn handle(
    app: &App,
    session: &mut Session,
    ctx: &mut Ctx,
    provider: PassThroughProvider,
) {
    let full_path = session.req_header().uri.path().to_string();
    let rest = PassThroughProvider::of_path(&full_path).map_or("/", |(_, rest)| rest);
    if climbs(rest) {
        super::discard_body(session).await;
        let e = ApiError::bad_request(format!(
            "the pass-through path {full_path:?} has a '..' segment"
        ));
        respond::error(session, ctx, &e).await;
        return;
    }
    let Some(body) = super::read_body(session, ctx, app.config.max_request_body_bytes).await else {
        return;
    };
    forward(app, session, ctx, provider, rest, body).await;
}

/// Sends a request whose body is read to `provider`'s route at `rest` (a path under its base),
/// and relays the answer.
pub async fn forward(
    app: &App,
    session: &mut Session,
    ctx: &mut Ctx,
    provider: PassThroughProvider,
    rest: &str,
    body: Bytes,
) {
    let json: Option<Value> = (body.first() == Some(&b'{'))
        .then(|| serde_json::from_slice(&body).ok())
        .flatten();
    let requested = json
        .as_ref()
        .and_then(|v| v.get("model"))
        .and_then(Value::as_str)
        .map(str::to_string)
        .or_else(|| model_in_path(provider, rest));
    let destination = match destination(app, provider, rest, requested.as_deref()) {
        Ok(d) => d,
        Err(e) => {
            respond::error(session, ctx, &e).await;
            return;
        }
    };
    let model = destination
        .group_model
        .clone()
        .or(requested)
        .unwrap_or_default();
    let price = app.prices.lookup(price_provider(provider), &model, None);
    ctx.record.requested_model = (!model.is_empty()).then(|| model.clone());
    ctx.record.stream = json
        .as_ref()
        .and_then(|v| v.get("stream"))
        .and_then(Value::as_bool)
        .unwrap_or(false)
        || rest.contains("stream");
    if let Some(m) = &app.management {
        let max_tokens = json.as_ref().and_then(|v| {
            ["max_tokens", "max_completion_tokens", "max_output_tokens"]
                .iter()
                .find_map(|k| v.get(*k).and_then(Value::as_u64))
                .or_else(|| v.pointer("/generationConfig/maxOutputTokens")?.as_u64())
                .or_else(|| v.pointer("/inferenceConfig/maxTokens")?.as_u64())
        });
        let key = ctx.cx.caller.key().cloned();
        let admitted = super::forward::boxed(|| {
            m.admit_pass_through(key.as_ref(), &model, price, &body, max_tokens)
        })
        .await;
        match admitted {
            Ok(admission) => ctx.record.admission = admission,
            Err(e) => {
                respond::error(session, ctx, &e).await;
                return;
            }
        }
    }
    ctx.record.pass_through = Some(Box::new(PassThroughRecord {
        deployment: Arc::new(labels(
            provider,
            &destination,
            price.is_some().then_some(model.as_str()),
        )),
        priced_model: price.is_some().then(|| model.clone()),
        price_provider: price_provider(provider),
    }));
    super::forward::boxed(|| relay(app, session, ctx, &destination, body)).await;
}

/// Whether a path climbs above the base: a `..` segment, also percent-encoded.
fn climbs(path: &str) -> bool {
    let decoded = percent_encoding::percent_decode_str(path).decode_utf8_lossy();
    decoded.split(['/', '\\']).any(|segment| segment == "..")
}

/// The model a provider's path names: Gemini's `models/{model}:action`, Bedrock's
/// `model/{id}/action`, Azure's `deployments/{name}/...`.
fn model_in_path(provider: PassThroughProvider, path: &str) -> Option<String> {
    let after = |marker: &str| {
        let (_, rest) = path.split_once(marker)?;
        let end = rest.find(['/', ':']).unwrap_or(rest.len());
        let raw = &rest[..end];
        (!raw.is_empty()).then(|| {
            percent_encoding::percent_decode_str(raw)
                .decode_utf8_lossy()
                .into_owned()
        })
    };
    match provider {
        PassThroughProvider::Gemini => after("models/"),
        PassThroughProvider::Bedrock => {
            // Bedrock model ids contain ':' (`...-v1:0`): only '/' ends them.
            let (_, rest) = path.split_once("/model/")?;
            let raw = rest.split('/').next().filter(|s| !s.is_empty())?;
            Some(
                percent_encoding::percent_decode_str(raw)
                    .decode_utf8_lossy()
                    .into_owned(),
            )
        }
        PassThroughProvider::Azure => after("deployments/"),
        _ => None,
    }
}

/// The price table's provider prefix for a route's models.
fn price_provider(provider: PassThroughProvider) -> &'static str {
    match provider {
        PassThroughProvider::Vllm => "hosted_vllm",
        p => p.name(),
    }
}

/// Where the request goes. A Bedrock path naming one of the config's model groups goes to that
/// group's Bedrock deployment, with its credentials and model id (as LiteLLM routes it);
/// everything else to the route's configured target.
fn destination<'a>(
    app: &'a App,
    provider: PassThroughProvider,
    rest: &str,
    model: Option<&str>,
) -> Result<Destination<'a>, ApiError> {
    if provider == PassThroughProvider::Bedrock
        && let Some(found) = model.and_then(|m| bedrock_group_deployment(app, rest, m))
    {
        return Ok(found);
    }
    let target: &PassThroughTarget = app.config.pass_through.get(provider).map_err(|why| {
        ApiError::new(
            http::StatusCode::INTERNAL_SERVER_ERROR,
            "internal_server_error",
            why.to_string(),
        )
    })?;
    let endpoint = app
        .pass_through_endpoint(provider)
        .ok_or_else(|| ApiError::internal("pass-through route has no endpoint"))?;
    let peer = endpoint.peer().map_err(|why| {
        ApiError::bad_gateway(format!(
            "cannot reach the {} pass-through base: {why}",
            provider.name()
        ))
    })?;
    let path = if target.add_v1 && !rest.starts_with("/v1/") && rest != "/v1" {
        format!("/v1{rest}")
    } else {
        rest.to_string()
    };
    Ok(Destination {
        base: &target.base,
        peer,
        host_header: &endpoint.host_header,
        auth: target.auth.clone(),
        path,
        group_model: None,
    })
}

fn bedrock_group_deployment<'a>(app: &'a App, rest: &str, model: &str) -> Option<Destination<'a>> {
    let group = app.config.router.group(model)?;
    let d = group
        .deployments
        .iter()
        .find(|d| app.config.deployment(d.index).wire == Some(crate::providers::Wire::Bedrock))?;
    let dc = app.config.deployment(d.index);
    let base = app.bases.get(d.index)?.as_ref()?;
    let endpoint = app.endpoints.for_deployment(d.index)?;
    let peer = endpoint.peer().ok()?;
    let (_, after_model) = rest.split_once("/model/")?;
    let action = after_model.split_once('/').map_or("", |(_, a)| a);
    let path = format!(
        "/model/{}/{action}",
        crate::providers::bedrock::encode_model_id(&d.upstream_model)
    );
    let auth = PassThroughAuth::Aws(dc.aws.clone()?);
    Some(Destination {
        base,
        peer,
        host_header: &endpoint.host_header,
        auth,
        path,
        group_model: Some(d.upstream_model.clone()),
    })
}

/// The spend log's and metrics' labels of a pass-through request.
fn labels(provider: PassThroughProvider, to: &Destination<'_>, model: Option<&str>) -> Deployment {
    let mut base = format!(
        "{}://{}{}",
        if to.base.tls { "https" } else { "http" },
        to.host_header,
        to.base.path
    );
    if base.ends_with('/') {
        base.pop();
    }
    Deployment {
        id: String::new(),
        index: usize::MAX,
        model_name: String::new(),
        provider: provider.name().to_string(),
        upstream_model: model.unwrap_or_default().to_string(),
        public_api_base: base.clone(),
        api_base: base,
        api_key: None,
        weight: None,
        rpm: None,
        tpm: None,
        order: None,
        timeout: PASS_THROUGH_TIMEOUT,
        stream_timeout: None,
        extra_headers: Vec::new(),
    }
}

/// The longest wait for each upstream read on a pass-through route (LiteLLM's pass-through
/// requests use its 600 s default request timeout).
const PASS_THROUGH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(600);

/// The upstream request's headers: the client's, minus its Sluice key and this hop's, plus
/// the gateway's credential.
fn upstream_headers(
    client: &HeaderMap,
    custom_key_header: Option<&HeaderName>,
    auth: &PassThroughAuth,
) -> HeaderMap {
    let mut headers = HeaderMap::with_capacity(client.len() + 2);
    for (name, value) in client {
        if NOT_FORWARDED.contains(&name.as_str()) || Some(name) == custom_key_header {
            continue;
        }
        // A client's own AWS signature headers would contradict the gateway's signature.
        if matches!(auth, PassThroughAuth::Aws(_)) && name.as_str().starts_with("x-amz-") {
            continue;
        }
        headers.append(name.clone(), value.clone());
    }
    let secret = |v: &str| {
        HeaderValue::from_str(v).map(|mut v| {
            v.set_sensitive(true);
            v
        })
    };
    match auth {
        PassThroughAuth::OpenAi(key) => {
            if let Ok(v) = secret(&format!("Bearer {}", key.expose())) {
                headers.insert(http::header::AUTHORIZATION, v);
            }
            if let Ok(v) = secret(key.expose()) {
                headers.insert(HeaderName::from_static("api-key"), v);
            }
        }
        PassThroughAuth::Bearer(key) => {
            if let Ok(v) = secret(&format!("Bearer {}", key.expose())) {
                headers.insert(http::header::AUTHORIZATION, v);
            }
        }
        PassThroughAuth::XApiKey(key) => {
            if let Ok(v) = secret(key.expose()) {
                headers.insert(HeaderName::from_static("x-api-key"), v);
            }
        }
        // Signed once the target is known; the query key goes in the target.
        PassThroughAuth::Aws(_) | PassThroughAuth::QueryKey(_) | PassThroughAuth::None => {}
    }
    headers
}

/// The request target: the base's path, the client's path under it, and the client's query
/// (Gemini's `key` replaced by the gateway's).
fn request_target(to: &Destination<'_>, client_query: Option<&str>) -> String {
    let mut target = format!("{}{}", to.base.path, to.path);
    if target.is_empty() {
        target.push('/');
    }
    let mut params: Vec<String> = Vec::new();
    if let Some(q) = to.base.query.as_deref() {
        params.push(q.to_string());
    }
    if let Some(q) = client_query {
        let keep = q
            .split('&')
            .filter(|p| !p.is_empty())
            .filter(|p| !matches!(to.auth, PassThroughAuth::QueryKey(_)) || !p.starts_with("key="));
        params.extend(keep.map(str::to_string));
    }
    if let PassThroughAuth::QueryKey(key) = &to.auth {
        // Everything but RFC 3986's unreserved characters.
        const QUERY_VALUE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
            .remove(b'-')
            .remove(b'_')
            .remove(b'.')
            .remove(b'~');
        let encoded = percent_encoding::utf8_percent_encode(key.expose(), QUERY_VALUE);
        params.push(format!("key={encoded}"));
    }
    if !params.is_empty() {
        target.push('?');
        target.push_str(&params.join("&"));
    }
    target
}

/// Sends the request and relays the answer.
async fn relay(app: &App, session: &mut Session, ctx: &mut Ctx, to: &Destination<'_>, body: Bytes) {
    let client = session.req_header();
    let method = client.method.clone();
    let target = request_target(to, client.uri.query());
    let user_agent = client
        .headers
        .get(http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or(USER_AGENT)
        .to_string();
    let mut headers = upstream_headers(&client.headers, app.config.key_header.as_ref(), &to.auth);
    if let PassThroughAuth::Aws(aws) = &to.auth {
        let signed = crate::providers::bedrock::sign(
            aws,
            method.as_str(),
            crate::providers::bedrock::SIGNING_NAME,
            to.host_header,
            to.base.tls,
            &target,
            &body,
            std::time::SystemTime::now(),
            &mut headers,
        );
        if let Err(e) = signed {
            respond::error(session, ctx, &e).await;
            return;
        }
    }
    let Some(head) = request_wire_head(
        &method,
        &target,
        to.host_header,
        &headers,
        None,
        body.len(),
        &user_agent,
    ) else {
        let e = ApiError::bad_request("the pass-through path is not valid in an HTTP/1.1 request");
        respond::error(session, ctx, &e).await;
        return;
    };
    let started = Instant::now();
    ctx.record.upstream_started = Some(started);
    let mut up = match send(app, session, &to.peer, &head, &body).await {
        Ok(up) => up,
        Err(Some(e)) => {
            ctx.record.upstream_elapsed = Some(started.elapsed());
            respond::error(session, ctx, &e).await;
            return;
        }
        Err(None) => {
            super::deliver::client_gone(ctx);
            return;
        }
    };
    let Some(upstream) = up.response_header() else {
        up.shutdown().await;
        respond::error(
            session,
            ctx,
            &ApiError::bad_gateway("upstream sent no response header"),
        )
        .await;
        return;
    };
    let status = upstream.status.as_u16();
    let content_type = upstream.headers.get(CONTENT_TYPE).cloned();
    let mut decoder = BodyDecoder::for_encoding(
        upstream
            .headers
            .get(http::header::CONTENT_ENCODING)
            .map(HeaderValue::as_bytes),
    )
    .ok()
    .flatten();
    let mut resp = ResponseHead::new(status, upstream.headers.len() + 8);
    for (name, value) in upstream.headers.iter() {
        let n = name.as_str();
        if n == "content-type" || !HOP_BY_HOP.contains(&n) {
            resp.append_value(name.clone(), value.clone());
        }
    }
    resp.set_request_id(&ctx.request_id);
    if let Some(a) = &ctx.record.admission {
        let key_limits = a.key.iter().flat_map(|k| k.limit_headers.iter());
        for (name, value) in key_limits.chain(&a.headers) {
            resp.set_value(name.clone(), value.clone());
        }
    }
    let no_body = method == http::Method::HEAD || status == 204 || status == 304;
    ctx.record.status = status;
    if status >= 400 {
        ctx.record.failure = Some((
            status,
            filters::exception_class(filters::FailureOrigin::Provider, status),
        ));
    }
    if session
        .write_response_header(Box::new(resp.finish()), no_body)
        .await
        .is_err()
    {
        ctx.record.client_closed = true;
        up.shutdown().await;
        return;
    }
    let mut sniffer = UsageSniffer::new(content_type.as_ref().map(HeaderValue::as_bytes));
    if !no_body {
        let max_event = app.config.max_stream_event_bytes;
        copy_body(
            session,
            ctx,
            &mut up,
            &mut sniffer,
            decoder.as_mut(),
            max_event,
        )
        .await;
    }
    ctx.record.upstream_elapsed = Some(started.elapsed());
    let (usage, answered_model) = sniffer.finish();
    if let Some(record) = ctx.record.pass_through.as_mut() {
        // The answer's model (OpenAI's dated name, Gemini's `modelVersion`) prices it when
        // the table knows it.
        if let Some(m) =
            answered_model.filter(|m| app.prices.lookup(record.price_provider, m, None).is_some())
        {
            record.priced_model = Some(m);
        }
    }
    ctx.record.usage = usage;
    if let Some(u) = &usage {
        let price = ctx.record.pass_through.as_ref().and_then(|r| r.price(app));
        ctx.record.cost = Some(crate::management::cost::cost_of(u, price));
    }
    release(app, &to.peer, up).await;
}

/// Relays the answer's body as it arrives, each read written on at once, its decoded bytes fed
/// to the usage sniffer; stops when the client hangs up (closing the upstream connection stops
/// the generation).
async fn copy_body(
    session: &mut Session,
    ctx: &mut Ctx,
    up: &mut HttpSession,
    sniffer: &mut UsageSniffer,
    mut decoder: Option<&mut BodyDecoder>,
    max_event: usize,
) {
    let started = ctx.record.upstream_started.unwrap_or_else(Instant::now);
    let mut decoded = Vec::new();
    up.set_read_timeout(Some(PASS_THROUGH_TIMEOUT));
    loop {
        let next = tokio::select! {
            biased;
            r = up.read_response_body() => r,
            _ = session.as_downstream_mut().read_body_or_idle(true) => {
                ctx.record.client_closed = true;
                return;
            }
        };
        match next {
            Ok(Some(chunk)) => {
                if ctx.record.time_to_first_token.is_none() {
                    ctx.record.time_to_first_token = Some(started.elapsed());
                }
                match decoder.as_deref_mut() {
                    Some(d) => {
                        decoded.clear();
                        if d.decode(&chunk, &mut decoded, max_event).is_ok() {
                            sniffer.feed(&decoded);
                        }
                    }
                    None => sniffer.feed(&chunk),
                }
                ctx.record.response_bytes += chunk.len() as u64;
                if session
                    .write_response_body(Some(chunk), false)
                    .await
                    .is_err()
                {
                    ctx.record.client_closed = true;
                    return;
                }
            }
            Ok(None) => {
                if session.write_response_body(None, true).await.is_err() {
                    ctx.record.client_closed = true;
                }
                return;
            }
            Err(e) => {
                // Mid-answer failure: the client's response ends cut short (its status is out).
                tracing::debug!(request_id = %ctx.request_id, "pass-through upstream read failed: {e}");
                ctx.record.failure = Some((
                    502,
                    filters::exception_class(filters::FailureOrigin::Provider, 502),
                ));
                session.set_keepalive(None);
                return;
            }
        }
    }
}

/// Connects (a pooled connection first), writes the request and reads the response header.
/// `Err(None)`: the client went away meanwhile.
async fn send(
    app: &App,
    session: &mut Session,
    peer: &ResolvedPeer,
    head: &[u8],
    body: &[u8],
) -> Result<HttpSession, Option<ApiError>> {
    let unreachable = |e: &pingora::Error| {
        ApiError::bad_gateway(format!(
            "the pass-through provider could not be reached: {}",
            e.etype().as_str()
        ))
    };
    let mut resends = 0;
    let mut up = loop {
        let (mut stream, reused) = match app.pool.take(peer.pool_key) {
            Some(stream) => (stream, true),
            None => match app.transport.new_stream(&peer.peer).await {
                Ok(stream) => (stream, false),
                Err(e) => return Err(Some(unreachable(&e))),
            },
        };
        let write = write_head_and_body(&mut stream, head, body);
        match tokio::time::timeout(PASS_THROUGH_TIMEOUT, write).await {
            Ok(Ok(())) => {
                break HttpSession::H1(Http1Session::new_with_options(stream, &peer.peer));
            }
            // A pooled connection the provider had closed: it cannot have the request.
            _ if reused && resends < STALE_CONNECTION_RETRIES => resends += 1,
            _ => {
                return Err(Some(ApiError::bad_gateway(
                    "sending the request to the pass-through provider failed",
                )));
            }
        }
    };
    up.set_read_timeout(Some(PASS_THROUGH_TIMEOUT));
    let read = tokio::select! {
        biased;
        r = read_final_header(&mut up) => r.map_err(Some),
        _ = session.as_downstream_mut().read_body_or_idle(true) => Err(None),
    };
    match read {
        Ok(()) => Ok(up),
        Err(e) => {
            up.shutdown().await;
            Err(e.map(|e| {
                if e.etype() == &pingora::ErrorType::ReadTimedout {
                    ApiError::timeout(format!(
                        "the pass-through provider sent no response within {}s",
                        PASS_THROUGH_TIMEOUT.as_secs()
                    ))
                } else {
                    unreachable(&e)
                }
            }))
        }
    }
}

/// Returns a connection whose answer was read whole to the pool; closes any other.
async fn release(app: &App, peer: &ResolvedPeer, mut up: HttpSession) {
    if !up.response_done() {
        up.shutdown().await;
        return;
    }
    match up {
        HttpSession::H1(mut h1) => {
            h1.respect_keepalive();
            if let Some(stream) = h1.reuse().await {
                app.pool.put(peer.pool_key, stream);
            }
        }
        mut other => other.shutdown().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_that_climb_are_found_also_encoded() {
        for p in [
            "/v1/../admin",
            "/a/%2e%2e/b",
            "/..",
            "/a/..%2fb/..",
            "/a\\..\\b",
        ] {
            assert!(climbs(p), "{p}");
        }
        for p in [
            "/v1/messages",
            "/v1beta/models/gemini-pro:generateContent",
            "/a..b/c",
        ] {
            assert!(!climbs(p), "{p}");
        }
    }

    #[test]
    fn models_named_by_provider_paths() {
        assert_eq!(
            model_in_path(
                PassThroughProvider::Gemini,
                "/v1beta/models/gemini-1.5-flash:streamGenerateContent"
            )
            .as_deref(),
            Some("gemini-1.5-flash")
        );
        assert_eq!(
            model_in_path(
                PassThroughProvider::Bedrock,
                "/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse"
            )
            .as_deref(),
            Some("anthropic.claude-3-haiku-20240307-v1:0")
        );
        assert_eq!(
            model_in_path(
                PassThroughProvider::Azure,
                "/openai/deployments/my-gpt4o/chat/completions"
            )
            .as_deref(),
            Some("my-gpt4o")
        );
        assert_eq!(
            model_in_path(PassThroughProvider::Anthropic, "/v1/messages"),
            None
        );
    }

    #[test]
    fn the_client_key_never_goes_upstream_and_the_gateway_credential_does() {
        let mut client = HeaderMap::new();
        for (k, v) in [
            ("authorization", "Bearer sk-sluice-virtual"),
            ("x-api-key", "sk-sluice-virtual"),
            ("x-goog-api-key", "sk-sluice-virtual"),
            ("x-my-key", "sk-sluice-virtual"),
            ("anthropic-version", "2023-06-01"),
            ("anthropic-beta", "prompt-caching-2024-07-31"),
            ("content-type", "application/json"),
            ("accept-encoding", "gzip"),
            ("host", "gateway.local"),
        ] {
            client.insert(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        let custom = HeaderName::from_static("x-my-key");
        let key = filters::route::Secret::new("sk-ant-provider");
        let h = upstream_headers(&client, Some(&custom), &PassThroughAuth::XApiKey(key));
        assert_eq!(h["x-api-key"], "sk-ant-provider");
        assert_eq!(h["anthropic-version"], "2023-06-01");
        assert_eq!(h["anthropic-beta"], "prompt-caching-2024-07-31");
        assert_eq!(h["content-type"], "application/json");
        for gone in [
            "authorization",
            "x-goog-api-key",
            "x-my-key",
            "accept-encoding",
            "host",
        ] {
            assert!(!h.contains_key(gone), "{gone}");
        }
        client.insert(
            HeaderName::from_static("x-amz-security-token"),
            HeaderValue::from_static("client-token"),
        );
        let aws =
            crate::config::provider_catalog::AwsAuth::ApiKey(filters::route::Secret::new("k"));
        let h = upstream_headers(&client, None, &PassThroughAuth::Aws(aws));
        assert!(!h.contains_key("x-amz-security-token"));
        assert_eq!(h["anthropic-version"], "2023-06-01");
        let key = filters::route::Secret::new("sk-openai");
        let h = upstream_headers(&client, None, &PassThroughAuth::OpenAi(key));
        assert_eq!(h["authorization"], "Bearer sk-openai");
        assert_eq!(h["api-key"], "sk-openai");
        assert!(!h.contains_key("x-api-key"));
    }
}
