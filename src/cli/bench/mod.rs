//! `ai-cache bench`: measures the backbone on a throwaway local stack and prints each figure
//! beside the machine's ceiling (raw JetStream publish rate), so the ratio can be read.
//!
//! Not a test: it asserts nothing, it reports.

mod edge;
mod figures;
mod render;

use std::time::Instant;

use anyhow::Context;
use async_nats::jetstream::{self, stream};
use bytes::Bytes;

use crate::app::Backbone;
use crate::domain::ids::ClientId;
use crate::domain::url::NormalizedUrl;
use crate::events::pages::{Discovered, DiscoverySource, PageEvent};
use crate::infra::localstack::{self, Durability, LocalNats, LocalPostgres};
use crate::infra::publish::{Outgoing, Publisher};
use crate::projections::pages::PagesProjection;
use crate::projections::runtime;
use figures::{CpuClock, Figures};

/// Publishes in flight at once for the publish measurements.
const IN_FLIGHT: usize = 512;

/// Runs every section (or the edge's only) and prints each figure; with `json`, writes them
/// there too, every ratio computed from figures of this run.
pub async fn run(
    events: usize,
    edge_only: bool,
    json: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    let mut figures = Figures::default();
    let root = std::env::temp_dir().join(format!("ai-cache-bench-{}", std::process::id()));
    let (nats_dir, pg_dir) = (root.join("nats"), root.join("pg"));
    let nats =
        tokio::task::spawn_blocking(move || LocalNats::start(&nats_dir, None, true)).await??;
    // File storage with fsync on, as in production.
    let pg = tokio::task::spawn_blocking(move || {
        LocalPostgres::start(&pg_dir, Durability::Durable, true)
    })
    .await??;
    localstack::ensure_database(&pg.url("postgres"), "bench").await?;
    let backbone = Backbone::connect(&pg.url("bench"), &nats.url(), 8).await?;
    backbone.prepare().await?;

    println!(
        "ai-cache bench: {events} events per figure, {} cores",
        figures::cores()
    );
    println!("(nats-server and PostgreSQL on this machine, file storage, fsync on)");

    let raw = raw_publish(&backbone.nats.js, events, 1024).await?;
    figures.set("publish_ceiling_msgs_per_s", raw);
    println!(
        "{:<58} {:>10.0} msg/s   (ceiling)",
        "raw JetStream publish, 1 KiB, 512 in flight", raw
    );

    let (events_rate, published) = event_publish(&backbone, events).await?;
    figures.set("event_publish_events_per_s", events_rate);
    println!(
        "{:<58} {:>10.0} ev/s    ({:.0}% of ceiling)",
        "event publish (envelope, JSON, Nats-Msg-Id), 512 in flight",
        events_rate,
        100.0 * events_rate / raw
    );

    let started = Instant::now();
    let applied = runtime::rebuild(
        &backbone.db,
        &backbone.nats.js,
        std::sync::Arc::new(PagesProjection),
        &|_, _| {},
    )
    .await?;
    let rate = published as f64 / started.elapsed().as_secs_f64();
    figures.set("projection_apply_events_per_s", rate);
    println!(
        "{:<58} {:>10.0} ev/s    ({:.0}% of ceiling; to sequence {applied})",
        "projection apply (pages.discovered → pages rows, batch 500)",
        rate,
        100.0 * rate / raw
    );
    if !edge_only {
        sitemap_parse(&mut figures);
    }
    // The projectors run beside the remaining sections, as in production.
    let projectors = tokio_util::sync::CancellationToken::new();
    for projection in crate::projections::all() {
        let runner = crate::projections::runtime::ProjectionRunner::new(
            projection,
            backbone.db.clone(),
            backbone.nats.js.clone(),
        );
        let stop = projectors.clone();
        tokio::spawn(async move { runner.run(stop).await });
    }
    if !edge_only {
        sitemap_import(&backbone, &mut figures).await?;
        let scraped = scrape(&backbone, 2000, &mut figures).await?;
        let stages = stages(&backbone, scraped, &mut figures).await?;
        pipeline(&backbone, &scraped, 1000, &mut figures).await?;
        render::run(&backbone, 100, &mut figures).await?;
        reprocessing(&backbone, scraped.client, &mut figures).await?;
        stages.cancel();
    }
    edge::run(&backbone, 100_000, &mut figures).await?;
    rebuild_all(&backbone, raw, &mut figures).await?;
    projectors.cancel();
    print!("{}", figures.summary());
    if let Some(path) = json {
        std::fs::write(path, figures.to_json()? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
        println!("figures written to {}", path.display());
    }
    drop(backbone);
    drop(pg);
    drop(nats);
    let _ = std::fs::remove_dir_all(&root);
    Ok(())
}

pub(super) async fn raw_publish(
    js: &jetstream::Context,
    count: usize,
    size: usize,
) -> anyhow::Result<f64> {
    js.create_stream(stream::Config {
        name: "BENCH".into(),
        subjects: vec!["bench.>".into()],
        storage: stream::StorageType::File,
        ..Default::default()
    })
    .await
    .context("creating the bench stream")?;
    let payload = Bytes::from(vec![b'x'; size]);
    let started = Instant::now();
    let mut pending = std::collections::VecDeque::with_capacity(IN_FLIGHT);
    for i in 0..count {
        pending.push_back(
            js.publish(format!("bench.{}", i % 16), payload.clone())
                .await?,
        );
        if pending.len() >= IN_FLIGHT
            && let Some(ack) = pending.pop_front()
        {
            ack.await?;
        }
    }
    for ack in pending {
        ack.await?;
    }
    let rate = count as f64 / started.elapsed().as_secs_f64();
    js.delete_stream("BENCH").await?;
    Ok(rate)
}

async fn event_publish(backbone: &Backbone, count: usize) -> anyhow::Result<(f64, usize)> {
    let publisher = Publisher::new(backbone.nats.js.clone());
    let client = ClientId::new_random();
    let started = Instant::now();
    let mut batch = Vec::with_capacity(IN_FLIGHT);
    for i in 0..count {
        let url = NormalizedUrl::parse(&format!("https://bench.example/page/{i}"))?;
        let event = Discovered {
            sitemap_url: Some("https://bench.example/sitemap.xml".into()),
            lastmod: Some("2026-11-01".into()),
            changefreq: Some("weekly".into()),
            priority: Some("0.5".into()),
            ..Discovered::bare(url, DiscoverySource::Sitemap)
        }
        .into_event(client);
        let key = format!(
            "bench:{}",
            event
                .meta
                .page_id
                .map(|p| p.to_string())
                .unwrap_or_default()
        );
        batch.push(Outgoing::keyed(event, key));
        if batch.len() == IN_FLIGHT {
            publisher.publish_all(&batch).await?;
            batch.clear();
        }
    }
    publisher.publish_all(&batch).await?;
    Ok((count as f64 / started.elapsed().as_secs_f64(), count))
}

/// A urlset of `n` URLs like a real site's (loc, lastmod, changefreq, priority).
fn big_sitemap(n: usize) -> Vec<u8> {
    let mut s = String::from(
        r#"<?xml version="1.0" encoding="UTF-8"?><urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">"#,
    );
    for i in 0..n {
        s.push_str(&format!(
            "<url><loc>https://bench.example/articles/{i}/a-fairly-typical-slug-for-a-page?ref=sitemap&amp;v=2</loc><lastmod>2026-11-01T10:00:00+00:00</lastmod><changefreq>weekly</changefreq><priority>0.5</priority></url>\n"
        ));
    }
    s.push_str("</urlset>");
    s.into_bytes()
}

fn sitemap_parse(figures: &mut Figures) {
    use std::io::Write;
    let xml = big_sitemap(50_000);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let _ = gz.write_all(&xml);
    let gz = gz.finish().unwrap_or_default();
    let limits = crate::domain::sitemap::Limits::default();
    for (label, body) in [("plain", &xml), ("gzip", &gz)] {
        let rounds = 10;
        let started = Instant::now();
        let mut urls = 0;
        for _ in 0..rounds {
            urls += crate::domain::sitemap::parse(body, &limits)
                .map(|p| p.entries.len())
                .unwrap_or(0);
        }
        let secs = started.elapsed().as_secs_f64();
        let mb = (xml.len() * rounds) as f64 / 1e6 / secs;
        figures.set(
            match label {
                "plain" => "sitemap_parse_urls_per_s",
                _ => "sitemap_parse_gzip_urls_per_s",
            },
            urls as f64 / secs,
        );
        println!(
            "{:<58} {:>10.0} URLs/s   ({mb:.0} MB/s of XML; {} KB gzipped)",
            format!("sitemap parse, {label}, 50,000-URL urlset, one core"),
            urls as f64 / secs,
            gz.len() / 1024
        );
    }
}

async fn sitemap_import(backbone: &Backbone, figures: &mut Figures) -> anyhow::Result<()> {
    use crate::commands::discovery::{Apply, ImportMode, Importer, KnownPages, Origin};
    use crate::commands::tenants::{NewClient, Tenants};
    let secrets =
        crate::infra::secrets::Secrets::new(&[crate::infra::secrets::Secrets::generate_key()])?;
    let timeout = std::time::Duration::from_secs(120);
    let tenants = Tenants::new(
        backbone.db.clone(),
        backbone.nats.js.clone(),
        std::sync::Arc::new(secrets),
        timeout,
    );
    let (id, _) = tenants
        .register(NewClient {
            name: "Bench".into(),
            domain: "bench.example".into(),
            ..NewClient::default()
        })
        .await?;
    let client = crate::projections::clients::find(&backbone.db, id.as_uuid())
        .await?
        .context("client")?;
    let entries: Vec<_> = crate::domain::sitemap::parse(&big_sitemap(10_000), &Default::default())?
        .entries
        .into_iter()
        .map(|e| (e, Some("https://bench.example/sitemap.xml".to_owned())))
        .collect();
    let importer = Importer::new(backbone.db.clone(), backbone.nats.js.clone(), timeout);
    let started = Instant::now();
    let summary = importer
        .import(
            &client,
            &entries,
            ImportMode {
                origin: Origin::Sitemap,
                apply: Apply::Publish,
                known: KnownPages::Keep,
                limit: 10_000,
            },
        )
        .await?;
    let secs = started.elapsed().as_secs_f64();
    figures.set("sitemap_import_urls_per_s", summary.created as f64 / secs);
    println!(
        "{:<58} {:>10.0} URLs/s   ({} pages.discovered published and projected)",
        "sitemap import, 10,000 URLs, to readable pages rows",
        summary.created as f64 / secs,
        summary.created
    );
    Ok(())
}

/// An article of about 20 KB, like a real page, different per `i`.
fn bench_page(i: usize) -> String {
    let para = "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore et dolore magna aliqua. ";
    format!(
        "<html><head><title>Page {i}</title><script>var t={i};</script></head><body><nav><a href='/'>Home</a></nav>\
         <main><h1>Article {i}</h1>{}</main><footer>Footer</footer></body></html>",
        (0..30)
            .map(|p| format!("<p>{p}. {}</p>", para.repeat(5)))
            .collect::<String>()
    )
}

/// What the scrape section leaves for the next ones.
#[derive(Clone, Copy)]
struct Scraped {
    client: ClientId,
    port: u16,
    pages: usize,
}

/// Hosts the scrape benchmark spreads its pages over.
const SCRAPE_HOSTS: usize = 100;

async fn scrape(
    backbone: &Backbone,
    pages: usize,
    figures: &mut Figures,
) -> anyhow::Result<Scraped> {
    let port = bench_origin().await?;
    let client = scrape_client(backbone).await?;
    let scraper = hosts_scraper(backbone).await?;
    let before = crate::infra::nats::last_sequence(&backbone.nats.js, "PAGES")
        .await
        .map_err(|e| anyhow::anyhow!(e))?;
    let events: Vec<_> = (0..pages)
        .map(|i| {
            let url = NormalizedUrl::parse(&format!(
                "http://h{}.bench.test:{port}/p/{i}",
                i % SCRAPE_HOSTS
            ))
            .expect("url");
            Outgoing::unique(Discovered::bare(url, DiscoverySource::Manual).into_event(client))
        })
        .collect();
    let cpu = CpuClock::start();
    let started = Instant::now();
    Publisher::new(backbone.nats.js.clone())
        .publish_all(&events)
        .await?;
    let stop = tokio_util::sync::CancellationToken::new();
    let run = run_consumer(
        backbone,
        "bench-scraper",
        format!("pages.discovered.{client}.>"),
        scraper,
        64,
        &stop,
    )
    .await?;
    drained(backbone, "bench-scraper").await?;
    let secs = started.elapsed().as_secs_f64();
    let (cpu, machine) = cpu.elapsed();
    stop.cancel();
    let _ = run.await;
    let produced = crate::infra::nats::last_sequence(&backbone.nats.js, "PAGES")
        .await
        .map_err(|e| anyhow::anyhow!(e))?
        - before
        - pages as u64;
    // Each page must have given pages.scraped and pages.content_changed, or the figure means nothing.
    anyhow::ensure!(
        produced == 2 * pages as u64,
        "the scrape benchmark produced {produced} events for {pages} pages: not a valid run"
    );
    let (rate, cpu, machine) = per_page_figures(
        figures,
        [
            "scrape_pages_per_s",
            "scrape_cpu_ms_per_page",
            "scrape_machine_cpu_ms_per_page",
        ],
        pages,
        secs,
        (cpu, machine),
    );
    println!(
        "{:<58} {:>10.0} pages/s  ({:.2} ms CPU per page in this process, origin included; {:.2} ms machine-wide; {} events)",
        format!("scrape {pages} new 20 KB pages, {SCRAPE_HOSTS} hosts, 64 in flight"),
        rate,
        cpu,
        machine,
        produced
    );
    Ok(Scraped {
        client,
        port,
        pages,
    })
}

/// Records a section's pages per second and CPU milliseconds per page (this process's, the
/// machine's) under `keys`, and returns them.
fn per_page_figures(
    figures: &mut Figures,
    keys: [&'static str; 3],
    pages: usize,
    secs: f64,
    (cpu, machine): (f64, f64),
) -> (f64, f64, f64) {
    let per_page = |seconds: f64| seconds * 1000.0 / pages as f64;
    let values = (pages as f64 / secs, per_page(cpu), per_page(machine));
    figures.set(keys[0], values.0);
    figures.set(keys[1], values.1);
    figures.set(keys[2], values.2);
    values
}

/// The origin: every path answers an article; its port.
async fn bench_origin() -> anyhow::Result<u16> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let app = axum::Router::new().fallback(|uri: axum::http::Uri| async move {
        let i: usize = uri.path().trim_start_matches("/p/").parse().unwrap_or(0);
        (
            [(axum::http::header::CONTENT_TYPE, "text/html; charset=utf-8")],
            bench_page(i),
        )
    });
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(port)
}

/// The scrape benchmark's client, crawling each host at 600 pages a minute.
async fn scrape_client(backbone: &Backbone) -> anyhow::Result<ClientId> {
    scrape_client_with(backbone, "Scrape bench", "bench.test", None).await
}

/// A benchmark's client of `domain`, crawling each host at 600 pages a minute, with
/// `render_js` when given.
async fn scrape_client_with(
    backbone: &Backbone,
    name: &str,
    domain: &str,
    render_js: Option<crate::domain::render_js::RenderJs>,
) -> anyhow::Result<ClientId> {
    use crate::commands::tenants::{NewClient, Tenants};
    use crate::domain::client::SettingsPatch;
    let secrets =
        crate::infra::secrets::Secrets::new(&[crate::infra::secrets::Secrets::generate_key()])?;
    let tenants = Tenants::new(
        backbone.db.clone(),
        backbone.nats.js.clone(),
        std::sync::Arc::new(secrets),
        std::time::Duration::from_secs(60),
    );
    let settings = SettingsPatch {
        crawl_rate_per_minute: Some(600),
        render_js,
        ..SettingsPatch::default()
    };
    let (client, _) = tenants
        .register(NewClient {
            name: name.into(),
            domain: domain.into(),
            settings,
            ..NewClient::default()
        })
        .await?;
    Ok(client)
}

/// An HTTP client for which each of `hosts` leads to this machine (the bench's origins).
fn local_http(
    hosts: impl Iterator<Item = String>,
) -> anyhow::Result<crate::infra::http::HttpClient> {
    let http_config = crate::infra::http::HttpConfig {
        resolve: hosts
            .map(|host| (host, std::net::Ipv4Addr::LOCALHOST.into()))
            .collect(),
        ..Default::default()
    };
    Ok(crate::infra::http::HttpClient::new(&http_config)?)
}

/// A scraper whose `h<N>.bench.test` host names all lead to the local origin.
async fn hosts_scraper(
    backbone: &Backbone,
) -> anyhow::Result<std::sync::Arc<crate::pipeline::scraper::Scraper>> {
    let http = local_http((0..SCRAPE_HOSTS).map(|h| format!("h{h}.bench.test")))?;
    let blobs = crate::infra::blobs::BlobStore::open(&backbone.nats.js, 16 << 20).await?;
    bench_scraper(backbone, http, blobs).await
}

/// A scraper fetching through `http`.
async fn bench_scraper(
    backbone: &Backbone,
    http: crate::infra::http::HttpClient,
    blobs: crate::infra::blobs::BlobStore,
) -> anyhow::Result<std::sync::Arc<crate::pipeline::scraper::Scraper>> {
    use crate::pipeline::scraper::{Scraper, ScraperConfig};
    let config = ScraperConfig {
        max_body_bytes: 1 << 20,
        per_host_concurrency: 2,
        robots_agent: "ai-cache".into(),
        robots_ttl: std::time::Duration::from_secs(3600),
    };
    Ok(std::sync::Arc::new(
        Scraper::new(&backbone.nats.js, http, backbone.db.clone(), blobs, &config)
            .await
            .map_err(|e| anyhow::anyhow!(e))?,
    ))
}

/// Runs `step`, `concurrency` messages at once, on a durable consumer of the bench's own on
/// PAGES that takes only `filter` (this section's events: earlier sections published
/// others), until `stop`.
async fn run_consumer<S: crate::pipeline::runtime::Step<PageEvent>>(
    backbone: &Backbone,
    name: &str,
    filter: String,
    step: S,
    concurrency: usize,
    stop: &tokio_util::sync::CancellationToken,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    use crate::pipeline::runtime::{ConsumerRuntime, RuntimeOptions};
    backbone
        .nats
        .js
        .get_stream("PAGES")
        .await?
        .create_consumer(async_nats::jetstream::consumer::pull::Config {
            durable_name: Some(name.into()),
            filter_subject: filter,
            ack_policy: async_nats::jetstream::consumer::AckPolicy::Explicit,
            ack_wait: std::time::Duration::from_secs(60),
            max_deliver: 5,
            ..Default::default()
        })
        .await?;
    let runtime = ConsumerRuntime::<PageEvent, _>::new(
        backbone.nats.js.clone(),
        name,
        step,
        RuntimeOptions {
            concurrency,
            ..RuntimeOptions::default()
        },
    );
    let stop = stop.clone();
    Ok(tokio::spawn(async move {
        let _ = runtime.run(stop).await;
    }))
}

/// Waits until the named consumer has nothing pending or in flight (10 minutes at most).
async fn drained(backbone: &Backbone, consumer: &str) -> anyhow::Result<()> {
    let stream = backbone.nats.js.get_stream("PAGES").await?;
    let deadline = Instant::now() + std::time::Duration::from_secs(600);
    loop {
        let info = stream.consumer_info(consumer).await?;
        if info.num_pending == 0 && info.num_ack_pending == 0 {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{consumer} did not drain in 10 minutes"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

async fn updated_count(backbone: &Backbone) -> anyhow::Result<u64> {
    let stream = backbone.nats.js.get_stream("PAGES").await?;
    let info = stream.info_with_subjects("pages.updated.>").await?;
    Ok(futures::StreamExt::fold(info, 0u64, |n, r| async move {
        n + r.map(|(_, c)| c as u64).unwrap_or(0)
    })
    .await)
}

/// The markdown, renderer and uploader stages, running until the token is cancelled.
async fn start_stages(backbone: &Backbone) -> anyhow::Result<tokio_util::sync::CancellationToken> {
    use crate::pipeline::markdown::MarkdownStage;
    use crate::pipeline::renderer::RendererStage;
    use crate::pipeline::runtime::{ConsumerRuntime, RuntimeOptions};
    use crate::pipeline::uploader::Uploader;
    let stop = tokio_util::sync::CancellationToken::new();
    let options = RuntimeOptions {
        concurrency: 32,
        ..RuntimeOptions::default()
    };
    let blobs = crate::infra::blobs::BlobStore::open(&backbone.nats.js, 16 << 20).await?;
    let js = backbone.nats.js.clone();
    let markdown = ConsumerRuntime::<PageEvent, _>::new(
        js.clone(),
        "markdown",
        MarkdownStage::new(&js, blobs.clone(), None)
            .await
            .map_err(|e| anyhow::anyhow!(e))?,
        options.clone(),
    );
    let renderer = ConsumerRuntime::<PageEvent, _>::new(
        js.clone(),
        "renderer",
        RendererStage::new(&js, blobs)
            .await
            .map_err(|e| anyhow::anyhow!(e))?,
        options.clone(),
    );
    let uploader = ConsumerRuntime::<PageEvent, _>::new(
        js.clone(),
        "uploader",
        Uploader::new(
            &js,
            backbone.db.clone(),
            crate::infra::blobs::BlobStore::open(&js, 16 << 20).await?,
            None,
        )
        .await
        .map_err(|e| anyhow::anyhow!(e))?,
        options,
    );
    let (s1, s2, s3) = (stop.clone(), stop.clone(), stop.clone());
    tokio::spawn(async move { markdown.run(s1).await });
    tokio::spawn(async move { renderer.run(s2).await });
    tokio::spawn(async move { uploader.run(s3).await });
    Ok(stop)
}

/// Markdown → render → upload for the pages the scrape section left.
async fn stages(
    backbone: &Backbone,
    scraped: Scraped,
    figures: &mut Figures,
) -> anyhow::Result<tokio_util::sync::CancellationToken> {
    let before = updated_count(backbone).await?;
    let cpu = CpuClock::start();
    let started = Instant::now();
    let stop = start_stages(backbone).await?;
    for consumer in ["markdown", "renderer", "uploader"] {
        drained(backbone, consumer).await?;
    }
    let secs = started.elapsed().as_secs_f64();
    let (cpu, machine) = cpu.elapsed();
    let updated = updated_count(backbone).await? - before;
    anyhow::ensure!(
        updated == scraped.pages as u64,
        "{updated} pages.updated for {} pages: not a valid run",
        scraped.pages
    );
    let per_page = |seconds: f64| seconds * 1000.0 / scraped.pages as f64;
    figures.set("stages_pages_per_s", scraped.pages as f64 / secs);
    figures.set("stages_cpu_ms_per_page", per_page(cpu));
    figures.set("stages_machine_cpu_ms_per_page", per_page(machine));
    println!(
        "{:<58} {:>10.0} pages/s  ({:.2} ms CPU per page; {:.2} ms machine-wide; {updated} pages.updated)",
        format!(
            "markdown → render → upload, {} pages, 32 in flight each",
            scraped.pages
        ),
        scraped.pages as f64 / secs,
        per_page(cpu),
        per_page(machine)
    );
    Ok(stop)
}

/// Discovery to `pages.updated` with every stage running.
async fn pipeline(
    backbone: &Backbone,
    scraped: &Scraped,
    pages: usize,
    figures: &mut Figures,
) -> anyhow::Result<()> {
    use crate::pipeline::runtime::{ConsumerRuntime, RuntimeOptions};
    use futures::StreamExt;
    let scraper = hosts_scraper(backbone).await?;
    // Counted as they are published (asking the server for subject counts in a loop would
    // cost it more than the pipeline does).
    let mut updates = backbone
        .nats
        .client
        .subscribe(format!("pages.updated.{}.>", scraped.client))
        .await?;
    let events: Vec<_> = (0..pages)
        .map(|i| {
            let n = scraped.pages + i;
            let url = NormalizedUrl::parse(&format!(
                "http://h{}.bench.test:{}/p/{n}",
                n % SCRAPE_HOSTS,
                scraped.port
            ))
            .expect("url");
            Outgoing::unique(
                Discovered::bare(url, DiscoverySource::Manual).into_event(scraped.client),
            )
        })
        .collect();
    let cpu = CpuClock::start();
    let started = Instant::now();
    Publisher::new(backbone.nats.js.clone())
        .publish_all(&events)
        .await?;
    let stop = tokio_util::sync::CancellationToken::new();
    let runtime = ConsumerRuntime::<PageEvent, _>::new(
        backbone.nats.js.clone(),
        "bench-scraper",
        scraper,
        RuntimeOptions {
            concurrency: 64,
            ..RuntimeOptions::default()
        },
    );
    let s = stop.clone();
    tokio::spawn(async move { runtime.run(s).await });
    let mut updated = std::collections::HashSet::new();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(600);
    while updated.len() < pages {
        let message = tokio::time::timeout_at(deadline, updates.next())
            .await
            .context("the pipeline did not finish in 10 minutes")?
            .context("the subscription ended")?;
        // Each page once (a redelivered publish reaches subscribers too).
        updated.insert(message.subject.to_string());
    }
    let secs = started.elapsed().as_secs_f64();
    let (cpu, machine) = cpu.elapsed();
    stop.cancel();
    let rate = pages as f64 / secs;
    // The CPU limit: every core busy with this process's work, at the CPU per page the scrape
    // and the stages sections measured; and the machine's: every core busy at the CPU per
    // page the whole machine (nats-server and PostgreSQL included) spent in this section.
    let cores = figures::cores() as f64;
    let cpu_limit = match (
        figures.get("scrape_cpu_ms_per_page"),
        figures.get("stages_cpu_ms_per_page"),
    ) {
        (Some(scrape), Some(stages)) => cores * 1000.0 / (scrape + stages),
        _ => 0.0,
    };
    let machine_limit = cores * pages as f64 / machine.max(f64::EPSILON);
    figures.set("pipeline_pages_per_s", rate);
    figures.set("pipeline_cpu_limit_pages_per_s", cpu_limit);
    figures.set("pipeline_machine_cpu_limit_pages_per_s", machine_limit);
    figures.set("pipeline_cpu_ms_per_page", cpu * 1000.0 / pages as f64);
    figures.set(
        "pipeline_machine_cpu_ms_per_page",
        machine * 1000.0 / pages as f64,
    );
    println!(
        "{:<58} {:>10.0} pages/s  ({:.0}% of the CPU limit, {cpu_limit:.0} pages/s; {:.0}% of the machine's, {machine_limit:.0} pages/s; {:.2} ms CPU per page here, {:.2} ms machine-wide)",
        format!("whole pipeline, discovery → pages.updated, {pages} new pages"),
        rate,
        100.0 * rate / cpu_limit,
        100.0 * rate / machine_limit,
        cpu * 1000.0 / pages as f64,
        machine * 1000.0 / pages as f64,
    );
    Ok(())
}

/// Reprocessing a client's pages from `markdown` with every stage running: forced (every page
/// made and uploaded again), then unforced (nothing changed: every page skipped).
async fn reprocessing(
    backbone: &Backbone,
    client: ClientId,
    figures: &mut Figures,
) -> anyhow::Result<()> {
    use crate::commands::reprocess::{Reprocessing, RunSpec};
    use crate::pipeline::reprocess::Planner;
    use crate::pipeline::runtime::{ConsumerRuntime, RuntimeOptions};
    let stop = tokio_util::sync::CancellationToken::new();
    let planner = ConsumerRuntime::<crate::events::ClientEvent, _>::new(
        backbone.nats.js.clone(),
        "reprocessor",
        Planner::new(backbone.db.clone(), &backbone.nats.js)
            .await
            .map_err(|e| anyhow::anyhow!(e))?,
        RuntimeOptions::default(),
    );
    let s = stop.clone();
    tokio::spawn(async move { planner.run(s).await });
    let runs = Reprocessing::new(backbone.db.clone(), backbone.nats.js.clone());
    for force in [true, false] {
        let spec = RunSpec {
            from_stage: crate::events::pages::Stage::Markdown,
            url_prefix: None,
            since: None,
            until: None,
            force,
        };
        let cpu = CpuClock::start();
        let started = Instant::now();
        let mut run = runs.request(client.as_uuid(), spec).await?;
        let deadline = Instant::now() + std::time::Duration::from_secs(600);
        while run.status != "done" {
            anyhow::ensure!(
                Instant::now() < deadline,
                "the run did not finish in 10 minutes"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            run = runs.get(run.id).await?.context("the run disappeared")?;
        }
        let secs = started.elapsed().as_secs_f64();
        let (cpu, _) = cpu.elapsed();
        let pages = run.finished.max(1) as f64;
        figures.set(
            if force {
                "reprocess_forced_pages_per_s"
            } else {
                "reprocess_skipped_pages_per_s"
            },
            pages / secs,
        );
        let outcomes: Vec<String> = run
            .outcomes
            .iter()
            .map(|(k, v)| format!("{v} {k}"))
            .collect();
        println!(
            "{:<58} {:>10.0} pages/s  ({:.2} ms CPU per page; {})",
            format!(
                "reprocess from markdown, {} pages, {}",
                run.finished,
                if force { "forced" } else { "nothing changed" }
            ),
            pages / secs,
            cpu * 1000.0 / pages,
            outcomes.join(", ")
        );
    }
    stop.cancel();
    Ok(())
}

/// Every projection rebuilt from its stream in place, then verified beside the live tables.
async fn rebuild_all(
    backbone: &Backbone,
    ceiling: f64,
    figures: &mut Figures,
) -> anyhow::Result<()> {
    // Visits travel in batch events: each counts as the visits it carries (the rows
    // stored), so the figure reads the same whatever the batching.
    let mut events = 0u64;
    for stream in ["CLIENTS", "PAGES"] {
        let mut s = backbone.nats.js.get_stream(stream).await?;
        events += s.info().await?.state.messages;
    }
    let visits: i64 = sqlx::query_scalar(crate::projections::sql::visits::COUNT_VISITS)
        .fetch_one(&backbone.db)
        .await?;
    events += u64::try_from(visits).unwrap_or(0);
    let started = Instant::now();
    let mut each = Vec::new();
    for projection in crate::projections::all() {
        let name = projection.name();
        let began = Instant::now();
        runtime::rebuild(&backbone.db, &backbone.nats.js, projection, &|_, _| {}).await?;
        each.push(format!("{name} {:.2} s", began.elapsed().as_secs_f64()));
    }
    let rate = events as f64 / started.elapsed().as_secs_f64();
    figures.set("rebuild_events_per_s", rate);
    println!(
        "{:<58} {:>10.0} ev/s    ({:.0}% of ceiling; {events} events of every type, visits one by one; {})",
        "projection rebuild, all projections, in place",
        rate,
        100.0 * rate / ceiling,
        each.join(", ")
    );
    let started = Instant::now();
    let mut equal = true;
    for projection in crate::projections::all() {
        let report = crate::projections::verify::verify(
            &backbone.db,
            &backbone.nats.js,
            projection,
            &|_, _| {},
        )
        .await?;
        equal &= report.equal();
    }
    anyhow::ensure!(equal, "a verified rebuild differs from the live rows");
    let rate = events as f64 / started.elapsed().as_secs_f64();
    figures.set("verified_rebuild_events_per_s", rate);
    println!(
        "{:<58} {:>10.0} ev/s    ({:.0}% of ceiling; rows equal to the live ones)",
        "projection rebuild, verified (scratch schema + compare)",
        rate,
        100.0 * rate / ceiling
    );
    Ok(())
}
