//! `scripts/services`, which the README's test command runs first, against servers that are
//! installed but stopped: a PostgreSQL cluster of this test's own (on a free port, with the
//! distribution's password authentication) and a Redis port with nothing on it. The script must
//! start both, make PostgreSQL take the tests' trust login and create the `test` database, as
//! it does on a fresh machine for the shared servers on 5432 and 6379.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Output};

/// Runs `program` as root: directly when this test is root, else through `sudo -n`.
fn as_root(program: &str, args: &[&str]) -> Output {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false);
    let mut command = if root {
        Command::new(program)
    } else {
        let mut sudo = Command::new("sudo");
        sudo.arg("-n").arg(program);
        sudo
    };
    command.args(args).output().unwrap_or_else(|e| {
        panic!("running {program} as root (this test needs root or passwordless sudo): {e}")
    })
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("its address").port()
}

fn check(output: Output, what: &str) -> String {
    assert!(
        output.status.success(),
        "{what} failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Drops the private cluster and stops the private Redis, whatever the test's outcome.
struct Cleanup {
    version: String,
    cluster: String,
    redis_port: u16,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = as_root(
            "pg_dropcluster",
            &["--stop", self.version.as_str(), self.cluster.as_str()],
        );
        let _ = Command::new("redis-cli")
            .args(["-p", &self.redis_port.to_string(), "shutdown", "nosave"])
            .output();
    }
}

#[test]
fn services_script_starts_stopped_servers_and_prepares_them_for_the_tests() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    // The script installs the servers when they are missing; here they must be, as on CI.
    let versions = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is installed (scripts/services installs it)");
    let version = versions
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .max_by_key(|v| v.parse::<u32>().unwrap_or(0))
        .expect("a PostgreSQL version");
    let (pg_port, redis_port) = (free_port(), free_port());
    let cluster = format!("sluice_services_test_{pg_port}");
    let _cleanup = Cleanup {
        version: version.clone(),
        cluster: cluster.clone(),
        redis_port,
    };
    // Created stopped, with the package's default authentication (passwords over TCP).
    check(
        as_root(
            "pg_createcluster",
            &[&version, &cluster, "-p", &pg_port.to_string()],
        ),
        "pg_createcluster",
    );
    let pg_ready = || {
        Command::new("pg_isready")
            .args(["-q", "-h", "127.0.0.1", "-p", &pg_port.to_string()])
            .status()
            .is_ok_and(|s| s.success())
    };
    assert!(!pg_ready(), "the private cluster starts stopped");

    let run_script = || {
        Command::new("bash")
            .arg(root.join("scripts/services"))
            .env("SLUICE_SERVICES_PG_PORT", pg_port.to_string())
            .env("SLUICE_SERVICES_REDIS_PORT", redis_port.to_string())
            .env_remove("SLUICE_TEST_DATABASE_URL")
            .env_remove("SLUICE_TEST_REDIS_URL")
            .output()
            .expect("bash runs scripts/services")
    };
    let log = check(run_script(), "scripts/services");
    assert!(pg_ready(), "PostgreSQL is up on {pg_port}: {log}");

    // The tests' login: user postgres over TCP without a password, database `test`.
    let select = Command::new("psql")
        .args(["-h", "127.0.0.1", "-p", &pg_port.to_string()])
        .args([
            "-U",
            "postgres",
            "-d",
            "test",
            "-w",
            "-tAc",
            "SELECT 40 + 2",
        ])
        .output()
        .expect("psql runs");
    assert_eq!(check(select, "psql").trim(), "42");
    let ping = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &redis_port.to_string(), "ping"])
        .output()
        .expect("redis-cli runs");
    assert_eq!(check(ping, "redis-cli").trim(), "PONG");

    // With both up, a second run changes nothing and succeeds.
    check(run_script(), "scripts/services, second run");
}
