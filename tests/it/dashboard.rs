//! The dashboard in a real browser (Debian's chromium, driven over the DevTools protocol):
//! signed in with the master key it shows every client, then a client's overview, AI
//! activity (charts drawn, numbers equal to the API's, filters changing them), what bots
//! read, what assistants send back, the pages and one page; a client's read key sees its own
//! client only; no JavaScript error or blocked resource along the way; every input labelled.
//! A screenshot of each view is saved under `target/dashboard-screenshots/` (the README's
//! come from there).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ai_cache::app::Role;
use chromiumoxide::Page;
use chromiumoxide::browser::{Browser, BrowserConfig};
use chromiumoxide::cdp::browser_protocol::log::{EnableParams as LogEnable, EventEntryAdded};
use chromiumoxide::cdp::browser_protocol::page::CaptureScreenshotFormat;
use chromiumoxide::cdp::js_protocol::runtime::{EventConsoleApiCalled, EventExceptionThrown};
use chromiumoxide::handler::viewport::Viewport;
use chromiumoxide::page::ScreenshotParams;
use chrono::{Duration as Days, Utc};
use futures::StreamExt;
use reqwest::Method;
use serde_json::{Value, json};

use crate::clients::{create_client, create_key, send};
use crate::harness::{MASTER_KEY, Options, TestApp, eventually, temp_dir};

const GPTBOT: &str = "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; GPTBot/1.2; +https://openai.com/gptbot)";
const CLAUDEBOT: &str = "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; ClaudeBot/1.0; +claudebot@anthropic.com)";
const PERPLEXITYBOT: &str = "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; PerplexityBot/1.0; +https://perplexity.ai/perplexitybot)";
const FIREFOX: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:140.0) Gecko/20100101 Firefox/140.0";

/// A browser and one tab, with what went wrong in it.
struct Session {
    _browser: Browser,
    page: Page,
    problems: Arc<Mutex<Vec<String>>>,
    shots: PathBuf,
}

