//! Scale-out on a NATS cluster, proven: the 3-node configuration of `deploy/nats/` (ports
//! moved to free loopback ones), every stream with 3 replicas (the limits bucket excepted, see
//! `streams::SINGLE_REPLICA`), two processes running every
//! stage (the real binary), pages imported, and the node leading `PAGES` stopped mid-run and
//! started again. Every page ends live with exactly one `pages.updated`, nothing is
//! dead-lettered, and the verified rebuild finds the projections equal. The pause the leader
//! change caused is printed (BENCHMARKS.md).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ai_cache::infra::localstack::{self, LocalNats};
use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::{MASTER_KEY, eventually, eventually_ok, fresh_database, stream_count};
use crate::page_origin::PageOrigin;

/// A node's configuration: the shipped file with its hosts and ports moved to loopback.
fn node_config(node: usize, routes: &[u16], monitor: u16) -> String {
    let path = format!("{}/deploy/nats/n{node}.conf", env!("CARGO_MANIFEST_DIR"));
    let mut conf = std::fs::read_to_string(path).expect("deploy/nats config");
    for (i, port) in routes.iter().enumerate() {
        conf = conf.replace(
            &format!("nats-route://n{}:6222", i + 1),
            &format!("nats-route://127.0.0.1:{port}"),
        );
    }
    conf.replace("0.0.0.0:6222", &format!("127.0.0.1:{}", routes[node - 1]))
        .replace("0.0.0.0:8222", &format!("127.0.0.1:{monitor}"))
        .replace("max_file_store: 50G", "max_file_store: 1G")
        // The harness gives each node its storage directory itself (-sd).
        .replace("store_dir: /var/lib/nats", "")
}

struct Cluster {
    nodes: Vec<LocalNats>,
}

impl Cluster {
    /// Three nodes on free ports. A port found free can be taken by another test before its
    /// node binds it: then the cluster is started again on new ports (three tries).
    fn start() -> Self {
        let mut last = String::new();
        for _ in 0..3 {
            match Self::try_start() {
                Ok(cluster) => return cluster,
                Err(e) => last = e,
            }
        }
        panic!("the cluster does not start: {last}");
    }

