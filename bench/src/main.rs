//! unitgate-bench: drives real load over loopback against unitgate and the
//! programs it is compared with (the backend reached directly, nginx; later
//! haproxy and a bare pingora floor), and writes a markdown report of CPU per
//! request, requests/s and latency, with ratios taken in the same run.
//!
//! It knows unitgate only as a binary and a config file: nothing here links
//! the gateway. Everything listens on 127.0.0.1 on ephemeral ports, every load
//! run is bounded in time, and every process it starts is stopped on exit.

mod charts;
mod conn_load;
mod contender;
mod driver;
mod floor;
mod h2load;
mod haproxy;
mod http1;
mod nginx;
mod procs;
mod redis;
mod report;
mod scenarios;
mod section;
mod tls;
mod tools;
mod unitgate;
mod unitgate_variants;
mod wrk;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "unitgate-bench", version, about)]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Debug, Subcommand)]
enum Scenario {
    /// Plain proxy: the backend direct vs nginx, haproxy, the pingora floor and unitgate, CPU per request.
    Plain(scenarios::plain::PlainArgs),
    /// Failover under load: A's instances killed, then A drained; time until all on B.
    Failover(scenarios::failover::FailoverArgs),
    /// Redis (global limits) SIGKILLed under load and restarted: errors, latency per phase.
    RedisKill(scenarios::redis_kill::RedisKillArgs),
    /// Slot migration on a 3-gateway etcd fleet under load: freeze window, errors, the invariant.
    Migration(scenarios::migration::MigrationArgs),
    /// Soak: 10 minutes of mixed load with reloads, admin writes, instance and Redis kills; errors, RSS and fds.
    Soak(scenarios::soak::SoakArgs),
    /// Config reloads under load with 10 000 routes: reload durations, latency impact.
    Reload(scenarios::reload::ReloadArgs),
    /// Full chain: JWT + sharded placement with a routing cookie + a local
    /// limit, vs plain unitgate, the floor and nginx.
    FullChain(scenarios::common::Common),
    /// Global rate limit through a loopback Redis vs plain unitgate.
    GlobalLimit(scenarios::common::Common),
    /// Route-table scale: unitgate with 1, 10, 1 000 and 10 000 routes.
    Routes(scenarios::common::Common),
    /// One slow instance among fast ones: p99 with least_conn vs round_robin.
    SlowInstance(scenarios::slow_instance::SlowInstanceArgs),
    /// TLS handshakes: a new HTTPS connection per request, unitgate vs nginx, same certificate.
    TlsHandshake(scenarios::tls::TlsArgs),
    /// Keep-alive HTTPS/1.1 from wrk: unitgate's TLS listener vs nginx ssl.
    TlsKeepalive(scenarios::tls::TlsArgs),
    /// HTTP/2 with many streams per connection (h2load): over TLS and h2c.
    H2Streams(scenarios::tls::H2Args),
    /// Idle keep-alive clients (10 000): RSS of nginx, unitgate, the floor and lean, KiB per connection.
    IdleConns(scenarios::idle_conns::IdleArgs),
    /// User-space instructions per request under callgrind (floor, lean, unitgate plain/log/full/split) and where they go.
    Callgrind(scenarios::callgrind::CallgrindArgs),
    /// Every scenario in turn; writes bench/RESULTS.md and bench/results/*.svg.
    Results(scenarios::results::ResultsArgs),
    /// The connection-per-request load client tls-handshake runs (one JSON line on stdout).
    #[command(hide = true)]
    ConnLoad(conn_load::ConnLoadArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Every process is stopped by a guard inside `run`, so errors (and
    // signals, turned into errors) unwind through those guards before exit.
    let result = procs::install_interrupt_flag().and_then(|()| match &cli.scenario {
        Scenario::Plain(args) => scenarios::plain::run(args),
        Scenario::Failover(args) => scenarios::failover::run(args)
            .and_then(|s| scenarios::timeline::emit(&s, &args.common.out, "failover.md")),
        Scenario::RedisKill(args) => scenarios::redis_kill::run(args)
            .and_then(|s| scenarios::timeline::emit(&s, &args.common.out, "redis-kill.md")),
        Scenario::Migration(args) => scenarios::migration::run(args)
            .and_then(|s| scenarios::timeline::emit(&s, &args.common.out, "migration.md")),
        Scenario::Reload(args) => scenarios::reload::run(args)
            .and_then(|s| scenarios::timeline::emit(&s, &args.common.out, "reload.md")),
        Scenario::Soak(args) => scenarios::soak::run(args).and_then(|s| {
            scenarios::timeline::emit(&s, &args.common.out, "soak.md")?;
            scenarios::soak::verdict(&s)
        }),
        Scenario::FullChain(c) => scenarios::full_chain::section(c).map(drop),
        Scenario::GlobalLimit(c) => scenarios::global_limit::section(c).map(drop),
        Scenario::Routes(c) => scenarios::routes::section(c).map(drop),
        Scenario::SlowInstance(args) => scenarios::slow_instance::run(args)
            .and_then(|s| scenarios::timeline::emit(&s, &args.common.out, "slow-instance.md")),
        Scenario::TlsHandshake(args) => scenarios::tls::handshake(args).map(drop),
        Scenario::TlsKeepalive(args) => scenarios::tls::keepalive(args).map(drop),
        Scenario::H2Streams(args) => scenarios::tls::h2(args).map(drop),
        Scenario::IdleConns(args) => scenarios::idle_conns::run(args),
        Scenario::Callgrind(args) => scenarios::callgrind::run(args),
        Scenario::Results(args) => scenarios::results::run(args),
        Scenario::ConnLoad(args) => conn_load::run(args),
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("unitgate-bench: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
