//! The `sluice` command: `sluice --config config.yaml [--port 4000] [--host 0.0.0.0]`, as
//! `litellm --config` is started, and `sluice check --config config.yaml [--strict]`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use sluice::config::{self, Overrides, env::Env};
use sluice::pricing::PriceTable;
use sluice::server::TlsFiles;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(
    name = "sluice",
    version,
    about = "LLM gateway on Pingora, compatible with the LiteLLM proxy"
)]
struct Cli {
    /// LiteLLM-format config file.
    #[arg(long, short = 'c', global = true)]
    config: Option<PathBuf>,
    /// Address to listen on (default 0.0.0.0, or $HOST).
    #[arg(long)]
    host: Option<String>,
    /// Port to listen on (default 4000, or $PORT).
    #[arg(long, short = 'p')]
    port: Option<u16>,
    /// Worker threads (default: one per CPU). LiteLLM's --num_workers is accepted as the same.
    #[arg(long, alias = "num_workers")]
    threads: Option<usize>,
    /// PEM certificate to terminate TLS with (LiteLLM's --ssl_certfile_path).
    #[arg(
        long = "ssl_certfile_path",
        alias = "ssl-certfile-path",
        requires = "ssl_keyfile_path"
    )]
    ssl_certfile_path: Option<String>,
    /// PEM private key for --ssl_certfile_path (LiteLLM's --ssl_keyfile_path).
    #[arg(
        long = "ssl_keyfile_path",
        alias = "ssl-keyfile-path",
        requires = "ssl_certfile_path"
    )]
    ssl_keyfile_path: Option<String>,
    /// Treat unknown config keys as errors.
    #[arg(long, global = true)]
    strict: bool,
    /// Accepted for LiteLLM compatibility: sets the log level to debug.
    #[arg(long, alias = "detailed_debug")]
    debug: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Validate the config, print every problem, and exit (non-zero when it would not start).
    Check,
    /// Run the database migrations (`migrations/`) and exit: for a Kubernetes job before
    /// instances start with DISABLE_SCHEMA_UPDATE=true.
    Migrate,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let prices = match PriceTable::load() {
        Ok(p) => Arc::new(p),
        Err(e) => {
            eprintln!("error: cannot load the model price table: {e}");
            return ExitCode::from(2);
        }
    };
    let overrides = Overrides {
        host: cli.host.clone(),
        port: cli.port,
        threads: cli.threads,
    };
    let env = Env::process();
    let loaded = match &cli.config {
        Some(path) => config::load_file(path, &env, &overrides, &prices, cli.strict),
        None => config::load_str("", &env, &overrides, &prices, cli.strict),
    };
    let (runtime, report) = match loaded {
        Ok(ok) => ok,
        Err(report) => {
            for line in report.lines(cli.strict) {
                eprintln!("{line}");
            }
            eprintln!(
                "error: the config has {} problem(s); Sluice did not start",
                report.errors.len()
                    + if cli.strict {
                        report.unknown_keys.len()
                    } else {
                        0
                    }
            );
            return ExitCode::from(2);
        }
    };

    if let Some(Command::Check) = cli.command {
        for line in report.lines(cli.strict) {
            println!("{line}");
        }
        println!(
            "config OK: {} deployment(s) in {} model group(s)",
            runtime.deployments.len(),
            runtime.router.groups().len()
        );
        return ExitCode::SUCCESS;
    }

    if let Some(Command::Migrate) = cli.command {
        return migrate(&runtime);
    }

    sluice::logging::init(runtime.json_logs, runtime.verbose || cli.debug);
    if sluice::clock::follow_test_clock() {
        tracing::warn!(
            "SLUICE_TEST_CLOCK_FILE is set: the gateway's clock follows that file (tests only)"
        );
    }
    for line in report.lines(false) {
        match line.strip_prefix("warning: ") {
            Some(w) => tracing::warn!("{w}"),
            None => tracing::error!("{line}"),
        }
    }
    let tls = match (cli.ssl_certfile_path, cli.ssl_keyfile_path) {
        (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
        _ => None,
    };
    match sluice::server::run(runtime, prices, tls) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            sluice::logging::flush();
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn migrate(config: &config::RuntimeConfig) -> ExitCode {
    let Some(settings) = &config.management else {
        eprintln!(
            "error: no key store to migrate: set general_settings.master_key (and database_url for PostgreSQL)"
        );
        return ExitCode::from(2);
    };
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|rt| {
            rt.block_on(async {
                let store = sluice::management::store::Store::connect(
                    &settings.database_url,
                    1,
                    settings.connect_timeout,
                )?;
                store.migrate().await
            })
        });
    match result {
        Ok(()) => {
            println!("migrations applied");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
