//! Who may do what: the tenant isolation matrix, scopes, key lifecycle, rate limits,
//! the OpenAPI document, and deleting a client with everything of it.

use std::collections::BTreeSet;

use ai_cache::app::Role;
use reqwest::Method;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::clients::{create_client, create_key, send, spawn_api};
use crate::harness::{MASTER_KEY, Options, TestApp};

#[derive(Clone, Copy, Debug, PartialEq)]
enum Who {
    Master,
    /// A key of client A with these scopes.
    A(&'static [&'static str]),
}

#[tokio::test]
async fn no_client_key_reaches_another_client_and_each_scope_allows_only_what_it_names() {
    let app = spawn_api().await;
    let a = create_client(&app, "A", "a.example").await;
    let b = create_client(&app, "B", "b.example").await;
    let mut keys = std::collections::HashMap::new();
    for scopes in [
        &["read"][..],
        &["write"],
        &["ingest"],
        &["read", "write", "ingest"],
    ] {
        keys.insert(scopes.join(","), create_key(&app, &a, scopes).await.1);
    }
    let (b_key_id, _) = create_key(&app, &b, &["read"]).await;

    // (method, path template, body, required): `{T}` is the target client, `{D}` its domain.
    #[derive(Clone, Copy)]
    enum Needs {
        Master,
        Scope(&'static str),
    }
    let routes: Vec<(Method, &str, Option<Value>, Needs)> = vec![
        (
            Method::GET,
            "/api/v1/clients/{T}",
            None,
            Needs::Scope("read"),
        ),
        (
            Method::GET,
            "/api/v1/clients/by-domain/{D}",
            None,
            Needs::Scope("read"),
        ),
        (
            Method::GET,
            "/api/v1/clients/{T}?include_secrets=true",
            None,
            Needs::Master,
        ),
        (
            Method::PUT,
            "/api/v1/clients/{T}",
            Some(json!({"settings": {"crawl_rate_per_minute": 30}})),
            Needs::Scope("write"),
        ),
        (
            Method::PUT,
            "/api/v1/clients/{T}",
            Some(json!({"is_active": true})),
            Needs::Master,
        ),
        (Method::GET, "/api/v1/clients/{T}/keys", None, Needs::Master),
        (
            Method::POST,
            "/api/v1/clients/{T}/keys",
            Some(json!({"scopes": ["read"]})),
            Needs::Master,
        ),
        (
            Method::DELETE,
            "/api/v1/clients/{T}/keys/{K}",
            None,
            Needs::Master,
        ),
        (Method::GET, "/api/v1/clients", None, Needs::Master),
        (
            Method::POST,
            "/api/v1/clients",
            Some(json!({"name": "N", "domain": "n.example"})),
            Needs::Master,
        ),
        (
            Method::GET,
            "/api/v1/clients/{T}/reprocess",
            None,
            Needs::Scope("read"),
        ),
        (
            Method::POST,
            "/api/v1/clients/{T}/reprocess",
            Some(json!({"from_stage": "upload"})),
            Needs::Scope("write"),
        ),
        (
            Method::GET,
            "/api/v1/clients/{T}/webhooks",
            None,
            Needs::Scope("read"),
        ),
        (
            Method::GET,
            "/api/v1/clients/{T}/visits/robots-violations",
            None,
            Needs::Scope("read"),
        ),
        (
            Method::POST,
            "/api/v1/clients/{T}/crawl",
            Some(json!({"urls": ["https://a.example/"], "max_depth": 1})),
            Needs::Scope("write"),
        ),
        (
            Method::POST,
            "/api/v1/clients/{T}/pages/convert",
            Some(json!({"url": "https://a.example/x", "wait_secs": 0})),
            Needs::Scope("write"),
        ),
        (Method::GET, "/api/v1/dead-letters", None, Needs::Master),
        (
            Method::POST,
            "/api/v1/dead-letters/redrive",
            None,
            Needs::Master,
        ),
        (Method::DELETE, "/api/v1/clients/{T}", None, Needs::Master),
    ];
    let principals: Vec<Who> = vec![
        Who::A(&["read"]),
        Who::A(&["write"]),
        Who::A(&["ingest"]),
        Who::A(&["read", "write", "ingest"]),
    ];
    let mut checked = 0;
    for (method, template, body, needs) in &routes {
        for target in [&a, &b] {
            let domain = if target == &a {
                "a.example"
            } else {
                "b.example"
            };
            // A key id of the target client, for the revoke route (never actually revoked: denied).
            let path = template
                .replace("{T}", target)
                .replace("{D}", domain)
                .replace("{K}", &b_key_id);
            for who in &principals {
                let Who::A(scopes) = who else { continue };
                let key = &keys[&scopes.join(",")];
                let mut req = app.request(method.clone(), &path).header("X-API-Key", key);
                if let Some(body) = body {
                    req = req.json(body);
                }
                let (status, answer) = send(req).await;
                let allowed = match needs {
                    Needs::Master => false,
                    Needs::Scope(s) => target == &a && scopes.contains(s),
                };
                if allowed {
                    assert!(
                        matches!(status, 200 | 202),
                        "{who:?} {method} {path}: {status} {answer}"
                    );
                    assert!(
                        !answer.to_string().contains("b.example"),
                        "A's key saw B's data: {answer}"
                    );
                } else {
                    assert!(
                        matches!(status, 403 | 404),
                        "{who:?} {method} {path} must be refused, got {status}: {answer}"
                    );
                    assert!(
                        !answer.to_string().contains(&b),
                        "a refusal leaks nothing of B: {answer}"
                    );
                }
                checked += 1;
            }
        }
    }
    assert_eq!(checked, routes.len() * 2 * principals.len());
    // B is untouched and its key still works.
    let (status, b_now) = app.get_client(&b).await;
    assert_eq!((status, b_now["is_active"].as_bool()), (200, Some(true)));
    let (_, b_keys) = app.get_keys(&b).await;
    assert_eq!(b_keys["keys"][0]["revoked_at"], Value::Null);
    let _ = Who::Master;
}

#[tokio::test]
async fn a_key_is_shown_once_stored_only_as_its_hash_and_revoked_at_once() {
    let app = spawn_api().await;
    let a = create_client(&app, "A", "a.example").await;
    let (key_id, key) = create_key(&app, &a, &["read"]).await;
    assert!(
        key.starts_with("aic_") && key.len() == 47,
        "recognisable prefix: {key}"
    );

    let (_, listed) = app.get_keys(&a).await;
    assert_eq!(listed["count"], 1);
    assert!(
        !listed.to_string().contains(&key),
        "listings never show the key"
    );
    assert_eq!(listed["keys"][0]["display_prefix"], &key[..12]);
    let stored: String = sqlx::query_scalar("SELECT key_hash FROM api_keys")
        .fetch_one(app.db())
        .await
        .expect("row");
    assert_eq!(stored, hex::encode(Sha256::digest(key.as_bytes())));
    let stream = app.js().get_stream("CLIENTS").await.expect("stream");
    for seq in 1..=app.last_seq("CLIENTS").await {
        let msg = stream.get_raw_message(seq).await.expect("message");
        assert!(
            !String::from_utf8_lossy(&msg.payload).contains(&key),
            "the key is in no event"
        );
    }

    let own = format!("/api/v1/clients/{a}");
    assert_eq!(
        send(app.request(Method::GET, &own).header("X-API-Key", &key))
            .await
            .0,
        200
    );
    assert_eq!(
        send(app.request(Method::GET, &own).bearer_auth(&key))
            .await
            .0,
        200
    );
    let (status, _) = send(app.master(
        Method::DELETE,
        &format!("/api/v1/clients/{a}/keys/{key_id}"),
    ))
    .await;
    assert_eq!(status, 200);
    let (status, body) = send(app.request(Method::GET, &own).header("X-API-Key", &key)).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("unauthorized")),
        "revoked keys are refused at once"
    );
    let (_, listed) = app.get_keys(&a).await;
    assert!(listed["keys"][0]["revoked_at"].is_string());
    // Scopes are validated.
    let (status, body) = app.post_key(&a, &json!({"scopes": []})).await;
    assert_eq!(
        (status, body["error"]["field"].as_str()),
        (422, Some("scopes"))
    );
    let (status, _) = app.post_key(&a, &json!({"scopes": ["admin"]})).await;
    assert_eq!(status, 422);
}

