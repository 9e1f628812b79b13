//! The `unitgate` command: `run`, `check`, `demo`.

use clap::{Parser, Subcommand, ValueEnum};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

// The allocator is a measured choice: see "Allocator" in bench/README.md.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: unitgate_alloc::MiMalloc = unitgate_alloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "unitgate",
    version,
    about = "A multi-active, unit-aware API gateway"
)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Write the access log (one line per request) to this file instead of
    /// stderr; SIGUSR1 reopens it (for logrotate).
    #[arg(long, global = true, value_name = "FILE")]
    access_log: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway with a config file.
    Run {
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Validate a config file: print every error, exit 1 if any.
    ///
    /// With `store.kind = "etcd"` the file holds only the per-process sections
    /// and is checked on its own, unless `--fleet` gives the fleet document.
    Check {
        #[arg(short, long)]
        config: PathBuf,
        /// Also validate this fleet document composed with the local file, as
        /// a gateway would run them (e.g. before `fleet init`). Its fleet-wide
        /// sections replace any in the local file.
        #[arg(long, value_name = "FLEET.toml")]
        fleet: Option<PathBuf>,
    },
    /// The fleet's shared config in etcd (`[store] kind = "etcd"`).
    Fleet {
        #[command(subcommand)]
        command: FleetCommand,
    },
    /// Run one echo backend (the demo's instances), for demos and benches.
    #[command(hide = true)]
    Echo {
        #[arg(long)]
        listen: SocketAddr,
        #[arg(long, default_value = "A")]
        unit: String,
        #[arg(long, default_value = "e1")]
        instance: String,
        /// Answer every request after this long (a slow instance).
        #[arg(long, default_value_t = 0)]
        delay_ms: u64,
    },
    /// Run the embedded demo: two units of an echo service, no files needed.
    Demo {
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// HTTPS with a self-signed certificate generated at start.
        #[arg(long, default_value = "127.0.0.1:8443")]
        listen_tls: SocketAddr,
        #[arg(long, default_value = "127.0.0.1:9900")]
        admin_listen: SocketAddr,
        /// Demo-only switch to stop/start a unit's echo instances.
        #[arg(long, default_value = "127.0.0.1:9901")]
        control_listen: SocketAddr,
    },
}

#[derive(Subcommand)]
enum FleetCommand {
    /// Validate FLEET.toml and write it to the store (once; --force replaces).
    Init {
        #[arg(short, long)]
        config: PathBuf,
        #[arg(long)]
        from: PathBuf,
        #[arg(long)]
        force: bool,
    },
    /// Every live gateway of the fleet: id, unit, applied epoch, in sync or not.
    Status {
        #[arg(short, long)]
        config: PathBuf,
    },
}

