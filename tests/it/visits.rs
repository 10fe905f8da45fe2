//! Visit ingestion and analytics: classification and verification of real user agents, the
//! IP replaced by its HMAC, retried batches counted once, nothing lost when the projection
//! lags or PostgreSQL restarts, and the stats a site owner reads.

use std::time::Duration;

use ai_cache::app::Role;
use reqwest::Method;
use serde_json::{Value, json};

use crate::clients::{create_client, create_key, send};
use crate::harness::{Options, TestApp, eventually, stream_count};

const GPTBOT: &str = "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; GPTBot/1.2; +https://openai.com/gptbot)";
const CHATGPT_USER: &str = "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko); compatible; ChatGPT-User/1.0; +https://openai.com/bot";
const CLAUDEBOT: &str = "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; ClaudeBot/1.0; +claudebot@anthropic.com)";
const GOOGLEBOT: &str = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)";
const FIREFOX: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:140.0) Gecko/20100101 Firefox/140.0";

/// Ranges published for GPTBot (by bot) and OpenAI (by operator), in both formats.
fn ranges_dir() -> std::path::PathBuf {
    let dir = tempfile::tempdir().expect("tmp").keep();
    std::fs::write(
        dir.join("gptbot.json"),
        r#"{"prefixes":[{"ipv4Prefix":"20.171.206.0/24"}]}"#,
    )
    .expect("write");
    std::fs::write(dir.join("openai.txt"), "23.98.142.176/28\n").expect("write");
    dir
}

fn visit(url: &str, ua: &str, ip: &str, at: &str) -> Value {
    json!({"url": url, "user_agent": ua, "ip": ip, "referrer": null, "timestamp": at,
           "format_served": "markdown", "status": 200})
}

async fn app_with(roles: &[Role], options: Options) -> (TestApp, String, String) {
    let app = TestApp::with_options(roles, options).await;
    let client = create_client(&app, "Site", "site.test").await;
    let (_, key) = create_key(&app, &client, &["ingest"]).await;
    (app, client, key)
}

async fn post_batch(app: &TestApp, key: &str, visits: &[Value]) -> (u16, Value) {
    send(
        app.request(Method::POST, "/api/v1/visits/batch")
            .header("X-API-Key", key)
            .json(&json!({ "visits": visits })),
    )
    .await
}

async fn visit_rows(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM visits")
        .fetch_one(app.db())
        .await
        .unwrap_or(-1)
}

async fn wait_for_rows(app: &TestApp, n: i64) {
    eventually(Duration::from_secs(30), "visits projected", || async {
        visit_rows(app).await == n
    })
    .await;
}

