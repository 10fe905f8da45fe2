//! Markdown with Gemini, against a fake that follows the documented API: success, MAX_TOKENS,
//! SAFETY, 429 with RetryInfo, the per-day quota, 503, an unknown model, and no key at all.

use std::time::Duration;

use ai_cache::app::Role;
use reqwest::Method;
use serde_json::{Value, json};

use crate::clients::send;
use crate::gemini_fake::{FakeGemini, Mode};
use crate::harness::{Options, TestApp};
use crate::page_origin::{Page, PageOrigin, article};

struct Setup {
    app: TestApp,
    origin: PageOrigin,
    client: String,
    n: usize,
}

async fn setup(options: Options, client_key: Option<&str>) -> Setup {
    let roles = [Role::Api, Role::Projections, Role::Scraper, Role::Markdown];
    let app = TestApp::with_options(&roles, options).await;
    let origin = PageOrigin::start().await;
    let mut body = json!({"name": "G", "domain": "site.test", "settings": {"use_gemini": true, "crawl_rate_per_minute": 600}});
    if let Some(k) = client_key {
        body["gemini_api_key"] = k.into();
    }
    let (status, created) = app.post_client(&body).await;
    assert_eq!(status, 201, "{created}");
    Setup {
        client: created["id"].as_str().expect("id").to_owned(),
        app,
        origin,
        n: 0,
    }
}

impl Setup {
    /// Adds a new page and returns the data of its `pages.markdown_generated`.
    async fn markdown_for_next_page(&mut self) -> Value {
        self.n += 1;
        let path = format!("/g/{}", self.n);
        self.origin.set(
            &path,
            Page::html(&article(
                &format!(
                    "Page number {} has its own long main text to convert.",
                    self.n
                ),
                "0",
            )),
        );
        let url = self.origin.url(&path);
        send(
            self.app
                .master(
                    Method::POST,
                    &format!("/api/v1/clients/{}/pages", self.client),
                )
                .json(&json!({"urls": [url]})),
        )
        .await;
        let stream = self.app.js().get_stream("PAGES").await.expect("stream");
        for _ in 0..800 {
            for seq in (1..=self.app.last_seq("PAGES").await).rev() {
                let Ok(msg) = stream.get_raw_message(seq).await else {
                    continue;
                };
                if !msg.subject.starts_with("pages.markdown_generated.") {
                    continue;
                }
                let event: Value = serde_json::from_slice(&msg.payload).expect("json");
                let blob_hash = event["data"]["markdown"]["hash"].clone();
                let page = event["page_id"].as_str().unwrap_or_default().to_owned();
                let (_, state) = send(
                    self.app
                        .master(Method::GET, &format!("/api/v1/pages/{page}")),
                )
                .await;
                if state["url"] == url.as_str() {
                    let mut data = event["data"].clone();
                    data["markdown_text"] = markdown_text(&self.app, &blob_hash).await.into();
                    return data;
                }
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("no markdown for {url}");
    }
}

async fn markdown_text(app: &TestApp, hash: &Value) -> String {
    let blobs = ai_cache::infra::blobs::BlobStore::open(app.js(), 1 << 24)
        .await
        .expect("blobs");
    let hash =
        ai_cache::domain::content::ContentHash::parse(hash.as_str().expect("hash")).expect("hash");
    String::from_utf8(blobs.get(&hash).await.expect("get").expect("stored")).expect("utf-8")
}

#[tokio::test]
async fn gemini_answers_are_used_and_every_failure_has_its_outcome() {
    let gemini = FakeGemini::start("g-key").await;
    let mut s = setup(
        Options {
            gemini_api_base: gemini.base.clone(),
            ..Options::default()
        },
        Some("g-key"),
    )
    .await;

    let ok = s.markdown_for_next_page().await;
    assert_eq!(
        (ok["generator"].as_str(), ok["model"].as_str()),
        (Some("gemini"), Some("known-model")),
        "{ok}"
    );
    assert_eq!(
        ok["tokens"],
        json!({"prompt": 120, "output": 30, "total": 150})
    );
    assert!(
        ok["markdown_text"]
            .as_str()
            .is_some_and(|m| m.starts_with("# From Gemini") && !m.contains("reasoning")),
        "thought parts are skipped: {ok}"
    );
    assert!(
        ok["generator_version"]
            .as_str()
            .is_some_and(|v| v.starts_with("gemini-prompt-"))
    );
    let request = gemini.inner.calls.lock().expect("lock")[0].1.clone();
    assert!(
        request["contents"][0]["parts"][0]["text"]
            .as_str()
            .is_some_and(|t| t.contains("Page number 1")),
        "the page's content is sent"
    );

    for (mode, reason) in [
        (Mode::MaxTokens, "cut off"),
        (Mode::Safety, "blocked"),
        (Mode::PerDay, "daily quota"),
    ] {
        gemini.queue(std::slice::from_ref(&mode));
        let fell_back = s.markdown_for_next_page().await;
        assert_eq!(fell_back["generator"], "local", "{mode:?}: {fell_back}");
        assert!(
            fell_back["fallback_reason"]
                .as_str()
                .is_some_and(|r| r.contains(reason)),
            "{mode:?}: {fell_back}"
        );
        assert!(
            fell_back["markdown_text"]
                .as_str()
                .is_some_and(|m| m.contains("has its own long main text")),
            "the local result: {fell_back}"
        );
    }

    // A per-minute limit waits RetryInfo's delay; an overload is retried: both then succeed.
    gemini.queue(&[Mode::RateLimit]);
    let calls_before = gemini.inner.calls.lock().expect("lock").len();
    let after_limit = s.markdown_for_next_page().await;
    assert_eq!(after_limit["generator"], "gemini", "{after_limit}");
    let calls = gemini.inner.calls.lock().expect("lock").clone();
    assert!(
        calls[calls_before + 1].0 - calls[calls_before].0 >= Duration::from_millis(950),
        "retryDelay 1s was honoured"
    );
    gemini.queue(&[Mode::Overloaded]);
    assert_eq!(s.markdown_for_next_page().await["generator"], "gemini");
}

#[tokio::test]
async fn an_unknown_model_or_a_missing_key_falls_back_to_the_local_result() {
    let gemini = FakeGemini::start("g-key").await;
    let options = Options {
        gemini_api_base: gemini.base.clone(),
        gemini_model: "retired-model".into(),
        ..Options::default()
    };
    let mut s = setup(options, Some("g-key")).await;
    let data = s.markdown_for_next_page().await;
    assert_eq!(data["generator"], "local");
    assert!(
        data["fallback_reason"]
            .as_str()
            .is_some_and(|r| r.contains("unknown or retired gemini model")),
        "{data}"
    );

    let mut no_key = setup(
        Options {
            gemini_api_base: gemini.base.clone(),
            ..Options::default()
        },
        None,
    )
    .await;
    let data = no_key.markdown_for_next_page().await;
    assert!(
        data["fallback_reason"]
            .as_str()
            .is_some_and(|r| r.contains("no Gemini key")),
        "{data}"
    );

    // The operator's key serves clients without their own.
    let options = Options {
        gemini_api_base: gemini.base.clone(),
        gemini_api_key: Some("g-key".into()),
        ..Options::default()
    };
    let mut operator = setup(options, None).await;
    assert_eq!(
        operator.markdown_for_next_page().await["generator"],
        "gemini"
    );
}
