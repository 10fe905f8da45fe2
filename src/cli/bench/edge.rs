//! The edge's figures: user-agent classification rate, visits ingested through the HTTP API
//! into the projection, and the built-in edge route's requests per second and latency
//! percentiles (beside a bare axum route answered by the same load generator: the ceiling).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{Value, json};

use crate::app::Backbone;
use crate::domain::bots::{Catalogue, Classifier};
use crate::projections::sql;

use super::figures::Figures;

const MASTER: &str = "bench-master-key-0123456789abcdef";
const GPTBOT: &str = "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; GPTBot/1.2; +https://openai.com/gptbot)";

/// Real user agents: every crawler instance and the top browsers, from `catalogue/sources`.
fn real_user_agents() -> anyhow::Result<Vec<String>> {
    let read = |p: &str| {
        std::fs::read_to_string(p)
            .with_context(|| format!("{p} (run the bench from the repository)"))
    };
    let crawlers: Vec<Value> = serde_json::from_str(&read(
        "catalogue/sources/crawler-user-agents/crawler-user-agents.json",
    )?)?;
    let mut agents: Vec<String> = crawlers
        .iter()
        .flat_map(|c| c["instances"].as_array().cloned().unwrap_or_default())
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect();
    let browsers: Vec<String> = serde_json::from_str(&read(
        "catalogue/sources/top-user-agents-browsers/index.json",
    )?)?;
    agents.extend(browsers);
    Ok(agents)
}

fn classification(agents: &[String], figures: &mut Figures) -> anyhow::Result<()> {
    let started = Instant::now();
    let classifier = Classifier::new(serde_json::from_str::<Catalogue>(
        crate::domain::bots::CATALOGUE_JSON,
    )?)?;
    let build = started.elapsed();
    // Warm the lazy DFA, then measure on one core.
    for ua in agents {
        classifier.classify(ua);
    }
    let started = Instant::now();
    let mut n = 0usize;
    while started.elapsed() < Duration::from_secs(2) {
        for ua in agents {
            std::hint::black_box(classifier.classify(ua));
        }
        n += agents.len();
    }
    let rate = n as f64 / started.elapsed().as_secs_f64();
    figures.set("classification_ua_per_s", rate);
    println!(
        "{:<58} {:>10.0} UA/s    ({} entries, {} real user agents, one core; catalogue compiled in {} ms)",
        "user-agent classification",
        rate,
        classifier.len(),
        agents.len(),
        build.as_millis()
    );
    Ok(())
}

async fn api(backbone: &Backbone) -> anyhow::Result<(String, tokio_util::sync::CancellationToken)> {
    let config = crate::config::ApiConfig {
        master_api_key: Some(MASTER.into()),
        fernet_keys: Some(crate::infra::secrets::Secrets::generate_key()),
        fernet_key: None,
        rate_limit_per_minute: 10_000_000,
        max_body_bytes: 1 << 20,
        write_timeout_secs: 10,
        header_timeout_secs: 10,
        body_timeout_secs: 30,
        max_connections: 4096,
        visits_ip_secret: Some("bench".into()),
        bot_ranges_dir: None,
        // No resolver is reachable from a benchmark machine: the figure is the edge's own.
        rdns_resolver: crate::infra::rdns::RdnsSource::Off,
        event_streams_per_key: 8,
        event_stream_heartbeat_secs: 15,
        health: crate::config::HealthThresholds::default(),
    };
    let fetch: crate::config::FetchConfig = defaults()?;
    let pipeline: crate::config::PipelineConfig = defaults()?;
    let state = crate::app::api_state(backbone, &config, &fetch, &pipeline).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let stop = tokio_util::sync::CancellationToken::new();
    let shutdown = stop.clone();
    tokio::spawn(async move { crate::api::serve(listener, state, shutdown).await });
    Ok((base, stop))
}

/// A configuration section at its defaults (and whatever the environment sets).
fn defaults<T: clap::Args>() -> anyhow::Result<T> {
    #[derive(clap::Parser)]
    struct Only<T: clap::Args> {
        #[command(flatten)]
        inner: T,
    }
    Ok(<Only<T> as clap::Parser>::try_parse_from(["ai-cache"])?.inner)
}

