//! The operator's command line for tenants, run as the real binary against a running app.

use std::process::Command;

use ai_cache::app::Role;
use serde_json::Value;

use crate::harness::TestApp;

pub(crate) fn ai_cache(app: &TestApp, args: &[&str]) -> (bool, String, String) {
    outcome(
        Command::new(env!("CARGO_BIN_EXE_ai-cache"))
            .args(args)
            .env("DATABASE_URL", &app.db_url)
            .env("NATS_URL", app.nats.url())
            .env("FERNET_KEYS", app.options.fernet_keys.join(","))
            .env_remove("FERNET_KEY")
            .env("RUST_LOG", "warn"),
    )
}

/// Runs `command` to its end: (succeeded, stdout, stderr).
pub(crate) fn outcome(command: &mut Command) -> (bool, String, String) {
    let out = command.output().expect("ai-cache runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_and_keys_are_managed_from_the_command_line() {
    let app = TestApp::with_roles(&[Role::Projections]).await;
    let run = |args: &'static [&'static str]| {
        let app = &app;
        tokio::task::block_in_place(move || ai_cache(app, args))
    };
    let (ok, out, err) = run(&[
        "client",
        "add",
        "--name",
        "Example Corp",
        "--domain",
        "Example.com",
        "--cloudflare-api-token",
        "cf-secret",
    ]);
    assert!(ok, "{err}");
    let created: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(created["domain"], "example.com");
    assert_eq!(created["has_cloudflare_token"], true);
    assert!(!out.contains("cf-secret"));

    let (ok, out, err) = run(&["client", "show", "example.com", "--include-secrets"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("cf-secret"),
        "the operator can read it back on purpose"
    );

    let (ok, out, err) = run(&[
        "client",
        "update",
        "example.com",
        "--name",
        "Example Inc",
        "--crawl-rate-per-minute",
        "30",
    ]);
    assert!(ok, "{err}");
    let updated: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(updated["name"], "Example Inc");
    assert_eq!(updated["settings"]["crawl_rate_per_minute"], 30);
    assert_eq!(updated["has_cloudflare_token"], true, "left out, kept");

    // The edge policy, from a JSON file; an invalid one is refused with the field at fault.
    let dir = tempfile::tempdir().expect("dir");
    let policy = dir.path().join("policy.json");
    let with_policy = |json: &str| {
        std::fs::write(&policy, json).expect("write");
        let path = policy.to_str().expect("path");
        tokio::task::block_in_place(|| {
            ai_cache(
                &app,
                &["client", "update", "example.com", "--edge-policy", path],
            )
        })
    };
    let (ok, out, err) = with_policy(
        r#"{"rules": [{"bot": "GPTBot", "action": "charge", "price": "USD 0.01"}], "ai_format": "markdown"}"#,
    );
    assert!(ok, "{err}");
    let updated: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(updated["settings"]["edge"]["rules"][0]["price"], "USD 0.01");
    assert_eq!(updated["settings"]["edge"]["ai_format"], "markdown");
    assert_eq!(updated["settings"]["crawl_rate_per_minute"], 30, "kept");
    let (ok, _, err) = with_policy(r#"{"rules": [{"bot": "GPTBot", "action": "charge"}]}"#);
    assert!(!ok);
    assert!(err.contains("settings.edge.rules[0].price"), "{err}");
    let (ok, _, err) = with_policy(r#"{"rules": [{"bots": "GPTBot", "action": "block"}]}"#);
    assert!(!ok);
    assert!(err.contains("unknown field"), "{err}");

    let (ok, out, err) = run(&[
        "key",
        "create",
        "example.com",
        "--scope",
        "ingest",
        "--name",
        "worker",
    ]);
    assert!(ok, "{err}");
    let key: Value = serde_json::from_str(&out).expect("json");
    let secret = key["key"].as_str().expect("key").to_owned();
    let (ok, out, _) = run(&["key", "list", "example.com"]);
    assert!(ok);
    assert!(out.contains("\"ingest\"") && !out.contains(&secret));

    let (ok, out, _) = run(&["client", "list"]);
    assert!(ok);
    assert_eq!(
        serde_json::from_str::<Value>(&out)
            .expect("json")
            .as_array()
            .map(Vec::len),
        Some(1)
    );

    let (ok, _, err) = run(&["client", "delete", "example.com"]);
    assert!(
        !ok && err.contains("--yes"),
        "deleting asks for confirmation: {err}"
    );
    let (ok, out, err) = run(&["client", "delete", "example.com", "--yes"]);
    assert!(ok, "{err}");
    assert!(out.contains("api_keys_deleted"));
    let (ok, _, err) = run(&["client", "show", "example.com"]);
    assert!(!ok && err.contains("no client"), "{err}");

    let (ok, out, _) = run(&["secrets", "generate-key"]);
    assert!(ok);
    assert!(
        ai_cache::infra::secrets::Secrets::new(&[out.trim()]).is_ok(),
        "a usable key: {out}"
    );
}

#[test]
fn sitemap_parse_prints_one_json_object_per_url_and_fails_on_a_broken_document() {
    let run = |file: &str| {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/sitemaps")
            .join(file);
        Command::new(env!("CARGO_BIN_EXE_ai-cache"))
            .args(["sitemap", "parse"])
            .arg(path)
            .output()
            .expect("runs")
    };
    let ok = run("go-sitemap-parser/test/sitemap-03.xml.gz");
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let lines: Vec<Value> = String::from_utf8_lossy(&ok.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON object per line"))
        .collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0]["loc"], "http://HOST/page-04");
    assert!(
        lines[0]["lastmod"].is_string()
            && lines[0]["changefreq"].is_string()
            && lines[0]["priority"].is_string()
    );

    let broken = run("sitemap-js/unescaped-lt.xml");
    assert!(!broken.status.success(), "a broken document is a failure");
    assert!(String::from_utf8_lossy(&broken.stderr).contains("malformed XML"));
}

/// Runs `ai-cache classify-ua` with `input` on stdin; returns its JSON lines.
fn classify_ua(args: &[&str], input: &str) -> (bool, Vec<Value>, String) {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_ai-cache"))
        .arg("classify-ua")
        .args(args)
        .env_remove("BOT_RANGES_DIR")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("ai-cache runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("output");
    let lines = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    (
        out.status.success(),
        lines,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn classify_ua_reads_user_agents_and_writes_json_lines() {
    let input = "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; GPTBot/1.2; +https://openai.com/gptbot)\n\
                 Mozilla/5.0 (X11; Linux x86_64; rv:140.0) Gecko/20100101 Firefox/140.0\n\
                 Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)\n";
    let (ok, lines, err) = classify_ua(&[], input);
    assert!(ok, "{err}");
    let got: Vec<(&str, Option<&str>, Option<&str>)> = lines
        .iter()
        .map(|l| {
            (
                l["visitor_type"].as_str().expect("type"),
                l["bot_name"].as_str(),
                l["operator"].as_str(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("ai_bot", Some("GPTBot"), Some("OpenAI")),
            ("human", None, None),
            ("search_bot", Some("bingbot"), None),
        ]
    );
    assert!(
        lines[0]["user_agent"]
            .as_str()
            .is_some_and(|u| u.contains("GPTBot"))
    );

    // With ranges: `ip<TAB>user agent` says how far the identity holds.
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::write(dir.path().join("gptbot.txt"), "20.171.206.0/24\n").expect("write");
    let gpt = "Mozilla/5.0 (compatible; GPTBot/1.2; +https://openai.com/gptbot)";
    let (ok, lines, err) = classify_ua(
        &["--ranges-dir", dir.path().to_str().expect("utf-8")],
        &format!("20.171.206.3\t{gpt}\n203.0.113.5\t{gpt}\n"),
    );
    assert!(ok, "{err}");
    assert_eq!(lines[0]["verification"], "ip_verified");
    assert_eq!(lines[1]["verification"], "ip_mismatch");
    let (ok, _, err) = classify_ua(
        &["--ranges-dir", dir.path().to_str().expect("utf-8")],
        &format!("not-an-ip\t{gpt}\n"),
    );
    assert!(!ok && err.contains("not an IP address"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_are_made_listed_and_revoked_from_the_command_line() {
    let app = TestApp::with_roles(&[Role::Projections]).await;
    let dir = tempfile::tempdir().expect("dir");
    let auth_dir = dir.path().join("auth");
    let auth_dir = auth_dir.to_str().expect("utf-8");
    let run = |args: &[&str]| {
        let mut all = vec!["subscriber", "--auth-dir", auth_dir];
        all.extend_from_slice(args);
        tokio::task::block_in_place(|| ai_cache(&app, &all))
    };
    let (ok, _, err) = run(&["create", "example.com"]);
    assert!(!ok && err.contains("subscriber init"), "{err}");
    let (ok, out, err) = run(&["init"]);
    assert!(ok, "{err}");
    assert!(out.contains("NATS_URL=nats://ai-cache:"), "{out}");

    let (ok, _, err) = run(&["create", "example.com"]);
    assert!(!ok && err.contains("no client"), "an unknown client: {err}");
    let (ok, out, err) = tokio::task::block_in_place(|| {
        ai_cache(
            &app,
            &[
                "client",
                "add",
                "--name",
                "Example",
                "--domain",
                "example.com",
            ],
        )
    });
    assert!(ok, "{err}");
    let client: Value = serde_json::from_str(&out).expect("json");
    let (ok, out, err) = run(&["create", "example.com", "--name", "partner"]);
    assert!(ok, "{err}");
    let created: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(created["client_id"], client["id"]);
    let password = created["password"].as_str().expect("password");
    assert_eq!(password.len(), 32);
    assert!(err.contains("reload"), "says how to apply it: {err}");

    let (ok, out, err) = run(&["list"]);
    assert!(ok, "{err}");
    assert!(!out.contains(password), "listed without its password");
    let listed: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(listed[0]["name"], "partner");
    assert_eq!(listed[0]["id"], created["id"]);
    let id = created["id"].as_str().expect("id");
    let (ok, _, err) = run(&["revoke", id]);
    assert!(ok, "{err}");
    let (ok, out, _) = run(&["list"]);
    assert!(ok && serde_json::from_str::<Value>(&out).expect("json") == serde_json::json!([]));
}