impl Session {
    async fn start() -> Self {
        let mut config = BrowserConfig::builder()
            .user_data_dir(temp_dir("aicache-dashboard-test-"))
            .viewport(Viewport {
                width: 1280,
                height: 900,
                ..Viewport::default()
            })
            .window_size(1280, 900);
        if let Some(path) = ai_cache::infra::chromium::default_executable() {
            config = config.chrome_executable(path);
        }
        if nix::unistd::geteuid().is_root() {
            config = config.no_sandbox();
        }
        let (browser, mut handler) = Browser::launch(config.build().expect("config"))
            .await
            .expect("chromium starts (scripts/ensure-services --for-tests installs it)");
        tokio::spawn(async move { while handler.next().await.is_some() {} });
        let page = browser.new_page("about:blank").await.expect("tab");
        page.execute(LogEnable::default()).await.expect("log");
        let problems = Arc::new(Mutex::new(Vec::new()));
        let mut exceptions = page
            .event_listener::<EventExceptionThrown>()
            .await
            .expect("listen");
        let mut console = page
            .event_listener::<EventConsoleApiCalled>()
            .await
            .expect("listen");
        let mut log = page
            .event_listener::<EventEntryAdded>()
            .await
            .expect("listen");
        let sink = Arc::clone(&problems);
        tokio::spawn(async move {
            loop {
                let problem = tokio::select! {
                    Some(e) = exceptions.next() => format!("exception: {:?}", e.exception_details),
                    Some(e) = console.next() => {
                        let kind = format!("{:?}", e.r#type).to_ascii_lowercase();
                        if !(kind.contains("error") || kind.contains("warn") || kind.contains("assert")) {
                            continue;
                        }
                        format!("console {kind}: {:?}", e.args)
                    }
                    Some(e) = log.next() => {
                        let entry = &e.entry;
                        let level = format!("{:?}", entry.level).to_ascii_lowercase();
                        let source = format!("{:?}", entry.source).to_ascii_lowercase();
                        // A refused API call shows as a network error: the 401 and 403 the
                        // test asks for on purpose are checked on the page itself.
                        let refused = ["401", "403"].iter().any(|s| entry.text.contains(s));
                        if level != "error" || (source == "network" && refused) {
                            continue;
                        }
                        format!("log {source}: {}", entry.text)
                    }
                    else => return,
                };
                sink.lock().expect("lock").push(problem);
            }
        });
        let shots = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("target")
            .join("dashboard-screenshots");
        std::fs::create_dir_all(&shots).expect("screenshot dir");
        Self {
            _browser: browser,
            page,
            problems,
            shots,
        }
    }

    async fn eval(&self, js: &str) -> Value {
        self.page
            .evaluate(js)
            .await
            .unwrap_or_else(|e| panic!("{js}: {e}"))
            .into_value()
            .unwrap_or(Value::Null)
    }

    /// Does `action` (JavaScript) and waits until the view `ready` is drawn: the mark is
    /// cleared first, so an earlier drawing of the same view does not count.
    async fn then_ready(&self, action: &str, ready: &str) {
        self.eval("document.getElementById('main').dataset.ready = 'stale'")
            .await;
        self.eval(action).await;
        self.ready(ready).await;
    }

    async fn ready(&self, ready: &str) {
        let probe = "document.getElementById('main')?.dataset.ready ?? ''";
        eventually(
            Duration::from_secs(30),
            &format!("the {ready} view"),
            || async {
                // While a page loads, its scripts' context is not there yet: not ready.
                let Ok(now) = self.page.evaluate(probe).await else {
                    return false;
                };
                let now = now.into_value::<Value>().unwrap_or(Value::Null);
                assert!(
                    ready == "error" || now != json!("error"),
                    "the view failed: {}",
                    self.eval("document.getElementById('main').innerText").await
                );
                now == json!(ready)
            },
        )
        .await;
        let leaked = self
            .eval("document.body.innerText.match(/null|undefined|NaN|\\[object Object\\]/)?.[0] ?? ''")
            .await;
        assert_eq!(
            leaked,
            json!(""),
            "a value leaked into the {ready} view as text"
        );
    }

    /// The raw numbers (`data-value`) of the cells `selector` finds, whole ones only (counts;
    /// shares are skipped).
    async fn values(&self, selector: &str) -> Vec<i64> {
        let js = format!(
            "[...document.querySelectorAll({selector:?})].map(e => Number(e.dataset.value)).filter(Number.isInteger)"
        );
        serde_json::from_value(self.eval(&js).await).expect("numbers")
    }

    async fn text(&self, selector: &str) -> String {
        self.eval(&format!(
            "document.querySelector({selector:?})?.innerText ?? ''"
        ))
        .await
        .as_str()
        .unwrap_or_default()
        .to_owned()
    }

    async fn screenshot(&self, name: &str) {
        let png = self
            .page
            .screenshot(
                ScreenshotParams::builder()
                    .format(CaptureScreenshotFormat::Png)
                    .full_page(true)
                    .build(),
            )
            .await
            .expect("screenshot");
        std::fs::write(self.shots.join(format!("{name}.png")), png).expect("save");
    }

    /// Types into a field with the keyboard.
    /// Types `text` into the `field`, clicks the `button` (both CSS selectors) and waits for
    /// the `ready` view.
    async fn submit(&self, field: &str, text: &str, button: &str, ready: &str) {
        let input = self.page.find_element(field).await.expect(field);
        input.click().await.expect("focus");
        input.type_str(text).await.expect("type");
        self.then_ready(
            &format!("document.querySelector({button:?}).click()"),
            ready,
        )
        .await;
    }

    fn problems(&self) -> Vec<String> {
        self.problems.lock().expect("lock").clone()
    }
}

/// A visit `days_ago` (at an hour past that), as the ingestion API takes it.
fn visit(path: &str, ua: &str, days_ago: i64, referrer: Option<&str>) -> Value {
    let at = Utc::now() - Days::days(days_ago) - Days::minutes(5);
    json!({"url": format!("https://site.test{path}"), "user_agent": ua, "ip": "198.51.100.7",
           "referrer": referrer, "timestamp": at.to_rfc3339(), "format_served": "markdown",
           "status": 200, "bytes": 2048})
}

async fn get(app: &TestApp, path: &str) -> Value {
    let (status, body) = send(app.master(Method::GET, path)).await;
    assert_eq!(status, 200, "{path}: {body}");
    body
}

#[tokio::test]
async fn the_dashboard_shows_each_view_with_the_apis_numbers_in_a_real_browser() {
    let app = TestApp::with_options(&[Role::Api, Role::Projections], Options::default()).await;
    let site = create_client(&app, "Site", "site.test").await;
    let other = create_client(&app, "Other", "other.test").await;
    app.add_urls(
        &site,
        &["/", "/blog/a", "/blog/b", "/about", "/never-read"]
            .map(|p| format!("https://site.test{p}")),
    )
    .await;
    let mut visits = Vec::new();
    for day in 0..6 {
        visits.push(visit("/blog/a", GPTBOT, day, None));
        visits.push(visit("/", CLAUDEBOT, day, None));
    }
    for path in ["/blog/a", "/blog/b", "/about"] {
        visits.push(visit(path, PERPLEXITYBOT, 2, None));
    }
    visits.push(visit("/nope", GPTBOT, 1, None));
    visits.push(visit("/blog/a", FIREFOX, 1, Some("https://chatgpt.com/")));
    visits.push(visit(
        "/about",
        FIREFOX,
        3,
        Some("https://www.perplexity.ai/"),
    ));
    visits.push(visit("/", FIREFOX, 0, None));
    let (_, ingest) = create_key(&app, &site, &["ingest"]).await;
    let (status, body) = send(
        app.request(Method::POST, "/api/v1/visits/batch")
            .header("X-API-Key", &ingest)
            .json(&json!({ "visits": visits })),
    )
    .await;
    assert_eq!(
        (status, body["accepted"].as_u64()),
        (200, Some(19)),
        "{body}"
    );
    eventually(Duration::from_secs(30), "visits projected", || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM visits")
            .fetch_one(app.db())
            .await
            .unwrap_or(0)
            == 19
    })
    .await;
    let (_, reader) = create_key(&app, &site, &["read"]).await;
    let base = app.api.clone().expect("api");
    let stats = format!("/api/v1/clients/{site}/visits/stats");

