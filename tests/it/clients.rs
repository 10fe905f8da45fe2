//! The original client API, event-sourced: the seed's examples, uniqueness, validation,
//! bad input, secrets at rest (Python-compatible Fernet), rotation and deletion.

use ai_cache::app::Role;
use ai_cache::events::Event;
use ai_cache::events::clients::{ClientEvent, ClientSettings, ClientState};
use ai_cache::infra::publish::{Outgoing, Publisher};
use ai_cache::infra::secrets::Secrets;
use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::{Options, TestApp};

pub async fn spawn_api() -> TestApp {
    TestApp::with_roles(&[Role::Api, Role::Projections]).await
}

pub async fn send(req: reqwest::RequestBuilder) -> (u16, Value) {
    let res = req.send().await.expect("request");
    let status = res.status().as_u16();
    let text = res.text().await.expect("body");
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// Creates a client with the master key; returns its id.
pub async fn create_client(app: &TestApp, name: &str, domain: &str) -> String {
    let (status, body) = app
        .post_client(&json!({"name": name, "domain": domain}))
        .await;
    assert_eq!(status, 201, "{body}");
    body["id"].as_str().expect("id").to_owned()
}

/// Creates a key with `scopes` for `client` through the API; returns (key id, key).
pub async fn create_key(app: &TestApp, client: &str, scopes: &[&str]) -> (String, String) {
    let (status, body) = app
        .post_key(&client, &json!({"scopes": scopes, "name": "test"}))
        .await;
    assert_eq!(status, 201, "{body}");
    (
        body["id"].as_str().expect("id").to_owned(),
        body["key"].as_str().expect("key").to_owned(),
    )
}

fn python_fixture() -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/fernet/python-made.json");
    serde_json::from_slice(&std::fs::read(path).expect("fixture")).expect("json")
}

#[tokio::test]
async fn the_seed_examples_work_as_documented() {
    let app = spawn_api().await;
    // "Option B: Using the API", body verbatim.
    let (status, created) = app
        .post_client(&json!({
            "name": "Example Corp",
            "domain": "example.com",
            "cloudflare_account_id": "your-cf-account-id",
            "cloudflare_api_token": "your-cf-api-token",
            "cloudflare_kv_namespace_id": "your-kv-namespace-id"
        }))
        .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().expect("id").to_owned();
    assert_eq!(created["name"], "Example Corp");
    assert_eq!(created["domain"], "example.com");
    assert_eq!(created["has_cloudflare_token"], true);
    assert_eq!(created["is_active"], true);
    assert!(
        created.get("cloudflare_api_token").is_none(),
        "secrets are not returned by default"
    );

    // List: immediately readable (read-your-writes), with `count`.
    let (status, list) = app.list_clients().await;
    assert_eq!(status, 200);
    assert_eq!(list["count"], 1);
    assert_eq!(list["clients"][0]["id"], id.as_str());
    assert_eq!(list["clients"][0]["has_cloudflare_token"], true);

    let (status, one) = app.get_client(&id).await;
    assert_eq!(status, 200);
    assert_eq!(one["cloudflare_kv_namespace_id"], "your-kv-namespace-id");
    let (_, with_secrets) = send(app.master(
        Method::GET,
        &format!("/api/v1/clients/{id}?include_secrets=true"),
    ))
    .await;
    assert_eq!(with_secrets["cloudflare_api_token"], "your-cf-api-token");
    let (status, by_domain) =
        send(app.master(Method::GET, "/api/v1/clients/by-domain/example.com")).await;
    assert_eq!(status, 200);
    assert_eq!(by_domain["id"], id.as_str());

    // "Update Client", body verbatim.
    let (status, updated) = app
        .put_client(
            &id,
            &json!({
                "cloudflare_api_token": "new-token",
                "is_active": false
            }),
        )
        .await;
    assert_eq!(status, 200, "{updated}");
    assert_eq!(updated["is_active"], false);
    let (_, with_secrets) = send(app.master(
        Method::GET,
        &format!("/api/v1/clients/{id}?include_secrets=true"),
    ))
    .await;
    assert_eq!(with_secrets["cloudflare_api_token"], "new-token");

    // "Create Client" second example, with every field.
    let (status, second) = app
        .post_client(&json!({
            "name": "Second Corp", "domain": "second.example", "cloudflare_account_id": "abc123",
            "cloudflare_api_token": "secret-token", "cloudflare_kv_namespace_id": "kv123",
            "gemini_api_key": "optional-key", "is_active": true
        }))
        .await;
    assert_eq!(status, 201, "{second}");
    assert_eq!(second["has_gemini_key"], true);

    let (status, deleted) = app.delete_client(&id).await;
    assert_eq!(status, 200, "{deleted}");
    assert_eq!(app.get_client(&id).await.0, 404);
    assert_eq!(app.list_clients().await.1["count"], 1);
}