#[tokio::test]
async fn a_key_over_its_rate_limit_gets_429_with_retry_after_and_health_is_exempt() {
    let app = TestApp::with_options(
        &[Role::Api, Role::Projections],
        Options {
            rate_limit_per_minute: 5,
            ..Options::default()
        },
    )
    .await;
    let mut remaining = Vec::new();
    for _ in 0..5 {
        let res = app
            .master(Method::GET, "/api/v1/clients")
            .send()
            .await
            .expect("request");
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["x-ratelimit-limit"], "5");
        remaining.push(
            res.headers()["x-ratelimit-remaining"]
                .to_str()
                .expect("ascii")
                .to_owned(),
        );
        assert!(res.headers().contains_key("x-ratelimit-reset"));
    }
    assert_eq!(remaining, ["4", "3", "2", "1", "0"]);
    let res = app
        .master(Method::GET, "/api/v1/clients")
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), 429);
    let retry_after: u64 = res.headers()["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    assert_eq!(res.headers()["x-ratelimit-remaining"], "0");
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["error"]["code"], "rate_limited");
    // Another key has its own budget; health and metrics are not limited.
    let res = app
        .request(Method::GET, "/api/v1/clients")
        .header("X-API-Key", "some-wrong-key")
        .send()
        .await
        .expect("request");
    assert_eq!(
        res.status(),
        401,
        "an unknown key is counted per address, apart from the master's budget"
    );
    for _ in 0..10 {
        assert_eq!(
            app.request(Method::GET, "/health")
                .send()
                .await
                .expect("request")
                .status(),
            200
        );
    }
    assert_eq!(
        app.request(Method::GET, "/metrics")
            .send()
            .await
            .expect("request")
            .status(),
        200
    );
}

