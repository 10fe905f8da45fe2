//! `ai-cache bench`: measures the backbone on a throwaway local stack and prints each figure
//! beside the machine's ceiling (raw JetStream publish rate), so the ratio can be read.
//!
//! Not a test: it asserts nothing, it reports.

mod edge;

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

/// Publishes in flight at once for the publish measurements.
const IN_FLIGHT: usize = 512;

pub async fn run(events: usize, edge_only: bool) -> anyhow::Result<()> {
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
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!("(nats-server and PostgreSQL on this machine, file storage, fsync on)");

    let raw = raw_publish(&backbone.nats.js, events, 1024).await?;
    println!(
        "{:<58} {:>10.0} msg/s   (ceiling)",
        "raw JetStream publish, 1 KiB, 512 in flight", raw
    );

    let (events_rate, published) = event_publish(&backbone, events).await?;
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
    println!(
        "{:<58} {:>10.0} ev/s    ({:.0}% of ceiling; to sequence {applied})",
        "projection apply (pages.discovered → pages rows, batch 500)",
        rate,
        100.0 * rate / raw
    );
    if !edge_only {
        sitemap_parse();
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
        sitemap_import(&backbone).await?;
        let scraped = scrape(&backbone, 2000).await?;
        let stages = stages(&backbone, scraped).await?;
        pipeline(&backbone, &scraped, 1000, raw).await?;
        reprocessing(&backbone, scraped.client).await?;
        stages.cancel();
    }
    edge::run(&backbone, raw, 50_000).await?;
    rebuild_all(&backbone, raw).await?;
    projectors.cancel();
    drop(backbone);
    drop(pg);
    drop(nats);
    let _ = std::fs::remove_dir_all(&root);
    Ok(())
}

async fn raw_publish(js: &jetstream::Context, count: usize, size: usize) -> anyhow::Result<f64> {
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

fn sitemap_parse() {
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
        println!(
            "{:<58} {:>10.0} URLs/s   ({mb:.0} MB/s of XML; {} KB gzipped)",
            format!("sitemap parse, {label}, 50,000-URL urlset, one core"),
            urls as f64 / secs,
            gz.len() / 1024
        );
    }
}

async fn sitemap_import(backbone: &Backbone) -> anyhow::Result<()> {
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
    println!(
        "{:<58} {:>10.0} URLs/s   ({} pages.discovered published and projected)",
        "sitemap import, 10,000 URLs, to readable pages rows",
        summary.created as f64 / secs,
        summary.created
    );
    Ok(())
}

/// CPU seconds (user + system) this process has used.
fn cpu_seconds() -> f64 {
    use nix::sys::resource::{UsageWho, getrusage};
    getrusage(UsageWho::RUSAGE_SELF).map_or(0.0, |u| {
        let t = |tv: nix::sys::time::TimeVal| tv.tv_sec() as f64 + tv.tv_usec() as f64 / 1e6;
        t(u.user_time()) + t(u.system_time())
    })
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

async fn scrape(backbone: &Backbone, pages: usize) -> anyhow::Result<Scraped> {
    use crate::pipeline::runtime::{ConsumerRuntime, RuntimeOptions};
    let port = bench_origin().await?;
    let client = scrape_client(backbone).await?;
    let scraper = bench_scraper(backbone).await?;
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
    let cpu = cpu_seconds();
    let started = Instant::now();
    Publisher::new(backbone.nats.js.clone())
        .publish_all(&events)
        .await?;
    // A consumer of this client's discoveries only: the earlier sections published others.
    backbone
        .nats
        .js
        .get_stream("PAGES")
        .await?
        .create_consumer(async_nats::jetstream::consumer::pull::Config {
            durable_name: Some("bench-scraper".into()),
            filter_subject: format!("pages.discovered.{client}.>"),
            ack_policy: async_nats::jetstream::consumer::AckPolicy::Explicit,
            ack_wait: std::time::Duration::from_secs(60),
            max_deliver: 5,
            ..Default::default()
        })
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
    let run = {
        let stop = stop.clone();
        tokio::spawn(async move { runtime.run(stop).await })
    };
    drained(backbone, "bench-scraper").await?;
    let secs = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu;
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
    println!(
        "{:<58} {:>10.0} pages/s  ({:.2} ms CPU per page in this process, origin included; {} events)",
        format!("scrape {pages} new 20 KB pages, {SCRAPE_HOSTS} hosts, 64 in flight"),
        pages as f64 / secs,
        cpu * 1000.0 / pages as f64,
        produced
    );
    Ok(Scraped {
        client,
        port,
        pages,
    })
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
        ..SettingsPatch::default()
    };
    let (client, _) = tenants
        .register(NewClient {
            name: "Scrape bench".into(),
            domain: "bench.test".into(),
            settings,
            ..NewClient::default()
        })
        .await?;
    Ok(client)
}

