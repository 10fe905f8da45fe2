//! Wiring: connect to the backbone, prepare it (streams, migrations), and run roles.

use std::sync::Arc;

use anyhow::Context;
use sqlx::PgPool;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::api::{self, AppState};
use crate::infra::nats::Nats;
use crate::infra::{db, streams};
use crate::projections::{self, runtime::ProjectionRunner};

/// A role a process can run. Any number of processes may run any subset of roles.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// The HTTP API (`/health`, `/metrics`, `/api/v1/...`).
    Api,
    /// The projectors: every read model kept up to date from the streams.
    Projections,
}

impl Role {
    pub const ALL: [Role; 2] = [Role::Api, Role::Projections];
}

/// Connections to NATS and Postgres.
#[derive(Clone)]
pub struct Backbone {
    pub db: PgPool,
    pub nats: Nats,
}

impl Backbone {
    /// Connects to both services.
    pub async fn connect(
        database_url: &str,
        nats_url: &str,
        max_db_connections: u32,
    ) -> anyhow::Result<Self> {
        let nats = Nats::connect(nats_url, "ai-cache").await?;
        let db = db::connect(database_url, max_db_connections).await?;
        Ok(Self { db, nats })
    }

    /// Applies the stream definitions and the migrations; every role does this at start-up.
    pub async fn prepare(&self) -> anyhow::Result<Vec<streams::Applied>> {
        let defs = streams::embedded()?;
        let report = streams::apply(&self.nats.js, &defs).await?;
        db::migrate(&self.db).await?;
        Ok(report)
    }
}

/// Runs `roles` until `shutdown` is cancelled or one of them fails; on the way out every
/// role gets to finish its in-flight work.
pub async fn run_roles(
    backbone: &Backbone,
    roles: &[Role],
    listener: Option<tokio::net::TcpListener>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    // Install the recorder before any role counts anything.
    crate::telemetry::metrics();
    let mut tasks: JoinSet<anyhow::Result<()>> = JoinSet::new();
    if roles.contains(&Role::Api) {
        let listener = listener.context("the api role needs a listener")?;
        let state = AppState {
            db: backbone.db.clone(),
            nats: backbone.nats.clone(),
        };
        let shutdown = shutdown.clone();
        tasks.spawn(async move {
            api::serve(listener, state, shutdown)
                .await
                .context("api server")
        });
    }
    if roles.contains(&Role::Projections) {
        for projection in projections::all() {
            let runner = Arc::new(ProjectionRunner::new(
                projection,
                backbone.db.clone(),
                backbone.nats.js.clone(),
            ));
            let shutdown = shutdown.clone();
            tasks.spawn(async move { runner.run(shutdown).await.map_err(Into::into) });
        }
    }
    let mut first_error = None;
    while let Some(joined) = tasks.join_next().await {
        let result = joined.map_err(anyhow::Error::from).and_then(|r| r);
        if let Err(e) = result {
            tracing::error!(error = format!("{e:#}"), "role failed, stopping the others");
            shutdown.cancel();
            first_error.get_or_insert(e);
        } else if !shutdown.is_cancelled() {
            // A role that returns on its own is as bad as one that fails.
            shutdown.cancel();
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// A token cancelled on Ctrl-C or SIGTERM.
pub fn shutdown_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term => {}
        }
        tracing::info!("shutting down");
        cancel.cancel();
    });
    token
}
