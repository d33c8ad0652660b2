//! Where each provider's pass-through route (`/anthropic/*`, `/gemini/*`, ...) sends requests
//! and with which credentials, decided once at start-up the way LiteLLM 1.109.1 decides it on
//! every request (`passthrough_endpoint_router.py`, `llm_passthrough_endpoints.py`): the key of
//! the first deployment with `use_in_pass_through: true` for the provider, else
//! `{PROVIDER}_API_KEY`; the base from `{PROVIDER}_API_BASE` (Anthropic also reads
//! `ANTHROPIC_BASE_URL`), else the provider's public API. The client never chooses the host.

use filters::endpoint::PassThroughProvider;
use filters::route::Secret;

use super::env::Env;
use super::provider_catalog::{AwsAuth, BEDROCK_DEFAULT_REGION};
use super::{DeploymentConfig, UpstreamUrl};

/// How a pass-through request is authenticated upstream (the client's own credential headers
/// never go through: they carry its Sluice key).
#[derive(Debug, Clone)]
pub enum PassThroughAuth {
    /// `Authorization: Bearer` and `api-key` (LiteLLM sends both to OpenAI and Azure).
    OpenAi(Secret),
    /// `Authorization: Bearer` (Cohere, Mistral, OpenRouter, vLLM).
    Bearer(Secret),
    /// `x-api-key` (Anthropic).
    XApiKey(Secret),
    /// `?key=` in the query string (Google AI Studio).
    QueryKey(Secret),
    /// SigV4 over the request (or a Bedrock API key).
    Aws(AwsAuth),
    /// Nothing (a vLLM server without a key).
    None,
}

/// One provider's pass-through destination.
#[derive(Debug, Clone)]
pub struct PassThroughTarget {
    pub base: UpstreamUrl,
    pub auth: PassThroughAuth,
    /// OpenAI's public base takes paths without `/v1` too (LiteLLM adds it).
    pub add_v1: bool,
}

/// Every provider's destination, or why its route cannot be used (no credential configured).
#[derive(Debug, Clone)]
pub struct PassThroughTargets {
    targets: Vec<(PassThroughProvider, Result<PassThroughTarget, String>)>,
}

impl PassThroughTargets {
    /// Resolves every provider's destination from the deployments and the environment.
    pub fn resolve(deployments: &[DeploymentConfig], env: &Env) -> PassThroughTargets {
        let targets = PassThroughProvider::ALL
            .iter()
            .map(|&p| (p, target(p, deployments, env)))
            .collect();
        PassThroughTargets { targets }
    }

    /// The provider's destination, or the message to answer with when it has none.
    pub fn get(&self, provider: PassThroughProvider) -> Result<&PassThroughTarget, &str> {
        match self.targets.iter().find(|(p, _)| *p == provider) {
            Some((_, Ok(t))) => Ok(t),
            Some((_, Err(why))) => Err(why),
            None => Err("this provider has no pass-through route"),
        }
    }

    /// The slot of a provider's destination in [`Self::bases`] (for its upstream endpoint).
    pub fn slot(&self, provider: PassThroughProvider) -> Option<usize> {
        self.targets.iter().position(|(p, _)| *p == provider)
    }

    /// Each slot's base URL (`None` for a provider without a destination).
    pub fn bases(&self) -> impl Iterator<Item = Option<&UpstreamUrl>> {
        self.targets
            .iter()
            .map(|(_, t)| t.as_ref().ok().map(|t| &t.base))
    }

    /// The providers whose routes can be used, for the start-up log.
    pub fn configured(&self) -> impl Iterator<Item = PassThroughProvider> + '_ {
        self.targets
            .iter()
            .filter(|(_, t)| t.is_ok())
            .map(|(p, _)| *p)
    }
}

