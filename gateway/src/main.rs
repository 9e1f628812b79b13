//! The `unitgate` command: `run`, `check`, `demo`.

use clap::{Parser, Subcommand, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

// The allocator is a measured choice: see "Allocator" in bench/README.md.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    Check {
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Run the embedded demo: two units of an echo service, no files needed.
    Demo {
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        #[arg(long, default_value = "127.0.0.1:9900")]
        admin_listen: SocketAddr,
        /// Demo-only switch to stop/start a unit's echo instances.
        #[arg(long, default_value = "127.0.0.1:9901")]
        control_listen: SocketAddr,
    },
}

/// Logs go to stderr through a background writer: a slow or blocked stderr
/// drops lines (lossy) instead of stalling the request path. The returned
/// guard flushes on drop, so it lives as long as `main`.
fn init_logging(format: LogFormat) -> tracing_appender::non_blocking::WorkerGuard {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,pingora_core=warn,pingora_proxy=warn"));
    let (writer, guard) = tracing_appender::non_blocking(std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
    guard
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let _log_guard = init_logging(cli.log_format);
    match cli.command {
        Command::Check { config } => match unitgate_config::load(&config) {
            Ok(c) if unitgate::snapshot::verifiers(&c).is_err() => {
                let errors = unitgate::snapshot::verifiers(&c).err().unwrap_or_default();
                for e in &errors {
                    eprintln!("{}: {e}", config.display());
                }
                eprintln!("{}: {} error(s)", config.display(), errors.len());
                ExitCode::FAILURE
            }
            Ok(c) => {
                println!(
                    "{}: ok ({} units, {} services, {} routes)",
                    config.display(),
                    c.units.len(),
                    c.services.len(),
                    c.routes.len()
                );
                ExitCode::SUCCESS
            }
            Err(errors) => {
                for e in errors.iter() {
                    eprintln!("{}: {e}", config.display());
                }
                eprintln!("{}: {} error(s)", config.display(), errors.len());
                ExitCode::FAILURE
            }
        },
        Command::Run { config } => {
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
            admin_listen,
            control_listen,
        } => match unitgate::demo::run(unitgate::demo::DemoOptions {
            listen,
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
