//! `ai-cache bench`: measures the backbone on a throwaway local stack and prints each figure
//! beside the machine's ceiling (raw JetStream publish rate), so the ratio can be read.
//!
//! Not a test: it asserts nothing, it reports.

use std::time::Instant;

use anyhow::Context;
use async_nats::jetstream::{self, stream};
use bytes::Bytes;

use crate::app::Backbone;
use crate::domain::ids::{ClientId, PageId};
use crate::domain::url::NormalizedUrl;
use crate::events::Event;
use crate::events::pages::{Discovered, DiscoverySource, PageEvent};
use crate::infra::localstack::{self, Durability, LocalNats, LocalPostgres};
use crate::infra::publish::{Outgoing, Publisher};
use crate::projections::pages::PagesProjection;
use crate::projections::runtime;

/// Publishes in flight at once for the publish measurements.
const IN_FLIGHT: usize = 512;

pub async fn run(events: usize) -> anyhow::Result<()> {
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
        let page = PageId::derive(client, &url);
        let event = Event::new(
            client,
            Some(page),
            PageEvent::Discovered(Discovered {
                url,
                source: DiscoverySource::Sitemap,
                sitemap_url: Some("https://bench.example/sitemap.xml".into()),
                lastmod: Some("2026-11-01".into()),
                changefreq: Some("weekly".into()),
                priority: Some("0.5".into()),
            }),
        );
        batch.push(Outgoing::keyed(event, format!("bench:{page}")));
        if batch.len() == IN_FLIGHT {
            publisher.publish_all(&batch).await?;
            batch.clear();
        }
    }
    publisher.publish_all(&batch).await?;
    Ok((count as f64 / started.elapsed().as_secs_f64(), count))
}