#[tokio::test]
async fn a_batch_is_classified_verified_hashed_and_counted_once_however_often_it_is_sent() {
    let options = Options {
        bot_ranges_dir: Some(ranges_dir()),
        ..Options::default()
    };
    let (app, client, key) = app_with(&[Role::Api, Role::Projections], options).await;
    let at = "2026-11-20T10:00:00Z";
    let batch = vec![
        visit("https://site.test/a", GPTBOT, "20.171.206.9", at),
        visit("https://site.test/a", CHATGPT_USER, "198.51.100.4", at),
        visit("https://site.test/b", CHATGPT_USER, "23.98.142.180", at),
        visit("https://site.test/b", CLAUDEBOT, "198.51.100.5", at),
        visit("https://site.test/a", GOOGLEBOT, "66.249.66.1", at),
        visit("https://site.test/a", FIREFOX, "192.0.2.33", at),
        json!({"url": "https://site.test/w", "user_agent": FIREFOX, "ip": "192.0.2.34",
               "timestamp": at, "cf_worker": "other-zone.example"}),
        // Refused: another site, a bad address, a far-future time, another client's id.
        visit("https://elsewhere.example/", GPTBOT, "20.171.206.9", at),
        visit("https://site.test/c", GPTBOT, "not-an-ip", at),
        visit(
            "https://site.test/c",
            GPTBOT,
            "20.171.206.9",
            "2999-01-01T00:00:00Z",
        ),
        json!({"url": "https://site.test/d", "timestamp": at, "client_id": uuid::Uuid::new_v4()}),
    ];
    let (status, body) = post_batch(&app, &key, &batch).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["accepted"], 7, "{body}");
    assert_eq!(body["duplicates"], 0);
    let rejected: Vec<(u64, &str)> = body["rejected"]
        .as_array()
        .expect("rejected")
        .iter()
        .map(|r| {
            (
                r["index"].as_u64().expect("index"),
                r["code"].as_str().expect("code"),
            )
        })
        .collect();
    assert_eq!(
        rejected,
        [
            (7, "off_domain"),
            (8, "invalid_ip"),
            (9, "invalid_timestamp"),
            (10, "forbidden_client")
        ]
    );
    wait_for_rows(&app, 7).await;

    // Sending the same batch again (the Worker retrying) stores nothing new.
    let (status, body) = post_batch(&app, &key, &batch).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (body["accepted"].as_u64(), body["duplicates"].as_u64()),
        (Some(0), Some(7))
    );
    // Nothing more happens: the stream kept the one event carrying the 7 visits, and the
    // projection has applied it.
    assert_eq!(stream_count(app.js(), "VISITS", None).await, 1);
    app.caught_up("visits", "VISITS").await;
    assert_eq!(visit_rows(&app).await, 7);

    type Row = (String, String, Option<String>, String, Option<String>);
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT url, visitor_type, bot_name, verification, ip_hash
           FROM visits ORDER BY url, visitor_type, bot_name",
    )
    .fetch_all(app.db())
    .await
    .expect("rows");
    let summary: Vec<(&str, &str, Option<&str>, &str)> = rows
        .iter()
        .map(|r| (r.0.as_str(), r.1.as_str(), r.2.as_deref(), r.3.as_str()))
        .collect();
    assert_eq!(
        summary,
        [
            (
                "https://site.test/a",
                "ai_bot",
                Some("ChatGPT-User"),
                "ip_mismatch"
            ),
            (
                "https://site.test/a",
                "ai_bot",
                Some("GPTBot"),
                "ip_verified"
            ),
            ("https://site.test/a", "human", None, "none"),
            (
                "https://site.test/a",
                "search_bot",
                Some("Googlebot"),
                "claimed"
            ),
            (
                "https://site.test/b",
                "ai_bot",
                Some("ChatGPT-User"),
                "ip_verified"
            ),
            (
                "https://site.test/b",
                "ai_bot",
                Some("ClaudeBot"),
                "claimed"
            ),
            ("https://site.test/w", "worker_proxy", None, "none"),
        ]
    );
    // Never the raw address: a 64-hex HMAC, the same for the same address.
    let dump: String = sqlx::query_scalar("SELECT json_agg(v)::text FROM visits v")
        .fetch_one(app.db())
        .await
        .expect("dump");
    for ip in ["20.171.206.9", "198.51.100.4", "66.249.66.1", "192.0.2.33"] {
        assert!(!dump.contains(ip), "{ip} stored raw");
    }
    assert!(
        rows.iter()
            .all(|r| r.4.as_ref().is_some_and(|h| h.len() == 64))
    );

    // The master key names the client; a key of this client cannot report for another.
    let (status, body) = app
        .post_visit(&json!({"url": "https://site.test/m", "user_agent": GPTBOT, "timestamp": at}))
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (422, Some("client_id_required")),
        "{body}"
    );
    let (status, body) = app.post_visit(&json!({"client_id": client, "url": "https://site.test/m", "user_agent": GPTBOT, "timestamp": at})).await;
    assert_eq!(
        (status, body["accepted"].as_u64()),
        (202, Some(1)),
        "{body}"
    );
    wait_for_rows(&app, 8).await;
}

