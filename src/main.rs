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

// Parsed once at start-up and consumed right away, so the size of `Run` next to the small `Crd`
// costs nothing; boxing it would only add indirection.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Run the operator.
    Run(acs_identity_operator::config::RunArgs),
    /// Print the CustomResourceDefinitions as YAML, or write them into a directory.
    Crd {
        /// Write one file per CRD into this directory instead of printing to stdout.
        #[arg(long)]
        output_dir: Option<std::path::PathBuf>,
    },
}

fn main() -> std::process::ExitCode {
    acs_identity_operator::alloc::limit_arenas();
    let cli = Cli::parse();
    if let Command::Crd { output_dir } = &cli.command {
        return match write_crds(output_dir.as_deref()) {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                std::process::ExitCode::FAILURE
            }
        };
    }
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
            Command::Crd { .. } => Ok(()),
            Command::Run(args) => run_operator(args).await,
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

fn write_crds(dir: Option<&std::path::Path>) -> Result<(), Box<dyn std::error::Error>> {
    let crds = acs_identity_operator::crd::render_all()?;
    match dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)?;
            for (file, yaml) in crds {
                std::fs::write(dir.join(file), yaml)?;
            }
        }
        None => {
            for (_, yaml) in crds {
                print!("---\n{yaml}");
            }
        }
    }
    Ok(())
}

async fn run_operator(
    args: acs_identity_operator::config::RunArgs,
) -> Result<(), Box<dyn std::error::Error>> {
    let config = acs_identity_operator::config::Config::from_args(args)?;
    acs_identity_operator::controller::run(config).await?;
    Ok(())
}