    let s = Session::start().await;
    // `/` leads to the dashboard, which asks for a key, focused first.
    s.page.goto(format!("{base}/")).await.expect("open");
    s.ready("sign-in").await;
    assert_eq!(s.eval("location.pathname").await, "/dashboard");
    assert_eq!(s.eval("document.activeElement.id").await, "key");
    s.screenshot("sign-in").await;
    s.submit("#key", MASTER_KEY, "#sign-in button", "clients")
        .await;
    // All clients, with the API's numbers.
    // Its numbers: pages, live, failed, visits, AI visits, AI share.
    let row = |client: &str| format!("tr[data-client='{client}'] td.num");
    let api_site = get(&app, &stats).await;
    let site_row = s.values(&row(&site)).await;
    assert_eq!(site_row[0], 5, "pages");
    assert_eq!(
        site_row[3..5],
        [
            api_site["totals"]["visits"].as_i64().expect("n"),
            api_site["totals"]["ai_visits"].as_i64().expect("n")
        ]
    );
    assert_eq!(s.values(&row(&other)).await[..5], [0, 0, 0, 0, 0]);
    s.screenshot("clients").await;

    // A client's overview.
    s.then_ready(
        &format!("location.hash = '#/c/{site}/overview'"),
        "overview",
    )
    .await;
    let pages = get(
        &app,
        &format!("/api/v1/sitemap/client/{site}/pages?limit=1"),
    )
    .await;
    assert_eq!(
        s.values(".card-value").await[0],
        pages["total_pages"].as_i64().expect("n")
    );
    assert_eq!(
        s.values("tr[data-stage='discovered'] td.num").await,
        [pages["counts"]["by_stage"]["discovered"]
            .as_i64()
            .expect("n")]
    );
    let health = s.text("p.health").await;
    assert!(
        health.starts_with("Service healthy") || health.starts_with("Service degraded"),
        "{health}"
    );
    s.screenshot("overview").await;