async fn post(
    http: &reqwest::Client,
    url: String,
    key: &str,
    body: Value,
) -> anyhow::Result<Value> {
    let res = http
        .post(url)
        .header("X-API-Key", key)
        .json(&body)
        .send()
        .await?;
    let status = res.status();
    let body: Value = res.json().await?;
    anyhow::ensure!(status.is_success(), "{status}: {body}");
    Ok(body)
}

async fn ingestion(
    backbone: &Backbone,
    base: &str,
    agents: &[String],
    visits: usize,
    figures: &mut Figures,
) -> anyhow::Result<String> {
    let http = reqwest::Client::new();
    let (client, key) = ingesting_client(&http, base, "edge-bench.example", "ingest").await?;
    let batches = visit_batches(agents, visits);
    // The raw publish ceiling is measured just before the visits and just after them: the
    // machine's speed drifts over a run (by a third within minutes on a shared VM), and a
    // ceiling taken minutes earlier, at the start, would read that drift as the figure's.
    let raw_before = super::raw_publish(&backbone.nats.js, visits, 1024).await?;
    let before: i64 = sqlx::query_scalar(sql::visits::COUNT_VISITS)
        .fetch_one(&backbone.db)
        .await?;
    let started = Instant::now();
    post_all(&http, &format!("{base}/api/v1/visits/batch"), &key, batches).await?;
    let accepted = started.elapsed();
    // Every visit accepted is in the stream now: wait for the projection's checkpoint to
    // reach the stream's end (a primary-key read; counting the table while it grows would
    // load the database the figure measures), then check the rows once.
    let end = backbone
        .nats
        .js
        .get_stream("VISITS")
        .await?
        .info()
        .await?
        .state
        .last_sequence;
    anyhow::ensure!(
        crate::projections::runtime::wait_for(
            &backbone.db,
            "visits",
            end,
            Duration::from_secs(300)
        )
        .await?,
        "visits not projected"
    );
    let projected = started.elapsed();
    let n: i64 = sqlx::query_scalar(sql::visits::COUNT_VISITS)
        .fetch_one(&backbone.db)
        .await?;
    anyhow::ensure!(
        n == before + visits as i64,
        "{n} visits stored, not {}",
        before + visits as i64
    );
    let rate = visits as f64 / projected.as_secs_f64();
    figures.set("visits_per_s", rate);
    figures.set(
        "visits_accepted_per_s",
        visits as f64 / accepted.as_secs_f64(),
    );
    // Its ceiling again, right after: the two measurements' mean is the visits' ceiling.
    let raw_after = super::raw_publish(&backbone.nats.js, visits, 1024).await?;
    let ceiling = (raw_before + raw_after) / 2.0;
    figures.set("visits_publish_ceiling_msgs_per_s", ceiling);
    println!(
        "{:<58} {:>10.0} visits/s ({:.0}% of ceiling; accepted by the API at {:.0}/s; raw publish {:.0} msg/s before, {:.0} after)",
        "visits ingested: HTTP batches of 1,000 → stream → projection",
        rate,
        100.0 * rate / ceiling,
        visits as f64 / accepted.as_secs_f64(),
        raw_before,
        raw_after
    );
    Ok(client)
}

/// A new client of `domain` and a key of it with `scope`.
async fn ingesting_client(
    http: &reqwest::Client,
    base: &str,
    domain: &str,
    scope: &str,
) -> anyhow::Result<(String, String)> {
    let client = post(
        http,
        format!("{base}/api/v1/clients"),
        MASTER,
        json!({"name": domain, "domain": domain}),
    )
    .await?["id"]
        .as_str()
        .context("client id")?
        .to_owned();
    let key = client_key(http, base, &client, scope).await?;
    Ok((client, key))
}

/// A new key of `client` with `scope`.
async fn client_key(
    http: &reqwest::Client,
    base: &str,
    client: &str,
    scope: &str,
) -> anyhow::Result<String> {
    Ok(post(
        http,
        format!("{base}/api/v1/clients/{client}/keys"),
        MASTER,
        json!({ "scopes": [scope] }),
    )
    .await?["key"]
        .as_str()
        .context("key")?
        .to_owned())
}

