//! The routes Sluice answers, matched from method and path (with or without the `/v1` prefix).

use http::Method;

/// What a request asks for. LLM endpoints go through the filter chain and the forwarder; the
/// rest are answered locally.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    ChatCompletions,
    /// Anthropic's Messages API (`POST /v1/messages`), served for any model group.
    Messages,
    Completions,
    Embeddings,
    Models,
    /// OpenAI's Responses API (`POST /v1/responses`).
    Responses,
    /// `GET` or `DELETE /v1/responses/{id}`.
    ResponseItem,
    /// `GET /v1/responses/{id}/input_items`.
    ResponseInputItems,
    /// `POST /v1/images/generations`.
    ImageGenerations,
    /// `POST /v1/audio/speech` (JSON in, audio out).
    AudioSpeech,
    /// `POST /v1/audio/transcriptions` (multipart form in).
    AudioTranscriptions,
    /// `POST /v1/moderations`.
    Moderations,
    /// `POST /v1/rerank` (Cohere's format; also `/v2/rerank`).
    Rerank,
    /// `GET /v1/models/{id}` (the OpenAI SDK's `models.retrieve`).
    ModelRetrieve,
    ModelInfo,
    ModelGroupInfo,
    HealthLiveness,
    HealthReadiness,
    Metrics,
    /// The management API (`/key/*`, `/team/*`, `/user/*`, `/customer/*`, `/end_user/*`,
    /// `/budget/*`, `/spend/*`, `/global/spend*`); methods are checked by its handler.
    Management,
    /// LiteLLM's cache admin routes (`/cache/ping`, `/cache/delete`, `/cache/flushall`,
    /// `/cache/redis/info`); methods are checked by its handler.
    CacheAdmin,
    /// A provider pass-through route (`/anthropic/...`, `/gemini/...`, ...): forwarded as it
    /// is to the provider with the gateway's credentials, any method.
    PassThrough(PassThroughProvider),
    /// A known path with the wrong method.
    MethodNotAllowed,
    NotFound,
}

/// Paths of LiteLLM's management API.
fn is_management(path: &str) -> bool {
    const PREFIXES: [&str; 8] = [
        "/key/",
        "/team/",
        "/user/",
        "/customer/",
        "/end_user/",
        "/budget/",
        "/spend/",
        "/global/spend",
    ];
    PREFIXES.iter().any(|p| path.starts_with(p))
}

/// The providers with a pass-through route, `/{prefix}/{provider's own path}` (LiteLLM's
/// `llm_passthrough_endpoints.py`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PassThroughProvider {
    OpenAi,
    Azure,
    Anthropic,
    Gemini,
    Cohere,
    Bedrock,
    Vllm,
    Mistral,
    OpenRouter,
}

impl PassThroughProvider {
    pub const ALL: [PassThroughProvider; 9] = [
        PassThroughProvider::OpenAi,
        PassThroughProvider::Azure,
        PassThroughProvider::Anthropic,
        PassThroughProvider::Gemini,
        PassThroughProvider::Cohere,
        PassThroughProvider::Bedrock,
        PassThroughProvider::Vllm,
        PassThroughProvider::Mistral,
        PassThroughProvider::OpenRouter,
    ];

    /// The route's first path segment, which is also LiteLLM's provider name (its credentials'
    /// `{NAME}_API_KEY`, and a `use_in_pass_through` deployment's provider).
    pub fn name(self) -> &'static str {
        match self {
            PassThroughProvider::OpenAi => "openai",
            PassThroughProvider::Azure => "azure",
            PassThroughProvider::Anthropic => "anthropic",
            PassThroughProvider::Gemini => "gemini",
            PassThroughProvider::Cohere => "cohere",
            PassThroughProvider::Bedrock => "bedrock",
            PassThroughProvider::Vllm => "vllm",
            PassThroughProvider::Mistral => "mistral",
            PassThroughProvider::OpenRouter => "openrouter",
        }
    }

    /// The provider whose route `path` is, and the provider's own path (from its `/`).
    pub fn of_path(path: &str) -> Option<(PassThroughProvider, &str)> {
        let rest = path.strip_prefix('/')?;
        let (first, _) = rest.split_once('/')?;
        let provider = match first {
            "openai" | "openai_passthrough" => PassThroughProvider::OpenAi,
            "azure" | "azure_ai" => PassThroughProvider::Azure,
            "anthropic" => PassThroughProvider::Anthropic,
            "gemini" => PassThroughProvider::Gemini,
            "cohere" => PassThroughProvider::Cohere,
            "bedrock" => PassThroughProvider::Bedrock,
            "vllm" => PassThroughProvider::Vllm,
            "mistral" => PassThroughProvider::Mistral,
            "openrouter" => PassThroughProvider::OpenRouter,
            _ => return None,
        };
        Some((provider, &rest[first.len()..]))
    }

    /// LiteLLM's `route` label of the provider's pass-through route.
    pub fn route_label(self) -> &'static str {
        match self {
            PassThroughProvider::OpenAi => "/openai",
            PassThroughProvider::Azure => "/azure",
            PassThroughProvider::Anthropic => "/anthropic",
            PassThroughProvider::Gemini => "/gemini",
            PassThroughProvider::Cohere => "/cohere",
            PassThroughProvider::Bedrock => "/bedrock",
            PassThroughProvider::Vllm => "/vllm",
            PassThroughProvider::Mistral => "/mistral",
            PassThroughProvider::OpenRouter => "/openrouter",
        }
    }
}

