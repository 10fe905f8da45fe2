//! The `ai-cache` binary: parse the command line, start logging, hand over.

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = ai_cache::cli::Cli::parse();
    ai_cache::telemetry::init_logging(cli.config.log_format);
    match cli.run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
