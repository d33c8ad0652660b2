//! Config validation tests: LiteLLM configs in, runtime config or a complete problem report out.

use super::*;

fn prices() -> PriceTable {
    PriceTable::load().expect("embedded price table")
}

fn load(yaml: &str, env: &[(&str, &str)]) -> Result<(RuntimeConfig, Report), Report> {
    load_str(
        yaml,
        &Env::fixed(env.iter().copied()),
        &Overrides::default(),
        &prices(),
        false,
    )
}

fn load_ok(yaml: &str, env: &[(&str, &str)]) -> (RuntimeConfig, Report) {
    match load(yaml, env) {
        Ok(ok) => ok,
        Err(report) => panic!("config refused: {:#?}", report.lines(false)),
    }
}

fn paths(problems: &[Problem]) -> Vec<&str> {
    problems.iter().map(|p| p.path.as_str()).collect()
}

#[test]
fn a_litellm_config_becomes_deployments_with_litellm_defaults() {
    let (c, report) = load_ok(
        r#"
model_list:
  - model_name: gpt-4o
    litellm_params:
      model: openai/gpt-4o
      api_key: os.environ/MY_OPENAI_KEY
      rpm: 600
  - model_name: gpt-4o
    litellm_params:
      model: openai/gpt-4o-2024-08-06
      api_base: https://proxy.example.com/v1/
      rpm: "300"
      order: 2
    model_info:
      id: second
  - model_name: llama
    litellm_params:
      model: groq/llama-3.1-8b-instant
  - model_name: local
    litellm_params:
      model: hosted_vllm/meta-llama/Llama-3.1-8B-Instruct
      api_base: http://vllm:8000/v1
      timeout: 30
      stream_timeout: 5
general_settings:
  master_key: sk-1234
"#,
        &[("MY_OPENAI_KEY", "sk-openai"), ("GROQ_API_KEY", "gsk-1")],
    );
    assert!(report.errors.is_empty());
    let d = |i: usize| c.deployment(i).deployment.clone();
    assert_eq!(d(0).api_base, "https://api.openai.com/v1");
    assert_eq!(d(0).api_key.as_ref().unwrap().expose(), "sk-openai");
    assert_eq!(d(0).upstream_model, "gpt-4o");
    assert_eq!(d(0).rpm, Some(600));
    assert_eq!(d(1).api_base, "https://proxy.example.com/v1");
    assert_eq!(d(1).rpm, Some(300), "numeric strings are numbers");
    assert_eq!(d(1).order, Some(2));
    assert_eq!(d(1).id, "second");
    assert_eq!(d(2).api_base, "https://api.groq.com/openai/v1");
    assert_eq!(d(2).api_key.as_ref().unwrap().expose(), "gsk-1");
    assert_eq!(d(3).upstream_model, "meta-llama/Llama-3.1-8B-Instruct");
    assert_eq!(d(3).api_key.as_ref().unwrap().expose(), "fake-api-key");
    assert_eq!(d(3).timeout, Duration::from_secs(30));
    assert_eq!(d(3).stream_timeout, Some(Duration::from_secs(5)));
    assert_eq!(
        d(0).timeout,
        Duration::from_secs(6000),
        "LiteLLM's request_timeout default"
    );
    assert_eq!(c.master_key.as_ref().unwrap().expose(), "sk-1234");
    assert_eq!(c.router.groups().len(), 3);
    assert_eq!(c.server.port, 4000);
    assert_eq!(c.server.host, "0.0.0.0");
    assert_eq!(c.max_request_body_bytes, 32 * 1024 * 1024);
}

#[test]
fn deployment_ids_match_litellm() {
    // Expected value computed with LiteLLM's `Router._generate_model_id` algorithm in Python
    // (PyYAML load, os.environ resolved, str()/json.dumps formatting).
    let (c, _) = load_ok(
        r#"
model_list:
  - model_name: gpt-4o
    litellm_params:
      model: openai/gpt-4o
      api_base: http://127.0.0.1:9/v1
      api_key: os.environ/TEST_KEY
      rpm: 100
      weight: 0.5
      timeout: 1e-05
      tags: [a, b]
      extra_headers: {X-Team: "é"}
      drop_params: true
"#,
        &[("TEST_KEY", "secret-value")],
    );
    assert_eq!(
        c.deployment(0).deployment.id,
        "60fa944db4e4c63e4666b4c0f4f4a1a2988e9afe1876214e3f8cc1e6c87baa28"
    );
}