#[tokio::test]
async fn names_and_domains_are_unique_and_domains_are_normalized() {
    let app = spawn_api().await;
    let (status, body) = app
        .post_client(&json!({"name": "Bücher", "domain": "https://Bücher.Example/"}))
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["domain"], "xn--bcher-kva.example");
    let (status, body) = app
        .post_client(&json!({"name": "Other", "domain": "XN--BCHER-KVA.example"}))
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("conflict")),
        "{body}"
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("domain"))
    );
    let (status, body) = app
        .post_client(&json!({"name": "Bücher", "domain": "else.example"}))
        .await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("name"))
    );
    // By domain finds it however the domain is spelled.
    assert_eq!(
        send(app.master(Method::GET, "/api/v1/clients/by-domain/BÜCHER.example"))
            .await
            .0,
        200
    );
    // An update cannot take another client's domain either.
    let other = create_client(&app, "Other", "other.example").await;
    let (status, _) = app
        .put_client(&other, &json!({"domain": "xn--bcher-kva.example"}))
        .await;
    assert_eq!(status, 409);
}

#[tokio::test]
async fn invalid_fields_are_422_naming_the_field() {
    let app = spawn_api().await;
    let cases = [
        (
            json!({"name": "A", "domain": "https://a.example/path"}),
            "domain",
        ),
        (json!({"domain": "a.example"}), "name"),
        (json!({"name": "", "domain": "a.example"}), "name"),
        (
            json!({"name": "A", "domain": "a.example", "nmae": "typo"}),
            "nmae",
        ),
        (
            json!({"name": "A", "domain": "a.example", "is_active": "yes"}),
            "is_active",
        ),
        (
            json!({"name": "A", "domain": "a.example", "settings": {"refresh_interval_secs": 5}}),
            "settings.refresh_interval_secs",
        ),
        (
            json!({"name": "A", "domain": "a.example", "settings": {"edge_target": "cloudflare"}}),
            "settings.edge_target",
        ),
        (
            json!({"name": "A", "domain": "a.example", "settings": {"edge_target": "moon"}}),
            "settings.edge_target",
        ),
    ];
    for (body, field) in cases {
        let (status, answer) = app.post_client(&body).await;
        assert_eq!(status, 422, "{body} → {answer}");
        assert_eq!(answer["error"]["code"], "validation_failed");
        assert_eq!(answer["error"]["field"], field, "{body} → {answer}");
    }
    assert_eq!(
        app.list_clients().await.1["count"],
        0,
        "nothing was created"
    );
}