/// Azure's deployment-style routes, which LiteLLM serves as its own (the Azure OpenAI SDK's
/// paths): `/openai/deployments/{model}/chat/completions`, `/engines/{model}/completions`, ...
/// with the model in the path (it may hold `/`), which wins over the body's. The endpoint and
/// the model, still percent-encoded.
pub fn deployment_route(path: &str) -> Option<(Endpoint, &str)> {
    let path = path.strip_prefix("/v1").unwrap_or(path);
    let rest = path
        .strip_prefix("/openai/deployments/")
        .or_else(|| path.strip_prefix("/engines/"))?;
    let (model, endpoint) = [
        ("/chat/completions", Endpoint::ChatCompletions),
        ("/completions", Endpoint::Completions),
        ("/embeddings", Endpoint::Embeddings),
    ]
    .into_iter()
    .find_map(|(suffix, e)| rest.strip_suffix(suffix).map(|m| (m, e)))?;
    (!model.is_empty()).then_some((endpoint, model))
}

impl Endpoint {
    /// Matches a request line. The query string must already be stripped from `path`.
    pub fn classify(method: &Method, path: &str) -> Endpoint {
        let path = path
            .strip_suffix('/')
            .filter(|p| !p.is_empty())
            .unwrap_or(path);
        let unversioned = path.strip_prefix("/v1").filter(|p| p.starts_with('/'));
        let route = unversioned.unwrap_or(path);
        let (endpoint, wants) = match route {
            "/chat/completions" => (Endpoint::ChatCompletions, Method::POST),
            "/messages" => (Endpoint::Messages, Method::POST),
            "/completions" => (Endpoint::Completions, Method::POST),
            "/embeddings" => (Endpoint::Embeddings, Method::POST),
            "/responses" => (Endpoint::Responses, Method::POST),
            "/images/generations" => (Endpoint::ImageGenerations, Method::POST),
            "/audio/speech" => (Endpoint::AudioSpeech, Method::POST),
            "/audio/transcriptions" => (Endpoint::AudioTranscriptions, Method::POST),
            "/moderations" => (Endpoint::Moderations, Method::POST),
            "/rerank" | "/v2/rerank" => (Endpoint::Rerank, Method::POST),
            r if r.starts_with("/responses/") && r.len() > "/responses/".len() => {
                if r.ends_with("/input_items") {
                    (Endpoint::ResponseInputItems, Method::GET)
                } else if *method == Method::DELETE {
                    return Endpoint::ResponseItem;
                } else {
                    (Endpoint::ResponseItem, Method::GET)
                }
            }
            "/models" => (Endpoint::Models, Method::GET),
            r if r.len() > "/models/".len() && r.starts_with("/models/") => {
                (Endpoint::ModelRetrieve, Method::GET)
            }
            "/model/info" => (Endpoint::ModelInfo, Method::GET),
            "/model_group/info" if unversioned.is_none() => (Endpoint::ModelGroupInfo, Method::GET),
            "/health/liveness" | "/health/liveliness" if unversioned.is_none() => {
                (Endpoint::HealthLiveness, Method::GET)
            }
            "/health/readiness" if unversioned.is_none() => {
                (Endpoint::HealthReadiness, Method::GET)
            }
            "/metrics" if unversioned.is_none() => (Endpoint::Metrics, Method::GET),
            _ if unversioned.is_none() && is_management(route) => return Endpoint::Management,
            "/cache/ping" | "/cache/delete" | "/cache/flushall" | "/cache/redis/info"
                if unversioned.is_none() =>
            {
                return Endpoint::CacheAdmin;
            }
            // Only paths no route above names: the common routes never look further.
            _ => return Endpoint::provider_route(method, path),
        };
        if *method == wants || (wants == Method::GET && *method == Method::HEAD) {
            endpoint
        } else {
            Endpoint::MethodNotAllowed
        }
    }

