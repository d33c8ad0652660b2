//! `sluice-loadgen`: a closed-loop HTTP/1.1 load generator for the load benchmark.
//!
//! Each of `--concurrency` connections sends one request after another (keep-alive) for
//! `--duration` after a `--warmup`, and records every request's latency (until the body is fully
//! read) and time to first body byte in HDR histograms. Prints one JSON object.
//! Runs on a single-threaded runtime so it can be pinned to one core.

use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::body::Body as _;
use hyper_util::rt::TokioIo;

#[derive(Parser, Debug, Clone)]
#[command(name = "sluice-loadgen")]
struct Args {
    /// Target URL (http only).
    #[arg(long)]
    url: String,
    /// Concurrent connections, each with one request in flight.
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    /// Measured seconds.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds of load before measuring.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Request body (JSON); POST when given, GET otherwise.
    #[arg(long)]
    body: Option<String>,
    /// Extra header, `name: value` (repeatable).
    #[arg(long = "header")]
    headers: Vec<String>,
    /// Stop after this many measured requests (per connection: requests / concurrency).
    #[arg(long)]
    requests: Option<u64>,
    /// Label copied into the output.
    #[arg(long, default_value = "")]
    label: String,
}

struct Stats {
    latency: Histogram<u64>,
    ttfb: Histogram<u64>,
    ok: u64,
    errors: u64,
    bytes: u64,
}

impl Stats {
    fn new() -> Stats {
        Stats {
            latency: Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram"),
            ttfb: Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram"),
            ok: 0,
            errors: 0,
            bytes: 0,
        }
    }

    fn merge(&mut self, other: &Stats) {
        let _ = self.latency.add(&other.latency);
        let _ = self.ttfb.add(&other.ttfb);
        self.ok += other.ok;
        self.errors += other.errors;
        self.bytes += other.bytes;
    }
}

fn main() {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let stats = runtime.block_on(run(args.clone()));
    let secs = args.duration;
    let us = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64;
    let out = serde_json::json!({
        "label": args.label,
        "url": args.url,
        "concurrency": args.concurrency,
        "duration_s": secs,
        "requests": stats.ok,
        "errors": stats.errors,
        "rps": stats.ok as f64 / secs,
        "latency_us": {"p50": us(&stats.latency, 0.5), "p90": us(&stats.latency, 0.9), "p99": us(&stats.latency, 0.99), "max": stats.latency.max() as f64, "mean": stats.latency.mean()},
        "ttfb_us": {"p50": us(&stats.ttfb, 0.5), "p99": us(&stats.ttfb, 0.99)},
        "bytes_per_response": stats.bytes.checked_div(stats.ok).unwrap_or(0),
    });
    println!("{out}");
}

async fn run(args: Args) -> Stats {
    let uri: http::Uri = args.url.parse().expect("url");
    let host = uri.host().expect("host").to_string();
    let port = uri.port_u16().unwrap_or(80);
    let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
    let body = Bytes::from(args.body.clone().unwrap_or_default());
    let method = if args.body.is_some() { "POST" } else { "GET" };
    let headers: Vec<(String, String)> = args
        .headers
        .iter()
        .filter_map(|h| h.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let start = Instant::now();
    let measure_from = start + Duration::from_secs_f64(args.warmup);
    let measure_until = measure_from + Duration::from_secs_f64(args.duration);
    let per_connection = args.requests.map(|n| n.div_ceil(args.concurrency as u64));
    let mut tasks = Vec::new();
    for _ in 0..args.concurrency {
        let target = Target {
            host: host.clone(),
            port,
            path: path.clone(),
            method,
            body: body.clone(),
            headers: headers.clone(),
            measure_from,
            measure_until,
            limit: per_connection,
        };
        tasks.push(tokio::spawn(connection(target)));
    }
    let mut total = Stats::new();
    for t in tasks {
        if let Ok(s) = t.await {
            total.merge(&s);
        }
    }
    total
}

/// What one connection sends, and for how long.
struct Target {
    host: String,
    port: u16,
    path: String,
    method: &'static str,
    body: Bytes,
    headers: Vec<(String, String)>,
    measure_from: Instant,
    measure_until: Instant,
    limit: Option<u64>,
}

async fn connection(t: Target) -> Stats {
    let Target {
        host,
        port,
        path,
        method,
        body,
        headers,
        measure_from,
        measure_until,
        limit,
    } = t;
    let mut stats = Stats::new();
    let authority = format!("{host}:{port}");
    'reconnect: loop {
        if Instant::now() >= measure_until {
            return stats;
        }
        let stream = match tokio::net::TcpStream::connect(&authority).await {
            Ok(s) => s,
            Err(_) => {
                stats.errors += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let Ok((mut sender, conn)) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await
        else {
            stats.errors += 1;
            continue;
        };
        tokio::spawn(async move {
            let _ = conn.await;
        });
        loop {
            let now = Instant::now();
            if now >= measure_until || limit.is_some_and(|l| stats.ok >= l) {
                return stats;
            }
            if sender.ready().await.is_err() {
                continue 'reconnect;
            }
            let mut req = Request::builder()
                .method(method)
                .uri(path.as_str())
                .header("host", authority.as_str());
            if method == "POST" {
                req = req.header("content-type", "application/json");
            }
            for (k, v) in &headers {
                req = req.header(k.as_str(), v.as_str());
            }
            let req = req.body(Full::new(body.clone())).expect("request");
            let sent = Instant::now();
            let resp = match sender.send_request(req).await {
                Ok(r) => r,
                Err(_) => {
                    stats.errors += 1;
                    continue 'reconnect;
                }
            };
            let ok = resp.status().is_success();
            let mut body = resp.into_body();
            let mut first: Option<Instant> = None;
            let mut received = 0u64;
            let mut failed = false;
            while !body.is_end_stream() {
                match body.frame().await {
                    Some(Ok(frame)) => {
                        if let Some(data) = frame.data_ref() {
                            if first.is_none() && !data.is_empty() {
                                first = Some(Instant::now());
                            }
                            received += data.len() as u64;
                        }
                    }
                    Some(Err(_)) => {
                        failed = true;
                        break;
                    }
                    None => break,
                }
            }
            let done = Instant::now();
            if sent < measure_from {
                if failed {
                    continue 'reconnect;
                }
                continue;
            }
            if done > measure_until {
                return stats;
            }
            if ok && !failed {
                stats.ok += 1;
                stats.bytes += received;
                let _ = stats
                    .latency
                    .record((done - sent).as_micros().max(1) as u64);
                let _ = stats
                    .ttfb
                    .record((first.unwrap_or(done) - sent).as_micros().max(1) as u64);
            } else {
                stats.errors += 1;
                if failed {
                    continue 'reconnect;
                }
            }
        }
    }
}
