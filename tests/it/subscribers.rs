//! External subscribers: a client's page events over Server-Sent Events (live, resumed with
//! `Last-Event-ID`, the client's own only, bounded per key).

use std::time::Duration;

use ai_cache::app::Role;
use reqwest::Method;
use serde_json::Value;

use crate::clients::{create_client, create_key, send};
use crate::harness::{TestApp, eventually, stream_count};
use crate::page_origin::PageOrigin;

/// One frame of an event stream.
#[derive(Debug)]
enum Frame {
    Event { id: u64, event: String, data: Value },
    Comment(String),
}

/// A minimal SSE reader over a streaming response: frames end with a blank line.
struct SseReader {
    response: reqwest::Response,
    buffer: String,
}

impl SseReader {
    /// Opens `/api/v1/clients/{client}/events/stream?{query}` with `key`, resuming after
    /// `last_id` when given.
    async fn open(
        app: &TestApp,
        client: &str,
        key: &str,
        query: &str,
        last_id: Option<u64>,
    ) -> Self {
        let mut request = app
            .request(
                Method::GET,
                &format!("/api/v1/clients/{client}/events/stream?{query}"),
            )
            .header("x-api-key", key);
        if let Some(id) = last_id {
            request = request.header("last-event-id", id.to_string());
        }
        let response = request.send().await.expect("request");
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        Self {
            response,
            buffer: String::new(),
        }
    }

    async fn next(&mut self) -> Frame {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                return parse(&block);
            }
            let chunk = tokio::time::timeout(Duration::from_secs(30), self.response.chunk())
                .await
                .expect("a frame within 30 s")
                .expect("read")
                .expect("the stream stays open");
            self.buffer
                .push_str(std::str::from_utf8(&chunk).expect("utf-8"));
        }
    }

    /// The next event, heartbeats skipped: (id, type, stored event).
    async fn next_event(&mut self) -> (u64, String, Value) {
        loop {
            if let Frame::Event { id, event, data } = self.next().await {
                return (id, event, data);
            }
        }
    }
}

fn parse(block: &str) -> Frame {
    let (mut id, mut event, mut data) = (None, None, String::new());
    for line in block.lines() {
        if let Some(comment) = line.strip_prefix(':') {
            return Frame::Comment(comment.trim().to_owned());
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "id" => id = value.parse().ok(),
            "event" => event = Some(value.to_owned()),
            "data" => data.push_str(value),
            _ => {}
        }
    }
    Frame::Event {
        id: id.expect("every event has an id"),
        event: event.expect("every event has a type"),
        data: serde_json::from_str(&data).expect("data is JSON"),
    }
}

fn url_of(data: &Value) -> String {
    data["event"]["data"]["url"]
        .as_str()
        .expect("a url")
        .to_owned()
}