#[tokio::test]
async fn bad_requests_get_the_right_status_and_the_json_error_shape() {
    let app = TestApp::with_options(
        &[Role::Api, Role::Projections],
        Options {
            max_body_bytes: 4096,
            ..Options::default()
        },
    )
    .await;
    let id = create_client(&app, "A", "a.example").await;
    let malformed = app
        .master(Method::POST, "/api/v1/clients")
        .header("content-type", "application/json")
        .body("{\"name\": ");
    let huge = app
        .master(Method::POST, "/api/v1/clients")
        .header("content-type", "application/json")
        .body(format!("{{\"name\": \"{}\"}}", "x".repeat(10_000)));
    let cases: Vec<(reqwest::RequestBuilder, u16, &str)> = vec![
        (malformed, 400, "malformed_json"),
        (huge, 413, "payload_too_large"),
        (
            app.master(Method::POST, "/api/v1/clients").body("name=A"),
            415,
            "unsupported_media_type",
        ),
        (
            app.master(
                Method::GET,
                &format!("/api/v1/clients/{}", uuid::Uuid::new_v4()),
            ),
            404,
            "not_found",
        ),
        (
            app.master(Method::GET, "/api/v1/clients/not-a-uuid"),
            400,
            "bad_request",
        ),
        (
            app.master(Method::GET, "/api/v1/clients?limit=0"),
            400,
            "invalid_query",
        ),
        (
            app.master(Method::GET, "/api/v1/clients?limit=5000"),
            400,
            "invalid_query",
        ),
        (
            app.master(Method::GET, "/api/v1/clients?offset=-1"),
            400,
            "invalid_query",
        ),
        (
            app.master(Method::GET, "/api/v1/clients?limit=abc"),
            400,
            "invalid_query",
        ),
        (
            app.master(Method::PATCH, &format!("/api/v1/clients/{id}")),
            405,
            "method_not_allowed",
        ),
        (
            app.master(Method::GET, "/api/v1/clients/by-domain/no-such.example"),
            404,
            "not_found",
        ),
        (
            app.request(Method::GET, "/api/v1/clients"),
            401,
            "unauthorized",
        ),
        (
            app.request(Method::GET, "/api/v1/clients")
                .header("X-API-Key", "wrong"),
            401,
            "unauthorized",
        ),
    ];
    for (req, status, code) in cases {
        let (got, body) = send(req).await;
        assert_eq!(
            (got, body["error"]["code"].as_str()),
            (status, Some(code)),
            "{body}"
        );
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
    }
    let (status, _) = send(
        app.request(Method::GET, "/api/v1/clients")
            .bearer_auth(crate::harness::MASTER_KEY),
    )
    .await;
    assert_eq!(status, 200, "Authorization: Bearer works like X-API-Key");
}

/// Finds a Python interpreter with `cryptography` (installed by scripts/ensure-services).
fn python_with_fernet() -> String {
    for candidate in ["python3", "/usr/bin/python3"] {
        let ok = std::process::Command::new(candidate)
            .args(["-c", "import cryptography.fernet"])
            .output()
            .is_ok_and(|o| o.status.success());
        if ok {
            return candidate.to_owned();
        }
    }
    panic!("no python3 with the cryptography package: run scripts/ensure-services");
}