#[tokio::test]
async fn the_openapi_document_covers_every_route_and_every_documented_route_is_served() {
    let app = spawn_api().await;
    let (status, doc) = send(app.request(Method::GET, "/api/v1/openapi.json")).await;
    assert_eq!(status, 200);
    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("item").keys() {
            documented.insert(format!("{} {path}", method.to_uppercase()));
        }
    }
    let served: BTreeSet<String> = [
        "GET /health",
        "GET /metrics",
        "GET /api/v1/clients",
        "POST /api/v1/clients",
        "GET /api/v1/clients/{id}",
        "PUT /api/v1/clients/{id}",
        "DELETE /api/v1/clients/{id}",
        "GET /api/v1/clients/by-domain/{domain}",
        "GET /api/v1/clients/{id}/keys",
        "POST /api/v1/clients/{id}/keys",
        "DELETE /api/v1/clients/{id}/keys/{key_id}",
        "POST /api/v1/sitemap/parse",
        "POST /api/v1/sitemap/import",
        "GET /api/v1/sitemap/client/{client_id}/pages",
        "GET /api/v1/pages/{id}",
        "GET /api/v1/clients/{id}/pages/by-url",
        "POST /api/v1/clients/{id}/pages",
        "POST /api/v1/pages/{id}/refresh",
        "POST /api/v1/clients/{id}/refresh",
        "GET /api/v1/pages/{id}/content",
        "POST /api/v1/visits",
        "POST /api/v1/visits/batch",
        "GET /api/v1/clients/{id}/visits/stats",
        "GET /api/v1/clients/{id}/visits/series",
        "GET /api/v1/clients/{id}/visits/referrals",
        "GET /api/v1/clients/{id}/visits",
        "GET /api/v1/me",
        "GET /api/v1/clients/{id}/visits/robots-violations",
        "POST /api/v1/clients/{id}/pages/convert",
        "POST /api/v1/clients/{id}/crawl",
        "GET /api/v1/clients/{id}/crawls/{run_id}",
        "GET /api/v1/pages/{id}/events",
        "GET /api/v1/clients/{id}/events/stream",
        "POST /api/v1/clients/{id}/reprocess",
        "GET /api/v1/clients/{id}/reprocess",
        "GET /api/v1/reprocess/{run}",
        "GET /api/v1/dead-letters",
        "GET /api/v1/dead-letters/{seq}",
        "DELETE /api/v1/dead-letters/{seq}",
        "POST /api/v1/dead-letters/{seq}/redrive",
        "POST /api/v1/dead-letters/redrive",
        "POST /api/v1/clients/{id}/webhooks",
        "GET /api/v1/clients/{id}/webhooks",
        "DELETE /api/v1/clients/{id}/webhooks/{webhook_id}",
        "GET /api/v1/clients/{id}/webhooks/{webhook_id}/deliveries",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(documented, served);
    assert!(doc["components"]["securitySchemes"]["api_key"].is_object());
    // Each documented route really is routed: with the master key it never answers 404/405
    // for the route itself (a made-up id gives a JSON `not_found` error instead).
    for entry in &documented {
        let (method, path) = entry.split_once(' ').expect("entry");
        let path = path
            .replace("{id}", &uuid::Uuid::new_v4().to_string())
            .replace("{key_id}", &uuid::Uuid::new_v4().to_string())
            .replace("{domain}", "nobody.example")
            .replace("{run}", &uuid::Uuid::new_v4().to_string())
            .replace("{webhook_id}", &uuid::Uuid::new_v4().to_string())
            .replace("{seq}", "987654321");
        let method: Method = method.parse().expect("method");
        let mut req = app.master(method.clone(), &path);
        if method == Method::POST || method == Method::PUT {
            req = req.json(&json!({}));
        }
        let (status, body) = send(req).await;
        assert_ne!(status, 405, "{entry}");
        if status == 404 {
            assert_ne!(
                body["error"]["message"], "no such route",
                "{entry} is documented but not routed"
            );
        }
    }
}

