//! One model group's attempts: the loop over its route plan with retries and cooldowns
//! (`docs/routing.md`), inside Pingora's `request_filter`. It delivers a success itself; a
//! failure it hands back, so the caller can try fallback groups before the client sees it.

use bytes::Bytes;
use filters::request::RequestView;
use filters::route::RoutePlan;
use filters::{ApiError, Endpoint, FailureOrigin, exception_class};
use pingora::proxy::Session;

use super::attempt::{Attempt, Failed, Failure, Reply, boxed};
use super::ctx::{AttemptRecord, Ctx};
use super::deliver::{Delivery, client_gone};
use super::forward::RequestOptions;
use crate::app::App;
use crate::clock;
use crate::metrics::{DeploymentLabels, DeploymentState};
use crate::providers::translate::ErrorClass;
use crate::routing::{self, FailureFacts, Health};

/// How a group's attempts ended.
pub(super) enum GroupOutcome<'a> {
    /// An answer was delivered, or the client went away: the request is over.
    Done,
    /// Every attempt failed; the last one, ready to deliver.
    Failed {
        attempt: Box<Attempt<'a>>,
        failed: Box<Failed>,
        /// The provider may have taken the request (no usable answer after it went out
        /// whole): it is sent nowhere else.
        maybe_billed: bool,
    },
    /// No attempt could be made (every deployment cooling down, or none can serve it).
    Refused(ApiError),
}

/// The request's input, the same for every group it is tried on.
pub(super) struct Request<'r> {
    pub view: &'r RequestView,
    pub body: &'r Bytes,
    pub endpoint: Endpoint,
    pub options: &'r RequestOptions,
    /// Every tag that routes it (its own and its key's and team's).
    pub tags: &'r crate::routing::tags::RequestTags,
    /// A Responses request's earlier conversation (`previous_response_id`), as chat messages.
    pub history: &'r [serde_json::Value],
}

