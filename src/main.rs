//! The `ai-cache` binary: parse the command line, start logging, hand over.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    // The command line, then the environment, then the dev stack's settings (`.data/dev.env`).
    let cli = ai_cache::cli::parse();
    let logs = ai_cache::telemetry::init_logging(cli.config.log_format, cli.command.log_level());
    let result = cli.run().await;
    // Every log line out before the answer.
    drop(logs);
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