    /// Azure's deployment routes (POST only) and the provider pass-through routes.
    fn provider_route(method: &Method, path: &str) -> Endpoint {
        if let Some((endpoint, _)) = deployment_route(path) {
            return if *method == Method::POST {
                endpoint
            } else {
                Endpoint::MethodNotAllowed
            };
        }
        match PassThroughProvider::of_path(path) {
            Some((provider, _)) => Endpoint::PassThrough(provider),
            None => Endpoint::NotFound,
        }
    }

    /// Endpoints whose requests are forwarded to a deployment.
    pub fn is_llm(self) -> bool {
        matches!(
            self,
            Endpoint::ChatCompletions
                | Endpoint::Messages
                | Endpoint::Completions
                | Endpoint::Embeddings
                | Endpoint::Responses
                | Endpoint::ImageGenerations
                | Endpoint::AudioSpeech
                | Endpoint::AudioTranscriptions
                | Endpoint::Moderations
                | Endpoint::Rerank
        )
    }

    /// Endpoints that need a key when a master key is set (health and metrics stay public, as in
    /// LiteLLM).
    pub fn needs_auth(self) -> bool {
        !matches!(
            self,
            Endpoint::HealthLiveness
                | Endpoint::HealthReadiness
                | Endpoint::Metrics
                | Endpoint::NotFound
                | Endpoint::MethodNotAllowed
        )
    }