#[test]
fn every_problem_is_reported_at_once_with_its_path() {
    let report = load(
        r#"
model_list:
  - model_name: a
    litellm_params:
      model: openai/x
      rpm: many
      weight: -1
  - litellm_params:
      model: openai/y
  - model_name: c
    litellm_params:
      api_base: http://h/v1
  - model_name: d
    litellm_params:
      model: openai/z
      api_base: "localhost:8000"
    model_info:
      mode: chatt
  - model_name: e
    litellm_params:
      model: hosted_vllm/llama
router_settings:
  routing_strategy: fastest
general_settings:
  max_request_size_mb: 0
litellm_settings:
  json_logs: maybe
"#,
        &[],
    )
    .unwrap_err();
    let errors = paths(&report.errors);
    for expected in [
        "model_list[0].litellm_params.rpm",
        "model_list[0].litellm_params.weight",
        "model_list[1].model_name",
        "model_list[2].litellm_params.model",
        "model_list[3].litellm_params.api_base",
        "model_list[3].model_info.mode",
        "model_list[4].litellm_params.api_base",
        "router_settings.routing_strategy",
        "general_settings.max_request_size_mb",
        "litellm_settings.json_logs",
    ] {
        assert!(
            errors.contains(&expected),
            "missing {expected} in {errors:#?}"
        );
    }
    let text = report.lines(false).join("\n");
    assert!(
        text.contains("unknown mode \"chatt\" (did you mean \"chat\"?)"),
        "{text}"
    );
    assert!(text.contains("HOSTED_VLLM_API_BASE"), "{text}");
    assert!(text.contains("\"many\""), "{text}");
}

#[test]
fn unknown_keys_warn_with_a_suggestion_and_fail_only_under_strict() {
    let yaml = r#"
model_list:
  - model_name: a
    litellm_params:
      model: openai/x
      api_bsae: http://h/v1
general_settings:
  master_kye: sk-1
  completely_made_up_setting: 1
router_settings:
  polling_interval: 3
litellm_settings:
  modify_params: true
"#;
    let (_, report) = load_ok(yaml, &[]);
    let unknown: Vec<String> = report.unknown_keys.iter().map(|p| p.to_string()).collect();
    assert!(
        unknown.contains(
            &"model_list[0].litellm_params.api_bsae: unknown key (did you mean `api_base`?)"
                .to_string()
        ),
        "{unknown:?}"
    );
    assert!(unknown.contains(
        &"general_settings.master_kye: unknown key (did you mean `master_key`?)".to_string()
    ));
    assert!(
        unknown.contains(&"general_settings.completely_made_up_setting: unknown key".to_string())
    );
    let mut not_acted = report.not_acted.clone();
    not_acted.sort();
    assert_eq!(
        not_acted,
        [
            "litellm_settings.modify_params",
            "router_settings.polling_interval"
        ]
    );
    let summary = report.lines(false).join("\n");
    assert!(
        summary.contains("recognises but does not act on yet (ignored): "),
        "{summary}"
    );
    assert!(
        summary.contains("router_settings.polling_interval"),
        "{summary}"
    );

    let strict = load_str(
        yaml,
        &Env::fixed([("X", "y")]),
        &Overrides::default(),
        &prices(),
        true,
    )
    .unwrap_err();
    assert!(strict.errors.is_empty());
    assert_eq!(strict.unknown_keys.len(), 3);
    assert!(strict.is_fatal(true));
}

