//! Each site's `/llms.txt` and `/llms-full.txt`: made from its live pages by the uploader role,
//! stored in its edge store, served to everyone at the edge.

use std::time::Duration;

use reqwest::Method;
use reqwest::header::USER_AGENT;

use crate::clients::create_client;
use crate::harness::{Options, PIPELINE_ROLES, TestApp, eventually};
use crate::page_origin::PageOrigin;

const FIREFOX: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:140.0) Gecko/20100101 Firefox/140.0";

async fn get(app: &TestApp, path: &str) -> (u16, String, String) {
    let base = app.api.as_deref().expect("api");
    let res = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
        .request(Method::GET, format!("{base}{path}"))
        .header(USER_AGENT, FIREFOX)
        .send()
        .await
        .expect("request");
    let status = res.status().as_u16();
    let content_type = res
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    (status, content_type, res.text().await.expect("body"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sites_llms_txt_lists_its_live_pages_and_everyone_can_read_it() {
    let app = TestApp::with_options(&PIPELINE_ROLES, Options::default()).await;
    let origin = PageOrigin::start().await;
    let client = create_client(&app, "Site", "site.test").await;
    app.crawl_rate(&client, 600).await;
    let urls = origin.articles(&["/".to_owned(), "/blog/a".to_owned(), "/blog/b".to_owned()]);
    app.add_urls(&client, &urls).await;
    let authority = origin.url("").trim_start_matches("http://").to_owned();
    let index = format!("/edge/{authority}/llms.txt");

    let listed = |n: usize| {
        let (app, index) = (&app, &index);
        async move {
            let (status, _, body) = get(app, index).await;
            status == 200 && body.matches("\n- [").count() == n
        }
    };
    eventually(
        Duration::from_secs(60),
        "llms.txt lists the 3 pages",
        || listed(3),
    )
    .await;
    let (_, content_type, body) = get(&app, &index).await;
    assert_eq!(content_type, "text/markdown; charset=utf-8");
    assert!(body.starts_with("# Site\n\n> "), "{body}");
    assert!(body.contains("\n## Pages\n\n- ["), "{body}");
    assert!(body.contains("\n## Blog\n\n"), "{body}");
    assert!(
        body.contains(&format!("]({}.md)", origin.url("/blog/a"))),
        "links name the Markdown variants: {body}"
    );
    let (status, _, full) = get(&app, &format!("/edge/{authority}/llms-full.txt")).await;
    assert_eq!(status, 200);
    assert!(
        full.contains(&format!("Source: {}", origin.url("/blog/b")))
            && full.contains("The text of /blog/b"),
        "{full}"
    );

    // A page that goes live later is listed by the next making (not only at start-up).
    let more = origin.articles(&["/blog/c".to_owned()]);
    app.add_urls(&client, &more).await;
    eventually(
        Duration::from_secs(60),
        "llms.txt lists the new page",
        || listed(4),
    )
    .await;

    // Reading them is a visit like any other.
    eventually(Duration::from_secs(30), "the reads are visits", || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM visits WHERE url LIKE '%/llms%.txt' AND format_served = 'markdown'",
        )
        .fetch_one(app.db())
        .await
        .unwrap_or(0)
            >= 2
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_may_let_the_edge_serve_its_robots_txt_with_its_content_signal() {
    let app = TestApp::with_options(&PIPELINE_ROLES, Options::default()).await;
    let origin = PageOrigin::start().await;
    origin.robots("User-agent: GPTBot\nDisallow: /private/\n\nUser-agent: *\nAllow: /\n");
    let client = create_client(&app, "Site", "site.test").await;
    app.crawl_rate(&client, 600).await;
    let policy = serde_json::json!({"settings": {"edge": {
        "robots_txt": true, "content_signal": "ai-train=no, search=yes"}}});
    let (status, body) = app.put_client(&client, &policy).await;
    assert_eq!(status, 200, "{body}");
    app.add_urls(&client, &origin.articles(&["/".to_owned()]))
        .await;
    let authority = origin.url("").trim_start_matches("http://").to_owned();
    let robots = format!("/edge/{authority}/robots.txt");

    eventually(
        Duration::from_secs(60),
        "the edge serves robots.txt with the signal",
        || async {
            let (status, _, body) = get(&app, &robots).await;
            status == 200 && body.contains("Content-Signal: ai-train=no, search=yes")
        },
    )
    .await;
    let (_, content_type, body) = get(&app, &robots).await;
    assert_eq!(content_type, "text/plain; charset=utf-8");
    assert!(
        body.contains(
            "User-agent: GPTBot\nDisallow: /private/\n\nUser-agent: *\n\
             Content-Signal: ai-train=no, search=yes\nAllow: /\n"
        ),
        "the site's rules, with the signal in its * group: {body}"
    );

    // Turned off: robots.txt is the origin's again, though the file is still stored.
    let (status, body) = app
        .put_client(&client, &serde_json::json!({"settings": {"edge": {}}}))
        .await;
    assert_eq!(status, 200, "{body}");
    eventually(
        Duration::from_secs(30),
        "robots.txt goes to the origin",
        || async { get(&app, &robots).await.0 == 302 },
    )
    .await;
}
