//! `ai-cache client|key|secrets`: the operator's tools for tenants. They run the same
//! commands as the API (and wait for the projections the same way), printing JSON.

use crate::domain::render_js::RenderJs;
use anyhow::Context;
use clap::{Args, Subcommand};
use uuid::Uuid;

use crate::api::clients::ClientView;
use crate::app;
use crate::commands::tenants::{ClientPatch, NewClient, Tenants, Visibility};
use crate::config::Config;
use crate::domain::client::{Scope, SettingsPatch, normalize_domain};
use crate::domain::ids::ClientId;
use crate::domain::policy::EdgePolicy;
use crate::events::clients::EdgeTarget;
use crate::infra::secrets::{Secret, Secrets};
use crate::projections::clients as read;

#[derive(Subcommand, Debug)]
pub enum ClientCommand {
    /// Create a client.
    Add {
        /// A name for people (the site's owner, the site).
        #[arg(long)]
        name: String,
        /// The site's domain (`example.com`); its pages must be on it.
        #[arg(long)]
        domain: String,
        #[command(flatten)]
        fields: ClientFields,
    },
    /// List clients.
    List,
    /// Show one client (by id or domain).
    Show {
        /// The client, by id or domain.
        client: String,
        /// Print the decrypted secrets too.
        #[arg(long)]
        include_secrets: bool,
    },
    /// Change a client (by id or domain); only the options given change.
    Update {
        /// The client, by id or domain.
        client: String,
        /// A new name.
        #[arg(long)]
        name: Option<String>,
        /// A new domain.
        #[arg(long)]
        domain: Option<String>,
        /// `false` pauses the client (keys still read, nothing is fetched or written).
        #[arg(long)]
        active: Option<bool>,
        #[command(flatten)]
        fields: ClientFields,
    },
    /// Delete a client and everything of it. Cannot be undone.
    Delete {
        /// The client, by id or domain.
        client: String,
        /// Confirm.
        #[arg(long)]
        yes: bool,
    },
}

/// Optional client fields shared by `add` and `update`. Secrets given as flags can end up
/// in shell history: prefer the environment variables.
#[derive(Args, Debug, Default)]
pub struct ClientFields {
    /// The Cloudflare account whose Workers KV gets the pages.
    #[arg(long)]
    cloudflare_account_id: Option<String>,
    /// A Cloudflare API token with Workers KV write access (stored encrypted).
    #[arg(long, env = "CLIENT_CLOUDFLARE_API_TOKEN", hide_env_values = true)]
    cloudflare_api_token: Option<String>,
    /// The Workers KV namespace the Worker reads.
    #[arg(long)]
    cloudflare_kv_namespace_id: Option<String>,
    /// The client's own Gemini API key (stored encrypted); the operator's is used otherwise.
    #[arg(long, env = "CLIENT_GEMINI_API_KEY", hide_env_values = true)]
    gemini_api_key: Option<String>,
    /// Seconds between refreshes of a page when its sitemap says nothing.
    #[arg(long)]
    refresh_interval_secs: Option<u64>,
    /// Most fetches a minute at one host of the site.
    #[arg(long)]
    crawl_rate_per_minute: Option<u32>,
    /// Make Markdown with Gemini instead of the local generator.
    #[arg(long)]
    use_gemini: Option<bool>,
    /// auto, cloudflare or builtin.
    #[arg(long)]
    edge_target: Option<String>,
    /// Pages on subdomains of the domain belong to the client too.
    #[arg(long)]
    allow_subdomains: Option<bool>,
    /// The client's whole edge policy, a JSON file (`-` reads it from stdin); see the README's
    /// edge section.
    #[arg(long, value_name = "FILE")]
    edge_policy: Option<std::path::PathBuf>,
    /// never, auto or always: whether pages go through a browser (chromium) before extraction.
    #[arg(long)]
    render_js: Option<String>,
    /// The CSS selector a rendered page is complete with ("" clears it).
    #[arg(long)]
    render_wait_for: Option<String>,
}

impl ClientFields {
    fn into_new_client(self, name: String, domain: String) -> anyhow::Result<NewClient> {
        Ok(NewClient {
            name,
            domain,
            settings: self.settings()?,
            cloudflare_account_id: self.cloudflare_account_id,
            cloudflare_api_token: self.cloudflare_api_token.map(Secret::new),
            cloudflare_kv_namespace_id: self.cloudflare_kv_namespace_id,
            gemini_api_key: self.gemini_api_key.map(Secret::new),
            is_active: None,
        })
    }

