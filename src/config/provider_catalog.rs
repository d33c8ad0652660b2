//! The providers Sluice knows, as data: each `model: <prefix>/...`'s wire format, LiteLLM's
//! default `api_base` and the environment variables its base URL and API key come from
//! (`litellm/litellm_core_utils/get_llm_provider_logic.py`, the providers' `*Config` classes),
//! so a LiteLLM config means the same upstream here. Config validation reads it (a misspelt
//! prefix gets a "did you mean"); the codecs in `providers/` are chosen by its [`Wire`].

use filters::route::Secret;

/// Bedrock's region when neither `aws_region_name` nor `AWS_REGION_NAME` / `AWS_REGION` /
/// `AWS_DEFAULT_REGION` is set.
pub const BEDROCK_DEFAULT_REGION: &str = "us-east-1";
/// Azure OpenAI's API version when neither `api_version` nor `AZURE_API_VERSION` is set: the GA inference version of
/// the published spec (`providers.md` 2.1).
pub const AZURE_DEFAULT_API_VERSION: &str = "2024-10-21";

/// How requests to a Bedrock deployment are authenticated.
#[derive(Debug, Clone)]
pub enum AwsAuth {
    /// SigV4 with an access key (and a session token for temporary credentials).
    SigV4 {
        access_key_id: String,
        secret_access_key: Secret,
        session_token: Option<Secret>,
        region: String,
    },
    /// A Bedrock API key, sent as `Authorization: Bearer`.
    ApiKey(Secret),
}

/// Cohere's v2 chat endpoint: its `api_base` is the whole URL, as in LiteLLM.
const COHERE_DEFAULT_ENDPOINT: &str = "https://api.cohere.com/v2/chat";

/// The wire format a provider speaks upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    /// OpenAI's `/chat/completions`, `/completions`, `/embeddings`: forwarded as is.
    OpenAi,
    /// OpenAI wire format, but only `/completions` (`text-completion-openai/`).
    OpenAiTextCompletion,
    /// Azure OpenAI: OpenAI bodies, deployment URLs with `api-version`, `api-key` header.
    Azure,
    /// Anthropic Messages API.
    Anthropic,
    /// Google Gemini (Generative Language API).
    Gemini,
    /// Ollama's native `/api/chat`.
    OllamaChat,
    /// Ollama's native `/api/generate`.
    Ollama,
    /// Cohere v2 chat.
    Cohere,
    /// AWS Bedrock Converse (SigV4).
    Bedrock,
}

impl Wire {
    /// Whether responses need translating (everything but the OpenAI-format wires).
    pub fn translates(self) -> bool {
        !matches!(
            self,
            Wire::OpenAi | Wire::OpenAiTextCompletion | Wire::Azure
        )
    }
}

/// Defaults and wire format of an OpenAI-compatible provider prefix.
#[derive(Debug)]
pub struct ProviderSpec {
    pub prefix: &'static str,
    pub wire: Wire,
    /// Variables consulted, in order, for the base URL when `api_base` is absent.
    pub base_env: &'static [&'static str],
    pub default_base: Option<&'static str>,
    /// Variables consulted, in order, for the API key when `api_key` is absent.
    pub key_env: &'static [&'static str],
    /// Placeholder key LiteLLM sends when none is configured (local servers).
    pub default_key: Option<&'static str>,
    /// Extra headers the provider expects (`HTTP-Referer` for OpenRouter...).
    pub static_headers: &'static [(&'static str, &'static str)],
    /// `api_base` must end with this path segment; LiteLLM appends it when missing.
    pub required_suffix: Option<&'static str>,
}

const OPENAI_BASE_ENV: &[&str] = &["OPENAI_BASE_URL", "OPENAI_API_BASE"];
const OPENAI_DEFAULT_BASE: &str = "https://api.openai.com/v1";