/// Tries `plan`'s deployments with retries until one answers, the retries run out, or a
/// failure may not be retried.
pub(super) async fn run_group<'a>(
    app: &'a App,
    session: &mut Session,
    ctx: &mut Ctx,
    plan: &'a RoutePlan,
    request: &Request<'a>,
    requested_group: bool,
) -> GroupOutcome<'a> {
    let mut tries = Tries::new(plan.candidates.len());
    loop {
        let now = clock::now_ms();
        let Some(index) = tries.pick(&app.health, plan, now) else {
            return GroupOutcome::Refused(no_deployment_available(app, plan, now));
        };
        let deployment = plan.candidates[index].clone();
        ctx.record.deployment = Some(deployment.clone());
        ctx.record.group_retries = tries.retries;
        let attempt = Attempt::prepare(app, plan, index, request, session.req_header());
        let mut attempt = match attempt {
            Ok(a) => a,
            Err(e) => return GroupOutcome::Refused(e),
        };
        if let Some(t) = request.options.timeout {
            attempt.timeout = t;
        }
        if let Some(t) = request.options.stream_timeout {
            attempt.stream_timeout = Some(t);
        }
        if ctx.record.upstream_started.is_none() {
            ctx.record.upstream_started = Some(std::time::Instant::now());
        }
        // The attempt's futures hold Pingora's I/O futures (the H1 response reader alone is
        // ~9 KB); boxing each stage keeps the outer futures small, since nested awaits store
        // futures twice (rust-lang/rust#62958) and an unboxed chain reached 82 KB, memcpy'd per
        // request.
        let mock = request.options.mock;
        let mocked = mock.rate_limit_error && requested_group && ctx.record.attempts.is_empty();
        app.health
            .attempt_started(deployment.index, clock::now_ms());
        let strategy = &app.config.retries.strategy;
        let mock_response = request
            .options
            .mock_response
            .as_ref()
            .filter(|_| request.endpoint == Endpoint::ChatCompletions);
        let outcome = if mocked || mock.timeout {
            boxed(|| mocked_failure(&attempt, session, plan, mock.timeout)).await
        } else if let Some(value) = mock_response {
            let started = std::time::Instant::now();
            match super::mock_response::read(value, started) {
                Ok(answer) => {
                    let include_usage = request.view.include_usage == Some(true);
                    boxed(|| {
                        attempt.deliver_mock(
                            session,
                            ctx,
                            answer,
                            request.body,
                            include_usage,
                            started,
                        )
                    })
                    .await;
                    app.health.attempt_ended(deployment.index);
                    ctx.record.attempts.push(AttemptRecord {
                        deployment: deployment.clone(),
                        status: 200,
                        class: None,
                        exception: "",
                        elapsed: started.elapsed(),
                    });
                    return GroupOutcome::Done;
                }
                Err(failed) => Err(Failure::Failed(failed)),
            }
        } else if ctx.upload.is_some() {
            // The file still on the client connection is sent on as it arrives.
            boxed(|| attempt.run_upload(session, ctx)).await
        } else {
            let mut gone = std::pin::pin!(session.as_downstream_mut().read_body_or_idle(true));
            boxed(|| attempt.run(ctx, &mut gone)).await
        };
        let failed = match outcome {
            Ok(answer) => {
                let status = answer.head.status.as_u16();
                let started = answer.started;
                let delivery = boxed(|| attempt.deliver(session, ctx, answer)).await;
                app.health.attempt_ended(deployment.index);
                match delivery {
                    Delivery::Delivered => {
                        let now = clock::now_ms();
                        app.health.on_success(deployment.index, now);
                        let usage = ctx.record.usage.unwrap_or_default();
                        app.health.record_answer(
                            deployment.index,
                            strategy,
                            started.elapsed().as_secs_f64(),
                            ctx.record.time_to_first_token.map(|t| t.as_secs_f64()),
                            (usage.prompt_tokens, usage.completion_tokens),
                            now,
                        );
                        app.metrics
                            .router
                            .set_state(deployment.index, DeploymentState::Healthy);
                        ctx.record.attempts.push(AttemptRecord {
                            deployment: deployment.clone(),
                            status,
                            class: None,
                            exception: "",
                            elapsed: started.elapsed(),
                        });
                        return GroupOutcome::Done;
                    }
                    // A stream that failed before its first event: nothing was sent.
                    Delivery::NotStarted(failed) => failed,
                }
            }
            Err(Failure::ClientGone) => {
                app.health.attempt_ended(deployment.index);
                ctx.record.upstream_elapsed = ctx.record.upstream_started.map(|s| s.elapsed());
                client_gone(ctx);
                return GroupOutcome::Done;
            }
            Err(Failure::Failed(failed)) => {
                app.health.attempt_ended(deployment.index);
                failed
            }
        };
        let now = clock::now_ms();
        if failed.class == ErrorClass::Timeout && !mock.timeout {
            app.health.record_timeout(deployment.index, strategy, now);
        }
        // A timeout the client chose says nothing about the deployment (LiteLLM's
        // `is_caller_timeout_408`), nor does a mocked failure: neither cools it down.
        let caller_timeout = failed.class == ErrorClass::Timeout
            && (request.options.timeout.is_some() || request.options.stream_timeout.is_some());
        let says_nothing = caller_timeout || mocked || mock.timeout || mock_response.is_some();
        let retry_after = report_failure(app, ctx, plan, index, &failed, says_nothing, now);
        let dc = app.config.deployment(deployment.index);
        // A retry policy (the group's, else the router's) decides for the classes it names,
        // unless the request asked for no retries; it then overrides whether the error is
        // retried at all, as in LiteLLM.
        let by_policy = app
            .config
            .retries
            .policy_for(&plan.group)
            .filter(|_| request.options.num_retries != Some(0))
            .and_then(|p| routing::policy_retries(p, failed.status, failed.class));
        let max = by_policy.unwrap_or_else(|| {
            request
                .options
                .num_retries
                .or(dc.num_retries)
                .unwrap_or(app.config.retries.num_retries)
        });
        ctx.record.max_retries = max;
        tries.failed(index, failed.status);
        let healthy = tries.healthy(&app.health, plan, now);
        let retryable = match by_policy {
            Some(_) => healthy > 0,
            None => routing::may_retry(failed.status, failed.class, plan.candidates.len(), healthy),
        };
        // The provider may have received the whole request and answered nothing usable (the
        // connection broke, or what came back was no HTTP answer an API gives): it may be
        // generating and billing it, so it is not sent anywhere again. Timeouts are retried,
        // as LiteLLM does.
        let maybe_billed = failed.may_have_received
            && matches!(failed.reply, Reply::Gateway(_))
            && failed.class != ErrorClass::Timeout
            && !failed.nothing_generated;
        // An upload whose file began to flow cannot be sent anywhere again (it is not kept).
        let body_gone = ctx.upload.is_some_and(|u| u.started);
        if tries.retries >= max || maybe_billed || body_gone || !retryable {
            return GroupOutcome::Failed {
                attempt: Box::new(attempt),
                failed,
                maybe_billed: maybe_billed || body_gone,
            };
        }
        // Another deployment takes the retry at once; only when none is left, back off.
        if !tries.has_fresh(&app.health, plan, now) {
            let wait = routing::backoff(
                tries.retries,
                retry_after,
                app.config.retries.retry_after,
                fastrand::f64(),
            );
            let gone = session.as_downstream_mut().read_body_or_idle(true);
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = gone => {
                    client_gone(ctx);
                    return GroupOutcome::Done;
                }
            }
        }
        tries.retries += 1;
    }
}

