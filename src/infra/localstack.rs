//! Local servers for `ai-cache dev` and the tests: a nats-server with JetStream and a
//! PostgreSQL cluster, on free ports, with their data in a directory of ours.
//!
//! Each server is our child process. When we are root, PostgreSQL runs as the `postgres`
//! user (it refuses to run as root). A small watchdog process stops each server and
//! (optionally) removes its directory when our process exits, even if it is killed, so no
//! server outlives the command or test run that started it.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::{Pid, User};

/// Starting or stopping a local server failed.
#[derive(Debug, thiserror::Error)]
pub enum LocalStackError {
    #[error("{0} not found: {1}")]
    NotInstalled(&'static str, String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Failed(String),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> LocalStackError {
    let what = what.into();
    move |source| LocalStackError::Io { what, source }
}

/// Where `nats-server` is: `NATS_SERVER_BIN`, the `PATH`, or Debian's `/usr/sbin`.
pub fn find_nats_server() -> Result<PathBuf, LocalStackError> {
    if let Some(bin) = std::env::var_os("NATS_SERVER_BIN") {
        return Ok(PathBuf::from(bin));
    }
    find_on_path("nats-server")
        .or_else(|| Some(PathBuf::from("/usr/sbin/nats-server")).filter(|p| p.exists()))
        .ok_or_else(|| {
            LocalStackError::NotInstalled(
                "nats-server",
                "install it with `apt-get install nats-server` or set NATS_URL".into(),
            )
        })
}

/// Where PostgreSQL's server programs are: `PG_BIN_DIR`, the newest
/// `/usr/lib/postgresql/*/bin`, or the directory of `pg_ctl` on the `PATH`.
pub fn find_postgres_bin_dir() -> Result<PathBuf, LocalStackError> {
    if let Some(dir) = std::env::var_os("PG_BIN_DIR") {
        return Ok(PathBuf::from(dir));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("postgres").exists().then_some((v, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Ok(bin);
    }
    find_on_path("initdb")
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .ok_or_else(|| {
            LocalStackError::NotInstalled(
                "postgresql",
                "install it with `apt-get install postgresql` or set DATABASE_URL".into(),
            )
        })
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// A free TCP port on 127.0.0.1 (free when asked; the server binds it right after).
pub fn free_port() -> Result<u16, LocalStackError> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(io("finding a free port"))?;
    Ok(listener
        .local_addr()
        .map_err(io("finding a free port"))?
        .port())
}

/// `preferred` when it is free (a port kept from an earlier run, so addresses stay the same),
/// else any free port.
pub fn port_or_free(preferred: Option<u16>) -> Result<u16, LocalStackError> {
    match preferred {
        Some(port) if TcpListener::bind(("127.0.0.1", port)).is_ok() => Ok(port),
        _ => free_port(),
    }
}

/// Starts a watchdog that, once `parent` has exited, sends SIGINT to `child` and, when
/// `remove` is given, deletes that directory after the child has exited.
fn spawn_watchdog(child: u32, remove: Option<&Path>) -> Result<(), LocalStackError> {
    let parent = std::process::id();
    let cleanup = remove.map_or(String::new(), |dir| {
        format!(
            "; while kill -0 {child} 2>/dev/null; do sleep 0.2; done; rm -rf '{}'",
            dir.display()
        )
    });
    let script = format!(
        "while kill -0 {parent} 2>/dev/null; do sleep 1; done; kill -INT {child} 2>/dev/null{cleanup}"
    );
    Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(io("starting the watchdog"))?;
    Ok(())
}

fn signal_and_wait(child: &mut Child, signal: Signal, timeout: Duration) {
    if let Ok(pid) = i32::try_from(child.id()) {
        let _ = kill(Pid::from_raw(pid), signal);
    }
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// A nats-server with JetStream, our child process.
pub struct LocalNats {
    child: Option<Child>,
    bin: PathBuf,
    dir: PathBuf,
    config: Option<PathBuf>,
    port: u16,
    remove_on_exit: bool,
}

impl LocalNats {
    /// Starts nats-server with JetStream storage under `dir`, on a free port, with `config`
    /// (e.g. `nats.conf`) when given. `remove_on_exit` deletes `dir` when we exit.
    pub fn start(
        dir: &Path,
        config: Option<&Path>,
        remove_on_exit: bool,
    ) -> Result<Self, LocalStackError> {
        Self::start_on(dir, config, remove_on_exit, free_port()?)
    }

    /// [`LocalNats::start`] on `port`.
    pub fn start_on(
        dir: &Path,
        config: Option<&Path>,
        remove_on_exit: bool,
        port: u16,
    ) -> Result<Self, LocalStackError> {
        let mut nats = Self {
            child: None,
            bin: find_nats_server()?,
            dir: dir.to_path_buf(),
            config: config.map(Path::to_path_buf),
            port,
            remove_on_exit,
        };
        nats.spawn()?;
        Ok(nats)
    }

    fn spawn(&mut self) -> Result<(), LocalStackError> {
        std::fs::create_dir_all(&self.dir)
            .map_err(io(format!("creating {}", self.dir.display())))?;
        let mut cmd = Command::new(&self.bin);
        if let Some(config) = &self.config {
            cmd.arg("-c").arg(config);
        }
        cmd.args([
            "-a",
            "127.0.0.1",
            "-p",
            &self.port.to_string(),
            "-js",
            "-sd",
        ])
        .arg(self.dir.join("jetstream"))
        .arg("-l")
        .arg(self.dir.join("nats-server.log"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        let child = cmd
            .spawn()
            .map_err(io(format!("starting {}", self.bin.display())))?;
        spawn_watchdog(
            child.id(),
            self.remove_on_exit.then_some(self.dir.as_path()),
        )?;
        self.child = Some(child);
        wait_for_port(
            self.port,
            Duration::from_secs(15),
            "nats-server",
            self.child.as_mut(),
        )
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Stops the server (gracefully, SIGTERM); its data stays.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal_and_wait(&mut child, Signal::SIGTERM, Duration::from_secs(10));
        }
    }

    /// Starts the server again on the same port with the same data.
    pub fn restart(&mut self) -> Result<(), LocalStackError> {
        self.stop();
        self.spawn()
    }

    /// Makes the server re-read its configuration file (SIGHUP, what `nats-server --signal
    /// reload` sends); it applies it a moment later.
    pub fn reload(&self) -> Result<(), LocalStackError> {
        let pid = self
            .child
            .as_ref()
            .and_then(|c| i32::try_from(c.id()).ok())
            .ok_or_else(|| LocalStackError::Failed("nats-server is not running".into()))?;
        kill(Pid::from_raw(pid), Signal::SIGHUP)
            .map_err(|e| LocalStackError::Failed(format!("signalling nats-server: {e}")))
    }
}

impl Drop for LocalNats {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Settings for a local PostgreSQL cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// fsync on: for data you keep (`ai-cache dev`).
    Durable,
    /// fsync off: for throwaway test clusters (much faster, unsafe on power loss).
    Throwaway,
}

/// Where a cluster for `wanted` can live. When we are root, PostgreSQL runs as `postgres`,
/// which must be able to reach the directory; a checkout under `/root` (mode 700) is out of
/// its reach, so the cluster then lives under `/var/lib/ai-cache/` instead.
pub fn postgres_dir(wanted: &Path) -> PathBuf {
    let Some(uid) = postgres_uid_if_root() else {
        return wanted.to_path_buf();
    };
    let reachable = wanted.ancestors().skip(1).all(|dir| {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(dir).map_or(true, |m| m.uid() == uid || m.mode() & 0o001 != 0)
    });
    if reachable {
        return wanted.to_path_buf();
    }
    let digest = crate::domain::content::ContentHash::of(wanted.as_os_str().as_encoded_bytes());
    PathBuf::from("/var/lib/ai-cache")
        .join(&digest.as_str()[..12])
        .join("postgres")
}

fn postgres_uid_if_root() -> Option<u32> {
    if !nix::unistd::geteuid().is_root() {
        return None;
    }
    User::from_name("postgres")
        .ok()
        .flatten()
        .map(|u| u.uid.as_raw())
}

/// A PostgreSQL cluster, our child process.
pub struct LocalPostgres {
    child: Option<Child>,
    bin_dir: PathBuf,
    dir: PathBuf,
    port: u16,
    durability: Durability,
    owner: Option<(u32, u32)>,
    remove_on_exit: bool,
}

impl LocalPostgres {
    /// Starts (creating it first if needed) a cluster in `dir`, listening on 127.0.0.1 on a
    /// free port, trust authentication, superuser `postgres`.
    pub fn start(
        dir: &Path,
        durability: Durability,
        remove_on_exit: bool,
    ) -> Result<Self, LocalStackError> {
        Self::start_on(dir, durability, remove_on_exit, free_port()?)
    }

    /// [`LocalPostgres::start`] on `port`.
    pub fn start_on(
        dir: &Path,
        durability: Durability,
        remove_on_exit: bool,
        port: u16,
    ) -> Result<Self, LocalStackError> {
        let owner = if nix::unistd::geteuid().is_root() {
            let user = User::from_name("postgres")
                .map_err(|e| LocalStackError::Failed(format!("looking up user postgres: {e}")))?
                .ok_or_else(|| LocalStackError::Failed("running as root, PostgreSQL needs a `postgres` user: install the postgresql package".into()))?;
            Some((user.uid.as_raw(), user.gid.as_raw()))
        } else {
            None
        };
        let mut pg = Self {
            child: None,
            bin_dir: find_postgres_bin_dir()?,
            dir: dir.to_path_buf(),
            port,
            durability,
            owner,
            remove_on_exit,
        };
        pg.init()?;
        pg.spawn()?;
        Ok(pg)
    }

    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(self.bin_dir.join(program));
        if let Some((uid, gid)) = self.owner {
            std::os::unix::process::CommandExt::uid(&mut cmd, uid);
            std::os::unix::process::CommandExt::gid(&mut cmd, gid);
        }
        cmd.stdin(Stdio::null());
        cmd
    }

    fn init(&self) -> Result<(), LocalStackError> {
        std::fs::create_dir_all(&self.dir)
            .map_err(io(format!("creating {}", self.dir.display())))?;
        if let Some((uid, gid)) = self.owner {
            std::os::unix::fs::chown(&self.dir, Some(uid), Some(gid)).map_err(io(format!(
                "giving {} to the postgres user",
                self.dir.display()
            )))?;
        }
        if self.dir.join("PG_VERSION").exists() {
            return Ok(());
        }
        let out = self
            .command("initdb")
            .arg("-D")
            .arg(&self.dir)
            .args([
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ])
            .output()
            .map_err(io("running initdb"))?;
        if !out.status.success() {
            return Err(LocalStackError::Failed(format!(
                "initdb failed in {} (the postgres user must be able to reach that directory): {}",
                self.dir.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(())
    }

    fn spawn(&mut self) -> Result<(), LocalStackError> {
        let log = std::fs::File::create(self.dir.join("postgres.log"))
            .map_err(io("creating postgres.log"))?;
        if let Some((uid, gid)) = self.owner {
            let _ = std::os::unix::fs::chown(self.dir.join("postgres.log"), Some(uid), Some(gid));
        }
        let log_err = log.try_clone().map_err(io("opening postgres.log"))?;
        let mut cmd = self.command("postgres");
        cmd.arg("-D")
            .arg(&self.dir)
            .args(["-p", &self.port.to_string(), "-k"])
            .arg(&self.dir)
            .args(self.settings());
        cmd.stdout(log).stderr(log_err);
        let child = cmd.spawn().map_err(io("starting postgres"))?;
        spawn_watchdog(
            child.id(),
            self.remove_on_exit.then_some(self.dir.as_path()),
        )?;
        self.child = Some(child);
        wait_for_port(
            self.port,
            Duration::from_secs(30),
            "postgres",
            self.child.as_mut(),
        )
    }

    /// The server's `-c` settings: loopback only, and no fsync for throwaway clusters.
    ///
    /// New WAL segments are not zero-filled (`wal_init_zero=off`): a cluster we start is
    /// often new, has no old segments to recycle, and zero-filled a fresh 16 MB segment
    /// every few thousand visits (15% of PostgreSQL's time applying visits in the bench),
    /// which a long-running server, recycling its segments, does not do. Durability is
    /// the same: WAL is still written and flushed at each commit; on ext4 the file's
    /// blocks are allocated when written instead of ahead.
    fn settings(&self) -> Vec<&'static str> {
        let mut settings = vec![
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "max_connections=200",
            "-c",
            "wal_init_zero=off",
        ];
        if self.durability == Durability::Throwaway {
            settings.extend([
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
            ]);
        }
        settings
    }

    /// The URL of database `db` as superuser.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// Stops the cluster (fast shutdown: SIGINT); its data stays.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal_and_wait(&mut child, Signal::SIGINT, Duration::from_secs(20));
        }
    }

    /// Starts the cluster again on the same port.
    pub fn restart(&mut self) -> Result<(), LocalStackError> {
        self.stop();
        self.spawn()
    }
}

impl Drop for LocalPostgres {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Waits until `port` accepts connections, failing early if the process exited.
fn wait_for_port(
    port: u16,
    timeout: Duration,
    what: &str,
    child: Option<&mut Child>,
) -> Result<(), LocalStackError> {
    let deadline = Instant::now() + timeout;
    let mut child = child;
    loop {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        if let Some(child) = child.as_deref_mut()
            && let Ok(Some(status)) = child.try_wait()
        {
            return Err(LocalStackError::Failed(format!(
                "{what} exited at start-up ({status}); see its log"
            )));
        }
        if Instant::now() > deadline {
            return Err(LocalStackError::Failed(format!(
                "{what} did not listen on port {port} within {timeout:?}"
            )));
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Creates database `name` on the server at `admin_url` unless it exists.
pub async fn ensure_database(admin_url: &str, name: &str) -> Result<(), sqlx::Error> {
    use sqlx::Connection;
    let mut conn = connect_with_retry(admin_url, Duration::from_secs(30)).await?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(name)
            .fetch_one(&mut conn)
            .await?;
    if !exists {
        // The name is quoted as an identifier; callers pass fixed or generated names.
        let sql = format!("CREATE DATABASE \"{}\"", name.replace('"', "\"\""));
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&mut conn)
            .await?;
    }
    conn.close().await
}

/// Connects, retrying while the server is still starting up.
pub async fn connect_with_retry(
    url: &str,
    timeout: Duration,
) -> Result<sqlx::PgConnection, sqlx::Error> {
    use sqlx::Connection;
    let deadline = Instant::now() + timeout;
    loop {
        match sqlx::PgConnection::connect(url).await {
            Ok(conn) => return Ok(conn),
            Err(e) if Instant::now() > deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}
