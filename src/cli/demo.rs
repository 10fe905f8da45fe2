//! The bundled demo site (`demo/`), served by `ai-cache dev` and imported as a client so the
//! whole pipeline runs from the first command, with nothing to configure.

use std::path::Path;

use anyhow::Context;
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use include_dir::{Dir, include_dir};

use crate::app::{self, Backbone};
use crate::commands::discovery::{ImportOptions, Importer, import_sitemap};
use crate::commands::tenants::NewClient;
use crate::config::Config;
use crate::domain::client::SettingsPatch;
use crate::projections::clients as clients_read;

static SITE: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/demo");

/// The demo site's host name, pinned to 127.0.0.1 for ai-cache's fetcher only.
pub const HOST: &str = "demo.ai-cache.test";

/// Serves the site on 127.0.0.1, on the port of the last run when it is free (so the pages'
/// URLs stay the same from run to run); returns the port.
pub async fn serve(data_dir: &Path) -> anyhow::Result<u16> {
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    let listener = match super::dev_env::remembered_port(data_dir, "demo") {
        Some(port) => match tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
            Ok(l) => l,
            Err(_) => tokio::net::TcpListener::bind("127.0.0.1:0").await?,
        },
        None => tokio::net::TcpListener::bind("127.0.0.1:0").await?,
    };
    let port = listener.local_addr()?.port();
    super::dev_env::remember_port(data_dir, "demo", port)?;
    let base = format!("http://{HOST}:{port}");
    let app = axum::Router::new().fallback(move |uri: Uri| {
        let base = base.clone();
        async move { page(&uri, &base) }
    });
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(port)
}

fn page(uri: &Uri, base: &str) -> Response {
    let path = uri.path().trim_start_matches('/');
    let (file, content_type) = match path {
        "" => ("index.html".to_owned(), "text/html; charset=utf-8"),
        "robots.txt" => ("robots.txt".to_owned(), "text/plain"),
        "sitemap.xml" => ("sitemap.xml".to_owned(), "application/xml"),
        other if other.ends_with(".svg") => (other.to_owned(), "image/svg+xml"),
        other => (format!("{other}.html"), "text/html; charset=utf-8"),
    };
    match SITE.get_file(&file).and_then(|f| f.contents_utf8()) {
        // The footer's time changes on every request: change detection must not care.
        Some(text) => {
            let body = text.replace("{base}", base).replace(
                "a time that changes on every request",
                &chrono::Utc::now().to_rfc3339(),
            );
            ([(header::CONTENT_TYPE, content_type)], body).into_response()
        }
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// Registers the demo client (once) and imports the site's sitemap; prints what happened.
pub async fn import(backbone: &Backbone, config: &Config, port: u16) -> anyhow::Result<()> {
    let tenants = app::tenants(backbone, &config.api)?;
    let client = match clients_read::find_by_domain(&backbone.db, HOST).await? {
        Some(row) => row,
        None => {
            let settings = SettingsPatch {
                crawl_rate_per_minute: Some(600),
                ..SettingsPatch::default()
            };
            let new = NewClient {
                name: "ai-cache demo".into(),
                domain: HOST.into(),
                settings,
                ..NewClient::default()
            };
            let (id, _) = tenants.register(new).await?;
            clients_read::find(&backbone.db, id.as_uuid())
                .await?
                .context("the demo client is not readable yet")?
        }
    };
    let discovery = app::discovery(&config.fetch)?;
    let importer = Importer::new(
        backbone.db.clone(),
        backbone.nats.js.clone(),
        std::time::Duration::from_secs(config.api.write_timeout_secs),
    );
    let options = ImportOptions {
        recursive: true,
        max_depth: 3,
        create_pages: true,
        overwrite: false,
    };
    let url = format!("http://{HOST}:{port}/");
    let summary = import_sitemap(&discovery, &importer, &client, &url, options, &|_| {})
        .await?
        .summary;
    println!(
        "  demo       http://{HOST}:{port}/ imported as client {} ({} new pages, {} known)",
        client.id, summary.created, summary.skipped
    );
    println!(
        "             pages: GET /api/v1/sitemap/client/{}/pages",
        client.id
    );
    Ok(())
}

const GPTBOT: &str = "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko); compatible; GPTBot/1.2; +https://openai.com/gptbot";
const CLAUDEBOT: &str = "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; ClaudeBot/1.0; +claudebot@anthropic.com)";
const PERPLEXITYBOT: &str = "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; PerplexityBot/1.0; +https://perplexity.ai/perplexitybot)";
const CHATGPT_USER: &str = "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko); compatible; ChatGPT-User/1.0; +https://openai.com/bot";
const BROWSER: &str = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";

/// What the demo's first visitors do: AI crawlers and an assistant fetching for a person
/// read pages (one asks for a page that is not there), and people arrive from AI
/// assistants' answers and from nowhere: (user agent, referrer, paths).
const FIRST_VISITS: [(&str, Option<&str>, &[&str]); 7] = [
    (
        GPTBOT,
        None,
        &[
            "/",
            "/blog/first-post",
            "/guides/getting-started",
            "/guides/how-it-works",
            "/nope",
        ],
    ),
    (
        CLAUDEBOT,
        None,
        &["/", "/blog/first-post", "/guides/how-it-works"],
    ),
    (PERPLEXITYBOT, None, &["/", "/guides/getting-started"]),
    (CHATGPT_USER, None, &["/guides/getting-started"]),
    (
        BROWSER,
        Some("https://chatgpt.com/"),
        &["/guides/getting-started"],
    ),
    (
        BROWSER,
        Some("https://www.perplexity.ai/search?q=ai-cache"),
        &["/"],
    ),
    (BROWSER, None, &["/", "/blog/first-post"]),
];

/// On the first run, once the demo's pages are live, a few AI agents and a browser read them
/// through the built-in edge route, so the visit analytics have something to show at first
/// look. Done once per data directory.
pub async fn first_visits(
    db: &sqlx::PgPool,
    data_dir: &Path,
    api: std::net::SocketAddr,
    port: u16,
) -> anyhow::Result<()> {
    let marker = data_dir.join("demo_visits_sent");
    if marker.exists() {
        return Ok(());
    }
    let client = clients_read::find_by_domain(db, HOST)
        .await?
        .context("the demo client is not registered")?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let counts =
            crate::projections::pages::counts_by_status_and_stage(db, Some(client.id)).await?;
        if counts.iter().any(|c| c.stage == "live") {
            break;
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "the demo's pages did not go live in 2 minutes"
        );
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    // The edge sends people on to the origin (302): the visit is recorded all the same.
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let mut sent = 0;
    for (agent, referrer, paths) in FIRST_VISITS {
        for path in paths {
            let url = format!("http://{api}/edge/{HOST}:{port}{path}");
            let mut request = http.get(&url).header(header::USER_AGENT, agent);
            if let Some(referrer) = referrer {
                request = request.header(header::REFERER, referrer);
            }
            request.send().await.with_context(|| format!("GET {url}"))?;
            sent += 1;
        }
    }
    std::fs::write(&marker, sent.to_string())
        .with_context(|| format!("writing {}", marker.display()))?;
    println!(
        "  demo       {sent} first visits (AI crawlers, ChatGPT-User, people referred by ChatGPT and Perplexity): see the dashboard"
    );
    Ok(())
}