#[tokio::test]
async fn tokens_made_by_python_decrypt_and_stored_tokens_decrypt_in_python() {
    let fixture = python_fixture();
    let key = fixture["key"].as_str().expect("key").to_owned();
    let secrets = Secrets::new(&[&key]).expect("python's key is a valid key");
    for t in fixture["tokens"].as_array().expect("tokens") {
        let plain = secrets
            .decrypt(t["token"].as_str().expect("token"))
            .expect("python token decrypts");
        assert_eq!(plain.expose(), t["plaintext"].as_str().expect("plaintext"));
    }

    let app = TestApp::with_options(
        &[Role::Api, Role::Projections],
        Options {
            fernet_keys: vec![key.clone()],
            ..Options::default()
        },
    )
    .await;
    // The original system's data: a client whose token Python encrypted.
    let token = fixture["tokens"][0]["token"]
        .as_str()
        .expect("token")
        .to_owned();
    let client = ai_cache::domain::ids::ClientId::new_random();
    let state = ClientState {
        name: "Original".into(),
        domain: "original.example".into(),
        cloudflare_account_id: None,
        cloudflare_api_token_encrypted: Some(token),
        cloudflare_kv_namespace_id: None,
        gemini_api_key_encrypted: None,
        is_active: true,
        settings: ClientSettings::default(),
    };
    let published = Publisher::new(app.js().clone())
        .publish(&Outgoing::unique(Event::new(
            client,
            None,
            ClientEvent::Registered(state),
        )))
        .await
        .expect("publish");
    app.wait_for_checkpoint("clients", published.sequence).await;
    let (_, body) = send(app.master(
        Method::GET,
        &format!("/api/v1/clients/{client}?include_secrets=true"),
    ))
    .await;
    assert_eq!(
        body["cloudflare_api_token"],
        fixture["tokens"][0]["plaintext"]
    );

    // What ai-cache stores decrypts with Python's Fernet.
    let id = {
        let (status, b) = app
            .post_client(
                &json!({"name": "New", "domain": "new.example", "gemini_api_key": "gem-ïni-key"}),
            )
            .await;
        assert_eq!(status, 201);
        b["id"]
            .as_str()
            .expect("id")
            .parse::<uuid::Uuid>()
            .expect("uuid")
    };
    let stored: Vec<u8> =
        sqlx::query_scalar("SELECT gemini_api_key_encrypted FROM clients WHERE id = $1")
            .bind(id)
            .fetch_one(app.db())
            .await
            .expect("row");
    assert!(
        !String::from_utf8_lossy(&stored).contains("gem-ïni-key"),
        "stored encrypted"
    );
    let script = "import sys; from cryptography.fernet import Fernet; sys.stdout.write(Fernet(sys.argv[1].encode()).decrypt(sys.argv[2].encode()).decode())";
    let out = std::process::Command::new(python_with_fernet())
        .args([
            "-c",
            script,
            &key,
            &String::from_utf8(stored).expect("ascii token"),
        ])
        .output()
        .expect("python runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8(out.stdout).expect("utf-8"), "gem-ïni-key");
}

#[tokio::test]
async fn secrets_never_travel_in_clear_in_events() {
    let app = spawn_api().await;
    let (status, _) = app.post_client(&json!({"name": "A", "domain": "a.example", "cloudflare_api_token": "PLAINTEXT-CF-TOKEN", "gemini_api_key": "PLAINTEXT-GEMINI"})).await;
    assert_eq!(status, 201);
    let stream = app.js().get_stream("CLIENTS").await.expect("stream");
    let raw = stream.get_raw_message(1).await.expect("event");
    let text = String::from_utf8_lossy(&raw.payload);
    assert!(!text.contains("PLAINTEXT"), "{text}");
    assert!(text.contains("cloudflare_api_token_encrypted"));
}

#[tokio::test]
async fn rotation_reencrypts_every_secret_with_the_first_key_through_events() {
    let old = Secrets::generate_key();
    let app = TestApp::with_options(
        &[Role::Api, Role::Projections],
        Options {
            fernet_keys: vec![old.clone()],
            ..Options::default()
        },
    )
    .await;
    let (status, body) = app
        .post_client(
            &json!({"name": "A", "domain": "a.example", "cloudflare_api_token": "cf-token"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let b = create_client(&app, "B", "b.example").await; // no client secrets
    let (status, hook) = app
        .post_webhook(&b, &json!({"url": "https://hooks.b.example/in"}))
        .await;
    assert_eq!(status, 201, "{hook}");

    let new = Secrets::generate_key();
    let rotating = TestApp::tenants_with(&app, vec![new.clone(), old.clone()]);
    assert_eq!(
        rotating.rotate_secrets().await.expect("rotate"),
        2,
        "A's token and B's webhook secret"
    );
    let webhook_secret: Vec<u8> = sqlx::query_scalar("SELECT secret_encrypted FROM webhooks")
        .fetch_one(app.db())
        .await
        .expect("webhook row");
    assert_eq!(
        Secrets::new(&[&new])
            .expect("key")
            .decrypt(&String::from_utf8_lossy(&webhook_secret))
            .expect("the new key alone decrypts the webhook secret")
            .expose(),
        hook["secret"].as_str().expect("secret")
    );
    let stored: Vec<u8> =
        sqlx::query_scalar("SELECT cloudflare_api_token_encrypted FROM clients WHERE name = 'A'")
            .fetch_one(app.db())
            .await
            .expect("row");
    let only_new = Secrets::new(&[&new]).expect("key");
    assert_eq!(
        only_new
            .decrypt(&String::from_utf8_lossy(&stored))
            .expect("new key alone")
            .expose(),
        "cf-token"
    );
    assert_eq!(
        rotating.rotate_secrets().await.expect("rotate again"),
        0,
        "nothing left to rotate"
    );
    let updates =
        crate::harness::stream_count(app.js(), "CLIENTS", Some("clients.updated.>")).await;
    assert_eq!(
        updates, 1,
        "rotation goes through one clients.updated event"
    );
}