#[tokio::test]
async fn ingestion_refuses_what_it_cannot_take_with_clear_errors() {
    let (app, client, key) = app_with(&[Role::Api, Role::Projections], Options::default()).await;
    let (_, read_key) = create_key(&app, &client, &["read"]).await;
    let at = "2026-11-20T10:00:00Z";
    let one = visit("https://site.test/a", GPTBOT, "20.171.206.9", at);
    let (status, body) = post_batch(&app, &read_key, std::slice::from_ref(&one)).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("forbidden")),
        "{body}"
    );
    let (status, _) = send(
        app.request(Method::POST, "/api/v1/visits/batch")
            .json(&json!({"visits": [one]})),
    )
    .await;
    assert_eq!(status, 401);
    let many: Vec<Value> = (0..1001)
        .map(|i| json!({"url": format!("https://site.test/{i}"), "timestamp": at}))
        .collect();
    let (status, body) = post_batch(&app, &key, &many).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (422, Some("validation_failed")),
        "{body}"
    );
    for bad in [
        json!({"visits": [{"timestamp": at}]}),
        json!({"visits": [{"url": "https://site.test/", "timestamp": "yesterday"}]}),
        json!({"visits": [{"url": "https://site.test/", "timestamp": at, "colour": "red"}]}),
        json!({"visits": "no"}),
    ] {
        let (status, body) = send(
            app.request(Method::POST, "/api/v1/visits/batch")
                .header("X-API-Key", &key)
                .json(&bad),
        )
        .await;
        assert!(matches!(status, 400 | 422), "{bad}: {status} {body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{body}"
        );
    }
    let (status, body) = send(
        app.request(Method::POST, "/api/v1/visits")
            .header("X-API-Key", &key)
            .json(&visit("ftp://site.test/a", GPTBOT, "20.171.206.9", at)),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (422, Some("invalid_url")),
        "{body}"
    );
}

/// Runs projection `name` until it has applied everything in its stream.
async fn catch_up(app: &TestApp, name: &str) {
    let projection = ai_cache::projections::all()
        .into_iter()
        .find(|p| p.name() == name)
        .expect("projection");
    ai_cache::projections::runtime::ProjectionRunner::new(
        projection,
        app.db().clone(),
        app.js().clone(),
    )
    .catch_up(&|_, _| {})
    .await
    .expect("catch up");
}

#[tokio::test]
async fn visits_wait_in_the_stream_while_the_projection_is_away_and_none_is_lost() {
    // No projection role runs: the API takes visits all the same.
    let app = TestApp::with_roles(&[Role::Api]).await;
    let (status, body) = app
        .post_client(&json!({"name": "Site", "domain": "site.test"}))
        .await;
    assert_eq!(
        status, 202,
        "without projections the write is accepted, not yet visible: {body}"
    );
    let client = body["id"].as_str().expect("id").to_owned();
    catch_up(&app, "clients").await;
    let (status, body) = app.post_key(&client, &json!({"scopes": ["ingest"]})).await;
    assert!(matches!(status, 201 | 202), "{body}");
    let key = body["key"].as_str().expect("key").to_owned();
    catch_up(&app, "clients").await;

    let at = "2026-11-20T10:00:00Z";
    let batch: Vec<Value> = (0..500)
        .map(|i| {
            visit(
                &format!("https://site.test/p/{i}"),
                GPTBOT,
                "20.171.206.9",
                at,
            )
        })
        .collect();
    let (status, body) = post_batch(&app, &key, &batch).await;
    assert_eq!(
        (status, body["accepted"].as_u64()),
        (200, Some(500)),
        "{body}"
    );
    assert_eq!(visit_rows(&app).await, 0, "nothing projects yet");
    // The projection comes back and finds every visit in the stream.
    catch_up(&app, "visits").await;
    assert_eq!(visit_rows(&app).await, 500);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_restart_loses_no_visit_and_counts_none_twice() {
    let options = Options {
        own_postgres: true,
        ..Options::default()
    };
    let (mut app, _client, key) = app_with(&[Role::Api, Role::Projections], options).await;
    let at = "2026-11-20T10:00:00Z";
    let batch = |from: usize| -> Vec<Value> {
        (from..from + 200)
            .map(|i| {
                visit(
                    &format!("https://site.test/p/{i}"),
                    CLAUDEBOT,
                    "198.51.100.5",
                    at,
                )
            })
            .collect()
    };
    let (status, body) = post_batch(&app, &key, &batch(0)).await;
    assert_eq!(
        (status, body["accepted"].as_u64()),
        (200, Some(200)),
        "{body}"
    );

    tokio::task::block_in_place(|| app.postgres.as_mut().expect("own postgres").stop());
    // The key cannot be checked: the reporter is told to retry, nothing is taken.
    let (status, body) = post_batch(&app, &key, &batch(200)).await;
    assert_eq!(status, 503, "{body}");
    tokio::task::block_in_place(|| app.postgres.as_mut().expect("own postgres").restart())
        .expect("restart");

    // The reporter resends, and the first batch once more for good measure.
    let (status, body) = eventually_ok_post(&app, &key, &batch(200)).await;
    assert_eq!(
        (status, body["accepted"].as_u64()),
        (200, Some(200)),
        "{body}"
    );
    let (_, body) = post_batch(&app, &key, &batch(0)).await;
    assert_eq!(body["duplicates"].as_u64(), Some(200), "{body}");
    wait_for_rows(&app, 400).await;
}

/// A report too large for one event travels in several, every visit stored once; a visit
/// repeated within the report is a duplicate, and so is the report posted again.
#[tokio::test]
async fn a_large_report_is_split_into_events_and_each_visit_is_stored_once() {
    let (app, _client, key) = app_with(&[Role::Api, Role::Projections], Options::default()).await;
    let at = "2026-11-20T10:00:00Z";
    let long_agent = format!("{CLAUDEBOT} {}", "x".repeat(900));
    let mut batch: Vec<Value> = (0..300)
        .map(|i| {
            let mut v = visit(
                &format!("https://site.test/p/{i}"),
                &long_agent,
                "198.51.100.5",
                at,
            );
            v["referrer"] = json!(format!("https://chatgpt.com/{}", "r".repeat(900)));
            v
        })
        .collect();
    batch.push(batch[10].clone());
    let (status, body) = post_batch(&app, &key, &batch).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (body["accepted"].as_u64(), body["duplicates"].as_u64()),
        (Some(300), Some(1)),
        "{body}"
    );
    let events = stream_count(app.js(), "VISITS", None).await;
    assert!(events > 1, "300 visits of ~2 KB in {events} event(s)");
    wait_for_rows(&app, 300).await;

    let (_, body) = post_batch(&app, &key, &batch).await;
    assert_eq!(
        (body["accepted"].as_u64(), body["duplicates"].as_u64()),
        (Some(0), Some(301)),
        "{body}"
    );
    assert_eq!(stream_count(app.js(), "VISITS", None).await, events);
    app.caught_up("visits", "VISITS").await;
    assert_eq!(visit_rows(&app).await, 300);
}

