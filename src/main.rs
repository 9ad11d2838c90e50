//! Command-line entry: parse arguments, start telemetry, dispatch a subcommand. No logic here.

use clap::{Parser, Subcommand};

use acs_identity_operator::telemetry::{self, LogFormat};

#[derive(Parser)]
#[command(name = "acs-identity-operator", version, about)]
struct Cli {
    /// Log level (or a full `RUST_LOG`-style filter).
    #[arg(long, env = "LOG_LEVEL", default_value = "info", global = true)]
    log_level: String,
    /// Log format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the local ACS Identity emulator.
    Emulator(acs_identity_operator::emulator::Args),
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
    let result = rt.block_on(async {
        match cli.command {
            Command::Emulator(args) => acs_identity_operator::emulator::run(args).await,
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
