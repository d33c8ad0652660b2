//! Virtual keys, teams, users, budgets, rate limits and spend, end to end: the real gateway
//! against the embedded SQLite store, a real PostgreSQL and a real Redis (started by
//! scripts/test), in front of the mock provider.

mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::*;

/// Output price per token in the configs below; the mock answers 5 completion tokens and
/// input is free, so every chat call costs exactly 0.05.
const COST: f64 = 0.05;

/// The management tests' config (support::priced_config): `gpt-4o` costs 0.05 per call.
fn config(mock: &MockProvider, database: &str, extra_general: &str, router: &str) -> String {
    priced_config(mock, database, extra_general, router)
}

fn postgres() -> String {
    format!("  database_url: {}\n", test_database_url())
}

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid_like())
}

fn uuid_like() -> String {
    format!("{:016x}", fastrand::u64(..))
}

fn chat() -> Value {
    json!({"model": "gpt-4o", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]})
}

async fn key_spend(admin: &Client, key: &str) -> f64 {
    let (status, body) = admin.get_json(&format!("/key/info?key={key}")).await;
    assert_eq!(status, 200, "{body}");
    body["info"]["spend"].as_f64().expect("spend")
}

async fn lifecycle(database: &str) {
    let mock = MockProvider::start(MockConfig::default()).await;
    let gw = Gateway::start(&config(&mock, database, "", "")).await;
    let admin = gw.client();

    // Teams.
    let alias = unique("team");
    let (status, _, team) = admin
        .post_json(
            "/team/new",
            &json!({"team_alias": alias, "max_budget": 10.0, "models": ["gpt-4o"], "metadata": {"cc": "42"}}),
        )
        .await;
    assert_eq!(status, 200, "{team}");
    let team_id = team["team_id"].as_str().expect("team_id").to_string();
    assert_eq!(team["team_alias"], alias.as_str());
    assert_eq!(team["max_budget"], 10.0);
    assert_eq!(team["spend"], 0.0);

    // A proxy admin may give a team key a budget above the team's (as LiteLLM); the team's
    // budget still caps it on every request.
    let (status, _, body) = admin
        .post_json(
            "/key/generate",
            &json!({"team_id": team_id, "max_budget": 20.0}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["max_budget"], 20.0);
    let (status, _, deleted) = admin
        .post_json("/key/delete", &json!({"keys": [body["key"]]}))
        .await;
    assert_eq!(status, 200, "{deleted}");
    let (status, _, spent_team) = admin
        .post_json(
            "/team/new",
            &json!({"team_alias": unique("spent"), "max_budget": 0.0}),
        )
        .await;
    assert_eq!(status, 200, "{spent_team}");
    let (status, _, big) = admin
        .post_json(
            "/key/generate",
            &json!({"team_id": spent_team["team_id"], "max_budget": 100.0}),
        )
        .await;
    assert_eq!(status, 200, "{big}");
    let calls = mock.calls();
    let (status, _, body) = as_key(&gw, big["key"].as_str().unwrap())
        .post_json("/v1/chat/completions", &chat())
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        error_message(&body, 400).contains("Budget has been exceeded! Team="),
        "{body}"
    );
    assert_eq!(mock.calls(), calls, "refused before the provider");
    let (status, _, body) = admin
        .post_json("/key/generate", &json!({"team_id": "no-such-team"}))
        .await;
    assert_eq!(status, 400, "{body}");

    // Keys: shown once, stored hashed.
    let user_id = unique("user");
    let key_alias = unique("key");
    let (status, _, generated) = admin
        .post_json(
            "/key/generate",
            &json!({"team_id": team_id, "user_id": user_id, "key_alias": key_alias, "max_budget": 5.0,
                    "models": ["gpt-4o"], "metadata": {"project": "x"}, "duration": "30d"}),
        )
        .await;
    assert_eq!(status, 200, "{generated}");
    let key = generated["key"].as_str().expect("key").to_string();
    let token = generated["token"].as_str().expect("token").to_string();
    assert!(key.starts_with("sk-"));
    assert_ne!(key, token);
    assert_eq!(token, sha256_hex(&key));
    assert_eq!(generated["token_id"], token.as_str());
    assert_eq!(
        generated["key_name"],
        format!("sk-...{}", &key[key.len() - 4..])
    );
    assert_eq!(generated["key_alias"], key_alias.as_str());
    assert!(generated["expires"].is_string() && generated["created_at"].is_string());
    let (status, _, body) = admin
        .post_json("/key/generate", &json!({"key_alias": key_alias}))
        .await;
    assert_eq!(status, 400, "duplicate alias: {body}");

    // The key works, with LiteLLM's spend and limit headers.
    let user = as_key(&gw, &key);
    let (status, headers, body) = user.post_json("/v1/chat/completions", &chat()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers["x-litellm-key-max-budget"], "5");
    assert_eq!(
        headers["x-litellm-key-spend"], "0",
        "spend before this call"
    );
    let cost: f64 = headers["x-litellm-response-cost"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((cost - COST).abs() < 1e-9, "{cost}");

    // A key without limits still says what it spent.
    let (_, _, plain) = admin.post_json("/key/generate", &json!({})).await;
    let (status, h, body) = as_key(&gw, plain["key"].as_str().unwrap())
        .post_json("/v1/chat/completions", &chat())
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(h["x-litellm-key-spend"], "0", "{h:?}");

    // Nor over a user's, for a proxy admin either (the user's budget caps the key's spend).
    let capped = unique("capped");
    let (status, _, body) = admin
        .post_json("/user/new", &json!({"user_id": capped, "max_budget": 2.0}))
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, _, capped_key) = admin
        .post_json(
            "/key/generate",
            &json!({"user_id": capped, "max_budget": 3.0}),
        )
        .await;
    assert_eq!(status, 200, "{capped_key}");
    let (status, _, body) = admin
        .post_json(
            "/key/update",
            &json!({"key": capped_key["key"], "max_budget": 4.0}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["max_budget"], 4.0);

    // Models outside the key's list are refused.
    let (status, _, body) = user
        .post_json(
            "/v1/embeddings",
            &json!({"model": "text-embedding", "input": "x"}),
        )
        .await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"]["type"], "key_model_access_denied");

    // Spend reaches the key, its team and user, and one spend-log row per request.
    let spent = eventually(Duration::from_secs(5), || async {
        let s = key_spend(&admin, &key).await;
        ((s - COST).abs() < 1e-9).then_some(s)
    })
    .await;
    assert!(spent.is_some(), "key spend never reached {COST}");
    let (_, info) = admin
        .get_json(&format!("/team/info?team_id={team_id}"))
        .await;
    assert!(
        (info["team_info"]["spend"].as_f64().unwrap() - COST).abs() < 1e-9,
        "{info}"
    );
    assert_eq!(info["keys"].as_array().unwrap().len(), 1, "{info}");
    let (_, info) = admin
        .get_json(&format!("/user/info?user_id={user_id}"))
        .await;
    assert!(
        (info["user_info"]["spend"].as_f64().unwrap() - COST).abs() < 1e-9,
        "{info}"
    );
    // LiteLLM's budget gauges agree with /key/info and /team/info (max_budget - spend).
    let metrics = gw.metrics().await;
    let gauge = |name: &str, labels: &str| -> f64 {
        let prefix = format!("{name}{{{labels}}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("no {prefix} in\n{metrics}"))
            .parse()
            .unwrap()
    };
    let key_labels = format!("api_key_alias=\"{key_alias}\",hashed_api_key=\"{token}\"");
    assert!(
        (gauge("litellm_remaining_api_key_budget_metric", &key_labels) - (5.0 - COST)).abs() < 1e-9
    );
    assert_eq!(gauge("litellm_api_key_max_budget_metric", &key_labels), 5.0);
    let team_labels = format!("team=\"{team_id}\",team_alias=\"{alias}\"");
    assert!(
        (gauge("litellm_remaining_team_budget_metric", &team_labels) - (10.0 - COST)).abs() < 1e-9
    );
    assert_eq!(gauge("litellm_team_max_budget_metric", &team_labels), 10.0);
    // The per-request series carry the key's team and user, and the spend counter its cost.
    let series = |name: &str| -> Vec<(&str, f64)> {
        metrics
            .lines()
            .filter(|l| l.starts_with(&format!("{name}{{")))
            .filter(|l| l.contains(&format!("hashed_api_key=\"{token}\"")))
            .map(|l| {
                let (labels, value) = l.rsplit_once(' ').unwrap();
                (labels, value.parse().unwrap())
            })
            .collect()
    };
    let owners = [
        format!("team=\"{team_id}\""),
        format!("team_alias=\"{alias}\""),
        format!("user=\"{user_id}\""),
    ];
    for name in [
        "litellm_proxy_total_requests_metric_total",
        "litellm_total_tokens_metric_total",
        "litellm_spend_metric_total",
    ] {
        let found = series(name);
        assert!(!found.is_empty(), "no {name} for the key in\n{metrics}");
        for (labels, _) in &found {
            for owner in &owners {
                assert!(labels.contains(owner.as_str()), "{owner} missing: {labels}");
            }
        }
    }
    let spend: f64 = series("litellm_spend_metric_total")
        .iter()
        .map(|(_, v)| v)
        .sum();
    assert!(
        (spend - COST).abs() < 1e-9,
        "litellm_spend_metric_total {spend}"
    );
    let (status, logs) = admin
        .get_json(&format!("/spend/logs?api_key={token}"))
        .await;
    assert_eq!(status, 200, "{logs}");
    let logs = logs.as_array().unwrap().clone();
    let ok: Vec<&Value> = logs.iter().filter(|r| r["status"] == "success").collect();
    assert_eq!(ok.len(), 1, "{logs:?}");
    assert_eq!(ok[0]["model_group"], "gpt-4o");
    assert_eq!(ok[0]["team_id"], team_id.as_str());
    assert_eq!(ok[0]["metadata"]["user_api_key_alias"], key_alias.as_str());
    assert!((ok[0]["spend"].as_f64().unwrap() - COST).abs() < 1e-9);
    let today = &ok[0]["startTime"].as_str().unwrap()[..10];
    // With a date range, /spend/logs answers per day, as LiteLLM (with empty days to end_date).
    let tomorrow = clock_day_after(today);
    let (status, days) = admin
        .get_json(&format!(
            "/spend/logs?api_key={token}&start_date={today}&end_date={tomorrow}"
        ))
        .await;
    assert_eq!(status, 200, "{days}");
    let days = days.as_array().unwrap();
    assert_eq!(days.len(), 2, "{days:?}");
    assert_eq!(days[0]["startTime"], today);
    assert!(
        (days[0]["spend"].as_f64().unwrap() - COST).abs() < 1e-9,
        "{days:?}"
    );
    assert!(
        (days[0][&token].as_f64().unwrap() - COST).abs() < 1e-9,
        "{days:?}"
    );
    assert!(
        (days[0]["models"]["gpt-4o-mini"].as_f64().unwrap() - COST).abs() < 1e-9,
        "{days:?}"
    );
    assert!(
        (days[0]["users"][&user_id].as_f64().unwrap() - COST).abs() < 1e-9,
        "{days:?}"
    );
    assert_eq!(days[1]["startTime"], tomorrow.as_str());
    assert_eq!(days[1]["spend"], 0.0);
    let (status, report) = admin
        .get_json(&format!(
            "/global/spend/report?start_date={today}&end_date={today}&group_by=team"
        ))
        .await;
    assert_eq!(status, 200, "{report}");
    let day = report
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["group_by_day"] == today)
        .expect("today in the report");
    let ours = day["teams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["team_name"] == alias.as_str())
        .expect("our team by alias");
    assert!(
        (ours["total_spend"].as_f64().unwrap() - COST).abs() < 1e-9,
        "{ours}"
    );
    assert_eq!(ours["metadata"][0]["model"], "gpt-4o");
    let (_, global) = admin.get_json("/global/spend").await;
    assert!(global["spend"].as_f64().unwrap() >= COST, "{global}");

    // /key/info and /key/list.
    let (status, info) = admin.get_json(&format!("/key/info?key={key}")).await;
    assert_eq!(status, 200);
    assert_eq!(info["key"], key.as_str());
    assert_eq!(info["info"]["metadata"]["project"], "x");
    assert_eq!(info["info"]["models"], json!(["gpt-4o"]));
    assert!(info["info"].get("token").is_none());
    let (status, list) = admin
        .get_json(&format!("/key/list?team_id={team_id}"))
        .await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["keys"], json!([token]));
    assert_eq!(list["total_count"], 1);
    let (status, body) = admin.get_json("/key/info?key=sk-nope-nope").await;
    assert_eq!(status, 404, "{body}");

    // A non-admin key sees only itself and cannot widen anything (roles are tested below).
    let (status, body) = user.get_json("/key/info").await;
    assert_eq!(status, 200, "{body}");
    let (_, _, other) = admin.post_json("/key/generate", &json!({})).await;
    let other_key = other["key"].as_str().unwrap();
    let (status, body) = user.get_json(&format!("/key/info?key={other_key}")).await;
    assert_eq!(status, 403, "{body}");
    let (status, _, body) = user
        .post_json("/key/generate", &json!({"max_budget": 1000}))
        .await;
    assert_eq!(status, 403, "more than the calling key has: {body}");
    let (status, _, body) = user
        .post_json("/key/update", &json!({"key": key, "max_budget": 1000}))
        .await;
    assert_eq!(status, 403, "a team key, and not a team admin: {body}");
    let (status, _, body) = user.post_json("/team/new", &json!({})).await;
    assert_eq!(status, 401, "{body}");

    // Block and unblock take effect within a second.
    let (status, _, body) = admin.post_json("/key/block", &json!({"key": key})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["blocked"], true);
    let blocked = eventually(Duration::from_secs(1), || async {
        let (s, _, b) = user.post_json("/v1/chat/completions", &chat()).await;
        (s == 401).then_some(b)
    })
    .await
    .expect("blocked within a second");
    assert!(
        error_message(&blocked, 401).contains("Key is blocked"),
        "{blocked}"
    );
    admin.post_json("/key/unblock", &json!({"key": key})).await;
    let back = eventually(Duration::from_secs(1), || async {
        let (s, _, _) = user.post_json("/v1/chat/completions", &chat()).await;
        (s == 200).then_some(())
    })
    .await;
    assert!(back.is_some(), "unblocked within a second");

    // Updates keep what they do not name.
    let (status, _, updated) = admin
        .post_json(
            "/key/update",
            &json!({"key": key, "models": ["gpt-4o", "text-embedding"]}),
        )
        .await;
    assert_eq!(status, 200, "{updated}");
    assert_eq!(updated["max_budget"], 5.0);
    assert_eq!(updated["metadata"]["project"], "x");

    // Team members.
    let member = unique("member");
    let (status, _, body) = admin
        .post_json(
            "/team/member_add",
            &json!({"team_id": team_id, "member": {"role": "user", "user_id": member}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body["members_with_roles"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["user_id"] == member.as_str())
    );
    assert_eq!(body["updated_users"][0]["user_id"], member.as_str());
    let (status, _, _) = admin
        .post_json(
            "/team/member_add",
            &json!({"team_id": team_id, "member": {"role": "user", "user_id": member}}),
        )
        .await;
    assert_eq!(status, 400, "already a member");
    let (status, _, _) = admin
        .post_json(
            "/team/member_delete",
            &json!({"team_id": team_id, "user_id": member}),
        )
        .await;
    assert_eq!(status, 200);
    let (status, _, _) = admin
        .post_json(
            "/team/member_delete",
            &json!({"team_id": team_id, "user_id": member}),
        )
        .await;
    assert_eq!(status, 400, "no longer a member");
    let (status, _, body) = admin
        .post_json(
            "/team/update",
            &json!({"team_id": team_id, "team_alias": format!("{alias}-2")}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["max_budget"], 10.0, "update keeps the rest");
    let (status, teams) = admin.get_json("/team/list").await;
    assert_eq!(status, 200);
    assert!(
        teams
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["team_id"] == team_id.as_str())
    );

    // Users.
    let (status, _, new_user) = admin
        .post_json(
            "/user/new",
            &json!({"user_email": format!("{}@example.com", unique("u")), "max_budget": 3.0}),
        )
        .await;
    assert_eq!(status, 200, "{new_user}");
    assert!(new_user["key"].as_str().unwrap().starts_with("sk-"));
    let new_user_id = new_user["user_id"].as_str().unwrap();
    let (status, info) = admin
        .get_json(&format!("/user/info?user_id={new_user_id}"))
        .await;
    assert_eq!(status, 200);
    assert_eq!(info["keys"].as_array().unwrap().len(), 1);
    let (status, _, body) = admin
        .post_json(
            "/user/update",
            &json!({"user_id": new_user_id, "user_role": "emperor"}),
        )
        .await;
    assert_eq!(status, 400, "{body}");

    // Deleting a key revokes it everywhere within a second.
    let (status, _, body) = admin
        .post_json("/key/delete", &json!({"keys": [key]}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["deleted_keys"], json!([key]));
    let gone = eventually(Duration::from_secs(1), || async {
        let (s, _, _) = user.post_json("/v1/chat/completions", &chat()).await;
        (s == 401).then_some(())
    })
    .await;
    assert!(gone.is_some());
    let (status, _, _) = admin
        .post_json("/key/delete", &json!({"keys": [key]}))
        .await;
    assert_eq!(status, 404);

    // An end user nobody created is created by its first spend, as LiteLLM does.
    let newcomer = unique("newcomer");
    let mut req = chat();
    req["user"] = json!(newcomer);
    for _ in 0..2 {
        assert_eq!(admin.post_json("/v1/chat/completions", &req).await.0, 200);
    }
    // The two requests may land in different spend batches: wait for both.
    let customer_info = || async {
        admin
            .get_json(&format!("/customer/info?end_user_id={newcomer}"))
            .await
    };
    let both_booked = eventually(Duration::from_secs(5), || async {
        let (s, info) = customer_info().await;
        (s == 200 && info["spend"].as_f64() >= Some(2.0 * COST - 1e-9)).then_some(())
    })
    .await;
    let (status, spent) = customer_info().await;
    assert_eq!(status, 200, "the end user was not created: {spent}");
    assert!(both_booked.is_some(), "{spent}");
    assert_eq!(spent["user_id"], newcomer.as_str(), "{spent}");
    assert!(
        (spent["spend"].as_f64().unwrap() - 2.0 * COST).abs() < 1e-9,
        "{spent}"
    );
    assert_eq!(spent["blocked"], false, "{spent}");
}

/// The calendar day after a `YYYY-MM-DD` date.
fn clock_day_after(day: &str) -> String {
    let d = chrono_free_days(day) + 1;
    // Civil from days (Howard Hinnant's algorithm).
    let z = d + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let dd = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{dd:02}")
}

fn chrono_free_days(day: &str) -> i64 {
    let y: i64 = day[..4].parse().unwrap();
    let m: i64 = day[5..7].parse().unwrap();
    let d: i64 = day[8..10].parse().unwrap();
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Rate-limit windows are calendar minutes: a check that needs two requests in one window
/// starts with a few seconds of it left.
async fn away_from_minute_boundary() {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
        % 60_000;
    if ms > 55_000 {
        tokio::time::sleep(Duration::from_millis(60_500 - ms as u64)).await;
    }
}

/// The gateway's day (days since the epoch), from readiness' `last_updated`, read with the
/// gateway's own clock (which follows `SLUICE_TEST_CLOCK_FILE`).
async fn gateway_day(gw: &Gateway) -> i64 {
    let (_, body) = gw.client().get_json("/health/readiness").await;
    let at = body["last_updated"].as_str().expect("last_updated");
    chrono_free_days(&at[..10])
}

/// `GET key` on the tests' Redis (RESP over TCP): the value, or `None` when the key is unset.
async fn redis_get(key: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let url = test_redis_url();
    let addr = url
        .trim_start_matches("redis://")
        .rsplit('@')
        .next()
        .unwrap()
        .trim_end_matches('/')
        .to_string();
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    let command = format!("*2\r\n$3\r\nGET\r\n${}\r\n{key}\r\n", key.len());
    s.write_all(command.as_bytes()).await.ok()?;
    let mut buf = vec![0u8; 4096];
    let n = s.read(&mut buf).await.ok()?;
    let reply = String::from_utf8_lossy(&buf[..n]).to_string();
    if reply.starts_with("$-1") {
        return None;
    }
    reply.split("\r\n").nth(1).map(str::to_string)
}

fn sha256_hex(s: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[tokio::test]
async fn admin_api_and_keys_on_sqlite() {
    lifecycle("").await;
}

#[tokio::test]
async fn admin_api_and_keys_on_postgres() {
    lifecycle(&postgres()).await;
}

#[tokio::test]
async fn budgets_and_rate_limits_are_enforced_in_process() {
    budgets_and_rate_limits_are_enforced("").await;
}

#[tokio::test]
async fn budgets_and_rate_limits_are_enforced_in_redis() {
    budgets_and_rate_limits_are_enforced(&format!("  redis_url: {}\n", test_redis_url())).await;
}

/// Every kind of limit, with the ledger in process or in Redis (`redis` is the router line).
async fn budgets_and_rate_limits_are_enforced(redis: &str) {
    let mock = MockProvider::start(MockConfig::default()).await;
    let gw = Gateway::start(&config(&mock, "", "", redis)).await;
    let admin = gw.client();

    // Budget: 0.12 covers two calls at 0.05 and part of a third. As LiteLLM, a call goes while
    // anything is left, its reservation capped at what is left: the third goes (spend 0.15,
    // over by less than one call), the fourth is refused.
    let (_, _, k) = admin
        .post_json("/key/generate", &json!({"max_budget": 0.12}))
        .await;
    let user = as_key(&gw, k["key"].as_str().unwrap());
    for _ in 0..3 {
        let (s, _, b) = user.post_json("/v1/chat/completions", &chat()).await;
        assert_eq!(s, 200, "{b}");
    }
    let spent = eventually(Duration::from_secs(5), || async {
        let s = key_spend(&admin, k["key"].as_str().unwrap()).await;
        ((s - 0.15).abs() < 1e-9).then_some(s)
    })
    .await;
    assert!(spent.is_some(), "spend never reached 0.15");
    let (s, _, b) = user.post_json("/v1/chat/completions", &chat()).await;
    assert_eq!(s, 400, "{b}");
    assert_eq!(b["error"]["type"], "budget_exceeded");
    assert!(
        error_message(&b, 400).contains("Budget has been exceeded"),
        "{b}"
    );

    // Requests per minute, with LiteLLM's headers.
    away_from_minute_boundary().await;
    let (_, _, k) = admin
        .post_json("/key/generate", &json!({"rpm_limit": 2}))
        .await;
    let user = as_key(&gw, k["key"].as_str().unwrap());
    let (s, h, _) = user.post_json("/v1/chat/completions", &chat()).await;
    assert_eq!(s, 200);
    assert_eq!(h["x-ratelimit-remaining-requests"], "1");
    assert_eq!(h["x-ratelimit-limit-requests"], "2");
    user.post_json("/v1/chat/completions", &chat()).await;
    let resp = user
        .post("/v1/chat/completions")
        .json(&chat())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    let retry: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    let body: Value = resp.json().await.unwrap();
    assert!(
        error_message(&body, 429).contains("Limit type: requests"),
        "{body}"
    );

    // Tokens per minute: the first call's usage uses the allowance up.
    away_from_minute_boundary().await;
    let (_, _, k) = admin
        .post_json("/key/generate", &json!({"tpm_limit": 5}))
        .await;
    let user = as_key(&gw, k["key"].as_str().unwrap());
    assert_eq!(user.post_json("/v1/chat/completions", &chat()).await.0, 200);
    let (s, h, b) = user.post_json("/v1/chat/completions", &chat()).await;
    assert_eq!(s, 429, "{b}");
    assert!(h.contains_key("retry-after"));
    assert!(error_message(&b, 429).contains("Limit type: tokens"), "{b}");

    // Team budget caps all its keys together.
    let (_, _, t) = admin
        .post_json("/team/new", &json!({"max_budget": 0.1}))
        .await;
    let team_id = t["team_id"].as_str().unwrap();
    let mut keys = Vec::new();
    for _ in 0..2 {
        let (_, _, k) = admin
            .post_json("/key/generate", &json!({"team_id": team_id}))
            .await;
        keys.push(as_key(&gw, k["key"].as_str().unwrap()));
    }
    assert_eq!(
        keys[0].post_json("/v1/chat/completions", &chat()).await.0,
        200
    );
    assert_eq!(
        keys[1].post_json("/v1/chat/completions", &chat()).await.0,
        200
    );
    let (s, _, b) = keys[0].post_json("/v1/chat/completions", &chat()).await;
    assert_eq!(s, 400, "{b}");
    assert!(
        error_message(&b, 400).contains(&format!("Team={team_id}")),
        "{b}"
    );

    // A team's rate limit counts all its keys together.
    away_from_minute_boundary().await;
    let (_, _, t) = admin.post_json("/team/new", &json!({"rpm_limit": 1})).await;
    let team_id = t["team_id"].as_str().unwrap();
    let mut keys = Vec::new();
    for _ in 0..2 {
        let (_, _, k) = admin
            .post_json("/key/generate", &json!({"team_id": team_id}))
            .await;
        keys.push(as_key(&gw, k["key"].as_str().unwrap()));
    }
    assert_eq!(
        keys[0].post_json("/v1/chat/completions", &chat()).await.0,
        200
    );
    let (s, _, b) = keys[1].post_json("/v1/chat/completions", &chat()).await;
    assert_eq!(s, 429, "{b}");
    assert!(error_message(&b, 429).contains("team"), "{b}");

    // A user's budget caps its personal keys together.
    let owner = unique("owner");
    admin
        .post_json(
            "/user/new",
            &json!({"user_id": owner, "max_budget": COST, "auto_create_key": false}),
        )
        .await;
    let mut keys = Vec::new();
    for _ in 0..2 {
        let (_, _, k) = admin
            .post_json("/key/generate", &json!({"user_id": owner}))
            .await;
        keys.push(as_key(&gw, k["key"].as_str().unwrap()));
    }
    assert_eq!(
        keys[0].post_json("/v1/chat/completions", &chat()).await.0,
        200
    );
    let (s, _, b) = keys[1].post_json("/v1/chat/completions", &chat()).await;
    assert_eq!(s, 400, "{b}");
    assert!(
        error_message(&b, 400).contains(&format!("User={owner}")),
        "{b}"
    );

    // End users (the request's `user`) with their own budget, even under the master key.
    let end_user = unique("customer");
    let (s, _, b) = admin
        .post_json(
            "/customer/new",
            &json!({"user_id": end_user, "max_budget": 0.05}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let mut req = chat();
    req["user"] = json!(end_user);
    assert_eq!(admin.post_json("/v1/chat/completions", &req).await.0, 200);
    let (s, _, b) = admin.post_json("/v1/chat/completions", &req).await;
    assert_eq!(s, 400, "{b}");
    assert!(
        error_message(&b, 400).contains(&format!("End User={end_user}")),
        "{b}"
    );

    // Parallel requests: one at a time on a slow upstream.
    let slow = MockProvider::start(MockConfig {
        latency: Duration::from_millis(400),
        ..MockConfig::default()
    })
    .await;
    let gw2 = Gateway::start(&config(&slow, "", "", redis)).await;
    let (_, _, k) = gw2
        .client()
        .post_json("/key/generate", &json!({"max_parallel_requests": 1}))
        .await;
    let user = as_key(&gw2, k["key"].as_str().unwrap());
    let body = chat();
    let (a, b) = tokio::join!(
        user.post_json("/v1/chat/completions", &body),
        user.post_json("/v1/chat/completions", &body)
    );
    let mut statuses = [a.0, b.0];
    statuses.sort();
    assert_eq!(statuses, [200, 429]);
}

#[tokio::test]
async fn budget_window_resets_on_schedule() {
    let mock = MockProvider::start(MockConfig::default()).await;
    let gw = Gateway::start(&config(&mock, "", "", "")).await;
    let admin = gw.client();
    let (_, _, k) = admin
        .post_json(
            "/key/generate",
            &json!({"max_budget": 0.05, "budget_duration": "2s"}),
        )
        .await;
    assert!(k["budget_reset_at"].is_string(), "{k}");
    let key = k["key"].as_str().unwrap().to_string();
    let user = as_key(&gw, &key);
    assert_eq!(user.post_json("/v1/chat/completions", &chat()).await.0, 200);
    assert_eq!(user.post_json("/v1/chat/completions", &chat()).await.0, 400);
    let again = eventually(Duration::from_secs(5), || async {
        let (s, _, _) = user.post_json("/v1/chat/completions", &chat()).await;
        (s == 200).then_some(())
    })
    .await;
    assert!(again.is_some(), "budget never reset");
    // The stored spend was reset too (and holds at most the new window's call).
    let spend = eventually(Duration::from_secs(5), || async {
        let s = key_spend(&admin, &key).await;
        (s <= COST + 1e-9).then_some(s)
    })
    .await;
    assert!(spend.is_some());
}

/// A new `budget_duration` moves the window's end and keeps what was spent, as LiteLLM keeps
/// the spend column: a longer window must not hand out a second budget, and a shorter one ends
/// (and resets) when it says.
async fn new_budget_duration_keeps_spend(router: &str) {
    let mock = MockProvider::start(MockConfig::default()).await;
    let gw = Gateway::start(&config(&mock, "", "", router)).await;
    let admin = gw.client();
    let (_, _, k) = admin
        .post_json(
            "/key/generate",
            &json!({"max_budget": 2.0 * COST, "budget_duration": "1h"}),
        )
        .await;
    let key = k["key"].as_str().unwrap().to_string();
    let user = as_key(&gw, &key);
    for _ in 0..2 {
        assert_eq!(user.post_json("/v1/chat/completions", &chat()).await.0, 200);
    }
    assert_eq!(user.post_json("/v1/chat/completions", &chat()).await.0, 400);

    let (status, _, updated) = admin
        .post_json(
            "/key/update",
            &json!({"key": key, "budget_duration": "30d"}),
        )
        .await;
    assert_eq!(status, 200, "{updated}");
    // While every cache takes the update in (the change feed is read every 0.25 s), the key
    // stays over its budget: checked throughout, not once after a pause.
    let watched = Instant::now();
    while watched.elapsed() < Duration::from_millis(1500) {
        let (status, _, body) = user.post_json("/v1/chat/completions", &chat()).await;
        assert_eq!(status, 400, "a longer window granted a new budget: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!((key_spend(&admin, &key).await - 2.0 * COST).abs() < 1e-9);

    let (status, _, updated) = admin
        .post_json("/key/update", &json!({"key": key, "budget_duration": "2s"}))
        .await;
    assert_eq!(status, 200, "{updated}");
    let again = eventually(Duration::from_secs(6), || async {
        let (s, _, _) = user.post_json("/v1/chat/completions", &chat()).await;
        (s == 200).then_some(())
    })
    .await;
    assert!(again.is_some(), "the shorter window never ended");
}

#[tokio::test]
async fn new_budget_duration_keeps_spend_in_process() {
    new_budget_duration_keeps_spend("").await;
}

#[tokio::test]
async fn new_budget_duration_keeps_spend_with_redis() {
    new_budget_duration_keeps_spend(&format!("  redis_url: {}\n", test_redis_url())).await;
}

#[tokio::test]
async fn two_instances_never_overspend_a_budget() {
    let mock = MockProvider::start(MockConfig {
        latency: Duration::from_millis(20),
        ..MockConfig::default()
    })
    .await;
    let redis = format!("  redis_url: {}\n", test_redis_url());
    let cfg = config(&mock, &postgres(), "", &redis);
    let a = Gateway::start(&cfg).await;
    let b = Gateway::start(&cfg).await;
    assert!(!a.logs().contains("PostgreSQL without Redis"));
    // A budget that covers exactly 50 calls.
    let (status, _, k) = a
        .client()
        .post_json("/key/generate", &json!({"max_budget": 50.0 * COST}))
        .await;
    assert_eq!(status, 200, "{k}");
    let key = k["key"].as_str().unwrap().to_string();
    let token = k["token"].as_str().unwrap().to_string();
    let clients = [as_key(&a, &key), as_key(&b, &key)];
    let mut tasks = Vec::new();
    for i in 0..200 {
        let c = clients[i % 2].clone();
        tasks.push(tokio::spawn(async move {
            c.post_json("/v1/chat/completions", &chat()).await.0
        }));
    }
    let mut ok = 0;
    let mut refused = 0;
    for t in tasks {
        match t.await.unwrap() {
            200 => ok += 1,
            400 => refused += 1,
            other => panic!("unexpected status {other}"),
        }
    }
    assert!(ok <= 50, "{ok} calls admitted on a budget for 50");
    assert!(
        ok >= 40,
        "only {ok} admitted: reservations should be exact here"
    );
    assert_eq!(ok + refused, 200);
    let admin = a.client();
    let spend = eventually(Duration::from_secs(5), || async {
        let s = key_spend(&admin, &key).await;
        ((s - ok as f64 * COST).abs() < 1e-6).then_some(s)
    })
    .await
    .expect("spend of both instances written");
    assert!(spend <= 50.0 * COST + 1e-9, "spend {spend} over budget");
    let (_, logs) = admin
        .get_json(&format!("/spend/logs?api_key={token}"))
        .await;
    let logged: f64 = logs
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["spend"].as_f64().unwrap())
        .sum();
    assert!(
        (logged - spend).abs() < 1e-6,
        "spend logs {logged} vs spend {spend}"
    );

    // Rate limits are counted across both instances too.
    away_from_minute_boundary().await;
    let (_, _, k) = admin
        .post_json("/key/generate", &json!({"rpm_limit": 3}))
        .await;
    let limited = k["key"].as_str().unwrap().to_string();
    let mut statuses = Vec::new();
    for i in 0..6 {
        let gw = if i % 2 == 0 { &a } else { &b };
        statuses.push(
            as_key(gw, &limited)
                .post_json("/v1/chat/completions", &chat())
                .await
                .0,
        );
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        3,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count(),
        3,
        "{statuses:?}"
    );

    // Keys read from the database are shared through Redis (hashed, never the raw key).
    let mut redis_conn = redis::Client::open(test_redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let cached: Option<String> = redis::cmd("GET")
        .arg(format!("sluice:key:{token}"))
        .query_async(&mut redis_conn)
        .await
        .unwrap();
    let cached = cached.expect("the key is cached in Redis");
    assert!(
        cached.contains(&token) && !cached.contains(&key),
        "{cached}"
    );

    // A block on one instance takes effect on the other within a second.
    let (_, _, k) = admin.post_json("/key/generate", &json!({})).await;
    let other = k["key"].as_str().unwrap().to_string();
    assert_eq!(
        as_key(&b, &other)
            .post_json("/v1/chat/completions", &chat())
            .await
            .0,
        200
    );
    let blocked_at = Instant::now();
    admin.post_json("/key/block", &json!({"key": other})).await;
    let refused = eventually(Duration::from_secs(2), || async {
        let (s, _, _) = as_key(&b, &other)
            .post_json("/v1/chat/completions", &chat())
            .await;
        (s == 401).then_some(())
    })
    .await;
    assert!(
        refused.is_some(),
        "instance B still accepts a key blocked on A"
    );
    assert!(
        blocked_at.elapsed() < Duration::from_secs(1),
        "took {:?}",
        blocked_at.elapsed()
    );
}

#[tokio::test]
async fn per_model_limits_on_a_key_in_process() {
    per_model_limits_on_a_key("").await;
}

#[tokio::test]
async fn per_model_limits_on_a_key_in_redis() {
    per_model_limits_on_a_key(&format!("  redis_url: {}\n", test_redis_url())).await;
}

async fn per_model_limits_on_a_key(redis: &str) {
    let mock = MockProvider::start(MockConfig::default()).await;
    let gw = Gateway::start(&config(&mock, "", "", redis)).await;
    let admin = gw.client();
    let (s, _, k) = admin
        .post_json(
            "/key/generate",
            &json!({"model_rpm_limit": {"text-embedding": 1}, "model_max_budget": {"gpt-4o": {"budget_limit": 0.05, "time_period": "1d"}}}),
        )
        .await;
    assert_eq!(s, 200, "{k}");
    let user = as_key(&gw, k["key"].as_str().unwrap());
    let embed = json!({"model": "text-embedding", "input": "x"});
    away_from_minute_boundary().await;
    assert_eq!(user.post_json("/v1/embeddings", &embed).await.0, 200);
    let (s, _, b) = user.post_json("/v1/embeddings", &embed).await;
    assert_eq!(s, 429, "{b}");
    assert!(error_message(&b, 429).contains("model_per_key"), "{b}");
    assert_eq!(user.post_json("/v1/chat/completions", &chat()).await.0, 200);
    let (s, _, b) = user.post_json("/v1/chat/completions", &chat()).await;
    assert_eq!(s, 400, "{b}");
    assert!(
        error_message(&b, 400).contains("exceeded budget for model=gpt-4o"),
        "{b}"
    );
    // Regenerating the key does not start its per-model budget again.
    let (s, _, again) = admin
        .post_json("/key/regenerate", &json!({"key": k["key"]}))
        .await;
    assert_eq!(s, 200, "{again}");
    let regenerated = as_key(&gw, again["key"].as_str().unwrap());
    let (s, _, b) = regenerated.post_json("/v1/chat/completions", &chat()).await;
    assert_eq!(
        s, 400,
        "a regenerated key's per-model budget restarted: {b}"
    );
}

#[tokio::test]
async fn sigterm_mid_load_loses_no_spend() {
    let mock = MockProvider::start(MockConfig {
        latency: Duration::from_millis(150),
        ..MockConfig::default()
    })
    .await;
    let db = scratch_path("spend.db");
    let database = format!("  database_url: sqlite://{}?mode=rwc\n", db.display());
    // Batches every minute: nothing is written before the signal but by the shutdown flush.
    let cfg = config(&mock, &database, "", "")
        .replace("proxy_batch_write_at: 0.2", "proxy_batch_write_at: 60");
    let mut gw = Gateway::start(&cfg).await;
    let (_, _, k) = gw.client().post_json("/key/generate", &json!({})).await;
    let key = k["key"].as_str().unwrap().to_string();
    let token = k["token"].as_str().unwrap().to_string();
    let user = as_key(&gw, &key);
    let mut tasks = Vec::new();
    for _ in 0..30 {
        let c = user.clone();
        tasks.push(tokio::spawn(async move {
            c.post_json("/v1/chat/completions", &chat()).await.0
        }));
    }
    // SIGTERM once calls are under way (the mock saw one).
    let started = eventually(Duration::from_secs(5), || async {
        (mock.calls() > 0).then_some(())
    })
    .await;
    assert!(started.is_some(), "no call reached the mock");
    gw.signal(15);
    let mut ok = 0;
    for t in tasks {
        if t.await.unwrap() == 200 {
            ok += 1;
        }
    }
    assert!(
        gw.wait_exit(Duration::from_secs(20)).await.is_some(),
        "did not exit"
    );
    assert!(ok > 0);
    // A new instance on the same store sees every completed call.
    let gw = Gateway::start(&cfg).await;
    let admin = gw.client();
    let spend = key_spend(&admin, &key).await;
    assert!(
        (spend - ok as f64 * COST).abs() < 1e-9,
        "spend {spend} for {ok} calls"
    );
    let (_, logs) = admin
        .get_json(&format!("/spend/logs?api_key={token}"))
        .await;
    let logs = logs.as_array().unwrap();
    let logged: f64 = logs.iter().map(|r| r["spend"].as_f64().unwrap()).sum();
    assert!(
        (logged - spend).abs() < 1e-9,
        "logs {logged} vs spend {spend}"
    );
    assert_eq!(logs.iter().filter(|r| r["status"] == "success").count(), ok);
}

#[tokio::test]
async fn migrate_command_and_readiness_report_the_database() {
    let mock = MockProvider::start(MockConfig::default()).await;
    let db = scratch_path("migrate.db");
    let database = format!("  database_url: sqlite://{}?mode=rwc\n", db.display());
    let cfg = config(&mock, &database, "", "");
    let path = scratch_path("migrate.yaml");
    std::fs::write(&path, &cfg).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["--config", path.to_str().unwrap(), "migrate"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(db.exists());
    // Started without migrations, the gateway uses the migrated store.
    let gw = Gateway::start_with(&cfg, &[], &[("DISABLE_SCHEMA_UPDATE", "true")]).await;
    let (status, body) = gw.client().get_json("/health/readiness").await;
    assert_eq!(status, 200);
    assert_eq!(body["db"], "connected", "{body}");
    assert_eq!(body["status"], "connected", "{body}");
    let updated = body["last_updated"].as_str().expect("last_updated");
    assert!(updated.starts_with("20") && updated.contains('T'), "{body}");
    let (status, _, body) = gw.client().post_json("/key/generate", &json!({})).await;
    assert_eq!(status, 200, "{body}");
}

/// A TCP relay to PostgreSQL that the test can cut (every connection dropped, new ones refused)
/// and restore: a database outage without touching the shared server.
struct Relay {
    port: u16,
    up: std::sync::Arc<std::sync::atomic::AtomicBool>,
    conns: std::sync::Arc<parking_lot::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Relay {
    async fn start(target: String) -> Relay {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let conns: std::sync::Arc<parking_lot::Mutex<Vec<tokio::task::JoinHandle<()>>>> =
            Default::default();
        let (up2, conns2) = (up.clone(), conns.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    continue;
                };
                if !up2.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let target = target.clone();
                conns2.lock().push(tokio::spawn(async move {
                    if let Ok(mut server) = tokio::net::TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                }));
            }
        });
        Relay { port, up, conns }
    }

    fn cut(&self) {
        self.up.store(false, std::sync::atomic::Ordering::SeqCst);
        for c in self.conns.lock().drain(..) {
            c.abort();
        }
    }

    fn restore(&self) {
        self.up.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// The test database's URL with its host and port replaced by the relay's.
fn through(relay: &Relay) -> String {
    let url = test_database_url();
    let (scheme, rest) = url.split_once("://").unwrap();
    let (auth, hostpath) = rest.rsplit_once('@').map_or(("", rest), |(a, h)| (a, h));
    let path = hostpath.split_once('/').map_or("", |(_, p)| p);
    let at = if auth.is_empty() {
        String::new()
    } else {
        format!("{auth}@")
    };
    format!("{scheme}://{at}127.0.0.1:{}/{path}", relay.port)
}

fn postgres_target() -> String {
    let url = test_database_url();
    let rest = url.split_once("://").unwrap().1;
    let hostpath = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    let host = hostpath.split('/').next().unwrap();
    if host.contains(':') {
        host.to_string()
    } else {
        format!("{host}:5432")
    }
}

async fn readiness(gw: &Gateway) -> u16 {
    gw.client().get_json("/health/readiness").await.0
}

#[tokio::test]
async fn database_outage_with_and_without_allow_requests_on_db_unavailable() {
    let mock = MockProvider::start(MockConfig::default()).await;
    let relay = Relay::start(postgres_target()).await;
    let database = format!(
        "  database_url: {}\n  database_connection_timeout: 2\n",
        through(&relay)
    );
    let redis = format!("  redis_url: {}\n", test_redis_url());
    let tolerant_config = config(
        &mock,
        &database,
        "  allow_requests_on_db_unavailable: true\n",
        &redis,
    );
    let tolerant = Gateway::start(&tolerant_config).await;
    let strict = Gateway::start(&config(&mock, &database, "", &redis)).await;
    // An instance that never sees the key before the outage: it finds it in Redis.
    let fresh = Gateway::start(&tolerant_config).await;

    let (_, _, k) = tolerant
        .client()
        .post_json("/key/generate", &json!({"max_budget": 100.0}))
        .await;
    let key = k["key"].as_str().unwrap().to_string();
    let (_, _, other) = tolerant
        .client()
        .post_json("/key/generate", &json!({}))
        .await;
    let uncached = other["key"].as_str().unwrap().to_string();
    // Both instances learn the first key.
    for gw in [&tolerant, &strict] {
        let (s, _, b) = as_key(gw, &key)
            .post_json("/v1/chat/completions", &chat())
            .await;
        assert_eq!(s, 200, "{b}");
    }
    // The change feed applies the keys' creation (newer than the first reads above) and
    // records it as the keys' version in Redis: the entries shared through Redis must still
    // count as current after that.
    for token in [sha256_hex(&key), sha256_hex(&uncached)] {
        let versioned = eventually(Duration::from_secs(5), || async {
            redis_get(&format!("sluice:ver:key:{token}"))
                .await
                .map(|_| ())
        })
        .await;
        assert!(
            versioned.is_some(),
            "no instance applied the key's creation"
        );
    }

    relay.cut();
    // The strict instance leaves the rotation (503, LiteLLM's body); the tolerant one stays
    // ready and says the database is disconnected.
    let down = eventually(Duration::from_secs(6), || async {
        (readiness(&strict).await == 503).then_some(())
    })
    .await;
    assert!(down.is_some(), "readiness never reported the outage");
    let (_, body) = strict.client().get_json("/health/readiness").await;
    assert_eq!(
        body["detail"], "Service Unhealthy (DB not connected)",
        "{body}"
    );
    let tolerant_body = eventually(Duration::from_secs(6), || async {
        let (s, body) = tolerant.client().get_json("/health/readiness").await;
        (s == 200 && body["db"] == "disconnected").then_some(body)
    })
    .await;
    let tolerant_body = tolerant_body.expect("the tolerant instance left the rotation");
    assert_eq!(tolerant_body["status"], "disconnected", "{tolerant_body}");
    assert_eq!(tolerant_body["cache"], "redis", "{tolerant_body}");

    // Cached key keeps working on the tolerant instance; an unknown one cannot be checked.
    let (s, _, b) = as_key(&tolerant, &key)
        .post_json("/v1/chat/completions", &chat())
        .await;
    assert_eq!(s, 200, "{b}");
    let (s, _, b) = as_key(&tolerant, &uncached)
        .post_json("/v1/chat/completions", &chat())
        .await;
    assert_eq!(s, 503, "{b}");
    assert_eq!(b["error"]["type"], "no_db_connection");
    // A key any instance read is shared through Redis: usable on an instance that never saw it.
    let (s, _, b) = as_key(&fresh, &key)
        .post_json("/v1/chat/completions", &chat())
        .await;
    assert_eq!(s, 200, "{b}");
    // The strict instance refuses clearly.
    let (s, _, b) = as_key(&strict, &key)
        .post_json("/v1/chat/completions", &chat())
        .await;
    assert_eq!(s, 503, "{b}");
    assert_eq!(b["error"]["type"], "no_db_connection");
    // The admin API needs the database.
    let (s, _, _) = tolerant
        .client()
        .post_json("/key/generate", &json!({}))
        .await;
    assert_eq!(s, 503);

    relay.restore();
    for gw in [&tolerant, &strict] {
        let up = eventually(Duration::from_secs(8), || async {
            let (s, body) = gw.client().get_json("/health/readiness").await;
            (s == 200 && body["db"] == "connected").then_some(())
        })
        .await;
        assert!(up.is_some(), "readiness never recovered");
    }
    // Spend incurred during the outage is written once the database is back: 4 calls.
    let admin = tolerant.client();
    let spend = eventually(Duration::from_secs(8), || async {
        let s = key_spend(&admin, &key).await;
        ((s - 4.0 * COST).abs() < 1e-9).then_some(s)
    })
    .await;
    assert!(
        spend.is_some(),
        "spend during the outage was lost: {}",
        key_spend(&admin, &key).await
    );
    let (s, _, _) = as_key(&strict, &key)
        .post_json("/v1/chat/completions", &chat())
        .await;
    assert_eq!(s, 200);
}

#[tokio::test]
async fn keys_never_reach_logs_or_spend_logs() {
    let mock = MockProvider::start(MockConfig::default()).await;
    let gw = Gateway::start(&config(&mock, "", "", "")).await;
    let admin = gw.client();
    let (_, _, k) = admin
        .post_json("/key/generate", &json!({"key_alias": "secret-test"}))
        .await;
    let key = k["key"].as_str().unwrap().to_string();
    let user = as_key(&gw, &key);
    assert_eq!(user.post_json("/v1/chat/completions", &chat()).await.0, 200);
    assert_eq!(
        as_key(&gw, "sk-wrong-key-123")
            .post_json("/v1/chat/completions", &chat())
            .await
            .0,
        401
    );
    let logs_rows = eventually(Duration::from_secs(5), || async {
        let (_, rows) = admin.get_json(&format!("/spend/logs?api_key={key}")).await;
        (!rows.as_array()?.is_empty()).then_some(rows)
    })
    .await
    .expect("spend log row");
    let text = logs_rows.to_string();
    assert!(!text.contains(&key), "raw key in spend logs");
    assert!(!text.contains(MASTER_KEY));
    let logs = gw.logs();
    assert!(
        !logs.contains(&key) && !logs.contains(MASTER_KEY) && !logs.contains("sk-wrong-key-123")
    );
}

#[tokio::test]
async fn hanging_up_on_a_stream_or_asking_for_many_choices_cannot_dodge_the_budget() {
    use futures_util::StreamExt;
    let mock = MockProvider::start(MockConfig::default()).await;
    let gw = Gateway::start(&config(&mock, "", "", "")).await;
    let admin = gw.client();
    let (_, _, k) = admin
        .post_json("/key/generate", &json!({"max_budget": 10.0}))
        .await;
    let key = k["key"].as_str().unwrap().to_string();
    let user = as_key(&gw, &key);
    // max_tokens 50 reserves 0.5; the mock's stream uses 5 tokens (0.05) with usage at the end.
    let body = json!({"model": "gpt-4o", "stream": true, "max_tokens": 50,
        "messages": [{"role": "user", "content": "hi"}],
        "mock": {"chunks": 5, "chunk_delay_ms": 150}});
    let resp = user
        .post("/v1/chat/completions")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut stream = resp.bytes_stream();
    let first = stream.next().await.expect("a first chunk").unwrap();
    assert!(!first.is_empty());
    drop(stream);
    // Hung up before the usage chunk: charged the reserved worst case.
    let charged = eventually(Duration::from_secs(5), || async {
        let s = key_spend(&admin, &key).await;
        (s > 0.0).then_some(s)
    })
    .await
    .expect("the cut stream was charged");
    assert!((charged - 0.5).abs() < 1e-9, "charged {charged}");
    // A stream read to the end is charged its usage.
    let resp = user
        .post("/v1/chat/completions")
        .json(&body)
        .send()
        .await
        .unwrap();
    let text = resp.text().await.unwrap();
    assert!(text.contains("[DONE]"));
    let total = eventually(Duration::from_secs(5), || async {
        let s = key_spend(&admin, &key).await;
        ((s - 0.55).abs() < 1e-9).then_some(s)
    })
    .await;
    assert!(
        total.is_some(),
        "full stream not charged 0.05: {}",
        key_spend(&admin, &key).await
    );

    // n = 8 completions reserve eight outputs. With fail_closed_budget_enforcement the whole
    // worst case must fit: over a 0.3 budget although one completion would fit.
    let strict = Gateway::start(&config(
        &mock,
        "",
        "  fail_closed_budget_enforcement: true\n",
        "",
    ))
    .await;
    let (_, _, k) = strict
        .client()
        .post_json("/key/generate", &json!({"max_budget": 0.3}))
        .await;
    let small = as_key(&strict, k["key"].as_str().unwrap());
    let mut many = chat();
    many["n"] = json!(8);
    let (s, _, b) = small.post_json("/v1/chat/completions", &many).await;
    assert_eq!(s, 400, "{b}");
    assert_eq!(b["error"]["type"], "budget_exceeded");
    assert_eq!(
        small.post_json("/v1/chat/completions", &chat()).await.0,
        200
    );
}

#[tokio::test]
async fn regenerate_unsupported_fields_and_unchanged_windows() {
    let mock = MockProvider::start(MockConfig::default()).await;
    let gw = Gateway::start(&config(&mock, "", "", "")).await;
    let admin = gw.client();
    let (_, _, k) = admin
        .post_json(
            "/key/generate",
            &json!({"key_alias": unique("regen"), "budget_duration": "30d", "max_budget": 5.0}),
        )
        .await;
    let old = k["key"].as_str().unwrap().to_string();
    let reset_at = k["budget_reset_at"].clone();
    assert!(reset_at.is_string(), "{k}");
    assert_eq!(
        as_key(&gw, &old)
            .post_json("/v1/chat/completions", &chat())
            .await
            .0,
        200
    );
    eventually(Duration::from_secs(5), || async {
        ((key_spend(&admin, &old).await - COST).abs() < 1e-9).then_some(())
    })
    .await
    .expect("spend written");

    // Resending the same budget_duration keeps the window.
    let (s, _, updated) = admin
        .post_json(
            "/key/update",
            &json!({"key": old, "budget_duration": "30d", "max_budget": 6.0}),
        )
        .await;
    assert_eq!(s, 200, "{updated}");
    assert_eq!(updated["budget_reset_at"], reset_at);
    // A new one starts a new window.
    let (_, _, updated) = admin
        .post_json("/key/update", &json!({"key": old, "budget_duration": "7d"}))
        .await;
    assert_ne!(updated["budget_reset_at"], reset_at);

    // A grace period for the old key is not supported: refused, nothing changes.
    let (s, _, b) = admin
        .post_json(
            &format!("/key/{old}/regenerate"),
            &json!({"grace_period": "24h"}),
        )
        .await;
    assert_eq!(s, 400, "{b}");
    // Regenerate: a new key with the old one's spend; the old one stops working.
    let (s, _, fresh) = admin
        .post_json(&format!("/key/{old}/regenerate"), &json!({}))
        .await;
    assert_eq!(s, 200, "{fresh}");
    let new_key = fresh["key"].as_str().unwrap().to_string();
    assert_ne!(new_key, old);
    assert_eq!(fresh["max_budget"], 6.0);
    assert!((key_spend(&admin, &new_key).await - COST).abs() < 1e-9);
    let refused = eventually(Duration::from_secs(2), || async {
        let (s, _, _) = as_key(&gw, &old)
            .post_json("/v1/chat/completions", &chat())
            .await;
        (s == 401).then_some(())
    })
    .await;
    assert!(refused.is_some(), "the old key still works");
    assert_eq!(
        as_key(&gw, &new_key)
            .post_json("/v1/chat/completions", &chat())
            .await
            .0,
        200
    );

    // Restrictions Sluice does not enforce are refused, not silently ignored.
    for (route, body) in [
        ("/key/generate", json!({"allowed_routes": ["/embeddings"]})),
        ("/key/generate", json!({"enforced_params": ["user"]})),
        ("/key/generate", json!({"guardrails": ["pii"]})),
        (
            "/key/generate",
            json!({"tpm_limit_type": "guaranteed_throughput"}),
        ),
        ("/team/new", json!({"model_rpm_limit": {"gpt-4o": 1}})),
        (
            "/team/new",
            json!({"model_max_budget": {"gpt-4o": {"budget_limit": 1.0}}}),
        ),
        (
            "/customer/new",
            json!({"user_id": unique("c"), "allowed_model_region": "eu"}),
        ),
    ] {
        let (s, _, b) = admin.post_json(route, &body).await;
        assert_eq!(s, 400, "{route} {body}: {b}");
        assert!(error_message(&b, 400).contains("not supported"), "{b}");
    }
    // The default rate-limit behaviour may be named.
    let (s, _, b) = admin
        .post_json(
            "/key/generate",
            &json!({"tpm_limit_type": "best_effort_throughput"}),
        )
        .await;
    assert_eq!(s, 200, "{b}");

    // A user's model list governs its own keys.
    let narrow = unique("narrow");
    let (s, _, b) = admin
        .post_json(
            "/user/new",
            &json!({"user_id": narrow, "models": ["text-embedding"], "auto_create_key": false}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let (_, _, k) = admin
        .post_json("/key/generate", &json!({"user_id": narrow}))
        .await;
    let narrow_key = as_key(&gw, k["key"].as_str().unwrap());
    let (s, _, b) = narrow_key.post_json("/v1/chat/completions", &chat()).await;
    assert_eq!(s, 401, "{b}");
    assert_eq!(b["error"]["type"], "user_model_access_denied", "{b}");
    let (s, _, b) = narrow_key
        .post_json(
            "/v1/embeddings",
            &json!({"model": "text-embedding", "input": "x"}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    // Absurd durations are refused, not wrapped around.
    let (s, _, b) = admin
        .post_json(
            "/key/generate",
            &json!({"budget_duration": "2305843009213693952s"}),
        )
        .await;
    assert_eq!(s, 400, "{b}");
    // End-user ids with NUL characters are refused before they reach a database.
    let mut req = chat();
    req["user"] = json!("a\u{0}b");
    let (s, _, b) = admin.post_json("/v1/chat/completions", &req).await;
    assert_eq!(s, 400, "{b}");
}

/// The rest of the admin API's shapes, on PostgreSQL: budgets, customers, deletes, paging.
#[tokio::test]
async fn budgets_customers_deletes_and_paging() {
    let mock = MockProvider::start(MockConfig::default()).await;
    let gw = Gateway::start(&config(&mock, &postgres(), "", "")).await;
    let admin = gw.client();
    // A shared database without Redis is said to enforce limits per instance.
    assert!(
        gw.logs().contains("PostgreSQL without Redis"),
        "{}",
        gw.logs()
    );

    // Budgets: budget_reset_at = now + duration.
    let budget_id = unique("budget");
    let (s, _, budget) = admin
        .post_json(
            "/budget/new",
            &json!({"budget_id": budget_id, "max_budget": 0.05, "budget_duration": "1d", "rpm_limit": 100}),
        )
        .await;
    assert_eq!(s, 200, "{budget}");
    assert_eq!(budget["budget_id"], budget_id.as_str());
    let created = sluice_time(&budget["created_at"]);
    let reset = sluice_time(&budget["budget_reset_at"]);
    assert!((reset - created - 86_400_000).abs() < 3_000, "{budget}");
    let (s, info) = admin
        .get_json(&format!("/budget/info?budget_id={budget_id}"))
        .await;
    assert_eq!(s, 200);
    assert_eq!(info[0]["max_budget"], 0.05);
    let (s, _, info) = admin
        .post_json("/budget/info", &json!({"budgets": [budget_id]}))
        .await;
    assert_eq!(s, 200);
    assert_eq!(info.as_array().unwrap().len(), 1);

    // Customers linked to a budget take its limits.
    let customer = unique("cust");
    let (s, _, c) = admin
        .post_json(
            "/end_user/new",
            &json!({"user_id": customer, "budget_id": budget_id, "alias": "acme"}),
        )
        .await;
    assert_eq!(s, 200, "{c}");
    assert_eq!(c["max_budget"], 0.05);
    assert_eq!(c["alias"], "acme");
    let (s, _, _) = admin
        .post_json("/customer/new", &json!({"user_id": customer}))
        .await;
    assert_eq!(s, 400, "duplicate customer");
    let (s, info) = admin
        .get_json(&format!("/customer/info?end_user_id={customer}"))
        .await;
    assert_eq!(s, 200, "{info}");
    assert_eq!(info["user_id"], customer.as_str());
    let mut req = chat();
    req["user"] = json!(customer);
    // The customer's spend so far, from the answers' cost headers: its rows are written
    // every proxy_batch_write_at, and must have landed before the customer is deleted.
    let spent = std::cell::Cell::new(0.0);
    let call = || async {
        let (s, headers, _) = admin.post_json("/v1/chat/completions", &req).await;
        if let Some(cost) = headers.get("x-litellm-response-cost") {
            spent.set(spent.get() + cost.to_str().unwrap().parse::<f64>().unwrap());
        }
        s
    };
    assert_eq!(call().await, 200);
    assert_eq!(call().await, 400);
    let (s, _, updated) = admin
        .post_json(
            "/customer/update",
            &json!({"user_id": customer, "max_budget": 1.0}),
        )
        .await;
    assert_eq!(s, 200, "{updated}");
    let raised = eventually(Duration::from_secs(2), || async {
        (call().await == 200).then_some(())
    })
    .await;
    assert!(raised.is_some(), "the raised customer budget did not apply");
    let (s, _, _) = admin
        .post_json("/customer/block", &json!({"user_ids": [customer]}))
        .await;
    assert_eq!(s, 200);
    let blocked = eventually(Duration::from_secs(2), || async {
        (call().await == 400).then_some(())
    })
    .await;
    assert!(blocked.is_some(), "a blocked customer kept calling");
    let (s, list) = admin.get_json("/customer/list").await;
    assert_eq!(s, 200);
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .any(|c| c["user_id"] == customer.as_str())
    );
    let landed = eventually(Duration::from_secs(5), || async {
        let (_, info) = admin
            .get_json(&format!("/customer/info?end_user_id={customer}"))
            .await;
        let recorded = info["spend"].as_f64().unwrap_or(-1.0);
        ((recorded - spent.get()).abs() < 1e-9).then_some(())
    })
    .await;
    assert!(
        landed.is_some(),
        "the customer's spend {} was not written",
        spent.get()
    );
    let (s, _, d) = admin
        .post_json("/customer/delete", &json!({"user_ids": [customer]}))
        .await;
    assert_eq!(s, 200, "{d}");
    let (s, _) = admin
        .get_json(&format!("/customer/info?end_user_id={customer}"))
        .await;
    assert_eq!(s, 400);

    // Paging of /key/list.
    let team = unique("paging");
    admin
        .post_json("/team/new", &json!({"team_id": team}))
        .await;
    for _ in 0..3 {
        admin
            .post_json("/key/generate", &json!({"team_id": team}))
            .await;
    }
    let (s, page) = admin
        .get_json(&format!(
            "/key/list?team_id={team}&size=2&page=2&return_full_object=true"
        ))
        .await;
    assert_eq!(s, 200, "{page}");
    assert_eq!(page["total_count"], 3);
    assert_eq!(page["total_pages"], 2);
    assert_eq!(page["current_page"], 2);
    assert_eq!(page["keys"].as_array().unwrap().len(), 1);
    assert_eq!(page["keys"][0]["team_id"], team.as_str());

    // Deleting a team deletes its keys; deleting a user deletes theirs.
    let key = {
        let (_, _, k) = admin
            .post_json("/key/generate", &json!({"team_id": team}))
            .await;
        k["key"].as_str().unwrap().to_string()
    };
    assert_eq!(
        as_key(&gw, &key)
            .post_json("/v1/chat/completions", &chat())
            .await
            .0,
        200
    );
    let (s, _, d) = admin
        .post_json("/team/delete", &json!({"team_ids": [team]}))
        .await;
    assert_eq!(s, 200, "{d}");
    assert_eq!(d["deleted_teams"], json!([team]));
    let (s, _) = admin.get_json(&format!("/team/info?team_id={team}")).await;
    assert_eq!(s, 404);
    let gone = eventually(Duration::from_secs(2), || async {
        (as_key(&gw, &key)
            .post_json("/v1/chat/completions", &chat())
            .await
            .0
            == 401)
            .then_some(())
    })
    .await;
    assert!(gone.is_some(), "a deleted team's key still works");
    let (s, _, d) = admin
        .post_json("/team/delete", &json!({"team_ids": [team]}))
        .await;
    assert_eq!(s, 404, "{d}");

    let (_, _, u) = admin
        .post_json("/user/new", &json!({"user_role": "internal_user"}))
        .await;
    let user_id = u["user_id"].as_str().unwrap().to_string();
    let user_key = u["key"].as_str().unwrap().to_string();
    let (s, _, d) = admin
        .post_json("/user/delete", &json!({"user_ids": [user_id]}))
        .await;
    assert_eq!(s, 200, "{d}");
    let (s, _) = admin
        .get_json(&format!("/user/info?user_id={user_id}"))
        .await;
    assert_eq!(s, 404);
    let gone = eventually(Duration::from_secs(2), || async {
        (as_key(&gw, &user_key)
            .post_json("/v1/chat/completions", &chat())
            .await
            .0
            == 401)
            .then_some(())
    })
    .await;
    assert!(gone.is_some(), "a deleted user's key still works");

    // A proxy admin's key may manage; unknown routes under the API are 404.
    let (_, _, a) = admin
        .post_json("/user/new", &json!({"user_role": "proxy_admin"}))
        .await;
    let admin_key = as_key(&gw, a["key"].as_str().unwrap());
    let (s, _, b) = admin_key.post_json("/team/new", &json!({})).await;
    assert_eq!(s, 200, "{b}");
    let (s, _) = admin.get_json("/key/no-such-route").await;
    assert_eq!(s, 404);
}

/// Unix milliseconds of an ISO timestamp from the API.
fn sluice_time(v: &Value) -> i64 {
    let text = v.as_str().expect("timestamp");
    let t = humantime::parse_rfc3339_weak(text.trim_end_matches('Z')).expect("ISO time");
    t.duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

#[tokio::test]
async fn a_killed_instance_does_not_hold_budget_or_parallel_slots_for_ever() {
    let fast = MockProvider::start(MockConfig::default()).await;
    let hanging = MockProvider::start(MockConfig {
        latency: Duration::from_secs(120),
        ..MockConfig::default()
    })
    .await;
    let redis = format!("  redis_url: {}\n", test_redis_url());
    // A second group whose deployment never answers in time.
    let cfg = config(&fast, &postgres(), "", &redis).replacen(
        "model_list:\n",
        &format!(
            "model_list:\n  - model_name: slow\n    litellm_params:\n      model: openai/gpt-4o-mini\n      api_base: {}\n      api_key: sk-upstream\n      timeout: 300\n      output_cost_per_token: 0.01\n",
            hanging.api_base()
        ),
        1,
    );
    let mut doomed = Gateway::start(&cfg).await;
    let survivor = Gateway::start(&cfg).await;
    // One key allows one request at a time; the other has a budget that a hanging request's
    // reservation (8 tokens at 0.01) leaves too little of for another (5 tokens).
    let mut keys = Vec::new();
    for limits in [
        json!({"max_parallel_requests": 1}),
        json!({"max_budget": 0.1}),
    ] {
        let (status, _, k) = doomed.client().post_json("/key/generate", &limits).await;
        assert_eq!(status, 200, "{k}");
        keys.push(k["key"].as_str().unwrap().to_string());
    }
    let mut in_flight = Vec::new();
    for key in &keys {
        let held = as_key(&doomed, key);
        in_flight.push(tokio::spawn(async move {
            held.post_json(
                "/v1/chat/completions",
                &json!({"model": "slow", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}),
            )
            .await
        }));
    }
    // Both are admitted and waiting on the provider (admission comes before forwarding).
    let waiting = eventually(Duration::from_secs(10), || async {
        (hanging.calls() >= 2).then_some(())
    })
    .await;
    assert!(
        waiting.is_some(),
        "the hanging requests never reached the provider"
    );
    // The other instance sees the slot and the budget taken.
    for (key, status, words) in [(&keys[0], 429, "parallel"), (&keys[1], 400, "budget")] {
        let user = as_key(&survivor, key);
        let refused = eventually(Duration::from_secs(5), || async {
            let (s, _, b) = user.post_json("/v1/chat/completions", &chat()).await;
            (s == status).then_some(b)
        })
        .await
        .unwrap_or_else(|| panic!("the hanging request never held the {words} of its key"));
        assert!(
            refused["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .to_lowercase()
                .contains(words),
            "{refused}"
        );
    }
    // The instance dies without settling (no SIGTERM drain).
    doomed.signal(9);
    assert!(doomed.wait_exit(Duration::from_secs(5)).await.is_some());
    for t in in_flight {
        let _ = t.await;
    }
    // Once its liveness has expired, its holds no longer count.
    let started = Instant::now();
    for key in &keys {
        let user = as_key(&survivor, key);
        let admitted = eventually(Duration::from_secs(25), || async {
            let (s, _, _) = user.post_json("/v1/chat/completions", &chat()).await;
            (s == 200).then_some(())
        })
        .await;
        assert!(
            admitted.is_some(),
            "the killed instance's hold was never released"
        );
    }
    assert!(
        started.elapsed() >= Duration::from_secs(3),
        "released before the instance's liveness expired ({:?})",
        started.elapsed()
    );
}

/// Month windows (`1mo`) of a key budget and of a per-model budget (which only the ledger
/// keeps), with the gateway's injectable clock moved on instead of waiting a month.
async fn month_windows_roll_when_the_clock_passes_them(redis: &str) {
    let mock = MockProvider::start(MockConfig::default()).await;
    let clock = scratch_path("clock");
    std::fs::write(&clock, "0").unwrap();
    // SQLite (the default, one file per gateway): the feed's pruning follows the clock too,
    // which must not touch the database other tests share.
    let gw = Gateway::start_with(
        &config(&mock, "", "", redis),
        &[],
        &[("SLUICE_TEST_CLOCK_FILE", clock.to_str().unwrap())],
    )
    .await;
    let admin = gw.client();
    let mut keys = Vec::new();
    for limits in [
        json!({"max_budget": COST, "budget_duration": "1mo"}),
        json!({"model_max_budget": {"gpt-4o": {"budget_limit": COST, "time_period": "1mo"}}}),
    ] {
        let (status, _, k) = admin.post_json("/key/generate", &limits).await;
        assert_eq!(status, 200, "{k}");
        keys.push(k["key"].as_str().unwrap().to_string());
    }
    let (_, first) = admin.get_json(&format!("/key/info?key={}", keys[0])).await;
    let first_reset = first["info"]["budget_reset_at"]
        .as_str()
        .unwrap()
        .to_string();
    for key in &keys {
        let user = as_key(&gw, key);
        assert_eq!(user.post_json("/v1/chat/completions", &chat()).await.0, 200);
        let (s, _, b) = user.post_json("/v1/chat/completions", &chat()).await;
        assert_eq!(s, 400, "{b}");
        assert!(
            b["error"]["message"].as_str().unwrap().contains("udget"),
            "{b}"
        );
    }
    // Five days on: still the same window.
    let today = gateway_day(&gw).await;
    std::fs::write(&clock, (5 * 86_400_000i64).to_string()).unwrap();
    let moved = eventually(Duration::from_secs(5), || async {
        (gateway_day(&gw).await >= today + 5).then_some(())
    })
    .await;
    assert!(
        moved.is_some(),
        "the gateway's clock did not follow the file"
    );
    for key in &keys {
        let (s, _, b) = as_key(&gw, key)
            .post_json("/v1/chat/completions", &chat())
            .await;
        assert_eq!(s, 400, "refused within the window: {b}");
    }
    // Thirty-two days on: every month window has ended.
    std::fs::write(&clock, (32 * 86_400_000i64).to_string()).unwrap();
    for key in &keys {
        let user = as_key(&gw, key);
        let again = eventually(Duration::from_secs(10), || async {
            let (s, _, _) = user.post_json("/v1/chat/completions", &chat()).await;
            (s == 200).then_some(())
        })
        .await;
        assert!(again.is_some(), "a 1mo budget never reset ({redis:?})");
    }
    // The stored window moved on by a calendar month.
    let moved = eventually(Duration::from_secs(5), || async {
        let (_, info) = admin.get_json(&format!("/key/info?key={}", keys[0])).await;
        let reset = info["info"]["budget_reset_at"].as_str()?.to_string();
        (reset != first_reset).then_some(reset)
    })
    .await
    .expect("budget_reset_at never moved");
    assert!(moved > first_reset, "{moved} after {first_reset}");
}

#[tokio::test]
async fn month_windows_roll_in_process() {
    month_windows_roll_when_the_clock_passes_them("").await;
}

#[tokio::test]
async fn month_windows_roll_in_redis() {
    month_windows_roll_when_the_clock_passes_them(&format!("  redis_url: {}\n", test_redis_url()))
        .await;
}

#[tokio::test]
async fn proxy_wide_budget_and_default_end_user_budget() {
    let mock = MockProvider::start(MockConfig::default()).await;
    // Room for two calls through virtual keys; end users without a budget get one call.
    let cfg = format!(
        "{}litellm_settings:\n  max_budget: {}\n  budget_duration: 30d\n  max_end_user_budget: {COST}\n",
        config(&mock, "", "", ""),
        2.0 * COST
    );
    let gw = Gateway::start(&cfg).await;
    let admin = gw.client();
    let mut keys = Vec::new();
    for _ in 0..2 {
        let (_, _, k) = admin.post_json("/key/generate", &json!({})).await;
        keys.push(as_key(&gw, k["key"].as_str().unwrap()));
    }
    // The master key's spend counts toward the proxy's budget (it is not held to it).
    assert_eq!(
        admin.post_json("/v1/chat/completions", &chat()).await.0,
        200
    );
    assert_eq!(
        keys[0].post_json("/v1/chat/completions", &chat()).await.0,
        200
    );
    // Two keys of their own, no limits: the proxy's budget, spent by the master key and the
    // first key together, is what stops the second key.
    let (s, _, b) = keys[1].post_json("/v1/chat/completions", &chat()).await;
    assert_eq!(s, 400, "{b}");
    assert_eq!(b["error"]["type"], "budget_exceeded", "{b}");
    assert!(
        error_message(&b, 400).contains("Budget has been exceeded!"),
        "{b}"
    );
    // The master key itself is not held to it, as in LiteLLM.
    assert_eq!(
        admin.post_json("/v1/chat/completions", &chat()).await.0,
        200
    );
    let global = eventually(Duration::from_secs(5), || async {
        let (_, g) = admin.get_json("/global/spend").await;
        ((g["spend"].as_f64()? - 3.0 * COST).abs() < 1e-9).then_some(g)
    })
    .await
    .expect("/global/spend never counted the three calls");
    assert_eq!(global["max_budget"], 2.0 * COST, "{global}");
    // LiteLLM's bookkeeping user for it.
    let (s, u) = admin
        .get_json("/user/info?user_id=litellm-proxy-budget")
        .await;
    assert_eq!(s, 200, "{u}");
    assert_eq!(u["user_info"]["max_budget"], 2.0 * COST, "{u}");
    assert!(
        (u["user_info"]["spend"].as_f64().unwrap() - 3.0 * COST).abs() < 1e-9,
        "{u}"
    );
    assert!(u["user_info"]["budget_reset_at"].is_string(), "{u}");

    // An end user with no budget of its own gets max_end_user_budget.
    let mut req = chat();
    req["user"] = json!(unique("enduser"));
    assert_eq!(admin.post_json("/v1/chat/completions", &req).await.0, 200);
    let (s, _, b) = admin.post_json("/v1/chat/completions", &req).await;
    assert_eq!(s, 400, "{b}");
    assert!(error_message(&b, 400).contains("End User="), "{b}");
}

/// What keys that are not proxy admins may do, as LiteLLM's roles allow it: internal users
/// manage their own personal keys, team admins their team's keys, members and name, viewers
/// read; nothing mints an admin key or more than the caller has.
#[tokio::test]
async fn roles_internal_users_team_admins_and_viewers() {
    let mock = MockProvider::start(MockConfig::default()).await;
    let gw = Gateway::start(&config(&mock, "", "", "")).await;
    let admin = gw.client();
    let team = unique("team");
    let (s, _, b) = admin
        .post_json(
            "/team/new",
            &json!({"team_id": team, "max_budget": 10.0, "tpm_limit": 1000}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let mut users = HashMap::new();
    for (name, role) in [
        ("alice", "internal_user"),
        ("bob", "internal_user"),
        ("vera", "proxy_admin_viewer"),
        ("ivy", "internal_user_viewer"),
    ] {
        let id = unique(name);
        let (s, _, b) = admin
            .post_json(
                "/user/new",
                &json!({"user_id": id, "user_role": role, "auto_create_key": false}),
            )
            .await;
        assert_eq!(s, 200, "{b}");
        users.insert(name, id);
    }
    for (name, role) in [("alice", "admin"), ("bob", "user")] {
        let (s, _, b) = admin
            .post_json(
                "/team/member_add",
                &json!({"team_id": team, "member": {"role": role, "user_id": users[name]}}),
            )
            .await;
        assert_eq!(s, 200, "{b}");
    }
    // /user/new with `teams` makes the user a member, as LiteLLM.
    let dave = unique("dave");
    let (s, _, b) = admin
        .post_json(
            "/user/new",
            &json!({"user_id": dave, "teams": [team], "auto_create_key": false}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["teams"], json!([team]), "{b}");
    let (_, info) = admin.get_json(&format!("/team/info?team_id={team}")).await;
    assert!(
        info["team_info"]["members_with_roles"]
            .as_array()
            .unwrap()
            .iter()
            .any(|mem| mem["user_id"] == dave.as_str() && mem["role"] == "user"),
        "{info}"
    );
    let (s, _, b) = admin
        .post_json(
            "/user/new",
            &json!({"user_id": unique("eve"), "teams": ["no-such-team"]}),
        )
        .await;
    assert_eq!(s, 404, "{b}");
    let mut clients = HashMap::new();
    for name in ["alice", "bob", "vera", "ivy"] {
        let limits = if name == "alice" {
            json!({"user_id": users[name], "max_budget": 1.0, "models": ["gpt-4o"]})
        } else {
            json!({"user_id": users[name]})
        };
        let (s, _, k) = admin.post_json("/key/generate", &limits).await;
        assert_eq!(s, 200, "{k}");
        clients.insert(name, as_key(&gw, k["key"].as_str().unwrap()));
    }
    let (_, _, team_key) = admin
        .post_json("/key/generate", &json!({"team_id": team}))
        .await;
    let team_key = team_key["key"].as_str().unwrap().to_string();
    let alice = &clients["alice"];
    let bob = &clients["bob"];

    // An internal user creates personal keys for itself, never more than its own key has.
    let (s, _, own) = alice.post_json("/key/generate", &json!({})).await;
    assert_eq!(s, 200, "{own}");
    assert_eq!(own["user_id"], users["alice"].as_str(), "{own}");
    assert_eq!(own["max_budget"], 1.0, "inherited: {own}");
    assert_eq!(own["models"], json!(["gpt-4o"]), "inherited: {own}");
    let own_key = own["key"].as_str().unwrap().to_string();
    for body in [
        json!({"user_id": users["bob"]}),
        json!({"max_budget": 5.0}),
        json!({"models": ["text-embedding"]}),
    ] {
        let (s, _, b) = alice.post_json("/key/generate", &body).await;
        assert_eq!(s, 403, "{body}: {b}");
    }
    // A team admin creates team keys within the team's limits; a member cannot.
    let (s, _, b) = alice
        .post_json(
            "/key/generate",
            &json!({"team_id": team, "max_budget": 5.0}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let (s, _, b) = alice
        .post_json(
            "/key/generate",
            &json!({"team_id": team, "max_budget": 20.0}),
        )
        .await;
    assert_eq!(s, 400, "over the team's budget: {b}");
    let (s, _, b) = bob
        .post_json("/key/generate", &json!({"team_id": team}))
        .await;
    assert_eq!(s, 403, "{b}");

    // Updates: names of one's own keys; limits and state only as a team admin.
    let (s, _, b) = alice
        .post_json(
            "/key/update",
            &json!({"key": own_key, "key_alias": unique("mine")}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let (s, _, b) = alice
        .post_json("/key/update", &json!({"key": own_key, "max_budget": 100.0}))
        .await;
    assert_eq!(s, 403, "widening its own key: {b}");
    let (s, _, b) = bob
        .post_json(
            "/key/update",
            &json!({"key": own_key, "key_alias": unique("x")}),
        )
        .await;
    assert_eq!(s, 403, "someone else's key: {b}");
    let (s, _, b) = alice
        .post_json("/key/block", &json!({"key": own_key}))
        .await;
    assert_eq!(s, 403, "{b}");
    let (s, _, b) = alice
        .post_json("/key/block", &json!({"key": team_key}))
        .await;
    assert_eq!(s, 200, "{b}");
    // Only a proxy admin lifts a block (nothing records who set it).
    for (route, body) in [
        ("/key/unblock", json!({"key": team_key})),
        ("/key/update", json!({"key": team_key, "blocked": false})),
    ] {
        let (s, _, b) = alice.post_json(route, &body).await;
        assert_eq!(s, 403, "{route}: {b}");
    }
    let (s, _, b) = admin
        .post_json("/key/unblock", &json!({"key": team_key}))
        .await;
    assert_eq!(s, 200, "{b}");
    let (s, _, b) = alice
        .post_json("/key/update", &json!({"key": team_key, "rpm_limit": 10}))
        .await;
    assert_eq!(s, 200, "{b}");
    let (s, _, b) = alice
        .post_json(
            "/key/update",
            &json!({"key": team_key, "user_id": users["vera"]}),
        )
        .await;
    assert_eq!(s, 403, "a team key moved to another user: {b}");
    let (s, _, b) = alice
        .post_json(
            "/key/update",
            &json!({"key": team_key, "aliases": {"gpt-4o": "text-embedding"}}),
        )
        .await;
    assert_eq!(s, 403, "aliases route around model lists: {b}");
    // A team key of another user: a team admin may not regenerate it (the new key would act as
    // that user), nor touch it at all when that user is privileged.
    let (_, _, bobs_team_key) = admin
        .post_json(
            "/key/generate",
            &json!({"team_id": team, "user_id": users["bob"]}),
        )
        .await;
    let bobs_team_key = bobs_team_key["key"].as_str().unwrap().to_string();
    let (s, _, b) = alice
        .post_json("/key/regenerate", &json!({"key": bobs_team_key}))
        .await;
    assert_eq!(s, 403, "{b}");
    let (s, _, b) = alice
        .post_json(&format!("/key/{bobs_team_key}/regenerate"), &json!({}))
        .await;
    assert_eq!(s, 403, "{b}");
    let (s, _, b) = alice
        .post_json(
            "/key/update",
            &json!({"key": bobs_team_key, "rpm_limit": 5}),
        )
        .await;
    assert_eq!(s, 200, "a member's team key, within the team: {b}");
    let root = unique("root");
    admin
        .post_json(
            "/user/new",
            &json!({"user_id": root, "user_role": "proxy_admin", "auto_create_key": false}),
        )
        .await;
    let (_, _, roots_team_key) = admin
        .post_json("/key/generate", &json!({"team_id": team, "user_id": root}))
        .await;
    let roots_team_key = roots_team_key["key"].as_str().unwrap().to_string();
    for (route, body) in [
        (
            "/key/update",
            json!({"key": roots_team_key, "rpm_limit": 1}),
        ),
        ("/key/regenerate", json!({"key": roots_team_key})),
        ("/key/block", json!({"key": roots_team_key})),
        ("/key/delete", json!({"keys": [roots_team_key]})),
    ] {
        let (s, _, b) = alice.post_json(route, &body).await;
        assert_eq!(s, 403, "a proxy admin's key via {route}: {b}");
    }
    let (s, _, b) = alice
        .post_json(
            "/key/generate",
            &json!({"aliases": {"gpt-4o": "text-embedding"}}),
        )
        .await;
    assert_eq!(s, 403, "{b}");

    // A key's own window and expiry bind the keys it creates.
    let (_, _, timed) = admin
        .post_json(
            "/key/generate",
            &json!({"user_id": users["bob"], "max_budget": 2.0, "budget_duration": "1d", "duration": "1h"}),
        )
        .await;
    let timed_key = as_key(&gw, timed["key"].as_str().unwrap());
    let (s, _, made) = timed_key.post_json("/key/generate", &json!({})).await;
    assert_eq!(s, 200, "{made}");
    assert_eq!(made["budget_duration"], "1d", "{made}");
    assert!(
        made["expires"].as_str().unwrap() <= timed["expires"].as_str().unwrap(),
        "{made} outlives {timed}"
    );
    for body in [
        json!({"duration": "30d"}),
        json!({"budget_duration": "30d"}),
    ] {
        let (s, _, b) = timed_key.post_json("/key/generate", &body).await;
        assert_eq!(s, 403, "{body}: {b}");
    }

    // The team: its name and members by its admins, its limits by proxy admins only.
    let (s, _, b) = alice
        .post_json(
            "/team/update",
            &json!({"team_id": team, "team_alias": unique("renamed")}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let (s, _, b) = alice
        .post_json(
            "/team/update",
            &json!({"team_id": team, "max_budget": 1000.0}),
        )
        .await;
    assert_eq!(s, 403, "{b}");
    let (s, _, b) = bob
        .post_json(
            "/team/update",
            &json!({"team_id": team, "team_alias": unique("x")}),
        )
        .await;
    assert_eq!(s, 403, "{b}");
    let (s, _, b) = alice
        .post_json(
            "/team/member_add",
            &json!({"team_id": team, "member": {"role": "user", "user_id": unique("carol")}}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let (s, _, b) = bob
        .post_json(
            "/team/member_add",
            &json!({"team_id": team, "member": {"role": "admin", "user_id": users["bob"]}}),
        )
        .await;
    assert_eq!(s, 403, "a member making itself admin: {b}");
    let (s, b) = bob.get_json(&format!("/team/info?team_id={team}")).await;
    assert_eq!(s, 200, "members read their team: {b}");
    let seen = b["keys"].as_array().unwrap();
    assert!(!seen.is_empty(), "{b}");
    assert!(
        seen.iter().all(|k| k["user_id"] == users["bob"].as_str()),
        "a member sees only its own keys of the team: {b}"
    );
    let (_, b) = alice.get_json(&format!("/team/info?team_id={team}")).await;
    assert!(
        b["keys"].as_array().unwrap().len() > seen.len(),
        "the team admin sees every key: {b}"
    );

    // Lists: one's own keys; a team's keys for its admins.
    let (s, list) = alice
        .get_json("/key/list?return_full_object=true&size=100")
        .await;
    assert_eq!(s, 200, "{list}");
    let keys = list["keys"].as_array().unwrap();
    assert!(keys.len() >= 2, "{list}");
    assert!(
        keys.iter().all(|k| k["user_id"] == users["alice"].as_str()),
        "{list}"
    );
    let (s, _) = alice.get_json(&format!("/key/list?team_id={team}")).await;
    assert_eq!(s, 200);
    let (s, _) = bob.get_json(&format!("/key/list?team_id={team}")).await;
    assert_eq!(s, 403);

    // Spend logs: one's own rows only.
    assert_eq!(
        clients["alice"]
            .post_json("/v1/chat/completions", &chat())
            .await
            .0,
        200
    );
    assert_eq!(bob.post_json("/v1/chat/completions", &chat()).await.0, 200);
    let mine = eventually(Duration::from_secs(5), || async {
        let (s, rows) = alice.get_json("/spend/logs").await;
        assert_eq!(s, 200, "{rows}");
        let rows = rows.as_array()?.clone();
        (!rows.is_empty()).then_some(rows)
    })
    .await
    .expect("alice sees her spend");
    assert!(
        mine.iter().all(|r| r["user"] == users["alice"].as_str()),
        "{mine:?}"
    );

    // Admin-only routes stay admin-only.
    let (s, _, b) = alice
        .post_json(
            "/user/new",
            &json!({"user_id": unique("u"), "user_role": "proxy_admin"}),
        )
        .await;
    assert_eq!(s, 401, "{b}");
    let (s, _, b) = alice.post_json("/team/new", &json!({})).await;
    assert_eq!(s, 401, "{b}");

    // /team/list for members: their teams; all keys for a team admin, one's own for a member.
    let team_keys = |b: &Value| -> Vec<String> {
        let listed = b.as_array().unwrap();
        assert_eq!(listed.len(), 1, "{b}");
        assert_eq!(listed[0]["team_id"], team.as_str(), "{b}");
        listed[0]["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["user_id"].as_str().unwrap_or("").to_string())
            .collect()
    };
    let (s, b) = alice.get_json("/team/list").await;
    assert_eq!(s, 200, "{b}");
    let of_alice = team_keys(&b);
    assert!(of_alice.iter().any(|u| u != &users["alice"]), "{b}");
    let (s, b) = bob.get_json("/team/list").await;
    assert_eq!(s, 200, "{b}");
    let of_bob = team_keys(&b);
    assert!(
        !of_bob.is_empty() && of_bob.iter().all(|u| u == &users["bob"]),
        "{b}"
    );
    let (s, b) = clients["ivy"].get_json("/team/list").await;
    assert_eq!((s, b.clone()), (200, json!([])), "{b}");

    // /key/info: any key of one's own user, and the keys of a team one administers.
    let (s, b) = alice.get_json(&format!("/key/info?key={own_key}")).await;
    assert_eq!(s, 200, "another key of alice's: {b}");
    let (s, b) = alice
        .get_json(&format!("/key/info?key={bobs_team_key}"))
        .await;
    assert_eq!(s, 200, "a key of alice's team: {b}");
    for key in [own_key.as_str(), "sk-no-such-key-1234"] {
        let (s, b) = bob.get_json(&format!("/key/info?key={key}")).await;
        assert_eq!(s, 403, "{key}: {b}");
    }

    // Viewers read everything and change nothing.
    let vera = &clients["vera"];
    let (s, b) = vera.get_json("/key/list").await;
    assert_eq!(s, 200, "{b}");
    assert!(b["total_count"].as_i64().unwrap() >= 6, "{b}");
    let (s, b) = vera.get_json(&format!("/key/info?key={own_key}")).await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = vera
        .get_json(&format!("/user/info?user_id={}", users["bob"]))
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(vera.get_json("/spend/logs").await.0, 200);
    assert_eq!(vera.get_json("/team/list").await.0, 200);
    for c in [vera, &clients["ivy"]] {
        let (s, _, b) = c.post_json("/key/generate", &json!({})).await;
        assert_eq!(s, 401, "{b}");
    }

    // Deleting: one's own personal keys, not others'.
    let (s, _, b) = alice
        .post_json(
            "/key/delete",
            &json!({"keys": [clients_key(&clients, "bob")]}),
        )
        .await;
    assert_eq!(s, 403, "{b}");
    let (s, _, b) = alice
        .post_json("/key/delete", &json!({"keys": [own_key]}))
        .await;
    assert_eq!(s, 200, "{b}");
}

fn clients_key(clients: &HashMap<&str, Client>, name: &str) -> String {
    clients[name].key.clone().unwrap()
}

/// LiteLLM's `key_type` decides which routes a key calls; `budget_id` gives a key a stored
/// budget's limits; a team key creating a personal key passes its team's models and limits on.
#[tokio::test]
async fn key_types_budget_ids_and_keys_made_by_team_keys() {
    let mock = MockProvider::start(MockConfig::default()).await;
    let gw = Gateway::start(&config(&mock, "", "", "")).await;
    let admin = gw.client();

    let mut typed = HashMap::new();
    for t in ["llm_api", "management", "read_only", "default"] {
        let (s, _, k) = admin
            .post_json("/key/generate", &json!({"key_type": t}))
            .await;
        assert_eq!(s, 200, "{k}");
        assert_eq!(k["key_type"], t, "{k}");
        typed.insert(t, as_key(&gw, k["key"].as_str().unwrap()));
    }
    for (t, llm, read, write) in [
        ("llm_api", 200, 401, false),
        ("management", 401, 200, true),
        ("read_only", 401, 200, false),
        ("default", 200, 200, true),
    ] {
        let k = &typed[t];
        let (s, _, b) = k.post_json("/v1/chat/completions", &chat()).await;
        assert_eq!(s, llm, "{t} on a chat route: {b}");
        if s == 401 {
            assert!(error_message(&b, 401).contains("key_type"), "{b}");
        }
        let (s, b) = k.get_json("/key/info").await;
        assert_eq!(s, read, "{t} reading its own key: {b}");
        // A key without a user may not create keys either way (401), but its type decides
        // which refusal it gets.
        let (s, _, b) = k.post_json("/key/generate", &json!({})).await;
        assert_eq!(s, 401, "{t} creating a key: {b}");
        assert_eq!(
            error_message(&b, 401).contains("key_type"),
            !write,
            "{t} creating a key: {b}"
        );
    }
    let (s, _, b) = admin
        .post_json("/key/generate", &json!({"key_type": "superuser"}))
        .await;
    assert_eq!(s, 400, "{b}");
    assert_eq!(b["error"]["param"], "key_type", "{b}");

    // budget_id: the key takes the stored budget's limits.
    let budget = unique("budget");
    let (s, _, b) = admin
        .post_json(
            "/budget/new",
            &json!({"budget_id": budget, "max_budget": COST, "rpm_limit": 100}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let (s, _, k) = admin
        .post_json("/key/generate", &json!({"budget_id": budget}))
        .await;
    assert_eq!(s, 200, "{k}");
    assert_eq!(k["max_budget"], COST, "{k}");
    assert_eq!(k["rpm_limit"], 100, "{k}");
    let budgeted = as_key(&gw, k["key"].as_str().unwrap());
    assert_eq!(
        budgeted.post_json("/v1/chat/completions", &chat()).await.0,
        200
    );
    let (s, _, b) = budgeted.post_json("/v1/chat/completions", &chat()).await;
    assert_eq!(s, 400, "over the linked budget: {b}");
    let (s, _, b) = admin
        .post_json("/key/generate", &json!({"budget_id": unique("none")}))
        .await;
    assert_eq!(s, 400, "{b}");

    // A member's team key: the personal keys it creates stay within the team.
    let team = unique("team");
    let (s, _, b) = admin
        .post_json(
            "/team/new",
            &json!({"team_id": team, "models": ["gpt-4o"], "max_budget": 0.5, "rpm_limit": 7}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let bob = unique("bob");
    let (s, _, b) = admin
        .post_json(
            "/user/new",
            &json!({"user_id": bob, "user_role": "internal_user", "auto_create_key": false}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    admin
        .post_json(
            "/team/member_add",
            &json!({"team_id": team, "member": {"role": "user", "user_id": bob}}),
        )
        .await;
    let (s, _, k) = admin
        .post_json("/key/generate", &json!({"team_id": team, "user_id": bob}))
        .await;
    assert_eq!(s, 200, "{k}");
    let bobs_team_key = as_key(&gw, k["key"].as_str().unwrap());
    let (s, _, own) = bobs_team_key.post_json("/key/generate", &json!({})).await;
    assert_eq!(s, 200, "{own}");
    assert_eq!(own["team_id"], Value::Null, "a personal key: {own}");
    assert_eq!(own["models"], json!(["gpt-4o"]), "the team's models: {own}");
    assert_eq!(own["max_budget"], 0.5, "the team's budget: {own}");
    assert_eq!(own["rpm_limit"], 7, "the team's rpm: {own}");
    let personal = as_key(&gw, own["key"].as_str().unwrap());
    let (s, _, b) = personal
        .post_json(
            "/v1/embeddings",
            &json!({"model": "text-embedding", "input": "x"}),
        )
        .await;
    assert_eq!(s, 401, "outside the team's models: {b}");

    // The listings show a key what it may call (a team key: its team's models); the master
    // key sees everything.
    let names = |body: &Value, field: &str| -> Vec<String> {
        let mut v: Vec<String> = body["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e[field].as_str().unwrap().to_string())
            .collect();
        v.sort();
        v
    };
    for (who, expected) in [
        (&admin, vec!["gpt-4o", "text-embedding"]),
        (&bobs_team_key, vec!["gpt-4o"]),
        (&personal, vec!["gpt-4o"]),
    ] {
        let (s, b) = who.get_json("/v1/models").await;
        assert_eq!(s, 200, "{b}");
        assert_eq!(names(&b, "id"), expected, "{b}");
        let (_, b) = who.get_json("/model/info").await;
        assert_eq!(names(&b, "model_name"), expected, "{b}");
        let (_, b) = who.get_json("/model_group/info").await;
        assert_eq!(names(&b, "model_group"), expected, "{b}");
    }
    for (body, param) in [
        (json!({"models": ["text-embedding"]}), "models"),
        (json!({"max_budget": 5.0}), "max_budget"),
        (json!({"rpm_limit": 100}), "rpm_limit"),
    ] {
        let (s, _, b) = bobs_team_key.post_json("/key/generate", &body).await;
        assert_eq!(s, 403, "{body}: {b}");
        assert_eq!(b["error"]["param"], param, "{b}");
    }

    // Members by email are the users with that email; a deleted user leaves its teams.
    let carol = unique("carol");
    let email = format!("{carol}@example.com");
    let (s, _, b) = admin
        .post_json(
            "/user/new",
            &json!({"user_id": carol, "user_email": email, "auto_create_key": false}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let members = |info: &Value| -> Vec<String> {
        info["team_info"]["members_with_roles"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|m| m["user_id"].as_str().map(str::to_string))
            .collect()
    };
    let teams_of = |info: &Value| info["user_info"]["teams"].clone();
    let (s, _, b) = admin
        .post_json(
            "/team/member_add",
            &json!({"team_id": team, "member": {"role": "admin", "user_email": email}}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let (_, info) = admin.get_json(&format!("/team/info?team_id={team}")).await;
    assert!(members(&info).contains(&carol), "{info}");
    let (_, info) = admin.get_json(&format!("/user/info?user_id={carol}")).await;
    assert_eq!(teams_of(&info), json!([team]), "{info}");
    let (s, _, b) = admin
        .post_json(
            "/team/member_delete",
            &json!({"team_id": team, "user_email": email}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let (_, info) = admin.get_json(&format!("/team/info?team_id={team}")).await;
    assert!(!members(&info).contains(&carol), "{info}");
    let (_, info) = admin.get_json(&format!("/user/info?user_id={carol}")).await;
    assert_eq!(teams_of(&info), json!([]), "{info}");
    let (s, _, b) = admin
        .post_json(
            "/team/member_add",
            &json!({"team_id": team, "member": {"role": "admin", "user_id": carol}}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let (s, _, b) = admin
        .post_json("/user/delete", &json!({"user_ids": [carol]}))
        .await;
    assert_eq!(s, 200, "{b}");
    let (_, info) = admin.get_json(&format!("/team/info?team_id={team}")).await;
    assert!(
        !members(&info).contains(&carol),
        "a deleted user stays a member: {info}"
    );
}

/// The list, budget, member-role and spend-reset routes beyond issue 4's list, in LiteLLM's
/// shapes.
#[tokio::test]
async fn user_list_budget_routes_member_update_and_spend_reset() {
    let mock = MockProvider::start(MockConfig::default()).await;
    let gw = Gateway::start(&config(&mock, "", "", "")).await;
    let admin = gw.client();

    let mut ids = Vec::new();
    for role in ["internal_user", "internal_user", "proxy_admin_viewer"] {
        let id = unique("listed");
        let (s, _, b) = admin
            .post_json(
                "/user/new",
                &json!({"user_id": id, "user_role": role, "auto_create_key": false}),
            )
            .await;
        assert_eq!(s, 200, "{b}");
        ids.push(id);
    }
    let two = format!("{},{}", ids[0], ids[1]);
    let mut seen = Vec::new();
    for page in [1, 2] {
        let (s, b) = admin
            .get_json(&format!(
                "/user/list?user_ids={two}&page_size=1&page={page}"
            ))
            .await;
        assert_eq!(s, 200, "{b}");
        assert_eq!(b["total"], 2, "{b}");
        assert_eq!(b["total_pages"], 2, "{b}");
        assert_eq!(b["page"], page, "{b}");
        let users = b["users"].as_array().unwrap();
        assert_eq!(users.len(), 1, "{b}");
        seen.push(users[0]["user_id"].as_str().unwrap().to_string());
    }
    seen.sort();
    let mut want = vec![ids[0].clone(), ids[1].clone()];
    want.sort();
    assert_eq!(seen, want);
    let (_, b) = admin
        .get_json(&format!(
            "/user/list?user_ids={two},{}&role=proxy_admin_viewer",
            ids[2]
        ))
        .await;
    assert_eq!(b["total"], 1, "{b}");
    assert_eq!(b["users"][0]["user_id"], ids[2].as_str(), "{b}");
    let (s, b) = admin.get_json("/user/list?page_size=0").await;
    assert_eq!(s, 400, "{b}");

    // Budgets: update, list, delete.
    let budget = unique("budget");
    admin
        .post_json(
            "/budget/new",
            &json!({"budget_id": budget, "max_budget": 1.0}),
        )
        .await;
    let (s, _, b) = admin
        .post_json(
            "/budget/update",
            &json!({"budget_id": budget, "max_budget": 2.0}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["max_budget"], 2.0, "{b}");
    let (s, b) = admin.get_json("/budget/list").await;
    assert_eq!(s, 200, "{b}");
    assert!(
        b.as_array()
            .unwrap()
            .iter()
            .any(|x| x["budget_id"] == budget.as_str() && x["max_budget"] == 2.0),
        "{b}"
    );
    let (s, _, b) = admin
        .post_json("/budget/delete", &json!({"id": budget}))
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["budget_id"], budget.as_str(), "{b}");
    let (_, b) = admin
        .get_json(&format!("/budget/info?budget_id={budget}"))
        .await;
    assert_eq!(b, json!([]), "{b}");
    let (s, _, b) = admin
        .post_json("/budget/delete", &json!({"id": budget}))
        .await;
    assert_eq!(s, 404, "{b}");

    // A member's role.
    let team = unique("team");
    admin
        .post_json(
            "/team/new",
            &json!({"team_id": team, "members_with_roles": [{"role": "user", "user_id": ids[0]}]}),
        )
        .await;
    let (s, _, b) = admin
        .post_json(
            "/team/member_update",
            &json!({"team_id": team, "user_id": ids[0], "role": "admin"}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["user_id"], ids[0].as_str(), "{b}");
    let (_, info) = admin.get_json(&format!("/team/info?team_id={team}")).await;
    assert_eq!(
        info["team_info"]["members_with_roles"][0]["role"], "admin",
        "{info}"
    );
    for body in [
        json!({"team_id": team, "user_id": ids[1], "role": "admin"}),
        json!({"team_id": team, "user_id": ids[0], "max_budget_in_team": 1.0}),
        json!({"team_id": team, "user_id": ids[0], "role": "owner"}),
    ] {
        let (s, _, b) = admin.post_json("/team/member_update", &body).await;
        assert_eq!(s, 400, "{body}: {b}");
    }

    // /global/spend/reset: the master key only; the key can spend again.
    let (_, _, k) = admin
        .post_json("/key/generate", &json!({"max_budget": COST}))
        .await;
    let key = k["key"].as_str().unwrap().to_string();
    let user = as_key(&gw, &key);
    assert_eq!(user.post_json("/v1/chat/completions", &chat()).await.0, 200);
    assert_eq!(user.post_json("/v1/chat/completions", &chat()).await.0, 400);
    let root = unique("root");
    admin
        .post_json(
            "/user/new",
            &json!({"user_id": root, "user_role": "proxy_admin", "auto_create_key": false}),
        )
        .await;
    let (_, _, rk) = admin
        .post_json("/key/generate", &json!({"user_id": root}))
        .await;
    let root_key = as_key(&gw, rk["key"].as_str().unwrap());
    let (s, _, b) = root_key.post_json("/global/spend/reset", &json!({})).await;
    assert_eq!(s, 401, "a proxy admin's key is not the master key: {b}");
    let (s, _, b) = admin.post_json("/global/spend/reset", &json!({})).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["status"], "success", "{b}");
    assert_eq!(key_spend(&admin, &key).await, 0.0);
    let (s, _, b) = user.post_json("/v1/chat/completions", &chat()).await;
    assert_eq!(s, 200, "spend was reset: {b}");
}

/// 6 concurrent calls at 0.05 on a 0.12 budget: with reservations (capped at what is left) 3
/// go (0.05, 0.05 and the last 0.02 reserved) and 3 are refused; with
/// `disable_budget_reservation` only spend is checked, so all 6 go (as LiteLLM documents).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls_reserve_what_is_left_unless_reservations_are_off() {
    let mock = MockProvider::start(MockConfig::default()).await;
    for (general, admitted) in [("", 3), ("  disable_budget_reservation: true\n", 6)] {
        let gw = Gateway::start(&config(&mock, "", general, "")).await;
        let (_, _, k) = gw
            .client()
            .post_json("/key/generate", &json!({"max_budget": 0.12}))
            .await;
        let user = as_key(&gw, k["key"].as_str().unwrap());
        let mut slow = chat();
        slow["mock"] = json!({"latency_ms": 400});
        let calls = (0..6).map(|_| {
            let user = user.clone();
            let body = slow.clone();
            tokio::spawn(async move { user.post_json("/v1/chat/completions", &body).await.0 })
        });
        let mut ok = 0;
        for c in calls.collect::<Vec<_>>() {
            match c.await.unwrap() {
                200 => ok += 1,
                400 => {}
                s => panic!("status {s}"),
            }
        }
        assert_eq!(ok, admitted, "with {general:?}");
    }
}
