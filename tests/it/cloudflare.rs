//! Uploading to Cloudflare Workers KV, against a fake that follows the documented API.

use std::sync::atomic::Ordering;
use std::time::Duration;

use ai_cache::domain::kv_key::{html_key, kv_key, markdown_key};
use ai_cache::domain::url::NormalizedUrl;
use ai_cache::infra::cloudflare::{KvClient, KvError, KvTarget, Pair};
use ai_cache::infra::limits::SharedRates;
use ai_cache::infra::secrets::Secret;
use ai_cache::pipeline::kv_batch::KvBatcher;
use reqwest::Method;
use serde_json::json;

use crate::clients::send;
use crate::cloudflare_fake::FakeCloudflare;
use crate::harness::{Options, TestApp, eventually, stream_count};
use crate::page_origin::{Page, PageOrigin};

fn target(token: &str) -> KvTarget {
    KvTarget {
        account_id: "acct".into(),
        namespace_id: "ns1".into(),
        token: Secret::new(token),
    }
}

fn pairs(page: usize) -> Vec<Pair> {
    ["md", "html"]
        .iter()
        .map(|v| Pair {
            key: format!("{v}:https/a-example/{page}"),
            value: format!("{v} {page}"),
            metadata: json!({"v": v}),
        })
        .collect()
}

/// The pipeline (with `options`) against a fake Cloudflare accepting `accepted`, a local origin,
/// and a client of site.test (600 fetches a minute) whose uploads go to namespace `ns1` with
/// `token`: (the fake, the app, the origin, the client's id).
pub(crate) async fn cloudflare_site(
    accepted: &str,
    token: &str,
    options: Options,
) -> (FakeCloudflare, TestApp, PageOrigin, String) {
    let cf = FakeCloudflare::start(accepted).await;
    let app = TestApp::with_options(
        &crate::harness::PIPELINE_ROLES,
        Options {
            cloudflare_api_base: cf.base.clone(),
            ..options
        },
    )
    .await;
    let origin = PageOrigin::start().await;
    let (status, client) = app
        .post_client(&json!({
            "name": "CF Site", "domain": "site.test", "cloudflare_account_id": "acct",
            "cloudflare_api_token": token, "cloudflare_kv_namespace_id": "ns1",
            "settings": {"crawl_rate_per_minute": 600}
        }))
        .await;
    assert_eq!(status, 201, "{client}");
    let client = client["id"].as_str().expect("id").to_owned();
    (cf, app, origin, client)
}

#[tokio::test]
async fn writes_of_one_client_share_a_request_and_clients_do_not_affect_each_other() {
    let cf = FakeCloudflare::start("good-token").await;
    let batcher = KvBatcher::start(
        KvClient::new(&cf.base, Duration::from_secs(10)).expect("client"),
        Duration::from_millis(200),
    );
    let a = uuid::Uuid::new_v4();
    let b = uuid::Uuid::new_v4();
    let writes = (0..5).map(|i| batcher.write(a, target("good-token"), pairs(i)));
    let bad = batcher.write(b, target("wrong-token"), pairs(99));
    let (results, bad) = tokio::join!(futures::future::join_all(writes), bad);
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert!(matches!(bad, Err(KvError::Unauthorized(_))), "{bad:?}");
    assert_eq!(
        *cf.inner.writes.lock().expect("lock"),
        [10],
        "five pages of one client, one bulk request"
    );
    assert_eq!(
        cf.get("ns1", "md:https/a-example/3")
            .map(|(v, _)| v)
            .as_deref(),
        Some("md 3")
    );
}

#[tokio::test]
async fn rate_limits_and_unsuccessful_keys_are_reported_for_retrying() {
    let cf = FakeCloudflare::start("t").await;
    let batcher = KvBatcher::start(
        KvClient::new(&cf.base, Duration::from_secs(10)).expect("client"),
        Duration::from_millis(10),
    );
    let c = uuid::Uuid::new_v4();
    cf.inner.rate_limit_next.store(1, Ordering::SeqCst);
    assert_eq!(
        batcher.write(c, target("t"), pairs(1)).await,
        Err(KvError::RateLimited(Duration::from_secs(1)))
    );
    cf.inner
        .fail_keys_once
        .lock()
        .expect("lock")
        .insert("html:https/a-example/1".into());
    let err = batcher
        .write(c, target("t"), pairs(1))
        .await
        .expect_err("one key failed");
    assert!(
        err.is_transient() && err.to_string().contains("html:https/a-example/1"),
        "{err}"
    );
    assert_eq!(
        batcher.write(c, target("t"), pairs(1)).await,
        Ok(()),
        "the retry writes it"
    );
    let too_big = Pair {
        key: "k".repeat(600),
        value: "v".into(),
        metadata: json!({}),
    };
    let err = batcher
        .write(c, target("t"), vec![too_big])
        .await
        .expect_err("refused");
    assert!(matches!(err, KvError::Rejected(_)), "{err}");
}