#[test]
fn environment_references_resolve_from_the_overlay_and_report_missing_ones() {
    let (c, report) = load_ok(
        r#"
environment_variables:
  UPSTREAM_BASE: http://from-config:8000/v1
model_list:
  - model_name: a
    litellm_params:
      model: openai/x
      api_base: os.environ/UPSTREAM_BASE
      api_key: os.environ/NOT_SET_ANYWHERE
"#,
        &[("OPENAI_API_KEY", "sk-default")],
    );
    assert_eq!(
        c.deployment(0).deployment.api_base,
        "http://from-config:8000/v1"
    );
    // A missing reference is absent, so the provider's key variable applies, as in LiteLLM.
    assert_eq!(
        c.deployment(0)
            .deployment
            .api_key
            .as_ref()
            .unwrap()
            .expose(),
        "sk-default"
    );
    assert!(
        report
            .warnings
            .iter()
            .any(|p| p.path == "model_list[0].litellm_params.api_key"
                && p.message.contains("NOT_SET_ANYWHERE"))
    );
}

#[test]
fn the_master_key_comes_from_the_file_or_litellm_master_key() {
    let (c, _) = load_ok(
        "general_settings: {}\n",
        &[("LITELLM_MASTER_KEY", "sk-env")],
    );
    assert_eq!(c.master_key.unwrap().expose(), "sk-env");
    let (c, _) = load_ok(
        "general_settings:\n  master_key: sk-file\n",
        &[("LITELLM_MASTER_KEY", "sk-env")],
    );
    assert_eq!(c.master_key.unwrap().expose(), "sk-file");
    let report = load("general_settings:\n  master_key: os.environ/NOPE\n", &[]).unwrap_err();
    assert_eq!(paths(&report.errors), ["general_settings.master_key"]);
    let (c, report) = load_ok("model_list: []\n", &[]);
    assert!(c.master_key.is_none());
    assert!(
        report
            .warnings
            .iter()
            .any(|w| w.message.contains("open to anyone"))
    );
}

#[test]
fn aliases_take_both_litellm_forms_and_must_point_somewhere() {
    let (c, _) = load_ok(
        r#"
model_list:
  - model_name: gpt-4o
    litellm_params: {model: openai/gpt-4o}
router_settings:
  model_group_alias:
    gpt4: gpt-4o
    secret: {model: gpt-4o, hidden: true}
"#,
        &[],
    );
    assert_eq!(c.router.public_model_names(), ["gpt-4o", "gpt4"]);
    assert!(c.router.resolve("secret").is_some());
    let report = load(
        "model_list:\n  - model_name: gpt-4o\n    litellm_params: {model: openai/gpt-4o}\nrouter_settings:\n  model_group_alias: {gpt4: gpt-4-o}\n",
        &[],
    )
    .unwrap_err();
    assert!(
        report.lines(false)[0].contains("did you mean \"gpt-4o\""),
        "{:?}",
        report.lines(false)
    );
}

#[test]
fn providers_are_inferred_like_litellm_and_typos_are_caught() {
    let (c, _) = load_ok(
        "model_list:\n  - model_name: a\n    litellm_params: {model: gpt-4o}\n  - model_name: b\n    litellm_params: {model: '*'}\n  - model_name: c\n    litellm_params: {model: mistral/mistral-small, api_base: 'https://mistral.example.com'}\n",
        &[],
    );
    assert_eq!(c.deployment(0).deployment.provider, "openai");
    assert_eq!(c.deployment(1).deployment.upstream_model, "*");
    assert_eq!(
        c.deployment(2).deployment.api_base,
        "https://mistral.example.com/v1",
        "LiteLLM appends /v1 for mistral"
    );
    let report = load(
        "model_list:\n  - model_name: a\n    litellm_params: {model: opnai/gpt-4o}\n",
        &[],
    )
    .unwrap_err();
    assert!(
        report.lines(false)[0].contains("did you mean provider \"openai\""),
        "{:?}",
        report.lines(false)
    );
}

#[test]
fn providers_not_translated_yet_are_a_warning_not_a_refusal() {
    let (c, report) = load_ok(
        r#"
model_list:
  - model_name: claude
    litellm_params: {model: replicate/meta/llama-3-70b}
  - model_name: mixed
    litellm_params: {model: replicate/meta/llama-3-70b}
  - model_name: mixed
    litellm_params: {model: openai/gpt-4o}
"#,
        &[],
    );
    assert!(report.warnings.iter().any(|w| {
        w.message
            .contains("\"replicate\" is not supported by Sluice yet")
    }));
    assert!(c.deployment(0).wire.is_none());
    // A group with only unsupported deployments still routes (and answers 501); a mixed group
    // routes only to what Sluice supports.
    assert_eq!(c.router.group("claude").unwrap().deployments.len(), 1);
    let mixed = c.router.group("mixed").unwrap();
    assert_eq!(mixed.deployments.len(), 1);
    assert_eq!(mixed.deployments[0].provider, "openai");
}

