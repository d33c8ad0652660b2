//! `sluice-mock`: the mock provider as a standalone server (load benchmark, manual testing).

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use sluice_mock::{MockConfig, MockProvider};

#[derive(Parser, Debug)]
#[command(name = "sluice-mock", about = "Mock OpenAI-format LLM provider")]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:18080")]
    listen: SocketAddr,
    /// Delay before each response header, in milliseconds.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// Content chunks per streamed answer.
    #[arg(long, default_value_t = 5)]
    chunks: usize,
    /// Pause between streamed chunks, in milliseconds.
    #[arg(long, default_value_t = 0)]
    chunk_delay_ms: u64,
    /// Model name to answer with (default: echo the request's).
    #[arg(long)]
    served_model: Option<String>,
    /// Runtime worker threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

fn main() {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async {
        let mock = MockProvider::bind(
            args.listen,
            MockConfig {
                latency: Duration::from_millis(args.latency_ms),
                chunks: args.chunks,
                chunk_delay: Duration::from_millis(args.chunk_delay_ms),
                served_model: args.served_model,
                record_limit: 0,
                ..MockConfig::default()
            },
        )
        .await;
        println!("sluice-mock listening on http://{}", mock.addr);
        std::future::pending::<()>().await;
    });
}
