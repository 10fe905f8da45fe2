//! `ai-cache subscriber`: NATS users for integrators who subscribe to one client's
//! `pages.updated` events on the bus itself (see [`crate::infra::nats_auth`]).

use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;

use crate::config::Config;
use crate::infra::nats_auth::AuthDir;

#[derive(Subcommand, Debug)]
pub enum SubscriberCommand {
    /// Make the service's own NATS user and the auth directory; prints the NATS_URL every
    /// ai-cache process then uses.
    Init,
    /// A user that may subscribe to one client's `pages.updated.<client_id>.>` and publish
    /// nothing; prints its password once.
    Create {
        /// The client, by id or domain.
        client: String,
        /// Who it is for.
        #[arg(long, default_value = "")]
        name: String,
    },
    /// List subscribers (no passwords: only their hashes are kept).
    List,
    /// Remove a subscriber (by id or user name); reload nats-server to apply.
    Revoke {
        /// The subscriber's id or user name (from `subscriber list`).
        subscriber: String,
    },
}

/// Where the users live: `NATS_AUTH_DIR`, else `<DATA_DIR>/nats-auth`.
fn auth_dir(config: &Config, dir: Option<PathBuf>) -> AuthDir {
    AuthDir::new(dir.unwrap_or_else(|| config.data_dir.join("nats-auth")))
}

pub async fn run(
    config: &Config,
    dir: Option<PathBuf>,
    command: SubscriberCommand,
) -> anyhow::Result<()> {
    let auth = auth_dir(config, dir);
    let apply = format!(
        "nats-server reads it with `include \"{}\"` in its configuration (a path relative to that file); reload it after each change: `nats-server --signal reload` or SIGHUP.",
        auth.config_path().display()
    );
    match command {
        SubscriberCommand::Init => {
            let service = auth.init()?;
            println!(
                "the service's NATS user is {:?}; every ai-cache process connects with",
                service.user
            );
            println!("  NATS_URL={}", service.url("<host>:4222"));
            println!("(the password is shown this once). {apply}");
        }
        SubscriberCommand::Create { client, name } => {
            println!("{}", create(config, &auth, &client, &name).await?);
            eprintln!("the password is shown this once. {apply}");
        }
        SubscriberCommand::List => println!("{}", list(&auth)?),
        SubscriberCommand::Revoke { subscriber } => {
            let removed = auth.revoke(&subscriber)?;
            println!("revoked {} ({})", removed.user, removed.id);
            eprintln!("{apply}");
        }
    }
    Ok(())
}

/// A subscriber for an existing client, as JSON with its password.
async fn create(
    config: &Config,
    auth: &AuthDir,
    client: &str,
    name: &str,
) -> anyhow::Result<String> {
    // Say a missing `init` before anything else.
    auth.list()?;
    let url = config
        .database_url
        .as_deref()
        .context("DATABASE_URL is not set (needed to check the client exists)")?;
    let db = crate::infra::db::connect(url, 2).await?;
    let row = super::tenants::resolve(&db, client).await?;
    let (subscriber, credentials) = auth.create(row.id, name)?;
    let out = serde_json::json!({
        "id": subscriber.id,
        "client_id": subscriber.client_id,
        "user": credentials.user,
        "password": credentials.password,
        "subscribe": subscriber.subjects(),
        "url": credentials.url("<host>:4222"),
    });
    Ok(serde_json::to_string_pretty(&out)?)
}

/// Every subscriber as JSON, without secrets.
fn list(auth: &AuthDir) -> anyhow::Result<String> {
    let list: Vec<_> = auth
        .list()?
        .into_iter()
        .map(|s| {
            serde_json::json!({
                "id": s.id,
                "client_id": s.client_id,
                "name": s.name,
                "user": s.user,
                "subscribe": s.subjects(),
                "created_at": s.created_at,
            })
        })
        .collect();
    Ok(serde_json::to_string_pretty(&list)?)
}
