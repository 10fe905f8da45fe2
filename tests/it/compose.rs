//! The container setup, tested without a Docker engine (none runs on our machines): every
//! ai-cache service of `docker-compose.yml` is started as a local process with its own command
//! and environment (the servers' addresses moved to the test's own NATS and PostgreSQL, the
//! keys an `.env` would give), and a page goes live through them. The compose files' shape
//! (every role, restarts, health checks, volumes, the cluster file) and the Dockerfile's
//! (nothing ignored copied, a non-root user) are checked beside it.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use ai_cache::app::Role;
use reqwest::Method;
use serde_json::{Value, json};
use serde_yaml::Value as Yaml;

use crate::harness::{MASTER_KEY, eventually, fresh_database, start_nats};
use crate::page_origin::{Page, PageOrigin, article};

fn read(path: &str) -> String {
    std::fs::read_to_string(format!("{}/{path}", env!("CARGO_MANIFEST_DIR"))).expect(path)
}

/// A compose file with its `<<` merge keys applied.
fn compose(path: &str) -> Yaml {
    let mut doc: Yaml = serde_yaml::from_str(&read(path)).expect("YAML");
    doc.apply_merge().expect("merge keys");
    doc
}

/// The ai-cache services (those built from the Dockerfile): name, command, environment.
fn ai_cache_services(doc: &Yaml) -> Vec<(String, Vec<String>, BTreeMap<String, String>)> {
    let services = doc["services"].as_mapping().expect("services");
    services
        .iter()
        .filter(|(_, s)| s.get("build").is_some())
        .map(|(name, s)| {
            let command = s["command"]
                .as_sequence()
                .expect("command")
                .iter()
                .map(|a| a.as_str().expect("argument").to_owned())
                .collect();
            let env = s["environment"]
                .as_mapping()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| {
                            let v = v.as_str().map_or_else(
                                || serde_yaml::to_string(v).unwrap_or_default(),
                                str::to_owned,
                            );
                            (k.as_str().expect("key").to_owned(), v.trim().to_owned())
                        })
                        .collect()
                })
                .unwrap_or_default();
            (name.as_str().expect("name").to_owned(), command, env)
        })
        .collect()
}

struct Running(Vec<Child>);

impl Drop for Running {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[test]
fn every_role_runs_restarts_and_is_checked() {
    let doc = compose("docker-compose.yml");
    let services = ai_cache_services(&doc);
    let mut roles: Vec<String> = Vec::new();
    for (name, command, _) in &services {
        let s = &doc["services"][name.as_str()];
        assert_eq!(s["restart"], "unless-stopped", "{name}");
        assert_eq!(s["env_file"], ".env", "{name} reads its keys from .env");
        assert_eq!(command[..2], ["run", "--roles"], "{name}");
        roles.extend(command[2].split(',').map(str::to_owned));
    }
    for role in Role::ALL {
        let name = clap::ValueEnum::to_possible_value(&role)
            .expect("a role has a name")
            .get_name()
            .to_owned();
        assert_eq!(
            roles.iter().filter(|r| **r == name).count(),
            1,
            "{name} runs in exactly one service"
        );
    }
    assert!(
        doc["services"]["api"]["healthcheck"]["test"]
            .as_sequence()
            .is_some_and(|t| t
                .iter()
                .any(|a| a.as_str().is_some_and(|a| a.ends_with("/health"))))
    );
    for volume in ["nats-data", "pg-data"] {
        assert!(doc["volumes"].get(volume).is_some(), "{volume}");
    }
    let cluster = compose("deploy/compose.cluster.yml");
    for node in ["n1", "n2", "n3"] {
        let command = &cluster["services"][node]["command"];
        assert_eq!(command[1], format!("/etc/nats/{node}.conf"), "{node}");
    }
    for service in ["api", "projections", "pipeline", "operations"] {
        let env = &cluster["services"][service]["environment"];
        assert_eq!(env["NATS_STREAM_REPLICAS"], "3", "{service}");
        assert_eq!(
            env["NATS_URL"].as_str().map(|u| u.split(',').count()),
            Some(3)
        );
    }
}

#[test]
fn the_image_is_built_without_local_data_and_runs_as_a_user() {
    let ignored = read(".dockerignore");
    for path in ["target/", ".data/", ".git/", "worker/node_modules/", ".env"] {
        assert!(
            ignored.lines().any(|l| l.trim() == path),
            "{path} stays out of the build context"
        );
    }
    let dockerfile = read("Dockerfile");
    let last_stage = dockerfile.rsplit("\nFROM ").next().expect("a stage");
    let user = last_stage
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("the image names its user");
    assert!(!matches!(user.trim(), "root" | "0"), "runs as {user}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_compose_services_run_as_processes_and_a_page_goes_live() {
    let nats = tokio::task::spawn_blocking(start_nats).await.expect("join");
    let (db_url, _db) = fresh_database().await;
    let port = ai_cache::infra::localstack::free_port().expect("port");
    let base = format!("http://127.0.0.1:{port}");
    let fernet = ai_cache::infra::secrets::Secrets::generate_key();
    let services = ai_cache_services(&compose("docker-compose.yml"));
    let mut running = Running(Vec::new());
    for (name, command, env) in services {
        let mut process = Command::new(env!("CARGO_BIN_EXE_ai-cache"));
        process.args(&command).env_clear().env("RUST_LOG", "warn");
        for (key, value) in env {
            let value = match key.as_str() {
                "DATABASE_URL" => db_url.clone(),
                "NATS_URL" => nats.url(),
                "BIND_ADDR" => format!("127.0.0.1:{port}"),
                _ => value,
            };
            process.env(key, value);
        }
        // What scripts/compose-env writes to .env, and the test origin's name.
        process
            .env("MASTER_API_KEY", MASTER_KEY)
            .env("FERNET_KEYS", &fernet)
            .env("ALLOW_PRIVATE_NETWORKS", "true")
            .env("FETCH_RESOLVE", "site.test=127.0.0.1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        running
            .0
            .push(process.spawn().unwrap_or_else(|e| panic!("{name}: {e}")));
    }
    eventually(
        Duration::from_secs(60),
        "the api service answers",
        || async { reqwest::get(format!("{base}/health")).await.is_ok() },
    )
    .await;
    let http = reqwest::Client::new();
    let call = |method: Method, path: String, body: Value| {
        http.request(method, format!("{base}{path}"))
            .header("X-API-Key", MASTER_KEY)
            .json(&body)
            .send()
    };
    let created: Value = call(
        Method::POST,
        "/api/v1/clients".into(),
        json!({"name": "Site", "domain": "site.test"}),
    )
    .await
    .expect("request")
    .json()
    .await
    .expect("json");
    let client = created["id"].as_str().expect("id").to_owned();
    let origin = PageOrigin::start().await;
    origin.set(
        "/p",
        Page::html(&article("A page served through the compose services.", "0")),
    );
    let url = origin.url("/p");
    let added = call(
        Method::POST,
        format!("/api/v1/clients/{client}/pages"),
        json!({"urls": [url]}),
    )
    .await
    .expect("request");
    assert_eq!(added.status(), 200);
    eventually(Duration::from_secs(60), "the page is live", || async {
        let row: Value = http
            .get(format!(
                "{base}/api/v1/clients/{client}/pages/by-url?url={url}"
            ))
            .header("X-API-Key", MASTER_KEY)
            .send()
            .await
            .expect("request")
            .json()
            .await
            .unwrap_or(Value::Null);
        row["stage"] == "live"
    })
    .await;
}