#[tokio::test]
async fn a_cloudflare_clients_pages_reach_its_namespace_through_retries_and_leave_it_when_removed()
{
    let (cf, app, origin, client) =
        cloudflare_site("cf-token-123", "cf-token-123", Options::default()).await;
    // Cloudflare pushes back once, and drops one key once: both are retried.
    cf.inner.rate_limit_next.store(1, Ordering::SeqCst);
    let first_key = kv_key(&NormalizedUrl::parse(&origin.url("/p/0")).expect("url"));
    cf.inner
        .fail_keys_once
        .lock()
        .expect("lock")
        .insert(html_key(&first_key));
    let paths: Vec<String> = (0..3).map(|i| format!("/p/{i}")).collect();
    let urls = origin.articles(&paths);
    app.add_urls(&client, &urls).await;
    eventually(
        Duration::from_secs(45),
        "every page is in the namespace",
        || async {
            paths.iter().all(|p| {
                let key = kv_key(&NormalizedUrl::parse(&origin.url(p)).expect("url"));
                cf.get("ns1", &markdown_key(&key)).is_some()
                    && cf.get("ns1", &html_key(&key)).is_some()
            })
        },
    )
    .await;
    let (markdown, meta) = cf.get("ns1", &markdown_key(&first_key)).expect("stored");
    assert!(markdown.contains("The text of /p/0"), "{markdown}");
    assert_eq!(meta["content_type"], "text/markdown; charset=utf-8");
    assert_eq!(meta["source_url"], origin.url("/p/0"));
    // The page's title travels for the Worker's front matter.
    assert_eq!(meta["title"], "T", "{meta}");
    eventually(
        Duration::from_secs(15),
        "one pages.updated per page",
        || async { stream_count(app.js(), "PAGES", Some("pages.updated.>")).await == 3 },
    )
    .await;
    let (_, page) = send(app.master(
        Method::GET,
        &format!(
            "/api/v1/clients/{client}/pages/by-url?url={}",
            url::form_urlencoded::byte_serialize(origin.url("/p/1").as_bytes()).collect::<String>()
        ),
    ))
    .await;
    assert_eq!(page["edge_store"], "cloudflare", "{page}");

    // The page disappears from the origin: its keys leave the namespace.
    origin.set(
        "/p/1",
        Page::Status {
            status: 410,
            retry_after: None,
        },
    );
    send(app.master(
        Method::POST,
        &format!("/api/v1/pages/{}/refresh", page["id"].as_str().expect("id")),
    ))
    .await;
    let gone = kv_key(&NormalizedUrl::parse(&origin.url("/p/1")).expect("url"));
    eventually(
        Duration::from_secs(20),
        "the removed page's keys are deleted",
        || async {
            cf.get("ns1", &markdown_key(&gone)).is_none()
                && cf.get("ns1", &html_key(&gone)).is_none()
        },
    )
    .await;
    assert!(
        cf.get("ns1", &markdown_key(&first_key)).is_some(),
        "the others stay"
    );
}

#[tokio::test]
async fn a_write_of_thousands_of_keys_with_metadata_is_one_request_and_reported_whole() {
    // The `cloudflare` crate's own bulk endpoint decodes the count into an i8 and drops
    // metadata: our corrected endpoint must do neither.
    let cf = FakeCloudflare::start("t").await;
    let kv = KvClient::new(&cf.base, Duration::from_secs(10)).expect("client");
    let many: Vec<Pair> = (0..3_000).flat_map(pairs).collect();
    let result = kv.bulk_write(&target("t"), &many).await.expect("written");
    assert_eq!(result.successful_key_count, 6_000);
    assert_eq!(*cf.inner.writes.lock().expect("lock"), [6_000]);
    assert_eq!(
        cf.get("ns1", "html:https/a-example/2999").map(|(_, m)| m),
        Some(json!({"v": "html"}))
    );
    let keys: Vec<String> = many.iter().map(|p| p.key.clone()).collect();
    let deleted = kv.bulk_delete(&target("t"), &keys).await.expect("deleted");
    assert_eq!(deleted.successful_key_count, 6_000);
    assert_eq!(cf.get("ns1", "md:https/a-example/1"), None);
}