async fn pipeline_app() -> TestApp {
    TestApp::with_roles(&crate::harness::PIPELINE_ROLES).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clients_stream_gets_its_updates_live_and_exactly_the_missed_ones_after_a_reconnect() {
    let app = pipeline_app().await;
    let origin = PageOrigin::start().await;
    let a = create_client(&app, "A", "site.test").await;
    let b = create_client(&app, "B", "other.test").await;
    let (_, key) = create_key(&app, &a, &["read"]).await;

    let mut stream = SseReader::open(&app, &a, &key, "", None).await;
    app.add_urls(&a, &origin.articles(&["/one".to_owned()]))
        .await;
    let (first, event_type, data) = stream.next_event().await;
    assert_eq!(event_type, "pages.updated");
    assert_eq!(data["seq"], first, "the id is the stream sequence");
    assert_eq!(data["event"]["client_id"], a.as_str());
    assert!(url_of(&data).ends_with("/one"), "{data}");
    drop(stream);

    // While it is away: two more of A's pages and one of B's are updated.
    app.add_urls(
        &a,
        &origin.articles(&["/two".to_owned(), "/three".to_owned()]),
    )
    .await;
    let bee = origin.articles(&["/bee".to_owned()])[0].replace("site.test", "other.test");
    app.add_urls(&b, &[bee]).await;
    eventually(Duration::from_secs(60), "four pages updated", || async {
        stream_count(app.js(), "PAGES", Some("pages.updated.>")).await == 4
    })
    .await;

    let mut resumed = SseReader::open(&app, &a, &key, "", Some(first)).await;
    let (second, _, two) = resumed.next_event().await;
    let (third, _, three) = resumed.next_event().await;
    assert!(first < second && second < third, "in stream order");
    let mut missed = vec![url_of(&two), url_of(&three)];
    missed.sort();
    assert!(
        missed[0].ends_with("/three") && missed[1].ends_with("/two"),
        "{missed:?}"
    );
    // Nothing else was waiting (B's update is not A's): the next frame is a heartbeat.
    match resumed.next().await {
        Frame::Comment(text) => assert_eq!(text, "heartbeat"),
        other => panic!("expected a heartbeat, got {other:?}"),
    }
    // And it goes on live.
    app.add_urls(&a, &origin.articles(&["/four".to_owned()]))
        .await;
    let (fourth, _, four) = resumed.next_event().await;
    assert!(fourth > third);
    assert!(url_of(&four).ends_with("/four"), "{four}");

    // Another type, replayed from the start of the stream: A's pages only, in order.
    let mut discovered =
        SseReader::open(&app, &a, &key, "type=pages.discovered&after=0", None).await;
    let mut urls = Vec::new();
    let mut last = 0;
    for _ in 0..4 {
        let (id, event_type, data) = discovered.next_event().await;
        assert_eq!(event_type, "pages.discovered");
        assert_eq!(data["event"]["client_id"], a.as_str());
        assert!(id > last);
        last = id;
        urls.push(url_of(&data));
    }
    assert!(urls.iter().all(|u| u.contains("site.test")), "{urls:?}");
}

#[tokio::test]
async fn a_stream_is_its_clients_own_and_a_key_holds_a_bounded_number() {
    let app = TestApp::with_roles(&[Role::Api, Role::Projections]).await;
    let a = create_client(&app, "A", "site.test").await;
    let b = create_client(&app, "B", "other.test").await;
    let (_, reader) = create_key(&app, &a, &["read"]).await;
    let (_, writer) = create_key(&app, &a, &["write"]).await;
    let path = |client: &str, query: &str| format!("/api/v1/clients/{client}/events/stream{query}");
    let status = |key: String, path: String| {
        let request = app.request(Method::GET, &path).header("x-api-key", key);
        async move { send(request).await }
    };

    let (code, body) = status(reader.clone(), path(&b, "")).await;
    assert_eq!(code, 403, "A's key on B's stream: {body}");
    assert_eq!(body["error"]["code"], "forbidden");
    let (code, _) = status(writer, path(&a, "")).await;
    assert_eq!(code, 403, "a key without the read scope");
    let missing = uuid::Uuid::new_v4().to_string();
    let (code, _) = status(super::harness::MASTER_KEY.into(), path(&missing, "")).await;
    assert_eq!(code, 404);
    for query in [
        "?type=pages.>",
        "?type=*",
        "?after=1&since=2026-01-01T00:00:00Z",
        "?since=yesterday",
        "?page=nope",
    ] {
        let (code, body) = status(reader.clone(), path(&a, query)).await;
        assert_eq!(code, 400, "{query}: {body}");
    }

    // Two streams per key in the test app: a third is refused until one closes.
    let first = SseReader::open(&app, &a, &reader, "", None).await;
    let _second = SseReader::open(&app, &a, &reader, "", None).await;
    let (code, body) = status(reader.clone(), path(&a, "")).await;
    assert_eq!(code, 429, "{body}");
    assert_eq!(body["error"]["code"], "rate_limited");
    let _master = SseReader::open(&app, &b, super::harness::MASTER_KEY, "", None).await;
    drop(first);
    eventually(
        Duration::from_secs(10),
        "the closed stream's place is free",
        || async {
            let response = app
                .request(Method::GET, &path(&a, ""))
                .header("x-api-key", &reader)
                .send()
                .await
                .expect("request");
            response.status() == 200
        },
    )
    .await;
}

/// Connects as `url`'s user, reporting the server's errors (permission violations) on `events`.
async fn connect_reporting(
    url: &str,
    events: tokio::sync::mpsc::UnboundedSender<String>,
) -> Result<async_nats::Client, async_nats::ConnectError> {
    let addr: async_nats::ServerAddr = url.parse().expect("url");
    let (user, password) = (
        addr.username().expect("user").to_owned(),
        addr.password().expect("password").to_owned(),
    );
    async_nats::ConnectOptions::with_user_and_password(user, password)
        .event_callback(move |event| {
            let events = events.clone();
            async move {
                if let async_nats::Event::ServerError(e) = event {
                    let _ = events.send(e.to_string());
                }
            }
        })
        .connect(addr)
        .await
}

#[tokio::test]
async fn subscriber_credentials_read_their_clients_updates_and_nothing_else() {
    use ai_cache::infra::localstack::LocalNats;
    use ai_cache::infra::nats::Nats;
    use ai_cache::infra::nats_auth::AuthDir;
    use futures::{FutureExt, StreamExt};

    let dir = tempfile::tempdir().expect("dir");
    let auth = AuthDir::new(dir.path().join("auth"));
    let service = auth.init().expect("init");
    // The configuration the operator writes: nats.conf including the generated users.
    let config = dir.path().join("nats.conf");
    std::fs::write(&config, "include \"auth/auth.conf\"\n").expect("config");
    let data = dir.path().join("data");
    let nats = tokio::task::spawn_blocking(move || LocalNats::start(&data, Some(&config), true))
        .await
        .expect("join")
        .expect("nats-server starts with the generated users");
    let host = nats.url().trim_start_matches("nats://").to_owned();

    assert!(
        Nats::connect(&nats.url(), "anonymous").await.is_err(),
        "without a user the server refuses the connection"
    );
    let service = Nats::connect(&service.url(&host), "ai-cache")
        .await
        .expect("the service connects with its user");

    // A subscriber for client A, applied by a reload.
    let (a, b) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    let (subscriber, credentials) = auth.create(a, "partner").expect("create");
    nats.reload().expect("reload");
    let (events, mut errors) = tokio::sync::mpsc::unbounded_channel();
    let url = credentials.url(&host);
    let partner = crate::harness::eventually_ok(Duration::from_secs(10), || {
        connect_reporting(&url, events.clone())
    })
    .await;

    let mut mine = partner
        .subscribe(format!("pages.updated.{a}.>"))
        .await
        .expect("subscribe");
    let mut theirs = partner
        .subscribe(format!("pages.updated.{b}.>"))
        .await
        .expect("subscribe");
    partner
        .publish(format!("pages.updated.{a}.forged"), "forged".into())
        .await
        .expect("publish");
    partner.flush().await.expect("flush");
    let mut refused = Vec::new();
    while !(refused.iter().any(|e: &String| e.contains("Subscription"))
        && refused.iter().any(|e: &String| e.contains("Publish")))
    {
        let error = tokio::time::timeout(Duration::from_secs(10), errors.recv())
            .await
            .expect("the server refuses B's subjects and the publish")
            .expect("open");
        assert!(
            error.to_lowercase().contains("permissions violation"),
            "{error}"
        );
        refused.push(error);
    }

    // The service publishes B's update, then A's: the partner gets A's only (and its own
    // forged publish never reached anyone).
    for client in [b, a] {
        service
            .client
            .publish(
                format!("pages.updated.{client}.page"),
                client.to_string().into(),
            )
            .await
            .expect("publish");
    }
    service.client.flush().await.expect("flush");
    let got = tokio::time::timeout(Duration::from_secs(10), mine.next())
        .await
        .expect("A's update arrives")
        .expect("message");
    assert_eq!(got.payload, a.to_string().as_bytes());
    assert!(
        theirs.next().now_or_never().is_none(),
        "B's update, published first, never reached the partner"
    );

    // Revoked and reloaded: the user is gone.
    auth.revoke(&subscriber.id.to_string()).expect("revoke");
    nats.reload().expect("reload");
    let (events, _errors) = tokio::sync::mpsc::unbounded_channel();
    eventually(
        Duration::from_secs(10),
        "the revoked user is refused",
        || {
            let (url, events) = (url.clone(), events.clone());
            async move { connect_reporting(&url, events).await.is_err() }
        },
    )
    .await;
}