#[test]
fn litellm_weighting_quirks_are_pointed_out() {
    let (_, report) = load_ok(
        r#"
model_list:
  - model_name: g
    litellm_params: {model: openai/a}
  - model_name: g
    litellm_params: {model: openai/b, weight: 3}
  - model_name: h
    litellm_params: {model: openai/a, rpm: 10}
  - model_name: h
    litellm_params: {model: openai/b}
"#,
        &[],
    );
    let text = report.lines(false).join("\n");
    assert!(
        text.contains("the first deployment has no weight"),
        "{text}"
    );
    assert!(
        text.contains("weighted by rpm, which this deployment does not set"),
        "{text}"
    );
}

#[test]
fn model_info_hides_credentials_and_masks_secrets() {
    let (c, _) = load_ok(
        r#"
model_list:
  - model_name: a
    litellm_params:
      model: openai/x
      api_key: sk-abcdefghijklmnop
      aws_secret_access_key: also-secret
      azure_ad_token: tok-1234567890
      input_cost_per_token: 0.000001
"#,
        &[],
    );
    let p = &c.deployment(0).public_params;
    assert!(p.get("api_key").is_none());
    assert!(p.get("aws_secret_access_key").is_none());
    assert_eq!(p["azure_ad_token"], "tok-******7890");
    assert_eq!(p["input_cost_per_token"], 0.000001);
    assert_eq!(p["model"], "openai/x");
}

#[test]
fn sluice_settings_and_overrides() {
    let (c, _) = load_str(
        "sluice_settings:\n  threads: 3\n  graceful_shutdown_seconds: 5\n  access_log: false\n",
        &Env::fixed([("PORT", "5000")]),
        &Overrides {
            host: Some("127.0.0.1".into()),
            ..Overrides::default()
        },
        &prices(),
        false,
    )
    .unwrap();
    assert_eq!(c.server.threads, 3);
    assert_eq!(c.server.port, 5000);
    assert_eq!(c.server.host, "127.0.0.1");
    assert_eq!(c.server.graceful_shutdown, Duration::from_secs(5));
    assert!(!c.server.access_log);
}

#[test]
fn yaml_syntax_errors_are_reported_with_a_position() {
    let report = load("model_list:\n  - model_name: [unclosed\n", &[]).unwrap_err();
    assert!(
        report.errors[0].message.contains("line"),
        "{:?}",
        report.errors
    );
}