/// Posts until the API answers something other than 503 (the pool reconnecting).
async fn eventually_ok_post(app: &TestApp, key: &str, visits: &[Value]) -> (u16, Value) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = post_batch(app, key, visits).await;
        if status != 503 || std::time::Instant::now() > deadline {
            return (status, body);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn stats_group_visits_by_bot_operator_category_day_and_page() {
    let (app, client, key) = app_with(&[Role::Api, Role::Projections], Options::default()).await;
    // The client's pages; the edge sees them by any scheme and port.
    app.add_urls(
        &client,
        &[
            "https://site.test/top".into(),
            "https://site.test/other".into(),
        ],
    )
    .await;
    let mut batch = Vec::new();
    for (ua, n) in [
        (GPTBOT, 5),
        (CHATGPT_USER, 3),
        (CLAUDEBOT, 2),
        (GOOGLEBOT, 4),
        (FIREFOX, 6),
    ] {
        for i in 0..n {
            let day = if i % 2 == 0 {
                "2026-11-19"
            } else {
                "2026-11-20"
            };
            let page = if i < 2 { "/top" } else { "/other" };
            let origin = if i % 3 == 0 {
                "http://site.test:8080"
            } else {
                "https://site.test"
            };
            batch.push(visit(
                &format!("{origin}{page}"),
                ua,
                "198.51.100.7",
                &format!("{day}T1{i}:00:00Z"),
            ));
        }
    }
    let (status, body) = post_batch(&app, &key, &batch).await;
    assert_eq!(
        (status, body["accepted"].as_u64()),
        (200, Some(20)),
        "{body}"
    );
    wait_for_rows(&app, 20).await;
    let range = "from=2026-11-01T00:00:00Z&to=2026-11-30T00:00:00Z";
    let stats = |q: String| {
        let app = &app;
        let client = client.clone();
        async move {
            send(app.master(
                Method::GET,
                &format!("/api/v1/clients/{client}/visits/stats?{range}&{q}"),
            ))
            .await
        }
    };
    let (status, by_bot) = stats("group_by=bot".into()).await;
    assert_eq!(status, 200, "{by_bot}");
    assert_eq!(by_bot["totals"]["visits"], 20);
    assert_eq!(by_bot["totals"]["ai_visits"], 10);
    assert_eq!(by_bot["totals"]["human_visits"], 6);
    assert_eq!(by_bot["totals"]["search_bot_visits"], 4);
    assert_eq!(by_bot["totals"]["ai_share"], 0.5);
    let groups = |v: &Value| -> Vec<(String, i64)> {
        v["groups"]
            .as_array()
            .expect("groups")
            .iter()
            .map(|g| {
                (
                    g["key"].as_str().expect("key").to_owned(),
                    g["visits"].as_i64().expect("n"),
                )
            })
            .collect()
    };
    assert_eq!(
        groups(&by_bot),
        [
            ("human".into(), 6),
            ("GPTBot".into(), 5),
            ("Googlebot".into(), 4),
            ("ChatGPT-User".into(), 3),
            ("ClaudeBot".into(), 2)
        ]
    );
    let (_, by_operator) = stats("group_by=operator".into()).await;
    assert_eq!(
        groups(&by_operator),
        [
            ("OpenAI".into(), 8),
            ("human".into(), 6),
            ("unknown operator".into(), 4),
            ("Anthropic".into(), 2)
        ]
    );
    let (_, by_category) = stats("group_by=category".into()).await;
    assert_eq!(
        groups(&by_category),
        [
            ("training".into(), 7),
            ("human".into(), 6),
            ("search".into(), 4),
            ("user_fetch".into(), 3)
        ]
    );
    let (_, by_day) = stats("group_by=day".into()).await;
    assert_eq!(
        groups(&by_day),
        [("2026-11-19".into(), 11), ("2026-11-20".into(), 9)]
    );
    let (_, by_hour) = stats("group_by=hour".into()).await;
    assert_eq!(
        groups(&by_hour),
        [
            ("2026-11-19T10:00Z".into(), 5),
            ("2026-11-19T12:00Z".into(), 4),
            ("2026-11-19T14:00Z".into(), 2),
            ("2026-11-20T11:00Z".into(), 5),
            ("2026-11-20T13:00Z".into(), 3),
            ("2026-11-20T15:00Z".into(), 1)
        ]
    );
    let (_, by_format) = stats("group_by=format".into()).await;
    assert_eq!(groups(&by_format), [("markdown".into(), 20)]);
    let (_, by_status) = stats("group_by=status".into()).await;
    assert_eq!(groups(&by_status), [("200".into(), 20)]);
    let (_, by_page) = stats("group_by=page".into()).await;
    assert_eq!(
        groups(&by_page),
        [
            ("https://site.test/other".into(), 10),
            ("https://site.test/top".into(), 10)
        ]
    );
    assert!(
        by_page["groups"]
            .as_array()
            .expect("groups")
            .iter()
            .all(|g| g["page_id"].is_string()),
        "{by_page}"
    );
    let top = |v: &Value, table: &str| -> Vec<(String, i64, i64)> {
        v[table]
            .as_array()
            .expect("top pages")
            .iter()
            .map(|p| {
                (
                    p["url"].as_str().expect("url").to_owned(),
                    p["ai_visits"].as_i64().expect("n"),
                    p["bots"].as_i64().expect("n"),
                )
            })
            .collect()
    };
    assert_eq!(
        top(&by_page, "top_ai_pages"),
        [
            ("https://site.test/top".into(), 6, 3),
            ("https://site.test/other".into(), 4, 2)
        ]
    );
    assert_eq!(top(&by_page, "top_ai_misses"), []);
    // Paging.
    let (_, page2) = stats("group_by=bot&limit=2&offset=2".into()).await;
    assert_eq!(page2["total_groups"], 5);
    assert_eq!(
        groups(&page2),
        [("Googlebot".into(), 4), ("ChatGPT-User".into(), 3)]
    );
    let (_, past) = stats("group_by=bot&limit=2&offset=10".into()).await;
    assert_eq!(
        (
            past["total_groups"].as_i64(),
            past["groups"].as_array().map(Vec::len)
        ),
        (Some(5), Some(0))
    );
    // What is not a page of the client, or was not found, is a miss, not a page read.
    let misses = [
        ("http://site.test:8080/nope", 404),
        ("https://site.test/nope", 404),
        ("https://site.test/unknown", 200),
    ];
    let batch: Vec<Value> = misses
        .iter()
        .map(|(url, status)| {
            let mut v = visit(url, GPTBOT, "198.51.100.7", "2026-11-21T10:00:00Z");
            v["status"] = json!(status);
            v
        })
        .collect();
    let (status, body) = post_batch(&app, &key, &batch).await;
    assert_eq!(
        (status, body["accepted"].as_u64()),
        (200, Some(3)),
        "{body}"
    );
    wait_for_rows(&app, 23).await;
    let (_, after) = stats("group_by=page".into()).await;
    assert_eq!(
        top(&after, "top_ai_pages"),
        [
            ("https://site.test/top".into(), 6, 3),
            ("https://site.test/other".into(), 4, 2)
        ]
    );
    assert_eq!(
        top(&after, "top_ai_misses"),
        [
            ("//site.test/nope".into(), 2, 1),
            ("//site.test/unknown".into(), 1, 1)
        ]
    );
    // A range with nothing in it.
    let (status, empty) = send(app.master(
        Method::GET,
        &format!("/api/v1/clients/{client}/visits/stats?from=2020-01-01T00:00:00Z&to=2020-02-01T00:00:00Z"),
    ))
    .await;
    assert_eq!(
        (
            status,
            empty["totals"]["visits"].as_i64(),
            empty["totals"]["ai_share"].as_f64()
        ),
        (200, Some(0), Some(0.0))
    );
    // Bad queries and other tenants.
    for q in [
        "group_by=colour",
        "from=2026-11-30T00:00:00Z&to=2026-11-01T00:00:00Z",
        "from=2020-01-01T00:00:00Z&to=2026-01-01T00:00:00Z",
        "limit=0",
        "limit=5000",
        "offset=-1",
        "from=yesterday",
    ] {
        let (status, body) = send(app.master(
            Method::GET,
            &format!("/api/v1/clients/{client}/visits/stats?{q}"),
        ))
        .await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (400, Some("invalid_query")),
            "{q}: {body}"
        );
    }
    let other = create_client(&app, "Other", "other.test").await;
    let (_, other_read) = create_key(&app, &other, &["read"]).await;
    let (status, _) = send(
        app.request(
            Method::GET,
            &format!("/api/v1/clients/{client}/visits/stats"),
        )
        .header("X-API-Key", &other_read),
    )
    .await;
    assert_eq!(status, 403);
    let (status, _) = send(app.master(
        Method::GET,
        &format!("/api/v1/clients/{}/visits/stats", uuid::Uuid::new_v4()),
    ))
    .await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bots_reading_what_robots_txt_disallows_them_are_listed_per_bot() {
    let app = TestApp::with_options(&crate::harness::PIPELINE_ROLES, Options::default()).await;
    let origin = crate::page_origin::PageOrigin::start().await;
    origin.robots("User-agent: GPTBot\nDisallow: /private/\n\nUser-agent: *\nAllow: /\n");
    let client = create_client(&app, "Site", "site.test").await;
    let (_, key) = create_key(&app, &client, &["ingest"]).await;
    app.add_urls(&client, &origin.articles(&["/".to_owned()]))
        .await;
    // The scraper shares the robots.txt it read.
    let store = ai_cache::infra::robots_store::RobotsStore::open(app.js())
        .await
        .expect("robots store");
    let site = format!("http://site.test:{}", origin.port);
    eventually(Duration::from_secs(30), "robots.txt shared", || async {
        store.get(&site).await.ok().flatten().is_some()
    })
    .await;

    let private = origin.url("/private/a");
    let now = chrono::Utc::now();
    let at = |s: i64| (now - chrono::Duration::seconds(s)).to_rfc3339();
    let (status, body) = post_batch(
        &app,
        &key,
        &[
            visit(&private, GPTBOT, "192.0.2.1", &at(50)),
            visit(&private, GPTBOT, "192.0.2.1", &at(40)),
            visit(&origin.url("/blog/x"), GPTBOT, "192.0.2.1", &at(30)),
            visit(&private, CLAUDEBOT, "192.0.2.2", &at(20)),
            visit(&private, FIREFOX, "192.0.2.3", &at(10)),
        ],
    )
    .await;
    assert_eq!((status, &body["accepted"]), (200, &json!(5)), "{body}");
    // The built-in edge's visits are judged too.
    let edge = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
        .get(format!(
            "{}/edge/site.test:{}/private/b",
            app.api.as_deref().expect("api"),
            origin.port
        ))
        .header("user-agent", GPTBOT)
        .header("x-forwarded-proto", "http")
        .send()
        .await
        .expect("edge");
    assert_eq!(edge.status(), 302);
    wait_for_rows(&app, 6).await;

    let judged: Vec<(String, Option<String>)> = sqlx::query_as(
        "SELECT coalesce(bot_name, 'person') || ' ' || url, robots FROM visits ORDER BY visited_at",
    )
    .fetch_all(app.db())
    .await
    .expect("rows");
    let judged: Vec<(String, Option<&str>)> = judged
        .iter()
        .map(|(v, r)| (v.replace(&site, ""), r.as_deref()))
        .collect();
    assert_eq!(
        judged,
        [
            ("GPTBot /private/a".to_owned(), Some("disallowed")),
            ("GPTBot /private/a".to_owned(), Some("disallowed")),
            ("GPTBot /blog/x".to_owned(), Some("allowed")),
            ("ClaudeBot /private/a".to_owned(), Some("allowed")),
            ("person /private/a".to_owned(), None),
            ("GPTBot /private/b".to_owned(), Some("disallowed")),
        ]
    );

    let (status, list) = send(app.master(
        Method::GET,
        &format!("/api/v1/clients/{client}/visits/robots-violations"),
    ))
    .await;
    assert_eq!(status, 200, "{list}");
    let bots = list["bots"].as_array().expect("bots");
    assert_eq!(bots.len(), 1, "only GPTBot broke a rule: {list}");
    assert_eq!(bots[0]["bot_name"], "GPTBot");
    assert_eq!(bots[0]["operator"], "OpenAI");
    assert_eq!(bots[0]["violations"], 3);
    assert_eq!(
        bots[0]["urls"],
        json!([{"url": private, "visits": 2}, {"url": origin.url("/private/b"), "visits": 1}])
    );
    assert_eq!(
        bots[0]["first_seen"].as_str().map(|s| s.len() > 10),
        Some(true)
    );
    let (_, stats) = send(app.master(
        Method::GET,
        &format!("/api/v1/clients/{client}/visits/stats"),
    ))
    .await;
    assert_eq!(stats["totals"]["robots_violations"], 3, "{stats}");
    // Another client's key sees nothing of it.
    let other = create_client(&app, "Other", "other.test").await;
    let (_, other_key) = create_key(&app, &other, &["read"]).await;
    let (status, _) = send(
        app.request(
            Method::GET,
            &format!("/api/v1/clients/{client}/visits/robots-violations"),
        )
        .header("X-API-Key", other_key),
    )
    .await;
    assert_eq!(status, 403);
}

#[tokio::test]
async fn a_signature_the_reporting_edge_verified_is_recorded_with_its_agent() {
    let (app, _client, key) = app_with(&[Role::Api, Role::Projections], Options::default()).await;
    let mut signed = visit(
        "https://site.test/a",
        FIREFOX,
        "192.0.2.1",
        &chrono::Utc::now().to_rfc3339(),
    );
    signed["signature_agent"] = json!("https://chatgpt.com");
    let mut unknown = signed.clone();
    unknown["signature_agent"] = json!("https://agent.example");
    unknown["ip"] = json!("192.0.2.2");
    let (status, body) = post_batch(&app, &key, &[signed, unknown]).await;
    assert_eq!((status, &body["accepted"]), (200, &json!(2)), "{body}");
    wait_for_rows(&app, 2).await;
    let rows: Vec<(String, Option<String>, String, Option<String>)> = sqlx::query_as(
        "SELECT visitor_type, bot_name, verification, signature_agent FROM visits ORDER BY bot_name",
    )
    .fetch_all(app.db())
    .await
    .expect("rows");
    let s = |v: &str| Some(v.to_owned());
    assert_eq!(
        rows,
        [
            (
                "ai_bot".into(),
                s("ChatGPT Agent"),
                "signature".into(),
                s("https://chatgpt.com")
            ),
            (
                "other_bot".into(),
                s("https://agent.example"),
                "signature".into(),
                s("https://agent.example")
            ),
        ]
    );
    for bad in [
        "javascript:alert(1)",
        "https://chatgpt.com/path",
        "chatgpt.com",
    ] {
        let mut v = visit(
            "https://site.test/a",
            FIREFOX,
            "192.0.2.1",
            &chrono::Utc::now().to_rfc3339(),
        );
        v["signature_agent"] = json!(bad);
        let (status, body) = send(
            app.request(Method::POST, "/api/v1/visits")
                .header("X-API-Key", &key)
                .json(&v),
        )
        .await;
        assert_eq!(status, 422, "{bad}: {body}");
        assert_eq!(body["error"]["code"], "invalid_signature_agent", "{bad}");
    }
}