    /// The patch of `update`: a field given replaces the client's, one left out keeps it.
    fn into_patch(
        self,
        name: Option<String>,
        domain: Option<String>,
        active: Option<bool>,
    ) -> anyhow::Result<ClientPatch> {
        Ok(ClientPatch {
            name,
            domain,
            is_active: active,
            settings: Some(self.settings()?),
            cloudflare_account_id: self.cloudflare_account_id.map(Some),
            cloudflare_api_token: self.cloudflare_api_token.map(|s| Some(Secret::new(s))),
            cloudflare_kv_namespace_id: self.cloudflare_kv_namespace_id.map(Some),
            gemini_api_key: self.gemini_api_key.map(|s| Some(Secret::new(s))),
        })
    }

    fn settings(&self) -> anyhow::Result<SettingsPatch> {
        let edge_target = match self.edge_target.as_deref() {
            None => None,
            Some("auto") => Some(EdgeTarget::Auto),
            Some("cloudflare") => Some(EdgeTarget::Cloudflare),
            Some("builtin") => Some(EdgeTarget::Builtin),
            Some(other) => {
                anyhow::bail!("--edge-target must be auto, cloudflare or builtin, not {other:?}")
            }
        };
        Ok(SettingsPatch {
            refresh_interval_secs: self.refresh_interval_secs,
            crawl_rate_per_minute: self.crawl_rate_per_minute,
            use_gemini: self.use_gemini,
            edge_target,
            allow_subdomains: self.allow_subdomains,
            edge: self.edge_policy.as_deref().map(read_policy).transpose()?,
            render_js: match self.render_js.as_deref() {
                None => None,
                Some(mode @ ("never" | "auto" | "always")) => Some(RenderJs::parse(mode)),
                Some(other) => {
                    anyhow::bail!("--render-js must be never, auto or always, not {other:?}")
                }
            },
            render_wait_for: self.render_wait_for.clone(),
        })
    }
}

/// An edge policy from a JSON file, or stdin for `-`.
fn read_policy(path: &std::path::Path) -> anyhow::Result<EdgePolicy> {
    let text = if path == std::path::Path::new("-") {
        std::io::read_to_string(std::io::stdin())?
    } else {
        std::fs::read_to_string(path)
            .with_context(|| format!("reading the edge policy {}", path.display()))?
    };
    serde_json::from_str(&text)
        .with_context(|| format!("the edge policy {} is not a valid policy", path.display()))
}

#[derive(Subcommand, Debug)]
pub enum KeyCommand {
    /// Create a key for a client; prints it once.
    Create {
        /// The client, by id or domain.
        client: String,
        /// read, write or ingest (repeat for several).
        #[arg(long = "scope", required = true)]
        scopes: Vec<String>,
        /// A name for people (who or what uses the key).
        #[arg(long)]
        name: Option<String>,
    },
    /// List a client's keys.
    List {
        /// The client, by id or domain.
        client: String,
    },
    /// Revoke a key.
    Revoke {
        /// The client, by id or domain.
        client: String,
        /// The key's id (from `key list`).
        key_id: Uuid,
    },
}

#[derive(Subcommand, Debug)]
pub enum SecretsCommand {
    /// Print a new Fernet key (for FERNET_KEY / FERNET_KEYS).
    GenerateKey,
    /// Re-encrypt every stored secret with the first of FERNET_KEYS, through events.
    Rotate,
}

/// The tenant commands and the database they read.
async fn open(config: &Config) -> anyhow::Result<(Tenants, sqlx::PgPool)> {
    let backbone = super::connect(config).await?;
    Ok((app::tenants(&backbone, &config.api)?, backbone.db))
}

/// A client by id or domain.
pub(super) async fn resolve(db: &sqlx::PgPool, client: &str) -> anyhow::Result<read::ClientRow> {
    let row = match client.parse::<Uuid>() {
        Ok(id) => read::find(db, id).await?,
        Err(_) => {
            read::find_by_domain(
                db,
                &normalize_domain(client).map_err(|e| anyhow::anyhow!(e))?,
            )
            .await?
        }
    };
    row.with_context(|| format!("no client {client:?}"))
}

pub(super) fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

fn warn_pending(v: Visibility) {
    if v == Visibility::Pending {
        eprintln!(
            "recorded, but the clients projection has not shown it yet (is a projections role running?)"
        );
    }
}

