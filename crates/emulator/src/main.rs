//! `acs-emulator`: parse arguments, start telemetry, run the emulator until a signal. No logic
//! here. The flags are those of the former `acs-identity-operator emulator` subcommand, the
//! global `--log-level` and `--log-format` included.

use clap::Parser;
use tracing_subscriber::{fmt, EnvFilter};

/// Log output format (the operator's two, so the two binaries log alike).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Parser)]
#[command(name = "acs-emulator", version, about)]
struct Cli {
    /// Log level (or a full `RUST_LOG`-style filter).
    #[arg(long, env = "LOG_LEVEL", default_value = "info")]
    log_level: String,
    /// Log format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(flatten)]
    args: acs_emulator::Args,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // `RUST_LOG` wins over `--log-level` when set.
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&cli.log_level));
    let logs = fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match cli.log_format {
        LogFormat::Text => logs.try_init(),
        LogFormat::Json => logs.json().try_init(),
    };
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("failed to start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(acs_emulator::run(cli.args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