#[test]
fn translated_providers_take_their_settings_from_params_or_the_standard_variables() {
    let (c, report) = load_ok(
        r#"
model_list:
  - model_name: claude
    litellm_params: {model: anthropic/claude-sonnet-4-5}
  - model_name: bedrock-env
    litellm_params: {model: "bedrock/anthropic.claude-3-haiku-20240307-v1:0"}
  - model_name: bedrock-key
    litellm_params: {model: bedrock/converse/amazon.nova-pro-v1:0, api_key: os.environ/BEDROCK_KEY, aws_region_name: us-west-2}
  - model_name: azure
    litellm_params: {model: azure/gpt4o-prod, api_base: "https://r.openai.azure.com"}
  - model_name: gemini
    litellm_params: {model: gemini/gemini-2.5-flash, drop_params: true, additional_drop_params: [seed]}
litellm_settings:
  drop_params: false
"#,
        &[
            ("ANTHROPIC_API_KEY", "sk-ant-env"),
            ("AWS_ACCESS_KEY_ID", "AKIDENV"),
            ("AWS_SECRET_ACCESS_KEY", "secret-env"),
            ("AWS_SESSION_TOKEN", "token-env"),
            ("AWS_REGION", "eu-west-1"),
            ("BEDROCK_KEY", "bedrock-api-key"),
            ("AZURE_API_KEY", "az-env"),
            ("AZURE_API_VERSION", "2025-01-01-preview"),
            ("GEMINI_API_KEY", "g-env"),
        ],
    );
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    let claude = c.deployment(0);
    assert_eq!(claude.wire, Some(Wire::Anthropic));
    assert_eq!(claude.deployment.api_base, "https://api.anthropic.com");
    assert_eq!(
        claude.deployment.api_key.as_ref().unwrap().expose(),
        "sk-ant-env"
    );

    let bedrock = c.deployment(1);
    assert_eq!(
        bedrock.deployment.api_base,
        "https://bedrock-runtime.eu-west-1.amazonaws.com"
    );
    match bedrock.aws.as_ref().unwrap() {
        provider_catalog::AwsAuth::SigV4 {
            access_key_id,
            session_token,
            region,
            ..
        } => {
            assert_eq!(access_key_id, "AKIDENV");
            assert_eq!(session_token.as_ref().unwrap().expose(), "token-env");
            assert_eq!(region, "eu-west-1");
        }
        other => panic!("{other:?}"),
    }
    // Explicit credentials in the entry win over the environment; here an API key and region.
    let keyed = c.deployment(2);
    assert_eq!(
        keyed.deployment.api_base,
        "https://bedrock-runtime.us-west-2.amazonaws.com"
    );
    assert!(
        matches!(keyed.aws, Some(provider_catalog::AwsAuth::SigV4 { .. })),
        "AWS_ACCESS_KEY_ID in the environment signs; the key is the fallback"
    );

    let azure = c.deployment(3);
    assert_eq!(azure.api_version.as_deref(), Some("2025-01-01-preview"));
    assert_eq!(
        azure.deployment.api_key.as_ref().unwrap().expose(),
        "az-env"
    );

    let gemini = c.deployment(4);
    assert!(gemini.params.drop_unsupported);
    assert_eq!(gemini.params.always_drop, vec!["seed".to_string()]);
    assert!(!claude.params.drop_unsupported);
}

#[test]
fn a_bedrock_api_key_is_used_when_no_access_key_is_set() {
    let (c, _) = load_ok(
        r#"
model_list:
  - model_name: nova
    litellm_params: {model: bedrock/amazon.nova-pro-v1:0, aws_region_name: us-east-2}
"#,
        &[("AWS_BEARER_TOKEN_BEDROCK", "bedrock-api-key")],
    );
    assert!(matches!(
        c.deployment(0).aws,
        Some(provider_catalog::AwsAuth::ApiKey(_))
    ));
    let Err(report) = load(
        "model_list:\n  - model_name: n\n    litellm_params: {model: bedrock/amazon.nova-pro-v1:0, aws_access_key_id: AKID}\n",
        &[],
    ) else {
        panic!("half a key pair is refused");
    };
    assert!(
        report
            .errors
            .iter()
            .any(|e| e.message.contains("must be given together"))
    );
}