macro_rules! spec {
    ($prefix:literal, $base_env:expr, $base:expr, $key_env:expr) => {
        spec!($prefix, $base_env, $base, $key_env, None)
    };
    ($prefix:literal, $base_env:expr, $base:expr, $key_env:expr, $default_key:expr) => {
        ProviderSpec {
            prefix: $prefix,
            wire: Wire::OpenAi,
            base_env: $base_env,
            default_base: $base,
            key_env: $key_env,
            default_key: $default_key,
            static_headers: &[],
            required_suffix: None,
        }
    };
}

/// OpenAI-compatible providers Sluice forwards to, with LiteLLM's defaults.
pub static OPENAI_COMPATIBLE: &[ProviderSpec] = &[
    spec!(
        "openai",
        OPENAI_BASE_ENV,
        Some(OPENAI_DEFAULT_BASE),
        &["OPENAI_API_KEY"]
    ),
    ProviderSpec {
        prefix: "text-completion-openai",
        wire: Wire::OpenAiTextCompletion,
        base_env: OPENAI_BASE_ENV,
        default_base: Some(OPENAI_DEFAULT_BASE),
        key_env: &["OPENAI_API_KEY"],
        default_key: None,
        static_headers: &[],
        required_suffix: None,
    },
    spec!(
        "custom_openai",
        OPENAI_BASE_ENV,
        Some(OPENAI_DEFAULT_BASE),
        &["OPENAI_API_KEY"]
    ),
    spec!("openai_like", &[], None, &[]),
    spec!(
        "hosted_vllm",
        &["HOSTED_VLLM_API_BASE"],
        None,
        &["HOSTED_VLLM_API_KEY"],
        Some("fake-api-key")
    ),
    spec!(
        "vllm",
        &["HOSTED_VLLM_API_BASE"],
        None,
        &["HOSTED_VLLM_API_KEY"],
        Some("fake-api-key")
    ),
    spec!(
        "lm_studio",
        &["LM_STUDIO_API_BASE"],
        None,
        &["LM_STUDIO_API_KEY"],
        Some("fake-api-key")
    ),
    spec!(
        "llamafile",
        &["LLAMAFILE_API_BASE"],
        Some("http://127.0.0.1:8080/v1"),
        &["LLAMAFILE_API_KEY"],
        Some("fake-api-key")
    ),
    spec!(
        "litellm_proxy",
        &["LITELLM_PROXY_API_BASE"],
        None,
        &["LITELLM_PROXY_API_KEY"]
    ),
    spec!(
        "groq",
        &["GROQ_API_BASE"],
        Some("https://api.groq.com/openai/v1"),
        &["GROQ_API_KEY"]
    ),
    spec!(
        "deepseek",
        &["DEEPSEEK_API_BASE"],
        Some("https://api.deepseek.com/beta"),
        &["DEEPSEEK_API_KEY"]
    ),
    ProviderSpec {
        prefix: "mistral",
        wire: Wire::OpenAi,
        base_env: &["MISTRAL_AZURE_API_BASE"],
        default_base: Some("https://api.mistral.ai/v1"),
        key_env: &["MISTRAL_AZURE_API_KEY", "MISTRAL_API_KEY"],
        default_key: None,
        static_headers: &[],
        required_suffix: Some("/v1"),
    },
    spec!(
        "codestral",
        &["CODESTRAL_API_BASE"],
        Some("https://codestral.mistral.ai/v1"),
        &["CODESTRAL_API_KEY"]
    ),
    spec!(
        "together_ai",
        &["TOGETHER_AI_API_BASE"],
        Some("https://api.together.xyz/v1"),
        &[
            "TOGETHER_API_KEY",
            "TOGETHER_AI_API_KEY",
            "TOGETHERAI_API_KEY",
            "TOGETHER_AI_TOKEN"
        ]
    ),
    ProviderSpec {
        prefix: "openrouter",
        wire: Wire::OpenAi,
        base_env: &["OPENROUTER_API_BASE"],
        default_base: Some("https://openrouter.ai/api/v1"),
        key_env: &["OPENROUTER_API_KEY", "OR_API_KEY"],
        default_key: None,
        static_headers: &[
            ("HTTP-Referer", "https://litellm.ai"),
            ("X-Title", "liteLLM"),
        ],
        required_suffix: None,
    },
    spec!(
        "fireworks_ai",
        &["FIREWORKS_API_BASE"],
        Some("https://api.fireworks.ai/inference/v1"),
        &[
            "FIREWORKS_API_KEY",
            "FIREWORKS_AI_API_KEY",
            "FIREWORKSAI_API_KEY",
            "FIREWORKS_AI_TOKEN"
        ]
    ),
    spec!(
        "deepinfra",
        &["DEEPINFRA_API_BASE"],
        Some("https://api.deepinfra.com/v1/openai"),
        &["DEEPINFRA_API_KEY"]
    ),
    spec!(
        "perplexity",
        &["PERPLEXITY_API_BASE"],
        Some("https://api.perplexity.ai"),
        &["PERPLEXITYAI_API_KEY", "PERPLEXITY_API_KEY"]
    ),
    spec!(
        "xai",
        &["XAI_API_BASE"],
        Some("https://api.x.ai/v1"),
        &["XAI_API_KEY"]
    ),
    spec!(
        "anyscale",
        &["ANYSCALE_API_BASE"],
        Some("https://api.endpoints.anyscale.com/v1"),
        &["ANYSCALE_API_KEY"]
    ),
    spec!(
        "nvidia_nim",
        &["NVIDIA_NIM_API_BASE"],
        Some("https://integrate.api.nvidia.com/v1"),
        &["NVIDIA_NIM_API_KEY"]
    ),
    spec!(
        "cerebras",
        &["CEREBRAS_API_BASE"],
        Some("https://api.cerebras.ai/v1"),
        &["CEREBRAS_API_KEY"]
    ),
    spec!(
        "sambanova",
        &["SAMBANOVA_API_BASE"],
        Some("https://api.sambanova.ai/v1"),
        &["SAMBANOVA_API_KEY"]
    ),
    spec!(
        "meta_llama",
        &["LLAMA_API_BASE"],
        Some("https://api.llama.com/compat/v1"),
        &["LLAMA_API_KEY"]
    ),
    spec!(
        "ai21_chat",
        &["AI21_API_BASE"],
        Some("https://api.ai21.com/studio/v1"),
        &["AI21_API_KEY"]
    ),
    spec!(
        "volcengine",
        &["VOLCENGINE_API_BASE"],
        Some("https://ark.cn-beijing.volces.com/api/v3"),
        &["VOLCENGINE_API_KEY"]
    ),
    spec!(
        "empower",
        &["EMPOWER_API_BASE"],
        Some("https://app.empower.dev/api/v1"),
        &["EMPOWER_API_KEY"]
    ),
    spec!(
        "github",
        &["GITHUB_API_BASE"],
        Some("https://models.inference.ai.azure.com"),
        &["GITHUB_API_KEY"]
    ),
    spec!(
        "friendliai",
        &["FRIENDLI_API_BASE"],
        Some("https://api.friendli.ai/serverless/v1"),
        &["FRIENDLIAI_API_KEY", "FRIENDLI_TOKEN"]
    ),
    spec!(
        "galadriel",
        &["GALADRIEL_API_BASE"],
        Some("https://api.galadriel.com/v1"),
        &["GALADRIEL_API_KEY"]
    ),
    spec!(
        "nscale",
        &["NSCALE_API_BASE"],
        Some("https://inference.api.nscale.com/v1"),
        &["NSCALE_API_KEY"]
    ),
    spec!(
        "azure_ai",
        &["AZURE_AI_API_BASE"],
        None,
        &["AZURE_AI_API_KEY"]
    ),
    spec!(
        "moonshot",
        &["MOONSHOT_API_BASE"],
        Some("https://api.moonshot.ai/v1"),
        &["MOONSHOT_API_KEY"]
    ),
    spec!(
        "dashscope",
        &["DASHSCOPE_API_BASE"],
        Some("https://dashscope.aliyuncs.com/compatible-mode/v1"),
        &["DASHSCOPE_API_KEY"]
    ),
    spec!(
        "novita",
        &["NOVITA_API_BASE"],
        Some("https://api.novita.ai/v3/openai"),
        &["NOVITA_API_KEY"]
    ),
    spec!(
        "nebius",
        &["NEBIUS_API_BASE"],
        Some("https://api.studio.nebius.ai/v1"),
        &["NEBIUS_API_KEY"]
    ),
    spec!(
        "hyperbolic",
        &["HYPERBOLIC_API_BASE"],
        Some("https://api.hyperbolic.xyz/v1"),
        &["HYPERBOLIC_API_KEY"]
    ),
    spec!(
        "lambda_ai",
        &["LAMBDA_API_BASE"],
        Some("https://api.lambda.ai/v1"),
        &["LAMBDA_API_KEY"]
    ),
    spec!(
        "featherless_ai",
        &["FEATHERLESS_API_BASE"],
        Some("https://api.featherless.ai/v1"),
        &["FEATHERLESS_API_KEY"]
    ),
];