/// A failure `mock_testing_rate_limit_error` or `mock_timeout` fakes instead of calling the
/// provider: LiteLLM's 429 at once, or its 408 once the attempt's timeout has passed (the
/// client leaving ends the wait).
async fn mocked_failure(
    attempt: &Attempt<'_>,
    session: &mut Session,
    plan: &RoutePlan,
    timeout: bool,
) -> Result<super::attempt::Answer, Failure> {
    let started = std::time::Instant::now();
    let error = if timeout {
        let wait = match (attempt.stream, attempt.stream_timeout) {
            (true, Some(t)) => t,
            _ => attempt.timeout,
        };
        let gone = session.as_downstream_mut().read_body_or_idle(true);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = gone => return Err(Failure::ClientGone),
        }
        ApiError::timeout("litellm.Timeout: This is a mock timeout error")
    } else {
        ApiError::new(
            http::StatusCode::TOO_MANY_REQUESTS,
            "rate_limit_error",
            format!(
                "This is a mock exception for model={}, to trigger a rate limit error.",
                plan.group
            ),
        )
    };
    Err(Failure::gateway(error, false, started))
}

/// Records a failed attempt (`ctx.record.attempts`), tells the deployments' health about it
/// (which may cool the deployment down, unless the failure says nothing about it: a timeout
/// the client set, a mocked failure) and updates the router metrics. Returns the provider's
/// `retry-after`, parsed.
fn report_failure(
    app: &App,
    ctx: &mut Ctx,
    plan: &RoutePlan,
    index: usize,
    failed: &Failed,
    says_nothing: bool,
    now: i64,
) -> Option<std::time::Duration> {
    let deployment = &plan.candidates[index];
    ctx.record.upstream_elapsed = Some(failed.elapsed);
    let origin = match failed.reply {
        Reply::Upstream { .. } => FailureOrigin::Provider,
        Reply::Gateway(_) => FailureOrigin::Gateway,
    };
    ctx.record.attempts.push(AttemptRecord {
        deployment: deployment.clone(),
        status: failed.status,
        class: Some(failed.class),
        exception: exception_class(origin, failed.status),
        elapsed: failed.elapsed,
    });
    let retry_after = failed
        .retry_after
        .as_ref()
        .and_then(|v| routing::parse_retry_after(v.as_bytes(), std::time::SystemTime::now()));
    let dc = app.config.deployment(deployment.index);
    let cooled = if says_nothing {
        None
    } else {
        app.health.on_failure(
            deployment.index,
            &FailureFacts {
                status: failed.status,
                class: failed.class,
                retry_after,
                group_size: plan.candidates.len(),
                deployment_cooldown: dc.cooldown_time,
                model_from_request: plan.wildcard_capture.is_some(),
            },
            now,
        )
    };
    let router_metrics = &app.metrics.router;
    match cooled {
        Some(_) => router_metrics.cooled_down(
            deployment.index,
            DeploymentLabels {
                litellm_model_name: &dc.litellm_model_name,
                model_id: &deployment.id,
                api_base: deployment.public_api_base(),
                api_provider: &deployment.provider,
            },
            failed.status,
        ),
        None => router_metrics.set_state(deployment.index, DeploymentState::PartialOutage),
    }
    retry_after
}

