//! What Sluice keeps of Responses API answers, against a real PostgreSQL: a stored response
//! belongs to the key that created it, outlives the instance that stored it (another instance
//! on the same database continues and reads it), and a response kept by one OpenAI deployment
//! is continued on that deployment only. The SDK's view of the same routes is in
//! `providers.rs` (`the_openai_sdk_responses_api_works_against_every_provider`).

mod support;

use serde_json::{Value, json};
use support::*;

fn config(translated: &MockProvider, a: &MockProvider, b: &MockProvider) -> String {
    format!(
        r#"
model_list:
  - model_name: claude
    litellm_params: {{model: anthropic/claude-sonnet-4-5, api_base: "http://{t}", api_key: sk-ant}}
  - model_name: gpt
    litellm_params: {{model: openai/gpt-4o-mini, api_base: "http://{a}/v1", api_key: sk-a}}
  - model_name: gpt
    litellm_params: {{model: openai/gpt-4o-mini, api_base: "http://{b}/v1", api_key: sk-b}}
general_settings:
  master_key: {MASTER_KEY}
  database_url: {db}
sluice_settings:
  threads: 1
"#,
        t = translated.addr,
        a = a.addr,
        b = b.addr,
        db = test_database_url(),
    )
}

async fn new_key(gw: &Gateway) -> String {
    let (status, _, body) = gw
        .client()
        .post_json("/key/generate", &json!({"models": ["claude", "gpt"]}))
        .await;
    assert_eq!(status, 200, "{body}");
    body["key"].as_str().expect("key").to_string()
}

async fn create(client: &Client, model: &str, input: &str, previous: Option<&str>) -> (u16, Value) {
    let mut body = json!({"model": model, "input": input});
    if let Some(id) = previous {
        body["previous_response_id"] = json!(id);
    }
    let (status, _, answer) = client.post_json("/v1/responses", &body).await;
    (status, answer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_responses_belong_to_their_key_survive_the_instance_and_stay_on_their_deployment() {
    let translated = MockProvider::start(MockConfig::default()).await;
    let (a, b) = (
        MockProvider::start(MockConfig::default()).await,
        MockProvider::start(MockConfig::default()).await,
    );
    let yaml = config(&translated, &a, &b);
    let gw = Gateway::start(&yaml).await;
    let (alice, bob) = (new_key(&gw).await, new_key(&gw).await);
    let (alice, bob) = (as_key(&gw, &alice), as_key(&gw, &bob));

    // A translated response: Alice reads it; Bob gets 404 and cannot continue it.
    let (status, first) = create(&alice, "claude", "My name is Ada.", None).await;
    assert_eq!(status, 200, "{first}");
    let id = first["id"].as_str().expect("id").to_string();
    assert!(id.starts_with("resp_"), "{id}");
    let (status, got) = alice.get_json(&format!("/v1/responses/{id}")).await;
    assert_eq!(status, 200, "{got}");
    assert_eq!(got, first);
    let (status, err) = bob.get_json(&format!("/v1/responses/{id}")).await;
    assert_eq!(status, 404, "{err}");
    assert_eq!(
        error_message(&err, 404),
        format!("Response with id '{id}' not found.")
    );
    let (status, err) = create(&bob, "claude", "And mine?", Some(&id)).await;
    assert_eq!(status, 400, "{err}");
    assert_eq!(err["error"]["param"], "previous_response_id");
    let calls_before = translated.calls();

    // Another instance on the same database continues it with the first turn in front.
    let other = Gateway::start(&yaml).await;
    let alice_there = as_key(&other, alice.key.as_deref().expect("alice's key"));
    let (status, second) = create(&alice_there, "claude", "What is my name?", Some(&id)).await;
    assert_eq!(status, 200, "{second}");
    assert_eq!(second["previous_response_id"], id.as_str());
    assert_eq!(
        translated.calls(),
        calls_before + 1,
        "Bob's attempt never reached it"
    );
    let sent = translated
        .last_request()
        .expect("the continued call")
        .json();
    let messages = sent["messages"].as_array().expect("messages");
    assert_eq!(messages.len(), 3, "{sent}");
    assert!(
        messages[0]["content"]
            .to_string()
            .contains("My name is Ada.")
    );
    assert_eq!(messages[1]["role"], "assistant");
    // Its input items, read on the first instance once the other has written it (in the
    // background, just after answering), then deleted: gone for both instances.
    let second_id = second["id"].as_str().unwrap().to_string();
    let items = eventually(std::time::Duration::from_secs(5), || async {
        let (status, items) = alice
            .get_json(&format!("/v1/responses/{second_id}/input_items"))
            .await;
        (status == 200).then_some(items)
    })
    .await
    .expect("the other instance's response reaches the database");
    assert_eq!(items["data"][0]["content"][0]["text"], "What is my name?");
    let resp = alice_there
        .delete(&format!("/v1/responses/{second_id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let deleted: Value = resp.json().await.unwrap();
    assert_eq!(deleted["deleted"], true);
    for client in [&alice, &alice_there] {
        let (status, _) = client.get_json(&format!("/v1/responses/{second_id}")).await;
        assert_eq!(status, 404);
    }

    // Native responses: kept by the OpenAI deployment that made them, so every continuation
    // goes there (the mocks refuse ids they do not know).
    for round in 0..4 {
        let (status, first) = create(&alice, "gpt", "Hello", None).await;
        assert_eq!(status, 200, "{first}");
        let id = first["id"].as_str().unwrap().to_string();
        let keeper = if a
            .last_request()
            .is_some_and(|r| r.json()["input"] == "Hello")
        {
            &a
        } else {
            &b
        };
        a.reset();
        b.reset();
        let mut previous = id;
        for _ in 0..3 {
            let (status, next) = create(&alice, "gpt", "Go on", Some(&previous)).await;
            assert_eq!(status, 200, "round {round}: {next}");
            previous = next["id"].as_str().unwrap().to_string();
        }
        assert_eq!(
            keeper.calls(),
            3,
            "round {round}: all on the keeping deployment"
        );
        let (status, got) = alice.get_json(&format!("/v1/responses/{previous}")).await;
        assert_eq!(status, 200, "{got}");
        assert_eq!(got["id"], previous.as_str());
        assert_eq!(keeper.calls(), 4, "the read went to the keeper too");
        a.reset();
        b.reset();
    }
}