/// The deployment providers whose `use_in_pass_through` credentials a route takes.
fn deployment_providers(p: PassThroughProvider) -> &'static [&'static str] {
    match p {
        PassThroughProvider::Vllm => &["hosted_vllm", "vllm"],
        PassThroughProvider::Azure => &["azure", "azure_ai"],
        _ => std::slice::from_ref(match p {
            PassThroughProvider::OpenAi => &"openai",
            PassThroughProvider::Anthropic => &"anthropic",
            PassThroughProvider::Gemini => &"gemini",
            PassThroughProvider::Cohere => &"cohere",
            PassThroughProvider::Bedrock => &"bedrock",
            PassThroughProvider::Mistral => &"mistral",
            _ => &"openrouter",
        }),
    }
}

fn target(
    p: PassThroughProvider,
    deployments: &[DeploymentConfig],
    env: &Env,
) -> Result<PassThroughTarget, String> {
    let chosen = deployments.iter().find(|d| {
        d.use_in_pass_through && deployment_providers(p).contains(&d.deployment.provider.as_str())
    });
    let upper = p.name().to_ascii_uppercase();
    let key_var = format!("{upper}_API_KEY");
    let base_var = format!("{upper}_API_BASE");
    let key = chosen
        .and_then(|d| d.deployment.api_key.clone())
        .or_else(|| env.get(&key_var).map(Secret::new));
    let missing = |what: &str| {
        format!(
            "Required '{what}' in environment to make pass-through calls to {}.",
            p.name()
        )
    };
    let parse = |url: &str, from: &str| {
        UpstreamUrl::parse(url).map_err(|e| {
            format!(
                "the {} pass-through base {from} ({url:?}) is not a URL: {e}",
                p.name()
            )
        })
    };
    let base_or = |default: &str| -> Result<(UpstreamUrl, bool), String> {
        match env.get(&base_var) {
            Some(url) => Ok((parse(&url, &base_var)?, false)),
            None => Ok((parse(default, "default")?, p == PassThroughProvider::OpenAi)),
        }
    };
    let (base, add_v1, auth) = match p {
        PassThroughProvider::OpenAi => {
            let (base, add_v1) = base_or("https://api.openai.com")?;
            let key = key.ok_or_else(|| missing(&key_var))?;
            (base, add_v1, PassThroughAuth::OpenAi(key))
        }
        PassThroughProvider::Azure => {
            let url = env.get(&base_var).ok_or_else(|| missing(&base_var))?;
            let key = key.ok_or_else(|| missing(&key_var))?;
            (parse(&url, &base_var)?, false, PassThroughAuth::OpenAi(key))
        }
        PassThroughProvider::Anthropic => {
            let url = env
                .first(&["ANTHROPIC_API_BASE", "ANTHROPIC_BASE_URL"])
                .unwrap_or_else(|| "https://api.anthropic.com".into());
            let key = key.ok_or_else(|| missing(&key_var))?;
            (
                parse(&url, "ANTHROPIC_API_BASE")?,
                false,
                PassThroughAuth::XApiKey(key),
            )
        }
        PassThroughProvider::Gemini => {
            let (base, _) = base_or("https://generativelanguage.googleapis.com")?;
            let key = key.ok_or_else(|| missing(&key_var))?;
            (base, false, PassThroughAuth::QueryKey(key))
        }
        PassThroughProvider::Cohere
        | PassThroughProvider::Mistral
        | PassThroughProvider::OpenRouter => {
            let default = match p {
                PassThroughProvider::Cohere => "https://api.cohere.com",
                PassThroughProvider::Mistral => "https://api.mistral.ai",
                _ => "https://openrouter.ai/api/v1",
            };
            let (base, _) = base_or(default)?;
            let key = key.ok_or_else(|| missing(&key_var))?;
            (base, false, PassThroughAuth::Bearer(key))
        }
        PassThroughProvider::Vllm => {
            let url = chosen
                .map(|d| d.deployment.api_base.clone())
                .or_else(|| env.get(&base_var))
                .ok_or_else(|| missing(&base_var))?;
            let auth = key.map_or(PassThroughAuth::None, PassThroughAuth::Bearer);
            (parse(&url, &base_var)?, false, auth)
        }
        PassThroughProvider::Bedrock => {
            if let Some(d) = chosen {
                let auth = d.aws.clone().ok_or_else(|| {
                    "the bedrock deployment marked use_in_pass_through has no AWS credentials"
                        .to_string()
                })?;
                (
                    parse(&d.deployment.api_base, "of the deployment")?,
                    false,
                    PassThroughAuth::Aws(auth),
                )
            } else {
                let region = env
                    .first(&["AWS_REGION_NAME", "AWS_REGION", "AWS_DEFAULT_REGION"])
                    .unwrap_or_else(|| BEDROCK_DEFAULT_REGION.to_string());
                let url = env
                    .get("AWS_BEDROCK_RUNTIME_ENDPOINT")
                    .unwrap_or_else(|| format!("https://bedrock-runtime.{region}.amazonaws.com"));
                let auth = match (
                    env.get("AWS_ACCESS_KEY_ID"),
                    env.get("AWS_SECRET_ACCESS_KEY"),
                    env.get("AWS_BEARER_TOKEN_BEDROCK"),
                ) {
                    (Some(access_key_id), Some(secret), _) => AwsAuth::SigV4 {
                        access_key_id,
                        secret_access_key: Secret::new(secret),
                        session_token: env.get("AWS_SESSION_TOKEN").map(Secret::new),
                        region,
                    },
                    (_, _, Some(key)) => AwsAuth::ApiKey(Secret::new(key)),
                    _ => return Err(missing("AWS_ACCESS_KEY_ID")),
                };
                (
                    parse(&url, "AWS_BEDROCK_RUNTIME_ENDPOINT")?,
                    false,
                    PassThroughAuth::Aws(auth),
                )
            }
        }
    };
    Ok(PassThroughTarget { base, auth, add_v1 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_gives_bases_and_keys_and_missing_keys_say_which_variable() {
        let env = Env::fixed([
            ("ANTHROPIC_API_KEY", "sk-ant"),
            ("ANTHROPIC_BASE_URL", "http://127.0.0.1:9/anthropic"),
            ("GEMINI_API_KEY", "g-key"),
            ("AWS_ACCESS_KEY_ID", "AKID"),
            ("AWS_SECRET_ACCESS_KEY", "secret"),
            ("AWS_REGION_NAME", "eu-west-1"),
        ]);
        let t = PassThroughTargets::resolve(&[], &env);
        let anthropic = t.get(PassThroughProvider::Anthropic).unwrap();
        assert_eq!(anthropic.base.host, "127.0.0.1");
        assert_eq!(anthropic.base.path, "/anthropic");
        assert!(matches!(&anthropic.auth, PassThroughAuth::XApiKey(k) if k.expose() == "sk-ant"));
        let gemini = t.get(PassThroughProvider::Gemini).unwrap();
        assert_eq!(gemini.base.host, "generativelanguage.googleapis.com");
        assert!(gemini.base.tls);
        let bedrock = t.get(PassThroughProvider::Bedrock).unwrap();
        assert_eq!(bedrock.base.host, "bedrock-runtime.eu-west-1.amazonaws.com");
        assert!(
            matches!(&bedrock.auth, PassThroughAuth::Aws(AwsAuth::SigV4 { region, .. }) if region == "eu-west-1")
        );
        assert_eq!(
            t.get(PassThroughProvider::OpenAi).unwrap_err(),
            "Required 'OPENAI_API_KEY' in environment to make pass-through calls to openai."
        );
        assert_eq!(
            t.get(PassThroughProvider::Azure).unwrap_err(),
            "Required 'AZURE_API_BASE' in environment to make pass-through calls to azure."
        );
        let openai = PassThroughTargets::resolve(&[], &Env::fixed([("OPENAI_API_KEY", "sk")]));
        assert!(openai.get(PassThroughProvider::OpenAi).unwrap().add_v1);
        let configured: Vec<_> = t.configured().collect();
        assert_eq!(
            configured,
            [
                PassThroughProvider::Anthropic,
                PassThroughProvider::Gemini,
                PassThroughProvider::Bedrock
            ]
        );
    }
}
