//! The JavaScript rendering figure: single-page applications scraped and rendered in
//! chromium (the scraper and the `renderer-js` role, as in production), in pages per second
//! and CPU per page machine-wide (the browser's processes included), to read beside the
//! scrape section's figure for fetched HTML.

use std::sync::Arc;
use std::time::Instant;

use super::figures::{CpuClock, Figures};
use super::{
    bench_scraper, drained, local_http, per_page_figures, run_consumer, scrape_client_with,
};
use crate::app::Backbone;
use crate::domain::render_js::RenderJs;
use crate::domain::url::NormalizedUrl;
use crate::events::pages::{Discovered, DiscoverySource};
use crate::infra::publish::{Outgoing, Publisher};

/// Hosts the pages are spread over (the renderer keeps each host's pace).
const HOSTS: usize = 20;
/// Pages rendered at once: one per core.
const CONTEXTS: usize = 2;

/// An application shell: its script asks for the article and writes it in.
fn shell(i: usize) -> String {
    format!(
        "<html><head><title>App {i}</title></head><body><h1>Reader</h1><div id=\"root\"></div><script src=\"/app.js\"></script><script>window.PAGE={i};</script></body></html>"
    )
}

const APP_JS: &str = "fetch('/data/' + window.PAGE).then(function (r) { return r.json(); }).then(function (a) { var root = document.getElementById('root'); var html = '<article><h2>' + a.title + '</h2>'; for (var i = 0; i < a.paragraphs.length; i++) { html += '<p>' + a.paragraphs[i] + '</p>'; } root.innerHTML = html + '</article>'; });";

fn data(i: usize) -> String {
    let para = "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore et dolore magna aliqua.";
    serde_json::json!({
        "title": format!("Article {i}"),
        "paragraphs": (0..30).map(|p| format!("{p}. {}", para.repeat(3))).collect::<Vec<_>>(),
    })
    .to_string()
}

async fn origin() -> anyhow::Result<u16> {
    use axum::http::header::CONTENT_TYPE;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let app = axum::Router::new().fallback(|uri: axum::http::Uri| async move {
        let path = uri.path();
        if path == "/app.js" {
            return (
                [(CONTENT_TYPE, "application/javascript")],
                APP_JS.to_owned(),
            );
        }
        if let Some(i) = path.strip_prefix("/data/") {
            let i = i.parse().unwrap_or(0);
            return ([(CONTENT_TYPE, "application/json")], data(i));
        }
        let i = path.trim_start_matches("/spa/").parse().unwrap_or(0);
        ([(CONTENT_TYPE, "text/html; charset=utf-8")], shell(i))
    });
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(port)
}

/// Scrapes and renders `pages` applications; prints and records the figures. Skipped (with
/// a line saying so) where chromium is not installed.
pub async fn run(backbone: &Backbone, pages: usize, figures: &mut Figures) -> anyhow::Result<()> {
    if !std::path::Path::new("/usr/bin/chromium").exists()
        && std::env::var_os("CHROMIUM_BIN").is_none()
    {
        println!(
            "{:<58} skipped: no chromium (scripts/ensure-services --render)",
            "render"
        );
        return Ok(());
    }
    let port = origin().await?;
    let client = scrape_client_with(
        backbone,
        "Render bench",
        "render.test",
        Some(RenderJs::Always),
    )
    .await?;
    let http = local_http((0..HOSTS).map(|h| format!("r{h}.render.test")))?;
    let blobs = crate::infra::blobs::BlobStore::open(&backbone.nats.js, 16 << 20).await?;
    let scraper = bench_scraper(backbone, http.clone(), blobs.clone()).await?;
    let chromium = Arc::new(crate::infra::chromium::Chromium::new(
        crate::infra::chromium::ChromiumConfig {
            executable: std::env::var_os("CHROMIUM_BIN").map(Into::into),
            contexts: CONTEXTS,
            memory_limit_bytes: 2 << 30,
            profile_root: None,
            no_sandbox: false,
        },
    ));
    let renderer = crate::pipeline::renderer_js::RendererJs::new(
        &backbone.nats.js,
        http,
        backbone.db.clone(),
        blobs,
        Arc::clone(&chromium),
        crate::pipeline::renderer_js::RenderConfig {
            timeout: std::time::Duration::from_secs(20),
            pages_per_minute: 60_000,
            max_resource_bytes: 1 << 20,
            per_host_concurrency: 2,
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!(e))?;
    // The browser starts before the clock does: a running role has it already.
    drop(chromium.lease().await?);
    let events: Vec<_> = (0..pages)
        .map(|i| {
            let url =
                NormalizedUrl::parse(&format!("http://r{}.render.test:{port}/spa/{i}", i % HOSTS))
                    .expect("url");
            Outgoing::unique(Discovered::bare(url, DiscoverySource::Manual).into_event(client))
        })
        .collect();
    let stop = tokio_util::sync::CancellationToken::new();
    let cpu = CpuClock::start();
    let started = Instant::now();
    Publisher::new(backbone.nats.js.clone())
        .publish_all(&events)
        .await?;
    let runs = [
        run_consumer(
            backbone,
            "bench-render-scraper",
            format!("pages.discovered.{client}.>"),
            scraper,
            16,
            &stop,
        )
        .await?,
        run_consumer(
            backbone,
            "bench-renderer-js",
            format!("pages.render_requested.{client}.>"),
            renderer,
            CONTEXTS,
            &stop,
        )
        .await?,
    ];
    drained(backbone, "bench-render-scraper").await?;
    drained(backbone, "bench-renderer-js").await?;
    let secs = started.elapsed().as_secs_f64();
    let (cpu, machine) = cpu.elapsed();
    stop.cancel();
    for run in runs {
        let _ = run.await;
    }
    // Every page must have been rendered with its article, or the figure means nothing.
    let stream = backbone.nats.js.get_stream("PAGES").await?;
    let rendered = count(&stream, &format!("pages.rendered_js.{client}.>")).await?;
    let changed = count(&stream, &format!("pages.content_changed.{client}.>")).await?;
    anyhow::ensure!(
        rendered == pages as u64 && changed == pages as u64,
        "the render benchmark rendered {rendered} and changed {changed} of {pages} pages: not a valid run"
    );
    let (rate, cpu, machine) = per_page_figures(
        figures,
        [
            "render_pages_per_s",
            "render_cpu_ms_per_page",
            "render_machine_cpu_ms_per_page",
        ],
        pages,
        secs,
        (cpu, machine),
    );
    println!(
        "{:<58} {:>10.1} pages/s  ({:.1} ms CPU per page machine-wide, chromium included; {:.1} ms in this process)",
        format!("scrape + render {pages} applications in chromium, {CONTEXTS} at once"),
        rate,
        machine,
        cpu,
    );
    if let (Some(fetched), Some(fetched_cpu)) = (
        figures.get("scrape_pages_per_s"),
        figures.get("scrape_machine_cpu_ms_per_page"),
    ) {
        println!(
            "{:<58} {:>10.0}x fewer pages/s, {:.0}x the CPU per page",
            "rendered beside fetched HTML (scrape section)",
            fetched / rate,
            machine / fetched_cpu
        );
    }
    Ok(())
}

/// Messages on `subject` (a filter) in the stream.
async fn count(
    stream: &async_nats::jetstream::stream::Stream,
    subject: &str,
) -> anyhow::Result<u64> {
    let mut total = 0;
    let mut subjects = stream.info_with_subjects(subject).await?;
    while let Some(entry) = futures::StreamExt::next(&mut subjects).await {
        total += entry?.1 as u64;
    }
    Ok(total)
}
