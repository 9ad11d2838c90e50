//! `acs-emulator`: parse arguments, start telemetry, run the emulator until a signal. No logic
//! here. The flags are those of the former `acs-identity-operator emulator` subcommand, the
//! global `--log-level` and `--log-format` included.

use clap::Parser;

use acs_identity_operator::telemetry::{self, LogFormat};

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
    telemetry::init(&cli.log_level, cli.log_format);
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