    fn try_start() -> Result<Self, String> {
        let ports = |n| {
            (0..n)
                .map(|_| localstack::free_port().expect("port"))
                .collect::<Vec<u16>>()
        };
        let (routes, monitors) = (ports(3), ports(3));
        let nodes = (1..=3)
            .map(|node| {
                let dir = tempfile::Builder::new()
                    .prefix("aicache-cluster-")
                    .tempdir()
                    .expect("dir")
                    .keep();
                let conf = dir.join(format!("n{node}.conf"));
                std::fs::write(&conf, node_config(node, &routes, monitors[node - 1]))
                    .expect("config");
                LocalNats::start(&dir.join("data"), Some(&conf), true).map_err(|e| e.to_string())
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { nodes })
    }

    fn url(&self) -> String {
        self.nodes
            .iter()
            .map(LocalNats::url)
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// `ai-cache run` with `roles` against the cluster; killed when dropped. Its warnings (and the
/// runtime's hand-offs) go to a log file, printed when the test fails.
struct Process(Child, PathBuf);

impl Process {
    fn run(db_url: &str, nats_url: &str, roles: &str, bind: &str) -> Self {
        let log = std::env::temp_dir().join(format!(
            "aicache-cluster-{}.log",
            uuid::Uuid::new_v4().simple()
        ));
        let stderr = std::fs::File::create(&log).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_ai-cache"))
            .args(["run", "--roles", roles])
            .env("DATABASE_URL", db_url)
            .env("NATS_URL", nats_url)
            .env("NATS_STREAM_REPLICAS", "3")
            .env("MASTER_API_KEY", MASTER_KEY)
            .env(
                "FERNET_KEYS",
                ai_cache::infra::secrets::Secrets::generate_key(),
            )
            .env_remove("FERNET_KEY")
            .env("ALLOW_PRIVATE_NETWORKS", "true")
            .env("FETCH_RESOLVE", "site.test=127.0.0.1")
            .env("BIND_ADDR", bind)
            .env("RUST_LOG", "warn,ai_cache::pipeline::runtime=info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("ai-cache runs");
        Self(child, log)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        if std::thread::panicking() {
            let text = std::fs::read_to_string(&self.1).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(80)..].join("\n");
            eprintln!("--- the last lines of {} ---\n{tail}", self.1.display());
        }
        let _ = std::fs::remove_file(&self.1);
    }
}

async fn api(base: &str, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .request(method, format!("{base}{path}"))
        .header("X-API-Key", MASTER_KEY);
    if let Some(body) = body {
        req = req.json(&body);
    }
    let res = req.send().await.expect("request");
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

/// The server leading `stream`, if it has one now (none during an election).
async fn leader_of(js: &async_nats::jetstream::Context, stream: &str) -> Option<String> {
    let mut stream = js.get_stream(stream).await.ok()?;
    let info = stream.info().await.ok()?;
    info.cluster.as_ref().and_then(|c| c.leader.clone())
}

/// The leader of `PAGES`, moved off the server holding the single-replica limits bucket
/// first if both are on one server. This test is about a leader change of the replicated
/// streams; losing the limits bucket's server is another case: scraping then waits for it
/// (pacing cannot be shared without it, and it never goes faster), as ARCHITECTURE.md says.
async fn leader_apart_from_limits(js: &async_nats::jetstream::Context) -> String {
    let limits = leader_of(js, "KV_limits").await.expect("limits placed");
    for _ in 0..10 {
        let leader = leader_of(js, "PAGES").await.expect("a leader");
        if leader != limits {
            return leader;
        }
        js.client()
            .request("$JS.API.STREAM.LEADER.STEPDOWN.PAGES", "".into())
            .await
            .expect("leader stepdown");
        eventually(
            Duration::from_secs(30),
            "PAGES elects another leader",
            || {
                let previous = leader.clone();
                async move { leader_of(js, "PAGES").await.is_some_and(|l| l != previous) }
            },
        )
        .await;
    }
    panic!("PAGES keeps its leader on the limits bucket's server {limits}");
}

async fn live(db: &sqlx::PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM pages WHERE stage = 'live'")
        .fetch_one(db)
        .await
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pipeline_runs_on_a_3_node_cluster_through_a_leader_change() {
    const PAGES: i64 = 120;
    let mut cluster = tokio::task::spawn_blocking(Cluster::start)
        .await
        .expect("join");
    let nats_url = cluster.url();
    let (db_url, db) = fresh_database().await;
    let port = localstack::free_port().expect("port");
    let base = format!("http://127.0.0.1:{port}");
    let all = "api,projections,scraper,markdown,renderer,uploader";
    let _first = Process::run(&db_url, &nats_url, all, &format!("127.0.0.1:{port}"));
    let _second = Process::run(
        &db_url,
        &nats_url,
        "projections,scraper,markdown,renderer,uploader",
        "127.0.0.1:0",
    );
    eventually(Duration::from_secs(60), "the API answers", || async {
        reqwest::get(format!("{base}/health")).await.is_ok()
    })
    .await;
    let client = reqwest::Client::new();
    let js = ai_cache::infra::nats::Nats::connect(&nats_url, "cluster-test")
        .await
        .expect("nats")
        .js;
    // The API may answer before the processes have created the replicated streams (three
    // nodes agree on each): wait for PAGES to exist.
    let mut pages = eventually_ok(Duration::from_secs(60), || js.get_stream("PAGES")).await;
    assert_eq!(
        pages.info().await.expect("info").config.num_replicas,
        3,
        "NATS_STREAM_REPLICAS applied"
    );
    drop(client);

    let origin = PageOrigin::start().await;
    let (status, created) = api(
        &base,
        Method::POST,
        "/api/v1/clients",
        Some(json!({"name": "Site", "domain": "site.test",
                    "settings": {"crawl_rate_per_minute": 600}})),
    )
    .await;
    assert!(matches!(status, 200 | 201), "{created}");
    let id = created["id"].as_str().expect("id").to_owned();
    let paths: Vec<String> = (0..PAGES).map(|i| format!("/c/{i}")).collect();
    let urls = origin.articles(&paths);
    let (status, body) = api(
        &base,
        Method::POST,
        &format!("/api/v1/clients/{id}/pages"),
        Some(json!({ "urls": urls })),
    )
    .await;
    assert!(matches!(status, 200 | 202), "{body}");

    // Mid-run, the node leading PAGES goes away.
    eventually(
        Duration::from_secs(60),
        "a third of the pages is live",
        || async { live(&db).await >= PAGES / 3 },
    )
    .await;
    let leader = leader_apart_from_limits(&js).await;
    let index = leader
        .trim_start_matches('n')
        .parse::<usize>()
        .expect("node name")
        - 1;
    let stopped_at = live(&db).await;
    let stopped = Instant::now();
    tokio::task::block_in_place(|| cluster.nodes[index].stop());
    // The pause: from the stop until pages go live again on the new leader.
    eventually(Duration::from_secs(90), "pages go live again", || async {
        live(&db).await > stopped_at + 5
    })
    .await;
    let pause = stopped.elapsed();
    tokio::task::block_in_place(|| cluster.nodes[index].restart()).expect("node restarts");

    eventually(Duration::from_secs(120), "every page is live", || async {
        live(&db).await == PAGES
    })
    .await;
    println!(
        "LEADER CHANGE: PAGES leader {leader} stopped with {stopped_at} of {PAGES} pages live; \
         5 more were live {:.1} s later",
        pause.as_secs_f64()
    );
    assert_eq!(
        stream_count(&js, "PAGES", Some("pages.updated.>")).await,
        PAGES as u64,
        "exactly one pages.updated per page"
    );
    assert_eq!(stream_count(&js, "DEADLETTER", None).await, 0);
    let verify = tokio::task::block_in_place(|| {
        Command::new(env!("CARGO_BIN_EXE_ai-cache"))
            .args(["replay", "projections", "--verify"])
            .env("DATABASE_URL", &db_url)
            .env("NATS_URL", &nats_url)
            .env("NATS_STREAM_REPLICAS", "3")
            .env("RUST_LOG", "warn")
            .output()
            .expect("replay runs")
    });
    assert!(
        verify.status.success(),
        "{}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
}