#[tokio::test]
async fn a_bad_api_root_is_refused_before_any_call() {
    for base in ["not a url", "ftp://example.com/v4", "mailto:x@y"] {
        assert!(
            matches!(
                KvClient::new(base, Duration::from_secs(1)),
                Err(KvError::Rejected(_))
            ),
            "{base}"
        );
    }
}

#[tokio::test]
async fn uploader_processes_share_one_accounts_request_budget() {
    let app = TestApp::with_roles(&[]).await;
    let cf = FakeCloudflare::start("t").await;
    // 20 requests per five minutes: 2 at once, then one every 16.7 s (longer than a call
    // waits in place), counted for both "processes" (each its own client and bucket handle).
    let mut uploaders = Vec::new();
    for _ in 0..2 {
        let rates = SharedRates::open(app.js(), "cloudflare")
            .await
            .expect("bucket");
        uploaders.push(
            KvClient::new(&cf.base, Duration::from_secs(10))
                .expect("client")
                .with_budget(rates, 20),
        );
    }
    let calls = (0..6).map(|i| {
        let kv = &uploaders[i % 2];
        async move { kv.bulk_write(&target("t"), &pairs(i)).await }
    });
    let results = futures::future::join_all(calls).await;
    assert_eq!(
        cf.inner.writes.lock().expect("lock").len(),
        2,
        "two requests reach Cloudflare between both: {results:?}"
    );
    let refused: Vec<Duration> = results
        .iter()
        .filter_map(|r| match r {
            Err(KvError::RateLimited(wait)) => Some(*wait),
            _ => None,
        })
        .collect();
    assert_eq!(refused.len(), 4, "{results:?}");
    assert!(
        refused
            .iter()
            .all(|w| *w > Duration::from_secs(10) && *w <= Duration::from_secs(17)),
        "each is told when the budget has room: {refused:?}"
    );
    // Another account has its own budget.
    let other = KvTarget {
        account_id: "other".into(),
        ..target("t")
    };
    assert!(uploaders[0].bulk_write(&other, &pairs(9)).await.is_ok());
}

#[tokio::test]
async fn waiting_for_cloudflares_budget_is_never_a_failure() {
    let (cf, app, origin, client) =
        cloudflare_site("cf-token-123", "cf-token-123", Options::default()).await;
    // More 429s (each with Retry-After: 1) than the uploader's 6 deliveries.
    cf.inner.rate_limit_next.store(8, Ordering::SeqCst);
    app.add_urls(&client, &origin.articles(&["/p/0".to_owned()]))
        .await;
    eventually(
        Duration::from_secs(60),
        "the page is live after Cloudflare let it through",
        || async { stream_count(app.js(), "PAGES", Some("pages.updated.>")).await == 1 },
    )
    .await;
    assert_eq!(cf.inner.rate_limit_next.load(Ordering::SeqCst), 0);
    assert_eq!(
        stream_count(app.js(), "DEADLETTER", None).await,
        0,
        "waiting is deferred, not a failed try"
    );
}

#[tokio::test]
async fn a_cloudflare_clients_edge_policy_reaches_its_namespace_for_the_worker() {
    let (cf, app, _origin, client) =
        cloudflare_site("tok", "tok", crate::harness::Options::default()).await;
    let stored = || {
        cf.get("ns1", "settings:edge:site.test")
            .map(|(v, _)| serde_json::from_str::<serde_json::Value>(&v).expect("json"))
    };
    // Written at registration: the default policy.
    eventually(
        Duration::from_secs(20),
        "the default policy is written",
        || async { stored().is_some_and(|p| p["default"]["action"] == "auto") },
    )
    .await;
    // Two changes in a row: the namespace ends with the second (one message at a time, in
    // order, so the first never lands over it).
    for (bot, price) in [("GPTBot", "USD 0.01"), ("ClaudeBot", "USD 0.02")] {
        let policy = json!({"edge": {"rules": [{"bot": bot, "action": "charge", "price": price}]}});
        let (status, body) = app.put_client(&client, &json!({"settings": policy})).await;
        assert_eq!(status, 200, "{body}");
    }
    app.drained("CLIENTS", &["uploader-settings"]).await;
    let policy = stored().expect("stored");
    assert_eq!(policy["rules"][0]["bot"], "ClaudeBot", "{policy}");
    assert_eq!(policy["rules"][0]["price"], "USD 0.02");
}