pub async fn client(config: &Config, command: ClientCommand) -> anyhow::Result<()> {
    let (t, db) = open(config).await?;
    let db = &db;
    match command {
        ClientCommand::Add {
            name,
            domain,
            fields,
        } => {
            let new = fields.into_new_client(name, domain)?;
            let (id, v) = t.register(new).await?;
            warn_pending(v);
            show(db, id.as_uuid()).await
        }
        ClientCommand::List => {
            let (rows, _) = read::list(db, i64::MAX, 0).await?;
            print_json(&rows.iter().map(ClientView::from_row).collect::<Vec<_>>())
        }
        ClientCommand::Show {
            client,
            include_secrets,
        } => show_with_secrets(&t, db, &client, include_secrets).await,
        ClientCommand::Update {
            client,
            name,
            domain,
            active,
            fields,
        } => {
            let row = resolve(db, &client).await?;
            let patch = fields.into_patch(name, domain, active)?;
            warn_pending(t.update(ClientId::from_uuid(row.id), patch).await?);
            show(db, row.id).await
        }
        ClientCommand::Delete { client, yes } => {
            let row = resolve(db, &client).await?;
            anyhow::ensure!(
                yes,
                "deleting {} ({}) removes its pages, visits, keys and events for good: add --yes",
                row.name,
                row.domain
            );
            print_json(&t.delete(ClientId::from_uuid(row.id)).await?)
        }
    }
}

/// `client show`: the client, its secrets decrypted when asked for.
async fn show_with_secrets(
    t: &Tenants,
    db: &sqlx::PgPool,
    client: &str,
    include_secrets: bool,
) -> anyhow::Result<()> {
    let row = resolve(db, client).await?;
    let mut view = serde_json::to_value(ClientView::from_row(&row))?;
    if include_secrets {
        for (field, token) in [
            ("cloudflare_api_token", &row.cloudflare_api_token_encrypted),
            ("gemini_api_key", &row.gemini_api_key_encrypted),
        ] {
            if let Some(token) = token {
                view[field] = t
                    .secrets()
                    .decrypt(&String::from_utf8_lossy(token))?
                    .expose()
                    .into();
            }
        }
    }
    print_json(&view)
}

async fn show(db: &sqlx::PgPool, id: Uuid) -> anyhow::Result<()> {
    match read::find(db, id).await? {
        Some(row) => print_json(&ClientView::from_row(&row)),
        None => print_json(&serde_json::json!({ "id": id, "status": "recorded" })),
    }
}

/// Scope names as given on the command line.
fn parse_scopes(names: &[String]) -> anyhow::Result<Vec<Scope>> {
    names
        .iter()
        .map(|s| {
            Scope::parse(s).with_context(|| format!("unknown scope {s:?}: read, write or ingest"))
        })
        .collect()
}

pub async fn key(config: &Config, command: KeyCommand) -> anyhow::Result<()> {
    let (t, db) = open(config).await?;
    let db = &db;
    match command {
        KeyCommand::Create {
            client,
            scopes,
            name,
        } => {
            let row = resolve(db, &client).await?;
            let scopes = parse_scopes(&scopes)?;
            let (created, v) = t
                .create_key(ClientId::from_uuid(row.id), &scopes, name)
                .await?;
            warn_pending(v);
            eprintln!("the key is shown this once: store it now");
            print_json(&serde_json::json!({
                "id": created.row.id, "key": created.key.expose(), "display_prefix": created.row.display_prefix,
                "scopes": created.row.scopes,
            }))
        }
        KeyCommand::List { client } => {
            let row = resolve(db, &client).await?;
            let keys: Vec<crate::api::keys::KeyView> = read::list_keys(db, row.id)
                .await?
                .into_iter()
                .map(Into::into)
                .collect();
            print_json(&keys)
        }
        KeyCommand::Revoke { client, key_id } => {
            let row = resolve(db, &client).await?;
            warn_pending(t.revoke_key(ClientId::from_uuid(row.id), key_id).await?);
            println!("revoked {key_id}");
            Ok(())
        }
    }
}

pub async fn secrets(config: &Config, command: SecretsCommand) -> anyhow::Result<()> {
    match command {
        SecretsCommand::GenerateKey => {
            println!("{}", Secrets::generate_key());
            Ok(())
        }
        SecretsCommand::Rotate => {
            let bar = indicatif::ProgressBar::new(0).with_message("clients and webhooks");
            bar.set_style(
                indicatif::ProgressStyle::with_template("{msg} {wide_bar} {pos}/{len}")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            let progress = |done: usize, total: usize| {
                bar.set_length(total as u64);
                bar.set_position(done as u64);
            };
            let changed = open(config).await?.0.rotate_secrets_with(&progress).await?;
            bar.finish_and_clear();
            println!(
                "re-encrypted {changed} secret holder(s) (clients and webhooks) with the first key"
            );
            Ok(())
        }
    }
}
