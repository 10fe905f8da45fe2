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
