//! Sluice: an LLM gateway on Cloudflare Pingora that reads LiteLLM's `config.yaml` and speaks
//! the OpenAI API. `main.rs` is the command line; this library holds the gateway so tests and
//! benchmarks can use its parts.
//!
//! * [`config`]: LiteLLM config → validated [`config::RuntimeConfig`] (start-up)
//! * [`proxy`]: the Pingora `ProxyHttp` adapter and the forwarder (every request)
//! * [`providers`]: upstream wire formats (request encoding, SSE rewriting)
//! * [`upstream`]: endpoints and background DNS
//! * [`routing`]: cooldowns and retry decisions between attempts
//! * [`management`]: keys, teams, budgets and spend (storage, ledgers); [`admin`]: LiteLLM's
//!   admin API over it
//! * [`listings`], [`metrics`], [`logging`], [`shutdown`], [`server`]: the rest of the process

pub mod access_log;
pub mod admin;
pub mod app;
pub mod cache;
pub mod clock;
pub mod config;
pub mod decimal;
pub mod downstream;
#[doc(hidden)]
pub mod fuzz;
pub mod http_query;
pub mod listings;
pub mod logging;
pub mod management;
pub mod metrics;
pub mod pricing;
pub mod providers;
pub mod proxy;
pub mod routing;
pub mod server;
pub mod shutdown;
pub mod upstream;