/// Which candidates of the plan this request has tried, and how many retries it made.
struct Tries {
    tried: Vec<bool>,
    /// Left out of later attempts (401, 403: not a passing state of the deployment).
    skipped: Vec<bool>,
    retries: u32,
}

impl Tries {
    fn new(candidates: usize) -> Tries {
        Tries {
            tried: vec![false; candidates],
            skipped: vec![false; candidates],
            retries: 0,
        }
    }

    fn failed(&mut self, index: usize, status: u16) {
        self.tried[index] = true;
        if routing::skip_on_retry(status) {
            self.skipped[index] = true;
        }
    }

    /// Candidates not cooling down, in plan order; the skipped ones only when nothing else
    /// is left (as LiteLLM drops a skip list that would leave no candidate).
    fn usable<'p>(
        &'p self,
        health: &'p Health,
        plan: &'p RoutePlan,
        now: i64,
    ) -> impl Iterator<Item = usize> + 'p {
        let open = move |i: &usize| !health.cooling(plan.candidates[*i].index, now);
        let unskipped: Vec<usize> = (0..plan.candidates.len())
            .filter(|i| !self.skipped[*i])
            .filter(open)
            .collect();
        let all = if unskipped.is_empty() {
            (0..plan.candidates.len()).filter(open).collect()
        } else {
            unskipped
        };
        all.into_iter()
    }

    /// The next attempt's candidate: the first usable one not tried yet, else the first usable.
    fn pick(&self, health: &Health, plan: &RoutePlan, now: i64) -> Option<usize> {
        let mut first = None;
        for i in self.usable(health, plan, now) {
            if !self.tried[i] {
                return Some(i);
            }
            first.get_or_insert(i);
        }
        first
    }

    fn has_fresh(&self, health: &Health, plan: &RoutePlan, now: i64) -> bool {
        self.usable(health, plan, now).any(|i| !self.tried[i])
    }

    fn healthy(&self, health: &Health, plan: &RoutePlan, now: i64) -> usize {
        self.usable(health, plan, now).count()
    }
}

/// Every deployment of the group is cooling down: LiteLLM's 429 (`RouterRateLimitError`),
/// with `retry-after` set to the shortest cooldown among them.
fn no_deployment_available(app: &App, plan: &RoutePlan, now: i64) -> ApiError {
    let cooling: Vec<&str> = plan
        .candidates
        .iter()
        .filter(|d| app.health.cooling(d.index, now))
        .map(|d| d.id.as_str())
        .collect();
    let all = !plan.candidates.is_empty() && cooling.len() == plan.candidates.len();
    let wait = plan
        .candidates
        .iter()
        .filter(|d| app.health.cooling(d.index, now))
        .map(|d| app.health.cooldown_length(d.index))
        .min()
        .unwrap_or(app.config.retries.cooldown_time);
    let secs = wait.as_secs_f64();
    let message = format!(
        "No deployments available for selected model, Try again in {secs} seconds.{} Passed model={}. pre-call-checks=False, cooldown_list={cooling:?}",
        if all {
            " All deployments for selected model are in cooldown."
        } else {
            ""
        },
        plan.requested_model
    );
    let kind = if all {
        "all_deployments_in_cooldown"
    } else {
        "rate_limit_error"
    };
    let mut e = ApiError::new(http::StatusCode::TOO_MANY_REQUESTS, kind, message);
    if secs > 0.0 {
        e = e.with_header("retry-after", secs.ceil().to_string());
    }
    e
}