/// `visits` visits by `agents` in turn, as batch bodies of 1,000.
/// The bodies, serialized before the clock starts: the load generator shares the machine
/// with what it measures, so it does as little as it can while measuring.
fn visit_batches(agents: &[String], visits: usize) -> Vec<bytes::Bytes> {
    let now = chrono::Utc::now();
    (0..visits)
        .map(|i| {
            json!({"url": format!("https://edge-bench.example/p/{}", i % 500),
                   "user_agent": agents[i % agents.len()],
                   "ip": format!("198.51.{}.{}", (i / 256) % 256, i % 256),
                   "referrer": null,
                   "timestamp": (now - chrono::Duration::milliseconds(i as i64)).to_rfc3339(),
                   "format_served": "origin", "status": 200})
        })
        .collect::<Vec<_>>()
        .chunks(1000)
        .map(|c| bytes::Bytes::from(json!({ "visits": c }).to_string()))
        .collect()
}

/// POSTs every JSON body to `url` with `key`, four at a time; an answer is read as JSON
/// only when it is not a success.
async fn post_all(
    http: &reqwest::Client,
    url: &str,
    key: &str,
    bodies: Vec<bytes::Bytes>,
) -> anyhow::Result<()> {
    let queue = Arc::new(tokio::sync::Mutex::new(bodies));
    let mut posters = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let (queue, http, key, url) = (
            Arc::clone(&queue),
            http.clone(),
            key.to_owned(),
            url.to_owned(),
        );
        posters.spawn(async move {
            loop {
                let Some(batch) = queue.lock().await.pop() else {
                    return Ok::<_, anyhow::Error>(());
                };
                let res = http
                    .post(&url)
                    .header("X-API-Key", &key)
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(batch)
                    .send()
                    .await?;
                let status = res.status();
                let answer = res.bytes().await?;
                anyhow::ensure!(
                    status.is_success(),
                    "{status}: {}",
                    String::from_utf8_lossy(&answer)
                );
            }
        });
    }
    while let Some(done) = posters.join_next().await {
        done??;
    }
    Ok(())
}

/// A load: GETs of `urls` in turn with `headers`, `total` of them from `concurrency` tasks.
#[derive(Clone, Copy)]
struct Load<'a> {
    urls: &'a [String],
    headers: &'a [(&'static str, &'a str)],
    total: usize,
    concurrency: usize,
}

/// What a load measured: requests per second and the latencies, sorted.
struct Measured {
    rate: f64,
    latencies: Vec<Duration>,
    elapsed: Duration,
}

/// How many turns a ceiling and its figure take: short loads in alternation, so a slow
/// moment of the machine (another process, a flush) falls on both rather than on one.
const TURNS: usize = 4;

/// Runs `ceiling` and `figure` in [`TURNS`] alternating turns (each a share of its total)
/// and sums each one's turns.
async fn side_by_side(ceiling: Load<'_>, figure: Load<'_>) -> anyhow::Result<(Measured, Measured)> {
    let mut sums: [Option<Measured>; 2] = [None, None];
    for _ in 0..TURNS {
        for (sum, whole) in sums.iter_mut().zip([&ceiling, &figure]) {
            let turn = load(Load {
                total: whole.total / TURNS,
                ..*whole
            })
            .await?;
            *sum = Some(match sum.take() {
                None => turn,
                Some(mut before) => {
                    before.latencies.extend(turn.latencies);
                    before.elapsed += turn.elapsed;
                    before
                }
            });
        }
    }
    let [ceiling, figure] = sums.map(|m| {
        let mut m = m.expect("TURNS > 0");
        m.latencies.sort_unstable();
        m.rate = m.latencies.len() as f64 / m.elapsed.as_secs_f64();
        m
    });
    Ok((ceiling, figure))
}

impl Measured {
    fn percentile(&self, p: f64) -> f64 {
        percentile(&self.latencies, p)
    }
}

