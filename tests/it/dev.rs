//! `ai-cache dev`, the README's first command, end to end: it starts its own nats-server
//! and PostgreSQL, answers `/health` with 200, runs its bundled demo site through the whole
//! pipeline, and stops everything it started on Ctrl-C.

use std::process::{Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::harness::eventually;

#[tokio::test]
async fn dev_starts_the_whole_stack_answers_health_and_stops_cleanly() {
    let data = tempfile::tempdir().expect("tempdir");
    let port = ai_cache::infra::localstack::free_port().expect("port");
    let mut child = Command::new(env!("CARGO_BIN_EXE_ai-cache"))
        .arg("dev")
        .env_remove("NATS_URL")
        .env_remove("DATABASE_URL")
        .env("DATA_DIR", data.path())
        .env("BIND_ADDR", format!("127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("ai-cache dev starts");
    let health = format!("http://127.0.0.1:{port}/health");
    eventually(
        Duration::from_secs(90),
        "dev answers /health with 200",
        || async { reqwest::get(&health).await.is_ok_and(|r| r.status() == 200) },
    )
    .await;
    assert!(
        data.path().join("postgres/PG_VERSION").exists(),
        "its own cluster under DATA_DIR"
    );
    assert!(
        data.path().join("nats/jetstream").exists(),
        "its own JetStream storage under DATA_DIR"
    );

    kill(
        Pid::from_raw(i32::try_from(child.id()).expect("pid")),
        Signal::SIGINT,
    )
    .expect("ctrl-c");
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .expect("join")
        .expect("wait");
    assert!(status.success(), "dev exits cleanly on Ctrl-C: {status}");
    assert!(
        !data.path().join("postgres/postmaster.pid").exists(),
        "postgres was stopped"
    );
    assert!(reqwest::get(&health).await.is_err(), "the API is gone");
}

/// Runs the binary in `dir` with nothing in its environment but PATH.
fn ai_cache_in(dir: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    crate::cli::outcome(
        Command::new(env!("CARGO_BIN_EXE_ai-cache"))
            .args(args)
            .current_dir(dir)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default()),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_works_beside_a_running_dev_stack_with_nothing_exported() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = ai_cache::infra::localstack::free_port().expect("port");
    let mut dev = Command::new(env!("CARGO_BIN_EXE_ai-cache"))
        .args(["--bind-addr", &format!("127.0.0.1:{port}"), "dev"])
        .current_dir(dir.path())
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("ai-cache dev starts");
    let demo = "demo.ai-cache.test";
    let data = dir.path().to_owned();
    eventually(
        Duration::from_secs(120),
        "the demo's pages are live",
        || {
            let data = data.clone();
            async move {
                let (ok, out, _) =
                    tokio::task::spawn_blocking(move || ai_cache_in(&data, &["status", "--json"]))
                        .await
                        .expect("join");
                let status: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
                ok && status["clients"][0]["by_stage"]["live"].as_i64() > Some(0)
            }
        },
    )
    .await;

    let run = |args: &[&str]| tokio::task::block_in_place(|| ai_cache_in(dir.path(), args));
    let (ok, out, err) = run(&["client", "list"]);
    assert!(ok, "client list: {err}");
    assert!(out.contains(demo), "{out}");
    assert!(
        !err.contains("nats connected"),
        "a tool's connection log lines stay off the terminal: {err}"
    );

    let demo_port = std::fs::read_to_string(dir.path().join(".data/demo_port")).expect("port");
    let page = format!("http://{demo}:{}/", demo_port.trim());
    // The wait above is for some page: this one may still be on its way.
    let mut history = String::new();
    eventually(Duration::from_secs(60), "the home page is live", || {
        let (ok, out, err) = run(&["events", "page", &page]);
        assert!(ok, "events page: {err}");
        history = out;
        std::future::ready(history.contains("pages.updated"))
    })
    .await;
    assert!(history.contains("pages.discovered"), "{history}");

    let sitemap = format!("http://{demo}:{}/sitemap.xml", demo_port.trim());
    let (ok, out, err) = run(&["sitemap", "import", "--client", demo, &sitemap]);
    assert!(
        ok,
        "sitemap import, through the dev stack's FETCH_RESOLVE: {err}"
    );
    assert!(out.contains("created"), "{out}");

    let (ok, out, err) = run(&["status"]);
    assert!(ok, "status: {err}");
    assert!(out.contains(&format!("{demo} (")), "{out}");
    assert!(out.contains("stages (waiting · in flight)"), "{out}");
    assert!(out.contains("dead letters: none"), "{out}");
    assert!(!out.contains('\x1b'), "no colour codes in a pipe");

    // The demo's first visitors: AI agents and people, so the dashboard shows something.
    let key = std::fs::read_to_string(dir.path().join(".data/master_api_key")).expect("key");
    let client: serde_json::Value =
        serde_json::from_str(&run(&["client", "list"]).1).expect("json");
    let id = client[0]["id"].as_str().expect("id").to_owned();
    let stats = format!("http://127.0.0.1:{port}/api/v1/clients/{id}/visits/stats");
    eventually(
        Duration::from_secs(60),
        "the demo's first visits are counted",
        || {
            let (stats, key) = (stats.clone(), key.clone());
            async move {
                let Ok(response) = reqwest::Client::new()
                    .get(&stats)
                    .header("x-api-key", key.trim())
                    .send()
                    .await
                else {
                    return false;
                };
                let body: serde_json::Value = response.json().await.unwrap_or_default();
                // Eleven AI reads (one of a page that is not there) and four people's, two
                // of them sent by ChatGPT and Perplexity.
                body["totals"]["visits"] == 15
                    && body["totals"]["ai_visits"] == 11
                    && body["totals"]["human_visits"] == 4
                    && body["totals"]["referrals"] == 2
            }
        },
    )
    .await;

    kill(
        Pid::from_raw(i32::try_from(dev.id()).expect("pid")),
        Signal::SIGINT,
    )
    .expect("ctrl-c");
    let _ = tokio::task::spawn_blocking(move || dev.wait()).await;
}
