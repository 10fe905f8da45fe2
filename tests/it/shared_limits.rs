//! Limits that hold for the whole deployment, not per process: three scraper processes keep
//! one host's crawl rate between them (the turns are claimed in a shared KV bucket).

use std::time::Duration;

use ai_cache::app::Role;

use crate::clients::create_client;
use crate::harness::{MASTER_KEY, TestApp, eventually};
use crate::liveness::RoleProcess;
use crate::page_origin::{Page, PageOrigin};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_scraper_processes_keep_one_host_to_its_crawl_rate() {
    let app = TestApp::with_roles(&[Role::Api, Role::Projections]).await;
    let origin = PageOrigin::start().await;
    let client = create_client(&app, "Site", "site.test").await;
    // One request a second to the host, whatever the number of scrapers.
    app.crawl_rate(&client, 60).await;
    let _scrapers: Vec<RoleProcess> = (0..3)
        .map(|_| RoleProcess::start(&app, "scraper"))
        .collect();
    let paths: Vec<String> = (0..20).map(|i| format!("/s/{i}")).collect();
    let urls = origin.articles(&paths);
    app.add_urls(&client, &urls).await;
    let fetches = || {
        let mut at: Vec<_> = paths
            .iter()
            .flat_map(|p| origin.hits(p))
            .map(|(t, _)| t)
            .collect();
        at.sort();
        at
    };
    eventually(Duration::from_secs(60), "twelve pages are fetched", || {
        let n = fetches().len();
        async move { n >= 12 }
    })
    .await;
    let at = fetches();
    let gaps: Vec<Duration> = at.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(
        gaps.iter().all(|g| *g >= Duration::from_millis(900)),
        "the origin saw requests closer than its crawl rate allows: {gaps:?}"
    );
}

/// An API process of `app` on a free port; returns it with its base URL.
async fn api_process(app: &TestApp, per_minute: &str) -> (RoleProcess, String) {
    let port = ai_cache::infra::localstack::free_port().expect("port");
    let bind = format!("127.0.0.1:{port}");
    let process = RoleProcess::start_with(
        app,
        "api",
        &[
            ("BIND_ADDR", &bind),
            ("MASTER_API_KEY", MASTER_KEY),
            ("RATE_LIMIT_PER_MINUTE", per_minute),
        ],
    );
    (process, format!("http://{bind}"))
}

/// The number of API processes a process counts (its `aicache_api_processes` gauge).
async fn processes_counted(http: &reqwest::Client, base: &str) -> Option<u32> {
    let text = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("aicache_api_processes "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as u32)
}

/// Statuses of `n` requests to each of `bases`, sent alternately.
async fn statuses(
    http: &reqwest::Client,
    bases: &[String],
    n: usize,
    key: Option<&str>,
) -> Vec<Vec<u16>> {
    let mut out = vec![Vec::new(); bases.len()];
    for _ in 0..n {
        for (i, base) in bases.iter().enumerate() {
            let mut req = http.get(format!("{base}/api/v1/clients"));
            if let Some(key) = key {
                req = req.header("X-API-Key", key);
            }
            let res = req.send().await.expect("the API answers");
            if res.status() == 429 {
                assert!(res.headers().contains_key("retry-after"), "429 says when");
            }
            out[i].push(res.status().as_u16());
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_keys_limit_holds_across_two_api_processes_and_each_takes_its_share_without_nats() {
    let mut app = TestApp::with_roles(&[Role::Projections]).await;
    let (_a, a) = api_process(&app, "20").await;
    let (_b, b) = api_process(&app, "20").await;
    let bases = [a, b];
    let http = reqwest::Client::new();
    for base in &bases {
        eventually(Duration::from_secs(40), "each process counts two", || {
            let (http, base) = (http.clone(), base.clone());
            async move { processes_counted(&http, &base).await == Some(2) }
        })
        .await;
    }

    // 20 a minute for the master key, whichever process is asked: one refill (3 s) at most
    // while the requests are sent.
    let answered = statuses(&http, &bases, 30, Some(MASTER_KEY)).await;
    let ok: usize = answered.iter().flatten().filter(|s| **s == 200).count();
    assert!(
        (20..=21).contains(&ok),
        "20 requests a minute across both processes, {ok} were served: {answered:?}"
    );
    assert!(
        answered
            .iter()
            .all(|p| p.contains(&200) && p.contains(&429))
    );

    // Without NATS each process counts alone, with half the limit: together still 20.
    // (Requests without a key spend their IP address's budget, untouched so far.)
    tokio::task::spawn_blocking(move || {
        app.nats.stop();
        app
    })
    .await
    .expect("join");
    let answered = statuses(&http, &bases, 14, None).await;
    for process in &answered {
        let served = process.iter().filter(|s| **s == 401).count();
        assert!(
            (10..=11).contains(&served),
            "each process takes 10 of the 20 a minute: {answered:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_scraper_processes_keep_to_one_hosts_limit_of_fetches_at_once() {
    let app = TestApp::with_roles(&[Role::Api, Role::Projections]).await;
    let origin = PageOrigin::start().await;
    let client = create_client(&app, "Site", "site.test").await;
    // Ten requests a second are allowed, but each takes a second to answer: only the limit of
    // fetches at once (3 per host, for the whole deployment) keeps them from piling up.
    app.crawl_rate(&client, 600).await;
    let _scrapers: Vec<RoleProcess> = (0..3)
        .map(|_| RoleProcess::start_with(&app, "scraper", &[("SCRAPER_PER_HOST_CONCURRENCY", "3")]))
        .collect();
    let paths: Vec<String> = (0..24).map(|i| format!("/slow/{i}")).collect();
    for p in &paths {
        origin.set(p, Page::Slow(Duration::from_secs(1)));
    }
    let urls: Vec<String> = paths.iter().map(|p| origin.url(p)).collect();
    app.add_urls(&client, &urls).await;
    eventually(Duration::from_secs(60), "every page is fetched", || {
        let all = paths.iter().all(|p| !origin.hits(p).is_empty());
        async move { all }
    })
    .await;
    let most = origin.most_at_once();
    assert!(
        (2..=3).contains(&most),
        "at most 3 fetches at once from the host across three processes, saw {most}"
    );
}
