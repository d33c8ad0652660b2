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
    #[arg(long, global = true)]
    host: Option<String>,
    /// Port to listen on (default 4000, or $PORT).
    #[arg(long, short = 'p', global = true)]
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
    /// Binary upgrade: take the listening sockets of the Sluice running on this port once it
    /// is sent SIGQUIT (docs/operations.md).
    #[arg(long, short = 'u')]
    upgrade: bool,
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
    /// Reload the Sluice running on this port without dropping a request: the config is
    /// checked here first (nothing happens when it would not start), then the running process
    /// is sent SIGHUP, starts a new one with the config file as it is now and hands it the
    /// listening socket (docs/operations.md).
    Reload,
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

    if let Some(Command::Reload) = cli.command {
        for line in report.lines(cli.strict) {
            println!("{line}");
        }
        return reload(&runtime);
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
    // SIGHUP starts this command line again (with `--upgrade`), from the binary at its path.
    let restart: Vec<std::ffi::OsString> = std::env::args_os()
        .filter(|a| a != "--upgrade" && a != "-u")
        .collect();
    match sluice::server::run(runtime, prices, tls, cli.upgrade, Some(restart)) {
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

/// `sluice reload`: signals the process in the port's pid file and waits until another one
/// holds the port (the pid file changes), or says why not.
fn reload(runtime: &config::RuntimeConfig) -> ExitCode {
    let pid_file = match sluice::server::upgrade_paths(runtime) {
        Ok((_, pid_file)) => pid_file,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    let read_pid = || {
        std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
    };
    let Some(old) = read_pid() else {
        eprintln!(
            "error: no Sluice runs on port {} (no pid in {pid_file})",
            runtime.server.port
        );
        return ExitCode::from(1);
    };
    let hup = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(old),
        nix::sys::signal::Signal::SIGHUP,
    );
    if let Err(e) = hup {
        eprintln!("error: cannot signal pid {old} (from {pid_file}): {e}");
        return ExitCode::from(1);
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(45);
    while std::time::Instant::now() < deadline {
        match read_pid() {
            Some(new) if new != old => {
                println!("reloaded: pid {old} handed the port to pid {new}");
                return ExitCode::SUCCESS;
            }
            _ => std::thread::sleep(std::time::Duration::from_millis(50)),
        }
    }
    eprintln!("error: pid {old} did not hand over within 45 s; it keeps serving (see its log)");
    ExitCode::from(1)
}