/// A scraper whose `h<N>.bench.test` host names all lead to the local origin.
async fn bench_scraper(
    backbone: &Backbone,
) -> anyhow::Result<std::sync::Arc<crate::pipeline::scraper::Scraper>> {
    use crate::pipeline::scraper::{Scraper, ScraperConfig};
    let http_config = crate::infra::http::HttpConfig {
        resolve: (0..SCRAPE_HOSTS)
            .map(|h| {
                (
                    format!("h{h}.bench.test"),
                    std::net::Ipv4Addr::LOCALHOST.into(),
                )
            })
            .collect(),
        ..Default::default()
    };
    let blobs = crate::infra::blobs::BlobStore::open(&backbone.nats.js, 16 << 20).await?;
    let config = ScraperConfig {
        max_body_bytes: 1 << 20,
        per_host_concurrency: 2,
        robots_agent: "ai-cache".into(),
        robots_ttl: std::time::Duration::from_secs(3600),
    };
    let http = crate::infra::http::HttpClient::new(&http_config)?;
    Ok(std::sync::Arc::new(
        Scraper::new(&backbone.nats.js, http, backbone.db.clone(), blobs, &config)
            .await
            .map_err(|e| anyhow::anyhow!(e))?,
    ))
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
) -> anyhow::Result<tokio_util::sync::CancellationToken> {
    let before = updated_count(backbone).await?;
    let cpu = cpu_seconds();
    let started = Instant::now();
    let stop = start_stages(backbone).await?;
    for consumer in ["markdown", "renderer", "uploader"] {
        drained(backbone, consumer).await?;
    }
    let secs = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu;
    let updated = updated_count(backbone).await? - before;
    anyhow::ensure!(
        updated == scraped.pages as u64,
        "{updated} pages.updated for {} pages: not a valid run",
        scraped.pages
    );
    println!(
        "{:<58} {:>10.0} pages/s  ({:.2} ms CPU per page; {updated} pages.updated)",
        format!(
            "markdown → render → upload, {} pages, 32 in flight each",
            scraped.pages
        ),
        scraped.pages as f64 / secs,
        cpu * 1000.0 / scraped.pages as f64
    );
    Ok(stop)
}

/// Discovery to `pages.updated` with every stage running.
async fn pipeline(
    backbone: &Backbone,
    scraped: &Scraped,
    pages: usize,
    ceiling: f64,
) -> anyhow::Result<()> {
    use crate::pipeline::runtime::{ConsumerRuntime, RuntimeOptions};
    let before = updated_count(backbone).await?;
    let scraper = bench_scraper(backbone).await?;
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
    let deadline = Instant::now() + std::time::Duration::from_secs(600);
    while updated_count(backbone).await? - before < pages as u64 {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the pipeline did not finish in 10 minutes"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let secs = started.elapsed().as_secs_f64();
    stop.cancel();
    let rate = pages as f64 / secs;
    println!(
        "{:<58} {:>10.0} pages/s  ({:.3}% of the raw publish ceiling; ~7 events per page)",
        format!("whole pipeline, discovery → pages.updated, {pages} new pages"),
        rate,
        100.0 * rate / ceiling
    );
    Ok(())
}

/// Reprocessing a client's pages from `markdown` with every stage running: forced (every page
/// made and uploaded again), then unforced (nothing changed: every page skipped).
async fn reprocessing(backbone: &Backbone, client: ClientId) -> anyhow::Result<()> {
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
        let cpu = cpu_seconds();
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
        let cpu = cpu_seconds() - cpu;
        let pages = run.finished.max(1) as f64;
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
async fn rebuild_all(backbone: &Backbone, ceiling: f64) -> anyhow::Result<()> {
    let mut events = 0u64;
    for stream in ["CLIENTS", "PAGES", "VISITS"] {
        let mut s = backbone.nats.js.get_stream(stream).await?;
        events += s.info().await?.state.messages;
    }
    let started = Instant::now();
    for projection in crate::projections::all() {
        runtime::rebuild(&backbone.db, &backbone.nats.js, projection, &|_, _| {}).await?;
    }
    let rate = events as f64 / started.elapsed().as_secs_f64();
    println!(
        "{:<58} {:>10.0} ev/s    ({:.0}% of ceiling; {events} events, every type)",
        "projection rebuild, all projections, in place",
        rate,
        100.0 * rate / ceiling
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
    println!(
        "{:<58} {:>10.0} ev/s    ({:.0}% of ceiling; rows equal to the live ones)",
        "projection rebuild, verified (scratch schema + compare)",
        rate,
        100.0 * rate / ceiling
    );
    Ok(())
}
