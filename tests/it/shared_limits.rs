//! Limits that hold for the whole deployment, not per process: three scraper processes keep
//! one host's crawl rate between them (the turns are claimed in a shared KV bucket).

use std::time::Duration;

use ai_cache::app::Role;

use crate::clients::create_client;
use crate::harness::{TestApp, eventually};
use crate::liveness::RoleProcess;
use crate::page_origin::PageOrigin;

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
