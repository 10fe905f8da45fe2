//! What `ai-cache dev` leaves in its data directory for the commands run beside it.
//!
//! - `<name>_port`: the port a server of the dev stack had, taken again on the next run when
//!   it is free, so URLs stay the same from run to run.
//! - `dev.env`: where its servers are and the keys and fetch settings it uses, as
//!   `NAME=value` lines. Every other command run with the same data directory (`.data` in the
//!   working directory, or `--data-dir` / `DATA_DIR`) takes a setting from there when neither
//!   its command line nor its environment gives it, so `ai-cache client list` works beside
//!   `scripts/dev` with nothing exported.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches};

use super::{Cli, Command};

const FILE: &str = "dev.env";

/// The port kept under `name` in `data_dir`, if any.
pub fn remembered_port(data_dir: &Path, name: &str) -> Option<u16> {
    std::fs::read_to_string(data_dir.join(format!("{name}_port")))
        .ok()
        .and_then(|s| s.trim().parse().ok())
}

/// Keeps `port` under `name` for the next run.
pub fn remember_port(data_dir: &Path, name: &str, port: u16) -> anyhow::Result<()> {
    let path = data_dir.join(format!("{name}_port"));
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    std::fs::write(&path, port.to_string()).with_context(|| format!("writing {}", path.display()))
}

/// Writes `dev.env` (mode 600: it holds keys).
pub fn write(data_dir: &Path, settings: &[(&str, String)]) -> anyhow::Result<PathBuf> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = data_dir.join(FILE);
    let mut text = String::from(
        "# Written by `ai-cache dev` each time it starts: its servers, keys and fetch settings.\n\
         # ai-cache commands run with this data directory use them unless the environment or the\n\
         # command line says otherwise.\n",
    );
    for (name, value) in settings {
        text.push_str(&format!("{name}={value}\n"));
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("writing {}", path.display()))?;
    file.write_all(text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// The settings of `dev.env` in `data_dir` (none when there is no such file).
fn read(data_dir: &Path) -> Vec<(String, String)> {
    let Ok(text) = std::fs::read_to_string(data_dir.join(FILE)) else {
        return Vec::new();
    };
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

/// Parses the command line, filling what neither it nor the environment sets from the dev
/// stack's `dev.env` (not for `dev` itself, which writes it).
pub fn parse() -> Cli {
    let args: Vec<OsString> = std::env::args_os().collect();
    let matches = Cli::command().get_matches_from(&args);
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    if matches!(cli.command, Command::Dev) {
        return cli;
    }
    let extra = flags_from(&matches, &read(&cli.config.data_dir));
    if extra.is_empty() {
        return cli;
    }
    let mut args = args;
    args.splice(1..1, extra);
    <Cli as clap::Parser>::parse_from(args)
}

/// `--flag=value` for each setting whose flag was not given on the command line or in the
/// environment.
fn flags_from(matches: &ArgMatches, settings: &[(String, String)]) -> Vec<OsString> {
    let command = Cli::command();
    let mut flags = Vec::new();
    for arg in command.get_arguments() {
        let (Some(env), Some(long)) = (arg.get_env(), arg.get_long()) else {
            continue;
        };
        let Some((_, value)) = settings.iter().find(|(name, _)| env == name.as_str()) else {
            continue;
        };
        if matches!(
            matches.value_source(arg.get_id().as_str()),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        ) {
            continue;
        }
        let takes_value = arg.get_num_args().is_none_or(|n| n.takes_values());
        if takes_value {
            flags.push(format!("--{long}={value}").into());
        } else if value == "true" {
            flags.push(format!("--{long}").into());
        }
    }
    flags
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Vec<(String, String)> {
        [
            ("DATABASE_URL", "postgres://dev/aicache"),
            ("NATS_URL", "nats://127.0.0.1:4333"),
            ("FETCH_RESOLVE", "demo.test=127.0.0.1"),
            ("NOT_OURS", "x"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    #[test]
    fn dev_settings_fill_only_what_the_command_line_leaves_out() {
        let matches = Cli::command().get_matches_from([
            "ai-cache",
            "--nats-url",
            "nats://mine:4222",
            "migrate",
        ]);
        let flags = flags_from(&matches, &settings());
        let flags: Vec<String> = flags
            .into_iter()
            .map(|f| f.into_string().expect("utf-8"))
            .collect();
        assert!(
            flags.contains(&"--database-url=postgres://dev/aicache".to_owned()),
            "{flags:?}"
        );
        assert!(
            flags.contains(&"--fetch-resolve=demo.test=127.0.0.1".to_owned()),
            "{flags:?}"
        );
        assert!(
            !flags.iter().any(|f| f.starts_with("--nats-url")),
            "given: kept"
        );
        assert_eq!(flags.len(), 2, "{flags:?}");
    }

    #[test]
    fn the_file_round_trips_and_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("dir");
        let path = write(dir.path(), &[("NATS_URL", "nats://127.0.0.1:1".into())]).expect("write");
        assert_eq!(
            std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(
            read(dir.path()),
            vec![("NATS_URL".to_owned(), "nats://127.0.0.1:1".to_owned())]
        );
        assert!(read(&dir.path().join("none")).is_empty());
        remember_port(dir.path(), "nats", 4333).expect("port");
        assert_eq!(remembered_port(dir.path(), "nats"), Some(4333));
        assert_eq!(remembered_port(dir.path(), "postgres"), None);
    }
}