/// LiteLLM providers with their own wire format that Sluice does not translate yet. A deployment
/// using one is kept out of routing (with a start-up warning) instead of failing the config.
pub static NOT_YET_TRANSLATED: &[&str] = &[
    "anthropic_text",
    "vertex_ai",
    "vertex_ai_beta",
    "sagemaker",
    "sagemaker_chat",
    "replicate",
    "huggingface",
    "watsonx",
    "watsonx_text",
    "cloudflare",
    "clarifai",
    "nlp_cloud",
    "aleph_alpha",
    "petals",
    "palm",
    "ai21",
    "predibase",
    "triton",
    "databricks",
    "snowflake",
    "oci",
    "voyage",
    "jina_ai",
    "deepgram",
    "elevenlabs",
    "vllm_embedding",
    "text-completion-codestral",
    "openai_compatible_responses",
    "bytez",
    "baseten",
    "infinity",
    "assemblyai",
    "topaz",
    "gradient_ai",
    "heroku",
    "datarobot",
    "aiohttp_openai",
    "maritalk",
    "ovhcloud",
    "recraft",
    "v0",
    "morph",
    "wandb",
    "vercel_ai_gateway",
    "github_copilot",
    "chatgpt",
    "litellm_agent",
    "llamagate",
    "lemonade",
    "compactifai",
    "dotprompt",
    "docker_model_runner",
    "hyperbolic_text",
    "xinference",
    "fal_ai",
    "stability",
    "runwayml",
    "cometapi",
    "aws_polly",
    "gigachat",
    "minimax",
    "zai",
];