#[test]
fn retry_and_cooldown_settings_follow_litellm_precedence_and_defaults() {
    let defaults = r#"
model_list:
  - model_name: a
    litellm_params: {model: openai/x, api_base: "http://h/v1"}
"#;
    let (config, _) = load_ok(defaults, &[]);
    assert_eq!(config.retries, RouterSettings::default());
    assert_eq!(config.retries.num_retries, 2, "openai.DEFAULT_MAX_RETRIES");
    assert_eq!(config.retries.cooldown_time, Duration::from_secs(5));
    assert_eq!(config.deployments[0].num_retries, None);

    let set = r#"
model_list:
  - model_name: a
    litellm_params: {model: openai/x, api_base: "http://h/v1", num_retries: 4, cooldown_time: 9}
  - model_name: a
    litellm_params: {model: openai/y, api_base: "http://h/v1", cooldown_time: 9}
    model_info: {cooldown_time: 0.5}
router_settings:
  retry_after: 1.5
  cooldown_time: 30
  allowed_fails: 3
  disable_cooldowns: true
litellm_settings:
  num_retries: 7
"#;
    let (config, report) = load_ok(set, &[]);
    assert!(report.not_acted.is_empty(), "{:?}", report.not_acted);
    assert_eq!(
        config.retries,
        RouterSettings {
            num_retries: 7,
            retry_after: Duration::from_millis(1500),
            cooldown_time: Duration::from_secs(30),
            disable_cooldowns: true,
            allowed_fails: Some(3),
            ..RouterSettings::default()
        }
    );
    assert_eq!(config.deployments[0].num_retries, Some(4));
    assert_eq!(
        config.deployments[0].cooldown_time,
        Some(Duration::from_secs(9))
    );
    // model_info's cooldown_time wins over litellm_params'.
    assert_eq!(
        config.deployments[1].cooldown_time,
        Some(Duration::from_millis(500))
    );
    let router_wins = set.replace("  retry_after: 1.5", "  num_retries: 1\n  retry_after: 1.5");
    assert_eq!(load_ok(&router_wins, &[]).0.retries.num_retries, 1);

    let wrong = r#"
model_list:
  - model_name: a
    litellm_params: {model: openai/x, api_base: "http://h/v1", num_retries: -1}
router_settings:
  cooldown_time: soon
  disable_cooldowns: maybe
"#;
    let report = load(wrong, &[]).expect_err("wrong values of keys Sluice acts on");
    let errors = paths(&report.errors);
    for path in [
        "model_list[0].litellm_params.num_retries",
        "router_settings.cooldown_time",
        "router_settings.disable_cooldowns",
    ] {
        assert!(errors.contains(&path), "{path} not in {errors:?}");
    }
}

#[test]
fn fallbacks_are_read_as_litellm_writes_them() {
    let yaml = r#"
model_list:
  - model_name: a
    litellm_params: {model: openai/x, api_base: "http://h/v1"}
router_settings:
  fallbacks: [{"a": ["b", "c"]}, {"*": ["z"]}]
  context_window_fallbacks: [{"a": ["big"]}]
  max_fallbacks: 2
litellm_settings:
  fallbacks: [{"ignored": ["because router_settings has fallbacks"]}]
  default_fallbacks: ["d"]
  content_policy_fallbacks: [{"a": ["safe"]}]
"#;
    let (config, report) = load_ok(yaml, &[]);
    assert!(report.not_acted.is_empty(), "{:?}", report.not_acted);
    let f = &config.fallbacks;
    assert_eq!(f.max_fallbacks, 2);
    assert_eq!(f.chain(FallbackKind::Generic, "a"), ["b", "c"]);
    // A group without an entry takes "*"; default_fallbacks is one more "*" entry after it.
    assert_eq!(f.chain(FallbackKind::Generic, "other"), ["z"]);
    assert_eq!(f.chain(FallbackKind::ContextWindow, "a"), ["big"]);
    // Configured, but no entry: nothing (not the generic list).
    assert!(f.chain(FallbackKind::ContextWindow, "other").is_empty());
    assert_eq!(f.chain(FallbackKind::ContentPolicy, "a"), ["safe"]);
    // Not configured at all: the generic list.
    let (config, _) = load_ok(
        &yaml.replace("  context_window_fallbacks: [{\"a\": [\"big\"]}]\n", ""),
        &[],
    );
    assert_eq!(
        config.fallbacks.chain(FallbackKind::ContextWindow, "a"),
        ["b", "c"]
    );
    assert_eq!(FallbackSettings::default().max_fallbacks, 5);

    let wrong = r#"
model_list:
  - model_name: a
    litellm_params: {model: openai/x, api_base: "http://h/v1"}
router_settings:
  fallbacks: {"a": ["b"]}
  context_window_fallbacks: [{"a": "big"}]
  default_fallbacks: "d"
"#;
    let report = load(wrong, &[]).expect_err("malformed fallbacks");
    let errors = paths(&report.errors);
    for path in [
        "router_settings.fallbacks",
        "router_settings.context_window_fallbacks[0].a",
        "router_settings.default_fallbacks",
    ] {
        assert!(errors.contains(&path), "{path} not in {errors:?}");
    }
}