/// Runs a load (every answer must be a success).
async fn load(load: Load<'_>) -> anyhow::Result<Measured> {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(load.concurrency)
        .build()?;
    let mut headers = reqwest::header::HeaderMap::new();
    for (name, value) in load.headers {
        headers.insert(*name, value.parse()?);
    }
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..load.concurrency {
        let (http, urls, headers) = (http.clone(), load.urls.to_vec(), headers.clone());
        let n = load.total / load.concurrency;
        tasks.spawn(async move {
            let mut latencies = Vec::with_capacity(n);
            for i in 0..n {
                let t = Instant::now();
                let url = &urls[(task + i) % urls.len()];
                let res = http.get(url).headers(headers.clone()).send().await?;
                anyhow::ensure!(res.status().is_success(), "{}", res.status());
                res.bytes().await?;
                latencies.push(t.elapsed());
            }
            Ok(latencies)
        });
    }
    let mut all = Vec::with_capacity(load.total);
    while let Some(done) = tasks.join_next().await {
        all.extend(done??);
    }
    let elapsed = started.elapsed();
    all.sort_unstable();
    Ok(Measured {
        rate: all.len() as f64 / elapsed.as_secs_f64(),
        latencies: all,
        elapsed,
    })
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1000.0
}

/// A bare axum route answering `hello` (the ceiling of the HTTP figures); its URL.
async fn bare_route() -> anyhow::Result<String> {
    let hello = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/", hello.local_addr()?);
    tokio::spawn(async move {
        axum::serve(
            hello,
            axum::Router::new().route("/", axum::routing::get(|| async { "hello" })),
        )
        .await
    });
    Ok(url)
}

/// Requests of the HTTP figures, and connections making them.
const REQUESTS: usize = 40_000;
const CONNECTIONS: usize = 32;

async fn edge_route(
    backbone: &Backbone,
    base: &str,
    client: &str,
    figures: &mut Figures,
) -> anyhow::Result<()> {
    let blobs = crate::infra::blobs::BlobStore::open(&backbone.nats.js, 1 << 24).await?;
    let store = crate::infra::edge_store::EdgeStore::open(&backbone.nats.js).await?;
    let html = format!(
        "<!doctype html><title>Post</title>{}",
        "<p>A paragraph of the post, as the renderer writes it.</p>".repeat(80)
    );
    let url = crate::domain::url::NormalizedUrl::parse("https://edge-bench.example/post")?;
    store
        .put(&crate::infra::edge_store::Manifest {
            key: crate::domain::kv_key::kv_key(&url),
            client_id: client.parse()?,
            page_id: uuid::Uuid::new_v4(),
            source_url: url.to_string(),
            markdown: blobs.put(b"# Post\n").await?,
            html: blobs.put(html.as_bytes()).await?,
            page_version: 1,
            updated_at: chrono::Utc::now(),
            markdown_tokens: None,
            content_type: None,
            metadata: None,
        })
        .await?;
    // The ceiling: a bare axum route, same machine, same load generator.
    let gptbot = [("user-agent", GPTBOT)];
    let (bare, edge) = side_by_side(
        Load {
            urls: &[bare_route().await?],
            headers: &gptbot,
            total: REQUESTS,
            concurrency: CONNECTIONS,
        },
        Load {
            urls: &[format!("{base}/edge/edge-bench.example/post")],
            headers: &gptbot,
            total: REQUESTS,
            concurrency: CONNECTIONS,
        },
    )
    .await?;
    figures.set("bare_axum_req_per_s", bare.rate);
    figures.set("edge_req_per_s", edge.rate);
    figures.set("edge_p50_ms", edge.percentile(0.50));
    figures.set("edge_p99_ms", edge.percentile(0.99));
    println!(
        "{:<58} {:>10.0} req/s   (ceiling: bare axum route, same load generator)",
        "bare axum GET, 32 connections", bare.rate
    );
    println!(
        "{:<58} {:>10.0} req/s   ({:.0}% of ceiling; p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms; {} KB HTML, visit recorded each)",
        "built-in edge route, GPTBot, cached page, 32 connections",
        edge.rate,
        100.0 * edge.rate / bare.rate,
        edge.percentile(0.50),
        edge.percentile(0.90),
        edge.percentile(0.99),
        edge.percentile(1.0),
        html.len() / 1024
    );
    Ok(())
}