/// Providers with their own wire format, with LiteLLM's defaults.
pub static TRANSLATED: &[ProviderSpec] = &[
    ProviderSpec {
        prefix: "azure",
        wire: Wire::Azure,
        base_env: &["AZURE_API_BASE"],
        default_base: None,
        key_env: &["AZURE_OPENAI_API_KEY", "AZURE_API_KEY"],
        default_key: None,
        static_headers: &[],
        required_suffix: None,
    },
    ProviderSpec {
        prefix: "anthropic",
        wire: Wire::Anthropic,
        base_env: &["ANTHROPIC_API_BASE", "ANTHROPIC_BASE_URL"],
        default_base: Some("https://api.anthropic.com"),
        key_env: &["ANTHROPIC_API_KEY"],
        default_key: None,
        static_headers: &[],
        required_suffix: None,
    },
    ProviderSpec {
        prefix: "gemini",
        wire: Wire::Gemini,
        base_env: &["GEMINI_API_BASE"],
        default_base: Some("https://generativelanguage.googleapis.com/v1beta"),
        key_env: &["GEMINI_API_KEY", "GOOGLE_API_KEY"],
        default_key: None,
        static_headers: &[],
        required_suffix: None,
    },
    ProviderSpec {
        prefix: "bedrock",
        wire: Wire::Bedrock,
        base_env: &["AWS_BEDROCK_RUNTIME_ENDPOINT"],
        // https://bedrock-runtime.{region}.amazonaws.com, from the deployment's region.
        default_base: None,
        key_env: &["AWS_BEARER_TOKEN_BEDROCK"],
        default_key: None,
        static_headers: &[],
        required_suffix: None,
    },
    ProviderSpec {
        prefix: "ollama_chat",
        wire: Wire::OllamaChat,
        base_env: &["OLLAMA_API_BASE"],
        default_base: Some("http://localhost:11434"),
        key_env: &["OLLAMA_API_KEY"],
        default_key: None,
        static_headers: &[],
        required_suffix: None,
    },
    ProviderSpec {
        prefix: "ollama",
        wire: Wire::Ollama,
        base_env: &["OLLAMA_API_BASE"],
        default_base: Some("http://localhost:11434"),
        key_env: &["OLLAMA_API_KEY"],
        default_key: None,
        static_headers: &[],
        required_suffix: None,
    },
    ProviderSpec {
        prefix: "cohere_chat",
        wire: Wire::Cohere,
        base_env: &["COHERE_API_BASE"],
        default_base: Some(COHERE_DEFAULT_ENDPOINT),
        key_env: &["COHERE_API_KEY", "CO_API_KEY"],
        default_key: None,
        static_headers: &[],
        required_suffix: None,
    },
    ProviderSpec {
        prefix: "cohere",
        wire: Wire::Cohere,
        base_env: &["COHERE_API_BASE"],
        default_base: Some(COHERE_DEFAULT_ENDPOINT),
        key_env: &["COHERE_API_KEY", "CO_API_KEY"],
        default_key: None,
        static_headers: &[],
        required_suffix: None,
    },
];