#[test]
fn retry_policies_use_litellms_field_names() {
    let yaml = r#"
model_list:
  - model_name: a
    litellm_params: {model: openai/x, api_base: "http://h/v1"}
router_settings:
  retry_policy: {RateLimitErrorRetries: 4, DefaultRetries: 1}
  model_group_retry_policy:
    a: {BadRequestErrorRetries: 2}
"#;
    let (config, report) = load_ok(yaml, &[]);
    assert!(report.not_acted.is_empty(), "{:?}", report.not_acted);
    let r = &config.retries;
    assert_eq!(r.policy_for("b").unwrap().rate_limit, Some(4));
    assert_eq!(r.policy_for("b").unwrap().default, Some(1));
    assert_eq!(r.policy_for("a").unwrap().bad_request, Some(2));
    assert_eq!(
        r.policy_for("a").unwrap().rate_limit,
        None,
        "the group's own policy only"
    );
    let wrong = yaml.replace("RateLimitErrorRetries: 4", "RateLimitRetries: 4");
    let report = load(&wrong, &[]).expect_err("an unknown policy field");
    let message = report.lines(false).join("\n");
    assert!(
        message.contains("did you mean `RateLimitErrorRetries`"),
        "{message}"
    );
}

#[test]
fn cache_params_are_read_as_litellm_reads_them() {
    let yaml = |params: &str| {
        format!(
            "model_list:\n  - model_name: m\n    litellm_params: {{model: openai/gpt-4o}}\nlitellm_settings:\n  cache: true\n{params}"
        )
    };
    // No cache_params: type redis, its host from the REDIS_* variables, LiteLLM's TTLs.
    let (config, _) = load_ok(&yaml(""), &[("REDIS_HOST", "r1"), ("REDIS_PORT", "7000")]);
    let cache = config.cache.expect("cache on");
    assert_eq!(cache.redis_url.as_deref(), Some("redis://r1:7000"));
    assert_eq!(cache.ttl(), Duration::from_secs(60));
    assert!(cache.default_on && cache.chat);
    assert_eq!(cache.max_messages, 4);
    let (config, _) = load_ok(
        &yaml(
            "  cache_params:\n    type: local\n    mode: default_off\n    max_messages: 10\n    namespace: ns\n    supported_call_types: [aembedding]\n",
        ),
        &[],
    );
    let cache = config.cache.unwrap();
    assert_eq!(cache.redis_url, None);
    assert_eq!(cache.ttl(), Duration::from_secs(600));
    assert!(!cache.default_on && !cache.chat);
    assert_eq!(
        (cache.max_messages, cache.namespace.as_deref()),
        (10, Some("ns"))
    );
    let (config, _) = load_ok(
        &yaml(
            "  cache_params:\n    host: h\n    port: 6380\n    password: pw\n    ssl: true\n    ttl: 5\n",
        ),
        &[],
    );
    let cache = config.cache.unwrap();
    assert_eq!(cache.redis_url.as_deref(), Some("rediss://:pw@h:6380"));
    assert_eq!(cache.ttl(), Duration::from_secs(5));
    // A type not served yet: a warning, the cache off. A made-up type or mode: errors.
    let (config, report) = load_ok(&yaml("  cache_params:\n    type: redis-semantic\n"), &[]);
    assert!(config.cache.is_none());
    assert!(paths(&report.warnings).contains(&"litellm_settings.cache_params.type"));
    let report = load(
        &yaml("  cache_params:\n    type: disk\n    mode: sometimes\n"),
        &[],
    )
    .expect_err("refused");
    assert_eq!(
        paths(&report.errors),
        ["litellm_settings.cache_params.type"]
    );
    let report = load(&yaml("  cache_params:\n    mode: sometimes\n"), &[]).expect_err("refused");
    assert_eq!(
        paths(&report.errors),
        ["litellm_settings.cache_params.mode"]
    );
    // Unknown keys warn with a suggestion; cache: false is no cache.
    let (_, report) = load_ok(&yaml("  cache_params:\n    namespce: x\n"), &[]);
    assert!(
        report
            .warnings
            .iter()
            .any(|w| w.path == "litellm_settings.cache_params.namespce"
                && w.message.contains("namespace"))
    );
    let (config, _) = load_ok(&yaml("").replace("cache: true", "cache: false"), &[]);
    assert!(config.cache.is_none());
}