/// `GET /api/v1/pages/{id}` with a client's `read` key, beside a bare axum route answering
/// the same page from the same query (the API's whole layer is the difference).
async fn page_query(backbone: &Backbone, base: &str, figures: &mut Figures) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    let (client, _) = ingesting_client(&http, base, "query-bench.example", "ingest").await?;
    let urls: Vec<String> = (0..64)
        .map(|i| format!("https://query-bench.example/p/{i}"))
        .collect();
    let added = post(
        &http,
        format!("{base}/api/v1/clients/{client}/pages"),
        MASTER,
        json!({ "urls": urls }),
    )
    .await?;
    anyhow::ensure!(
        added["summary"]["created"] == 64,
        "pages not added: {added}"
    );
    let key = client_key(&http, base, &client, "read").await?;
    let started = Instant::now();
    let pages = loop {
        let (pages, _) = crate::projections::pages::list_for_client(
            &backbone.db,
            client.parse()?,
            &crate::projections::pages::PageFilter::default(),
            (64, 0),
            60,
        )
        .await?;
        if pages.len() == 64 {
            break pages;
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(60),
            "{} pages projected of 64",
            pages.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let ids: Vec<uuid::Uuid> = pages.iter().map(|p| p.id).collect();
    let api_urls: Vec<String> = ids
        .iter()
        .map(|id| format!("{base}/api/v1/pages/{id}"))
        .collect();
    let bare = point_read_route(backbone.db.clone()).await?;
    let bare_urls: Vec<String> = ids.iter().map(|id| format!("{bare}{id}")).collect();
    let (read, api) = side_by_side(
        Load {
            urls: &bare_urls,
            headers: &[],
            total: REQUESTS,
            concurrency: CONNECTIONS,
        },
        Load {
            urls: &api_urls,
            headers: &[("x-api-key", key.as_str())],
            total: REQUESTS,
            concurrency: CONNECTIONS,
        },
    )
    .await?;
    figures.set("bare_point_read_req_per_s", read.rate);
    figures.set("bare_point_read_p99_ms", read.percentile(0.99));
    figures.set("page_query_req_per_s", api.rate);
    figures.set("page_query_p50_ms", api.percentile(0.50));
    figures.set("page_query_p99_ms", api.percentile(0.99));
    println!(
        "{:<58} {:>10.0} req/s   (ceiling; p50 {:.2} ms, p99 {:.2} ms)",
        "bare axum + sqlx point read of a page, 32 connections",
        read.rate,
        read.percentile(0.50),
        read.percentile(0.99)
    );
    println!(
        "{:<58} {:>10.0} req/s   ({:.0}% of ceiling; p50 {:.2} ms, p99 {:.2} ms)",
        "GET /api/v1/pages/{id}, client read key, 32 connections",
        api.rate,
        100.0 * api.rate / read.rate,
        api.percentile(0.50),
        api.percentile(0.99)
    );
    Ok(())
}

/// A bare axum route answering `GET /{id}` with the page's row as JSON, by the API's own
/// query, on the same pool; its base URL.
async fn point_read_route(db: sqlx::PgPool) -> anyhow::Result<String> {
    use axum::extract::{Path, State};
    async fn read(
        State(db): State<sqlx::PgPool>,
        Path(id): Path<uuid::Uuid>,
    ) -> Result<axum::Json<crate::projections::pages::PageRow>, axum::http::StatusCode> {
        crate::projections::pages::find(&db, id, 60)
            .await
            .ok()
            .flatten()
            .map(axum::Json)
            .ok_or(axum::http::StatusCode::NOT_FOUND)
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/", listener.local_addr()?);
    let app = axum::Router::new()
        .route("/{id}", axum::routing::get(read))
        .with_state(db);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(url)
}

/// The edge section of `ai-cache bench`: the projectors must be running.
pub async fn run(backbone: &Backbone, visits: usize, figures: &mut Figures) -> anyhow::Result<()> {
    let agents = real_user_agents()?;
    classification(&agents, figures)?;
    let (base, stop) = api(backbone).await?;
    let client = ingestion(backbone, &base, &agents, visits, figures).await?;
    edge_route(backbone, &base, &client, figures).await?;
    page_query(backbone, &base, figures).await?;
    stop.cancel();
    Ok(())
}