    // AI activity: charts drawn with the API's series, the bots table equal to its groups.
    s.then_ready(
        &format!("location.hash = '#/c/{site}/activity'"),
        "activity",
    )
    .await;
    eventually(Duration::from_secs(10), "charts drawn", || async {
        s.eval("document.querySelectorAll('.chart[data-drawn]').length")
            .await
            == json!(5)
    })
    .await;
    let painted = s
        .eval(
            "(() => { const c = document.querySelector('.chart canvas');
               const chart = Chart.getChart(c);
               const px = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
               let ink = 0; for (let i = 3; i < px.length; i += 4) if (px[i]) ink++;
               return [chart.data.datasets.length, ink]; })()",
        )
        .await;
    let series = get(
        &app,
        &format!("/api/v1/clients/{site}/visits/series?split=category"),
    )
    .await;
    let lines = series["series"].as_array().expect("lines").len();
    assert_eq!(painted[0], json!(lines), "one dataset per line");
    assert!(
        painted[1].as_i64().unwrap_or(0) > 500,
        "the chart has ink: {painted}"
    );
    let training: i64 = series["series"]
        .as_array()
        .and_then(|l| l.iter().find(|l| l["key"] == "training"))
        .map(|l| l["total"].as_i64().expect("n"))
        .expect("a training line");
    let chart_training: i64 = s
        .eval(
            "(() => { const t = document.querySelector('table[data-chart^=\"Visits per day by category\"]');
               const col = [...t.querySelectorAll('thead th')].findIndex(th => th.textContent === 'training');
               return [...t.querySelectorAll('tbody tr')]
                 .reduce((sum, tr) => sum + Number(tr.children[col].dataset.value), 0); })()",
        )
        .await
        .as_i64()
        .expect("sum");
    assert_eq!(chart_training, training);
    let by_bot = get(&app, &format!("{stats}?group_by=bot&limit=50")).await;
    for group in by_bot["groups"].as_array().expect("groups") {
        let key = group["key"].as_str().expect("key");
        assert_eq!(
            s.values(&format!("tr[data-key='{key}'] td.num")).await[..2],
            [
                group["visits"].as_i64().expect("n"),
                group["ai_visits"].as_i64().expect("n")
            ],
            "{key}"
        );
    }
    assert_eq!(
        s.values(".card-value").await[0],
        by_bot["totals"]["visits"].as_i64().expect("n")
    );
    // Text contrast, WCAG's way: every element with text of its own against the first
    // background behind it with a colour, at least 4.5:1.
    let low = s
        .eval(
            "(() => {
               const rgb = (c) => c.match(/[\\d.]+/g).map(Number);
               const lum = ([r, g, b]) => [r, g, b].map((v) => v / 255)
                 .map((v) => (v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4))
                 .reduce((sum, v, i) => sum + v * [0.2126, 0.7152, 0.0722][i], 0);
               const behind = (el) => {
                 for (let e = el; e; e = e.parentElement) {
                   const c = rgb(getComputedStyle(e).backgroundColor);
                   if (c.length < 4 || c[3] > 0) return c;
                 }
                 return [255, 255, 255];
               };
               return [...document.querySelectorAll('body *')]
                 .filter((e) => e.offsetParent && [...e.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim()))
                 .map((e) => {
                   const [a, b] = [lum(rgb(getComputedStyle(e).color)), lum(behind(e))];
                   return [e.tagName + ' ' + e.textContent.trim().slice(0, 20), (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05)];
                 })
                 .filter(([, ratio]) => ratio < 4.5);
             })()",
        )
        .await;
    assert_eq!(low, json!([]), "text below 4.5:1 contrast");
    s.screenshot("activity").await;

    // A filter typed in changes the numbers to the API's for it.
    s.submit(
        "#f-bot",
        "GPTBot",
        "#filters button[type=submit]",
        "activity",
    )
    .await;
    assert!(
        s.eval("location.hash")
            .await
            .as_str()
            .unwrap_or_default()
            .contains("bot=GPTBot")
    );
    let gptbot = get(&app, &format!("{stats}?bot=GPTBot")).await;
    assert_eq!(
        s.values(".card-value").await[0],
        gptbot["totals"]["visits"].as_i64().expect("n")
    );
    assert_eq!(gptbot["totals"]["visits"], 7);

    // What they read, with the filter dropped.
    s.then_ready(&format!("location.hash = '#/c/{site}/reads'"), "reads")
        .await;
    let top = get(&app, &stats).await;
    let first = &top["top_ai_pages"][0];
    assert!(
        s.text("main section table tbody tr")
            .await
            .contains(first["url"].as_str().expect("url")),
        "{}",
        s.text("main").await
    );
    assert!(
        s.text("main")
            .await
            .contains("https://site.test/never-read")
    );
    // Pages no AI bot read: the one never visited, as the API lists them.
    let unread = get(
        &app,
        &format!("/api/v1/sitemap/client/{site}/pages?read_by_ai=false"),
    )
    .await;
    assert_eq!(unread["total_pages"], 1, "{unread}");
    assert_eq!(
        s.eval(
            "[...document.querySelectorAll('section[aria-label^=\"Never read\"] tbody tr')].map(tr => tr.innerText.split('\\t')[0])"
        )
        .await,
        json!(["https://site.test/never-read"])
    );
    // Exports: a table the API has in a larger answer is saved as shown; the others are the
    // API's CSV. What would be saved is caught as the blob the page makes of it.
    let saved = |section: &str| {
        format!(
            "(async () => {{
               const made = [];
               const original = URL.createObjectURL;
               URL.createObjectURL = (blob) => {{ made.push(blob); return original(blob); }};
               const section = document.querySelector('section[aria-label=\"{section}\"]');
               section.querySelector('button.csv').click();
               for (let i = 0; i < 100 && !made.length; i++) await new Promise(r => setTimeout(r, 50));
               URL.createObjectURL = original;
               return made.length ? await made[0].text() : '';
             }})()"
        )
    };
    let shown = s.eval(&saved("Pages AI agents read most")).await;
    let shown = shown.as_str().unwrap_or_default();
    assert!(shown.starts_with("Page,AI visits,Bots\n"), "{shown}");
    assert!(
        shown.contains(first["url"].as_str().expect("url")),
        "{shown}"
    );
    let sections = s.eval(&saved("By section")).await;
    let sections = sections.as_str().unwrap_or_default();
    assert!(
        sections.starts_with("key,page_id,visits,ai_visits,"),
        "{sections}"
    );
    assert!(sections.contains("\n/blog/*,"), "{sections}");
    s.screenshot("reads").await;

    // What assistants send back: the crawl-to-refer table.
    s.then_ready(
        &format!("location.hash = '#/c/{site}/referrals'"),
        "referrals",
    )
    .await;
    let referrals = get(&app, &format!("/api/v1/clients/{site}/visits/referrals")).await;
    for o in referrals["operators"].as_array().expect("operators") {
        let name = o["operator"].as_str().expect("name");
        assert_eq!(
            s.values(&format!("tr[data-operator='{name}'] td.num"))
                .await[..2],
            [
                o["crawls"].as_i64().expect("n"),
                o["referrals"].as_i64().expect("n")
            ],
            "{name}"
        );
    }
    assert_eq!(referrals["total_referrals"], 2);
    s.screenshot("referrals").await;

    // Pages: searched, then one page with its visits.
    s.then_ready(&format!("location.hash = '#/c/{site}/pages'"), "pages")
        .await;
    s.screenshot("pages").await;
    s.submit("#p-search", "blog", ".page-filters button", "pages")
        .await;
    assert_eq!(
        s.eval("document.querySelectorAll('main table tbody tr').length")
            .await,
        json!(2)
    );
    s.then_ready(
        "[...document.querySelectorAll('main table a')].find(a => a.innerText.endsWith('/blog/a')).click()",
        "page",
    )
    .await;
    let page_visits = get(
        &app,
        &format!(
            "/api/v1/clients/{site}/visits?page_id={}",
            s.eval("location.hash.split('/')[4].split('?')[0]")
                .await
                .as_str()
                .expect("id")
        ),
    )
    .await;
    assert_eq!(
        s.eval("document.querySelectorAll('main section:last-of-type tbody tr').length")
            .await,
        json!(page_visits["visits"].as_array().expect("visits").len())
    );
    assert!(
        s.text("ol.timeline").await.contains("pages.discovered"),
        "the page's history names its events: {}",
        s.text("ol.timeline").await
    );
    s.screenshot("page").await;

    // Every field has a label; tables have column headers.
    assert_eq!(
        s.eval(
            "[...document.querySelectorAll('input, select')]
               .filter(e => !(e.labels?.length || e.getAttribute('aria-label'))).map(e => e.id)"
        )
        .await,
        json!([])
    );

    // A client's read key: its own client only.
    s.then_ready("document.getElementById('sign-out').click()", "sign-in")
        .await;
    s.submit("#key", &reader, "#sign-in button", "overview")
        .await;
    assert!(
        s.eval("location.hash")
            .await
            .as_str()
            .unwrap_or_default()
            .contains(&site)
    );
    assert_eq!(
        s.eval("document.getElementById('client') === null").await,
        json!(true)
    );
    s.then_ready(&format!("location.hash = '#/c/{other}/overview'"), "error")
        .await;
    assert!(
        s.text("[role=alert]").await.contains("another client"),
        "{}",
        s.text("main").await
    );
    // A wrong key is refused and asked again.
    s.eval("sessionStorage.setItem('aicache.key', 'wrong')")
        .await;
    s.then_ready("location.reload()", "sign-in").await;
    let asked = s.text("#sign-in").await;
    assert!(asked.contains("not accepted"), "{asked}");

    assert_eq!(s.problems(), Vec::<String>::new(), "no errors in the page");
}
