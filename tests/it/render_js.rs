//! JavaScript rendering in a real chromium (Debian's, installed by
//! `scripts/ensure-services --for-tests`): a single-page application's text reaches the
//! served Markdown with `render_js` on and not without; a page that never settles is cut at
//! its budget; the page's scripts reach nothing the guarded client would refuse; a browser
//! killed mid-render is replaced and the page still arrives.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::clients::{create_client, send};
use crate::harness::{Options, PIPELINE_ROLES, TestApp, eventually, temp_dir};
use crate::page_origin::{Page, PageOrigin};
use ai_cache::app::Role;

/// The pipeline with the renderer-js role.
fn roles() -> Vec<Role> {
    let mut roles = PIPELINE_ROLES.to_vec();
    roles.push(Role::RendererJs);
    roles
}

/// A client of `domain` with `render_js` set, fetching fast.
async fn client(app: &TestApp, name: &str, domain: &str, render_js: &str) -> String {
    let client = create_client(app, name, domain).await;
    let (status, body) = send(
        app.master(Method::PUT, &format!("/api/v1/clients/{client}"))
            .json(&json!({"settings": {"crawl_rate_per_minute": 600, "render_js": render_js}})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["settings"]["render_js"], render_js);
    client
}

/// An application shell: a heading, and an empty root its script fills.
fn shell(script: &str) -> Page {
    Page::html(&format!(
        "<html><head><title>App</title></head><body><h1>Acme reader</h1><div id=\"root\"></div><script src=\"{script}\"></script></body></html>"
    ))
}

fn script(body: &str) -> Page {
    Page::Html {
        body: body.as_bytes().to_vec(),
        content_type: "application/javascript".into(),
        etag: None,
    }
}

fn json_page(value: &Value) -> Page {
    Page::Html {
        body: value.to_string().into_bytes(),
        content_type: "application/json".into(),
        etag: None,
    }
}

/// The script every test application runs: after `delay_ms`, the article from `data` goes
/// into the root.
fn article_script(data: &str, delay_ms: u64) -> Page {
    script(&format!(
        "setTimeout(function () {{ fetch('{data}').then(function (r) {{ return r.json(); }}).then(function (a) {{ document.getElementById('root').innerHTML = '<article><h1>' + a.title + '</h1><p>' + a.body + '</p></article>'; }}); }}, {delay_ms});"
    ))
}

const ARTICLE_BODY: &str = "Rendered paragraphs arrive only after the script has asked the server for them, which is why a crawler that does not run scripts sees an empty page.";

fn article_data() -> Page {
    json_page(&json!({"title": "Written by script", "body": ARTICLE_BODY}))
}

/// Adds `url` to `client` and waits until the page has Markdown; returns the page id.
async fn live(app: &TestApp, client: &str, url: &str) -> String {
    let (status, body) = app.post_pages(client, &json!({"urls": [url]})).await;
    assert!(status == 200 || status == 201 || status == 202, "{body}");
    let (_, found) = send(app.master(
        Method::GET,
        &format!(
            "/api/v1/clients/{client}/pages/by-url?url={}",
            urlencode(url)
        ),
    ))
    .await;
    let page = found["id"].as_str().expect("page id").to_owned();
    eventually(Duration::from_secs(60), "the page has Markdown", || async {
        let (_, p) = app.get_page(&page).await;
        p["has_markdown"] == true
    })
    .await;
    page
}

fn urlencode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

async fn markdown(app: &TestApp, page: &str) -> String {
    let response = app
        .master(
            Method::GET,
            &format!("/api/v1/pages/{page}/content?format=markdown"),
        )
        .send()
        .await
        .expect("content");
    assert_eq!(response.status(), 200);
    response.text().await.expect("text")
}

/// The page's events, oldest first, as the API lists them.
async fn events(app: &TestApp, page: &str) -> Vec<Value> {
    let (status, body) = app.get_page_events(page).await;
    assert_eq!(status, 200, "{body}");
    body["items"].as_array().cloned().expect("items")
}

fn of_type<'a>(events: &'a [Value], kind: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["type"] == kind).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_page_application_is_rendered_in_auto_and_read_as_fetched_in_never() {
    let app = TestApp::with_options(&roles(), Options::default()).await;
    let origin = PageOrigin::start().await;
    origin.set("/app", shell("/app.js"));
    origin.set("/app.js", article_script("/api/article", 200));
    origin.set("/api/article", article_data());
    let auto = client(&app, "Rendered", "site.test", "auto").await;
    let never = client(&app, "As fetched", "other.test", "never").await;

    let rendered = live(&app, &auto, &origin.url("/app")).await;
    let md = markdown(&app, &rendered).await;
    assert!(md.contains(ARTICLE_BODY), "{md}");
    assert!(md.contains("Written by script"), "{md}");
    let history = events(&app, &rendered).await;
    let requested = of_type(&history, "pages.render_requested");
    assert_eq!(requested.len(), 1, "{history:#?}");
    assert_eq!(
        requested[0]["event"]["data"]["reason"]["kind"], "empty_app_root",
        "{history:#?}"
    );
    let done = of_type(&history, "pages.rendered_js");
    assert_eq!(done.len(), 1, "{history:#?}");
    assert_eq!(done[0]["event"]["data"]["settled"], true);
    assert_eq!(done[0]["event"]["data"]["refused"], 0, "{history:#?}");
    // The script and its data went through the guarded client; the page was fetched once.
    assert_eq!(origin.hits("/app").len(), 1);
    assert_eq!(origin.hits("/api/article").len(), 1);

    let fetched = live(
        &app,
        &never,
        &format!("http://other.test:{}/app", origin.port),
    )
    .await;
    let md = markdown(&app, &fetched).await;
    assert!(
        md.contains("Acme reader") && !md.contains(ARTICLE_BODY),
        "{md}"
    );
    let history = events(&app, &fetched).await;
    assert!(
        of_type(&history, "pages.render_requested").is_empty(),
        "{history:#?}"
    );

    // Rendered again with the same main content: unchanged, no new version.
    let (status, _) = app.refresh_page(&rendered).await;
    assert_eq!(status, 202);
    eventually(
        Duration::from_secs(60),
        "the page is rendered again",
        || async {
            let history = events(&app, &rendered).await;
            of_type(&history, "pages.rendered_js").len() == 2
                && of_type(&history, "pages.unchanged").len() == 1
        },
    )
    .await;
    let history = events(&app, &rendered).await;
    assert_eq!(
        of_type(&history, "pages.content_changed").len(),
        1,
        "{history:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_that_never_settles_is_taken_at_its_time_budget() {
    let options = Options {
        render_timeout_secs: 3,
        ..Options::default()
    };
    let app = TestApp::with_options(&roles(), options).await;
    let origin = PageOrigin::start().await;
    origin.set("/busy", shell("/busy.js"));
    // The text is there at once, but the page polls its server forever.
    origin.set(
        "/busy.js",
        script(&format!(
            "document.getElementById('root').innerHTML = '<article><p>{ARTICLE_BODY}</p></article>'; setInterval(function () {{ fetch('/api/poll', {{cache: 'no-store'}}); }}, 100);"
        )),
    );
    origin.set("/api/poll", json_page(&json!({"more": false})));
    let site = client(&app, "Busy", "site.test", "always").await;

    let page = live(&app, &site, &origin.url("/busy")).await;
    assert!(markdown(&app, &page).await.contains(ARTICLE_BODY));
    let history = events(&app, &page).await;
    let done = of_type(&history, "pages.rendered_js");
    assert_eq!(done.len(), 1, "{history:#?}");
    assert_eq!(done[0]["event"]["data"]["settled"], false, "{history:#?}");
    let took = done[0]["event"]["data"]["duration_ms"]
        .as_u64()
        .expect("duration");
    assert!((3_000..13_000).contains(&took), "{took} ms");
    assert_eq!(
        of_type(&history, "pages.render_requested")[0]["event"]["data"]["reason"]["kind"],
        "always"
    );
    assert!(origin.hits("/api/poll").len() > 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pages_scripts_reach_no_private_address() {
    // Private networks refused, as in production; the test site resolves here through
    // FETCH_RESOLVE, as a staging site would.
    let options = Options {
        allow_private_networks: false,
        ..Options::default()
    };
    let app = TestApp::with_options(&roles(), options).await;
    let origin = PageOrigin::start().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let reached = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&reached);
    tokio::spawn(async move {
        while listener.accept().await.is_ok() {
            count.fetch_add(1, Ordering::SeqCst);
        }
    });
    origin.set(
        "/probe",
        Page::html(&format!(
            "<html><body><div id=\"root\"></div><img src=\"http://127.0.0.1:{port}/pixel.png\"><script src=\"/probe.js\"></script></body></html>"
        )),
    );
    // Every way a script could reach the listener, then the text that says it ran.
    origin.set(
        "/probe.js",
        script(&format!(
            "var tries = [fetch('http://127.0.0.1:{port}/steal'), fetch('http://localhost:{port}/steal'), fetch('http://[::1]:{port}/steal'), new Promise(function (done) {{ var x = new XMLHttpRequest(); x.onloadend = done; x.open('GET', 'http://127.0.0.1:{port}/xhr'); x.send(); }}), new Promise(function (done) {{ var w = new WebSocket('ws://127.0.0.1:{port}/ws'); w.onerror = done; w.onclose = done; }})]; Promise.allSettled(tries).then(function () {{ document.getElementById('root').innerHTML = '<article><p>{ARTICLE_BODY} Probe finished.</p></article>'; }});"
        )),
    );
    let site = client(&app, "Probe", "site.test", "always").await;

    let page = live(&app, &site, &origin.url("/probe")).await;
    let md = markdown(&app, &page).await;
    assert!(
        md.contains("Probe finished"),
        "the script ran to its end: {md}"
    );
    assert_eq!(
        reached.load(Ordering::SeqCst),
        0,
        "a request reached the private listener"
    );
    let history = events(&app, &page).await;
    let done = of_type(&history, "pages.rendered_js");
    assert_eq!(done.len(), 1, "{history:#?}");
    // The image, three fetches and the XHR were refused by the renderer (the WebSocket by
    // the browser's dead proxy).
    assert!(
        done[0]["event"]["data"]["refused"].as_u64().unwrap_or(0) >= 5,
        "{history:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_killed_mid_render_is_replaced_and_the_page_arrives() {
    let profiles = temp_dir("aicache-test-chromium-");
    let options = Options {
        render_profile_dir: Some(profiles.clone()),
        ..Options::default()
    };
    let app = TestApp::with_options(&roles(), options).await;
    let origin = PageOrigin::start().await;
    let asked = Arc::new(tokio::sync::Notify::new());
    let release = Arc::new(tokio::sync::Notify::new());
    origin.set("/held", shell("/held.js"));
    origin.set("/held.js", article_script("/api/held", 0));
    origin.set(
        "/api/held",
        Page::Held {
            asked: Arc::clone(&asked),
            release: Arc::clone(&release),
            page: Box::new(article_data()),
        },
    );
    let site = client(&app, "Held", "site.test", "always").await;
    let (status, body) = app
        .post_pages(&site, &json!({"urls": [origin.url("/held")]}))
        .await;
    assert!(status < 300, "{body}");

    // Mid-render: the page's script waits for its data. The browser is killed there.
    tokio::time::timeout(Duration::from_secs(60), asked.notified())
        .await
        .expect("the page's script asked for its data");
    let killed = kill_browsers_under(&profiles);
    assert!(
        killed > 0,
        "no browser process found under {}",
        profiles.display()
    );
    origin.set("/api/held", article_data());
    release.notify_waiters();

    let (_, found) = send(app.master(
        Method::GET,
        &format!(
            "/api/v1/clients/{site}/pages/by-url?url={}",
            urlencode(&origin.url("/held"))
        ),
    ))
    .await;
    let page = found["id"].as_str().expect("page id").to_owned();
    eventually(Duration::from_secs(90), "the page has Markdown", || async {
        let (_, p) = app.get_page(&page).await;
        p["has_markdown"] == true
    })
    .await;
    assert!(markdown(&app, &page).await.contains(ARTICLE_BODY));
    let history = events(&app, &page).await;
    let failed = of_type(&history, "pages.scrape_failed");
    assert!(
        failed.iter().any(|f| f["event"]["data"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("rendering failed"))),
        "{history:#?}"
    );
    assert_eq!(
        of_type(&history, "pages.rendered_js").len(),
        1,
        "{history:#?}"
    );
    assert_eq!(
        of_type(&history, "pages.content_changed").len(),
        1,
        "{history:#?}"
    );
}

/// Kills (SIGKILL) every process whose command line names `dir`: this test's browser.
fn kill_browsers_under(dir: &std::path::Path) -> usize {
    let needle = dir.to_string_lossy().into_owned();
    let mut killed = 0;
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        if String::from_utf8_lossy(&cmdline).contains(&needle) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
            killed += 1;
        }
    }
    killed
}
