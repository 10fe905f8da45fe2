//! Dead letters through the API: a stage gives up on a page, the operator sees it (list,
//! show, `/health`, `/metrics`), fixes the cause and re-drives it: the page completes.

use std::time::Duration;

use ai_cache::app::Role;
use ai_cache::domain::kv_key::{kv_key, markdown_key};
use ai_cache::domain::url::NormalizedUrl;
use reqwest::Method;
use serde_json::json;

use crate::clients::send;
use crate::harness::{Options, TestApp, eventually, stream_count};

/// `ai-cache events tail` running as the real binary.
struct Tail(std::process::Child);

impl Tail {
    /// Stops it and returns what it printed.
    fn finish(mut self) -> String {
        let _ = self.0.kill();
        let out = self.0.wait_with_output().expect("tail output");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

fn tail_updates(app: &TestApp, client: &str) -> Tail {
    use std::io::BufRead;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_ai-cache"))
        .args([
            "events",
            "tail",
            "--type",
            "pages.updated",
            "--client",
            client,
        ])
        .env("DATABASE_URL", &app.db_url)
        .env("NATS_URL", app.nats.url())
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("ai-cache runs");
    // It says so on stderr once it is subscribed.
    let stderr = child.stderr.take().expect("stderr");
    let mut first = String::new();
    std::io::BufReader::new(stderr)
        .read_line(&mut first)
        .expect("read");
    assert!(first.contains("following events"), "{first}");
    Tail(child)
}

async fn dead_letters(app: &TestApp) -> serde_json::Value {
    let (status, body) = send(app.master(Method::GET, "/api/v1/dead-letters")).await;
    assert_eq!(status, 200, "{body}");
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_re_driven_after_the_fix_completes_the_page() {
    // A mistyped token: Cloudflare answers 403, which retrying cannot fix.
    let (cf, app, origin, client) = crate::cloudflare::cloudflare_site(
        "the-right-token",
        "a-mistyped-token",
        Options {
            health: ai_cache::config::HealthThresholds {
                max_dead_letters: 0,
                ..Default::default()
            },
            ..Options::default()
        },
    )
    .await;
    // The client's edge policy could not be written to its namespace either: that dead letter
    // is the settings consumer's; discard it, the upload's is what this test follows.
    eventually(
        Duration::from_secs(30),
        "the policy write is dead-lettered",
        || async {
            dead_letters(&app).await["items"]
                .as_array()
                .is_some_and(|items| items.len() == 1)
        },
    )
    .await;
    let settings = dead_letters(&app).await["items"][0].clone();
    assert_eq!(settings["consumer"], "uploader-settings", "{settings}");
    assert_eq!(settings["event_type"], "clients.registered", "{settings}");
    let seq = settings["seq"].as_u64().expect("seq");
    let (status, body) =
        send(app.master(Method::DELETE, &format!("/api/v1/dead-letters/{seq}"))).await;
    assert_eq!(status, 200, "{body}");
    let urls = origin.articles(&["/doc".to_owned()]);
    app.add_urls(&client, &urls).await;

    eventually(
        Duration::from_secs(30),
        "the upload is dead-lettered",
        || async {
            dead_letters(&app).await["items"]
                .as_array()
                .is_some_and(|items| items.len() == 1)
        },
    )
    .await;
    let listed = dead_letters(&app).await;
    let dl = &listed["items"][0];
    assert_eq!(dl["consumer"], "uploader", "{listed}");
    assert_eq!(dl["kind"], "permanent", "{listed}");
    assert_eq!(dl["event_type"], "pages.html_rendered", "{listed}");
    assert_eq!(dl["client_id"], client.as_str(), "{listed}");
    assert_eq!(listed["total"], 1);
    assert!(
        dl["error"].as_str().unwrap_or_default().contains("10000")
            || dl["error"]
                .as_str()
                .unwrap_or_default()
                .to_lowercase()
                .contains("auth"),
        "the error says why: {dl}"
    );
    let seq = dl["seq"].as_u64().expect("seq");

    // Show: the original event and where it came from.
    let (status, shown) =
        send(app.master(Method::GET, &format!("/api/v1/dead-letters/{seq}"))).await;
    assert_eq!(status, 200, "{shown}");
    assert_eq!(shown["event"]["type"], "pages.html_rendered");
    assert_eq!(shown["original_stream"], "PAGES");
    assert!(
        shown["original_subject"]
            .as_str()
            .is_some_and(|s| s.starts_with("pages.html_rendered.")),
        "{shown}"
    );
    // Filters.
    let (_, none) = send(app.master(Method::GET, "/api/v1/dead-letters?consumer=markdown")).await;
    assert_eq!(none["items"], json!([]), "{none}");

    // The count is in /health (degraded past the threshold) and /metrics.
    let (status, health) = app.health().await;
    assert_eq!(status, 503, "{health}");
    assert_eq!(health["checks"]["dead_letters"]["count"], 1, "{health}");
    assert!(
        health["reasons"].as_array().is_some_and(|r| r
            .iter()
            .any(|r| r.as_str().unwrap_or_default().contains("dead letters"))),
        "{health}"
    );
    let metrics = app
        .request(Method::GET, "/metrics")
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.lines().any(|l| l == "aicache_dead_letters 1"),
        "{metrics}"
    );
    // The stage, upload and backlog figures are there too.
    for wanted in [
        "aicache_stage_messages_total{stage=\"uploader\",outcome=\"dead_letter\"}",
        "aicache_stage_messages_total{stage=\"markdown\",outcome=\"ok\"}",
        "aicache_stage_duration_seconds_bucket{stage=\"renderer\"",
        "aicache_upload_errors_total{store=\"cloudflare\"}",
        "aicache_consumer_pending{consumer=\"uploader\"}",
        "aicache_consumer_ack_pending{consumer=\"markdown\"}",
        "aicache_projection_lag{projection=\"pages\"}",
    ] {
        assert!(
            metrics.lines().any(|l| l.starts_with(wanted)),
            "/metrics lacks {wanted}: {metrics}"
        );
    }

    // Client keys may not touch dead letters.
    let (_, key) = crate::clients::create_key(&app, &client, &["read", "write"]).await;
    let forbidden = app
        .request(Method::GET, "/api/v1/dead-letters")
        .header("X-API-Key", key)
        .send()
        .await
        .expect("send");
    assert_eq!(forbidden.status(), 403);

    // Re-driven before the fix: it fails again and comes back as a new dead letter.
    let (status, body) =
        send(app.master(Method::POST, &format!("/api/v1/dead-letters/{seq}/redrive"))).await;
    assert_eq!(status, 200, "{body}");
    eventually(Duration::from_secs(20), "a new dead letter", || async {
        let items = dead_letters(&app).await["items"].clone();
        items.as_array().is_some_and(|i| i.len() == 1) && items[0]["seq"].as_u64() != Some(seq)
    })
    .await;
    let again = dead_letters(&app).await;
    assert_eq!(
        again["items"][0]["original_subject"], shown["original_subject"],
        "the new dead letter still points at the original event: {again}"
    );

    // The command line sees the same dead letter.
    let (ok, out, err) = tokio::task::block_in_place(|| {
        crate::cli::ai_cache(&app, &["dead-letters", "list", "--consumer", "uploader"])
    });
    assert!(ok, "{err}");
    assert!(
        out.contains("pages.html_rendered") && out.contains("1 dead letters"),
        "{out}"
    );
    // Someone follows the client's served-content changes live.
    let tail = tokio::task::block_in_place(|| tail_updates(&app, &client));

    // The operator fixes the token and re-drives everything.
    let (status, body) = app
        .put_client(&client, &json!({"cloudflare_api_token": "the-right-token"}))
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = send(app.master(Method::POST, "/api/v1/dead-letters/redrive")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["redriven"].as_array().map(Vec::len), Some(1), "{body}");

    let key = kv_key(&NormalizedUrl::parse(&urls[0]).expect("url"));
    eventually(
        Duration::from_secs(30),
        "the page reaches Cloudflare",
        || async { cf.get("ns1", &markdown_key(&key)).is_some() },
    )
    .await;
    eventually(Duration::from_secs(15), "and is announced once", || async {
        stream_count(app.js(), "PAGES", Some("pages.updated.>")).await == 1
    })
    .await;
    assert_eq!(dead_letters(&app).await["total"], 0);
    let followed = tokio::task::block_in_place(|| tail.finish());
    assert!(
        followed
            .lines()
            .any(|l| l.contains("pages.updated") && l.contains(&client)),
        "events tail showed the update: {followed}"
    );
    let (status, health) = app.health().await;
    assert_eq!(health["checks"]["dead_letters"]["count"], 0, "{health}");
    assert_eq!(status, 200, "{health}");

    // Unknown ids are 404; discarding removes.
    let (status, body) =
        send(app.master(Method::POST, "/api/v1/dead-letters/999999/redrive")).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["code"], "not_found");
    let (status, _) =
        send(app.master(Method::DELETE, &format!("/api/v1/dead-letters/{seq}"))).await;
    assert_eq!(status, 404, "already gone");
}

#[tokio::test]
async fn health_turns_degraded_when_a_backlog_passes_its_threshold() {
    let app = TestApp::with_options(
        &[Role::Api],
        Options {
            health: ai_cache::config::HealthThresholds {
                max_dead_letters: 100,
                max_projection_lag: 0,
                max_consumer_pending: 0,
                ..Default::default()
            },
            ..Options::default()
        },
    )
    .await;
    let (status, health) = app.health().await;
    assert_eq!(status, 200, "nothing waits yet: {health}");
    assert_eq!(health["reasons"], json!([]));
    // One page discovered, and neither projectors nor the scraper running.
    let client: ai_cache::domain::ids::ClientId =
        uuid::Uuid::new_v4().to_string().parse().expect("id");
    let event = crate::projections::discovered(client, "https://site.test/waiting");
    ai_cache::infra::publish::Publisher::new(app.js().clone())
        .publish(&ai_cache::infra::publish::Outgoing::unique(event))
        .await
        .expect("publish");
    let (status, health) = app.health().await;
    assert_eq!(status, 503, "{health}");
    let reasons = health["reasons"].to_string();
    assert!(
        reasons.contains("projection pages is 1 events behind"),
        "{reasons}"
    );
    assert!(
        reasons.contains("consumer PAGES/scraper-discovered has 1 messages waiting"),
        "{reasons}"
    );
}