    /// The path suffix appended to an OpenAI-compatible `api_base`.
    pub fn upstream_path(self) -> &'static str {
        match self {
            Endpoint::ChatCompletions => "/chat/completions",
            Endpoint::Completions => "/completions",
            Endpoint::Embeddings => "/embeddings",
            Endpoint::Responses => "/responses",
            Endpoint::ImageGenerations => "/images/generations",
            Endpoint::AudioSpeech => "/audio/speech",
            Endpoint::AudioTranscriptions => "/audio/transcriptions",
            Endpoint::Moderations => "/moderations",
            Endpoint::Rerank => "/rerank",
            _ => "",
        }
    }

    /// The body member this endpoint cannot do without, checked before any provider call.
    pub fn required(self) -> Option<crate::request::Required> {
        use crate::request::Required;
        match self {
            Endpoint::ChatCompletions | Endpoint::Messages => Some(Required::Messages),
            Endpoint::Embeddings | Endpoint::AudioSpeech | Endpoint::Moderations => {
                Some(Required::Input)
            }
            Endpoint::Completions | Endpoint::ImageGenerations => Some(Required::Prompt),
            _ => None,
        }
    }

    /// LiteLLM's `route` label value.
    pub fn route_label(self) -> &'static str {
        match self {
            Endpoint::ChatCompletions => "/chat/completions",
            Endpoint::Messages => "/v1/messages",
            Endpoint::Completions => "/completions",
            Endpoint::Embeddings => "/embeddings",
            Endpoint::Responses => "/v1/responses",
            Endpoint::ResponseItem => "/v1/responses/{response_id}",
            Endpoint::ResponseInputItems => "/v1/responses/{response_id}/input_items",
            Endpoint::ImageGenerations => "/images/generations",
            Endpoint::AudioSpeech => "/audio/speech",
            Endpoint::AudioTranscriptions => "/audio/transcriptions",
            Endpoint::Moderations => "/moderations",
            Endpoint::Rerank => "/rerank",
            Endpoint::Models => "/models",
            Endpoint::ModelRetrieve => "/models/{model_id}",
            Endpoint::ModelInfo => "/model/info",
            Endpoint::ModelGroupInfo => "/model_group/info",
            Endpoint::HealthLiveness => "/health/liveness",
            Endpoint::HealthReadiness => "/health/readiness",
            Endpoint::Metrics => "/metrics",
            Endpoint::Management => "/management",
            Endpoint::CacheAdmin => "/cache",
            Endpoint::PassThrough(p) => p.route_label(),
            Endpoint::MethodNotAllowed | Endpoint::NotFound => "other",
        }
    }

    /// LiteLLM's `call_type` for spend logs.
    pub fn call_type(self) -> &'static str {
        match self {
            Endpoint::ChatCompletions => "acompletion",
            Endpoint::Messages => "anthropic_messages",
            Endpoint::Completions => "atext_completion",
            Endpoint::Embeddings => "aembedding",
            Endpoint::Responses => "aresponses",
            Endpoint::ResponseItem => "aget_responses",
            Endpoint::ResponseInputItems => "alist_input_items",
            Endpoint::ImageGenerations => "aimage_generation",
            Endpoint::AudioSpeech => "aspeech",
            Endpoint::AudioTranscriptions => "atranscription",
            Endpoint::Moderations => "amoderation",
            Endpoint::Rerank => "arerank",
            Endpoint::PassThrough(_) => "pass_through_endpoint",
            _ => "",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn azure_deployment_routes_are_llm_routes_and_other_provider_paths_pass_through() {
        let post = Method::POST;
        assert_eq!(
            deployment_route("/openai/deployments/azure/gpt-4o/chat/completions"),
            Some((Endpoint::ChatCompletions, "azure/gpt-4o"))
        );
        assert_eq!(
            deployment_route("/engines/gpt-35/completions"),
            Some((Endpoint::Completions, "gpt-35"))
        );
        assert_eq!(
            Endpoint::classify(&post, "/openai/deployments/emb/embeddings"),
            Endpoint::Embeddings
        );
        assert_eq!(
            Endpoint::classify(&Method::GET, "/openai/deployments/m/chat/completions"),
            Endpoint::MethodNotAllowed
        );
        assert_eq!(
            Endpoint::classify(&post, "/openai/deployments//chat/completions"),
            Endpoint::PassThrough(PassThroughProvider::OpenAi)
        );
        assert_eq!(
            Endpoint::classify(&post, "/openai/v1/chat/completions"),
            Endpoint::PassThrough(PassThroughProvider::OpenAi)
        );
        assert_eq!(
            Endpoint::classify(&Method::GET, "/gemini/v1beta/models"),
            Endpoint::PassThrough(PassThroughProvider::Gemini)
        );
        assert_eq!(
            Endpoint::classify(&post, "/anthropic"),
            Endpoint::NotFound,
            "a route needs a path under the provider"
        );
    }

    #[test]
    fn matches_with_and_without_v1() {
        for p in [
            "/chat/completions",
            "/v1/chat/completions",
            "/v1/chat/completions/",
        ] {
            assert_eq!(
                Endpoint::classify(&Method::POST, p),
                Endpoint::ChatCompletions
            );
        }
        assert_eq!(
            Endpoint::classify(&Method::POST, "/v1/embeddings"),
            Endpoint::Embeddings
        );
        assert_eq!(
            Endpoint::classify(&Method::POST, "/completions"),
            Endpoint::Completions
        );
        assert_eq!(
            Endpoint::classify(&Method::GET, "/v1/models"),
            Endpoint::Models
        );
        assert_eq!(
            Endpoint::classify(&Method::GET, "/v1/model/info"),
            Endpoint::ModelInfo
        );
        assert_eq!(
            Endpoint::classify(&Method::POST, "/v1/responses"),
            Endpoint::Responses
        );
        for m in [Method::GET, Method::DELETE] {
            assert_eq!(
                Endpoint::classify(&m, "/v1/responses/resp_1"),
                Endpoint::ResponseItem
            );
        }
        assert_eq!(
            Endpoint::classify(&Method::GET, "/responses/resp_1/input_items"),
            Endpoint::ResponseInputItems
        );
        assert_eq!(
            Endpoint::classify(&Method::POST, "/v1/responses/resp_1"),
            Endpoint::MethodNotAllowed
        );
        for p in ["/v1/models/gpt-4o", "/models/openai/gpt-4o"] {
            assert_eq!(Endpoint::classify(&Method::GET, p), Endpoint::ModelRetrieve);
        }
        assert_eq!(
            Endpoint::classify(&Method::POST, "/v1/models/gpt-4o"),
            Endpoint::MethodNotAllowed
        );
        assert_eq!(
            Endpoint::classify(&Method::GET, "/model_group/info"),
            Endpoint::ModelGroupInfo
        );
        assert_eq!(
            Endpoint::classify(&Method::GET, "/health/liveliness"),
            Endpoint::HealthLiveness
        );
        assert_eq!(
            Endpoint::classify(&Method::HEAD, "/health/liveness"),
            Endpoint::HealthLiveness
        );
    }

    #[test]
    fn wrong_method_and_unknown_paths() {
        assert_eq!(
            Endpoint::classify(&Method::GET, "/v1/chat/completions"),
            Endpoint::MethodNotAllowed
        );
        assert_eq!(
            Endpoint::classify(&Method::POST, "/v1/models"),
            Endpoint::MethodNotAllowed
        );
        assert_eq!(
            Endpoint::classify(&Method::GET, "/v2/models"),
            Endpoint::NotFound
        );
        assert_eq!(Endpoint::classify(&Method::GET, "/v1"), Endpoint::NotFound);
        assert_eq!(Endpoint::classify(&Method::GET, "/"), Endpoint::NotFound);
        assert_eq!(
            Endpoint::classify(&Method::GET, "/v1/metrics"),
            Endpoint::NotFound
        );
    }
}