/// `unitgate run` with `[store] kind = "etcd"`: the fleet part from the
/// store, the cache, or nothing yet.
fn run_fleet(config: PathBuf, text: &str) -> ExitCode {
    let base = unitgate_config::base_dir_of(&config).to_path_buf();
    match unitgate::fleet::boot::boot(text, &base) {
        Ok(boot) => {
            match unitgate::server::run_with(boot.config, Some(config), boot.source, boot.revision)
            {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("unitgate: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Err(errors) => {
            for e in &errors {
                eprintln!("{}: {e}", config.display());
            }
            ExitCode::FAILURE
        }
    }
}

fn print_result(r: Result<String, String>) -> ExitCode {
    match r {
        Ok(out) => {
            println!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// Logs go to stderr through a background writer: a slow or blocked stderr
/// drops lines (lossy) instead of stalling the request path. The returned
/// guard flushes on drop, so it lives as long as `main`. Colours only on a
/// terminal: piped into a file or a log shipper, escape codes are noise.
fn init_logging(
    format: LogFormat,
    access_log: Option<PathBuf>,
) -> Result<tracing_appender::non_blocking::WorkerGuard, String> {
    use std::io::IsTerminal;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new("info,pingora_core=warn,pingora_proxy=warn,rustls=error")
    });
    let ansi = std::io::stderr().is_terminal();
    let (writer, guard) = tracing_appender::non_blocking(std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(writer);
    // pingora's accept() failures: counted, one logged per interval.
    let accept = unitgate::log_filter::AcceptErrors;
    match format {
        LogFormat::Text => builder.finish().with(accept).init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .finish()
            .with(accept)
            .init(),
    }
    // The per-request access lines have their own batched writer; the
    // `access` target of RUST_LOG still turns them on and off.
    let access = match format {
        LogFormat::Text => unitgate::access_log::Format::Text,
        LogFormat::Json => unitgate::access_log::Format::Json,
    };
    unitgate::access_log::init(
        access,
        tracing::enabled!(target: "access", tracing::Level::INFO),
        access_log,
    )?;
    Ok(guard)
}

/// `unitgate check`: every error of the file(s) on stderr, each prefixed by
/// the file it is in; a one-line summary on stdout when valid.
fn check(config: &Path, fleet: Option<&Path>) -> ExitCode {
    use unitgate_config::fleet::{self, Checked};
    use unitgate_config::ConfigError;

    // Where errors of the fleet-wide sections are: the fleet document if given.
    let fleet_file = fleet.unwrap_or(config);
    let files = match fleet {
        Some(f) => format!("{} + {}", config.display(), f.display()),
        None => config.display().to_string(),
    };
    let fail = |errors: Vec<(&Path, ConfigError)>| {
        for (file, e) in &errors {
            eprintln!("{}: {e}", file.display());
        }
        eprintln!("{files}: {} error(s)", errors.len());
        ExitCode::FAILURE
    };
    let text = match unitgate_config::read_file(config) {
        Ok(t) => t,
        Err(e) => return fail(e.into_iter().map(|e| (config, e)).collect()),
    };
    let base_dir = unitgate_config::base_dir_of(config);
    let checked = match fleet {
        Some(fleet_path) => {
            let fleet_text = match unitgate_config::read_file(fleet_path) {
                Ok(t) => t,
                Err(e) => return fail(e.into_iter().map(|e| (fleet_path, e)).collect()),
            };
            match fleet::check_composed(&text, &fleet_text, base_dir) {
                Ok(c) => Checked::Full(Box::new(c)),
                Err(e) => {
                    let local = e.local.into_iter().map(|e| (config, e));
                    let fleet = e.fleet.into_iter().map(|e| (fleet_file, e));
                    return fail(local.chain(fleet).collect());
                }
            }
        }
        None => match fleet::check(&text, base_dir) {
            Ok(c) => c,
            Err(e) => return fail(e.into_iter().map(|e| (config, e)).collect()),
        },
    };
    let tls = match &checked {
        Checked::Local(l) => l.tls.as_ref(),
        Checked::Full(c) => c.tls.as_ref(),
    };
    for w in tls.map(unitgate::tls::expiry_warnings).unwrap_or_default() {
        eprintln!("{}: warning: {w}", config.display());
    }
    match checked {
        Checked::Local(l) => {
            let prefix = match &l.store.kind {
                unitgate_config::StoreKind::Etcd { prefix, .. } => prefix.as_str(),
                unitgate_config::StoreKind::File => "",
            };
            println!(
                "{}: ok (local file; fleet config lives in etcd under {prefix})",
                config.display()
            );
            ExitCode::SUCCESS
        }
        Checked::Full(c) => match unitgate::snapshot::verifiers(&c) {
            // JWT keys are parsed here, where the crypto lives; they are fleet-wide.
            Err(errors) => {
                for e in &errors {
                    eprintln!("{}: {e}", fleet_file.display());
                }
                eprintln!("{files}: {} error(s)", errors.len());
                ExitCode::FAILURE
            }
            Ok(_) => {
                println!(
                    "{files}: ok ({} units, {} services, {} routes)",
                    c.units.len(),
                    c.services.len(),
                    c.routes.len()
                );
                ExitCode::SUCCESS
            }
        },
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let _log_guard = match init_logging(cli.log_format, cli.access_log) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("unitgate: {e}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command {
        Command::Check { config, fleet } => check(&config, fleet.as_deref()),
        Command::Echo {
            listen,
            unit,
            instance,
            delay_ms,
        } => {
            let rt = match tokio::runtime::Runtime::new() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("unitgate echo: {e}");
                    return ExitCode::FAILURE;
                }
            };
            rt.block_on(async {
                match unitgate::echo::EchoServer::start(&unit, &instance, listen).await {
                    Ok(server) => {
                        server.set_delay(std::time::Duration::from_millis(delay_ms));
                        eprintln!("echo {unit}/{instance} on {listen}");
                        let _ = tokio::signal::ctrl_c().await;
                        ExitCode::SUCCESS
                    }
                    Err(e) => {
                        eprintln!("unitgate echo: {listen}: {e}");
                        ExitCode::FAILURE
                    }
                }
            })
        }
        Command::Fleet { command } => match command {
            FleetCommand::Init {
                config,
                from,
                force,
            } => print_result(unitgate::fleet::cli::init(&config, &from, force)),
            FleetCommand::Status { config } => print_result(unitgate::fleet::cli::status(&config)),
        },
        Command::Run { config } => {
            let text = std::fs::read_to_string(&config).unwrap_or_default();
            let etcd = unitgate_config::fleet::parse_local(&text)
                .ok()
                .and_then(|raw| raw.store)
                .is_some_and(|s| s.kind == "etcd");
            if etcd {
                return run_fleet(config, &text);
            }
            let cfg = match unitgate_config::load(&config) {
                Ok(c) => c,
                Err(errors) => {
                    for e in errors.iter() {
                        eprintln!("{}: {e}", config.display());
                    }
                    return ExitCode::FAILURE;
                }
            };
            match unitgate::server::run(cfg, Some(config)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("unitgate: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Demo {
            listen,
            listen_tls,
            admin_listen,
            control_listen,
        } => match unitgate::demo::run(unitgate::demo::DemoOptions {
            listen,
            listen_tls,
            admin_listen,
            control_listen,
        }) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("unitgate demo: {e}");
                ExitCode::FAILURE
            }
        },
    }
}