#[tokio::test]
async fn deleting_a_client_removes_its_rows_keys_and_events_and_nothing_of_others() {
    let app = spawn_api().await;
    let a = create_client(&app, "A", "a.example").await;
    let b = create_client(&app, "B", "b.example").await;
    create_key(&app, &a, &["read"]).await;
    let publisher = ai_cache::infra::publish::Publisher::new(app.js().clone());
    for (client, n) in [(&a, 3), (&b, 2)] {
        let id: ai_cache::domain::ids::ClientId = client.parse().expect("id");
        for i in 0..n {
            let e = crate::projections::discovered(id, &format!("https://x.example/{i}"));
            publisher
                .publish(&ai_cache::infra::publish::Outgoing::unique(e))
                .await
                .expect("publish");
        }
    }
    app.wait_for_checkpoint("pages", app.last_seq("PAGES").await)
        .await;

    let (status, report) = app.delete_client(&a).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["deleted"]["pages_deleted"], 3);
    assert_eq!(report["deleted"]["api_keys_deleted"], 1);
    assert!(
        report["deleted"]["events_purged"]
            .as_u64()
            .is_some_and(|n| n >= 3 + 3),
        "{report}"
    );
    assert!(
        report["not_deleted"]
            .as_array()
            .is_some_and(|l| !l.is_empty()),
        "the answer says what stays"
    );

    let count = |sql: &'static str, id: &str| {
        let db = app.db().clone();
        let id: uuid::Uuid = id.parse().expect("uuid");
        async move {
            sqlx::query_scalar::<_, i64>(sql)
                .bind(id)
                .fetch_one(&db)
                .await
                .expect("count")
        }
    };
    assert_eq!(
        count("SELECT count(*) FROM pages WHERE client_id = $1", &a).await,
        0
    );
    assert_eq!(
        count("SELECT count(*) FROM api_keys WHERE client_id = $1", &a).await,
        0
    );
    assert_eq!(
        count("SELECT count(*) FROM pages WHERE client_id = $1", &b).await,
        2
    );
    let pages_of_a =
        crate::harness::stream_count(app.js(), "PAGES", Some(&format!("pages.*.{a}.>"))).await;
    let clients_of_a =
        crate::harness::stream_count(app.js(), "CLIENTS", Some(&format!("clients.*.{a}"))).await;
    assert_eq!((pages_of_a, clients_of_a), (0, 0), "its events are purged");
    assert_eq!(
        crate::harness::stream_count(app.js(), "PAGES", Some(&format!("pages.*.{b}.>"))).await,
        2
    );

    // A rebuild from the streams does not bring it back.
    for projection in ai_cache::projections::all() {
        ai_cache::projections::runtime::rebuild(app.db(), app.js(), projection, &|_, _| {})
            .await
            .expect("rebuild");
    }
    assert_eq!(app.get_client(&a).await.0, 404);
    assert_eq!(app.get_client(&b).await.0, 200);
    assert_eq!(
        count("SELECT count(*) FROM pages WHERE client_id = $1", &a).await,
        0
    );
    let _ = MASTER_KEY;
}

#[tokio::test]
async fn keys_are_remembered_until_another_process_revokes_them() {
    let app = spawn_api().await;
    let a = create_client(&app, "A", "a.example").await;
    let (key_id, key) = create_key(&app, &a, &["read", "write"]).await;
    let own = format!("/api/v1/clients/{a}");
    let status = || async {
        send(app.request(Method::GET, &own).header("X-API-Key", &key))
            .await
            .0
    };
    assert_eq!(status().await, 200);
    assert_eq!(status().await, 200);
    // Behind the API's back (no event): a remembered key is not read again.
    sqlx::query("UPDATE api_keys SET revoked_at = now() WHERE id = $1")
        .bind(uuid::Uuid::parse_str(&key_id).expect("uuid"))
        .execute(app.db())
        .await
        .expect("update");
    assert_eq!(status().await, 200, "answered from memory");
    sqlx::query("UPDATE api_keys SET revoked_at = NULL WHERE id = $1")
        .bind(uuid::Uuid::parse_str(&key_id).expect("uuid"))
        .execute(app.db())
        .await
        .expect("update");

    // Another process revokes it (a command, not this API): refused as soon as applied.
    let tenants = TestApp::tenants_with(&app, app.options.fernet_keys.clone());
    let client = ai_cache::domain::ids::ClientId::from_uuid(a.parse().expect("uuid"));
    let visibility = tenants
        .revoke_key(client, key_id.parse().expect("uuid"))
        .await
        .expect("revoke");
    assert_eq!(
        visibility,
        ai_cache::commands::tenants::Visibility::Visible,
        "applied"
    );
    crate::harness::eventually(
        std::time::Duration::from_secs(5),
        "the revoked key is refused",
        || async { status().await == 401 },
    )
    .await;
}