/// The spec of an OpenAI-compatible prefix.
pub fn openai_compatible(prefix: &str) -> Option<&'static ProviderSpec> {
    OPENAI_COMPATIBLE.iter().find(|s| s.prefix == prefix)
}

/// The spec of any provider Sluice routes to.
pub fn spec(prefix: &str) -> Option<&'static ProviderSpec> {
    OPENAI_COMPATIBLE
        .iter()
        .chain(TRANSLATED)
        .find(|s| s.prefix == prefix)
}

/// Every provider name LiteLLM knows (for "did you mean" on a misspelt prefix).
pub fn known_provider_names() -> impl Iterator<Item = &'static &'static str> {
    OPENAI_COMPATIBLE
        .iter()
        .chain(TRANSLATED)
        .map(|s| &s.prefix)
        .chain(NOT_YET_TRANSLATED.iter())
}

/// The documentation row of an OpenAI-compatible provider (docs/configuration.md).
pub fn docs_row(spec: &ProviderSpec) -> String {
    let list = |names: &[&str]| names.join(", ");
    format!(
        "| `{}/` | {} | {} | {} |",
        spec.prefix,
        spec.default_base.unwrap_or("(none: set api_base)"),
        list(spec.base_env),
        list(spec.key_env)
    )
}

#[cfg(test)]
mod docs_tests {
    use super::*;

    /// docs/configuration.md must describe every provider prefix as the code does.
    #[test]
    fn configuration_docs_list_every_provider_with_its_defaults() {
        let docs = include_str!("../../docs/configuration.md");
        let missing: Vec<String> = OPENAI_COMPATIBLE
            .iter()
            .chain(TRANSLATED)
            .map(docs_row)
            .filter(|row| !docs.contains(row.as_str()))
            .collect();
        assert!(
            missing.is_empty(),
            "rows missing from docs/configuration.md:\n{}",
            missing.join("\n")
        );
        for name in NOT_YET_TRANSLATED {
            assert!(
                docs.contains(&format!("`{name}`")),
                "{name} not in docs/configuration.md"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_unique_and_disjoint() {
        let mut seen = std::collections::HashSet::new();
        for name in known_provider_names() {
            assert!(seen.insert(*name), "duplicate provider {name}");
        }
    }

    #[test]
    fn openai_defaults_match_litellm() {
        let openai = openai_compatible("openai").unwrap();
        assert_eq!(openai.default_base, Some("https://api.openai.com/v1"));
        assert_eq!(openai.key_env, ["OPENAI_API_KEY"]);
        assert_eq!(
            openai_compatible("groq").unwrap().default_base,
            Some("https://api.groq.com/openai/v1")
        );
        assert!(openai_compatible("anthropic").is_none());
    }
}
