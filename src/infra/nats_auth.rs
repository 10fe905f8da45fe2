//! NATS users for the service and for integrators who subscribe to the bus itself.
//!
//! An auth directory holds `users.json` (the registry: who exists, bcrypt hashes only) and
//! `auth.conf`, rendered from it, which nats-server includes (`include "auth/auth.conf"`)
//! and re-reads on a reload. The service's own user may do everything; a subscriber user may
//! subscribe to one client's `pages.updated.<client_id>.>` and publish nothing, so it cannot
//! read another client's events, create JetStream consumers or write events. Passwords are
//! shown once, when made; nats-server checks them against the bcrypt hashes.
//!
//! Plain users and passwords rather than nkeys or JWT accounts: every NATS client takes them
//! in its URL (`nats://user:password@host:4222`), the server config holds no secret, and no
//! account server is needed.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use rand::Rng;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The service's own user name.
pub const SERVICE_USER: &str = "ai-cache";

/// bcrypt's cost: nats-server checks a hash on every connection, so not more.
const BCRYPT_COST: u32 = 11;

const REGISTRY: &str = "users.json";
const CONFIG: &str = "auth.conf";

/// Managing the auth directory failed.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("{0}")]
    Io(String),
    #[error(
        "{0} has no NATS users yet: run `ai-cache subscriber init` first (it makes the service's own user)"
    )]
    NotInitialized(PathBuf),
    #[error("{0} already holds NATS users; the service's user exists")]
    AlreadyInitialized(PathBuf),
    #[error("no subscriber {0}")]
    UnknownSubscriber(String),
}

/// One subscriber: a user that may read one client's `pages.updated` events.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscriber {
    pub id: Uuid,
    pub client_id: Uuid,
    /// A label for people (who it was given to).
    pub name: String,
    pub user: String,
    pub password_hash: String,
    pub created_at: DateTime<Utc>,
}

impl Subscriber {
    /// The subjects it may subscribe to.
    pub fn subjects(&self) -> String {
        format!("pages.updated.{}.>", self.client_id)
    }
}

/// What `users.json` holds.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Registry {
    service_password_hash: String,
    subscribers: Vec<Subscriber>,
}

/// A user and the password to give to whoever uses it (shown once).
#[derive(Debug)]
pub struct Credentials {
    pub user: String,
    pub password: String,
}

impl Credentials {
    /// `nats://user:password@<host_port>`.
    pub fn url(&self, host_port: &str) -> String {
        format!("nats://{}:{}@{host_port}", self.user, self.password)
    }
}

/// The auth directory.
#[derive(Clone, Debug)]
pub struct AuthDir {
    dir: PathBuf,
}

impl AuthDir {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The file nats-server includes.
    pub fn config_path(&self) -> PathBuf {
        self.dir.join(CONFIG)
    }

    /// Makes the service's user (once) and writes `auth.conf`.
    pub fn init(&self) -> Result<Credentials, AuthError> {
        if self.dir.join(REGISTRY).exists() {
            return Err(AuthError::AlreadyInitialized(self.dir.clone()));
        }
        std::fs::create_dir_all(&self.dir).map_err(io(&self.dir))?;
        let password = new_password();
        let registry = Registry {
            service_password_hash: hash(&password)?,
            subscribers: Vec::new(),
        };
        self.save(&registry)?;
        Ok(Credentials {
            user: SERVICE_USER.into(),
            password,
        })
    }

    /// A new subscriber for `client_id`.
    pub fn create(
        &self,
        client_id: Uuid,
        name: &str,
    ) -> Result<(Subscriber, Credentials), AuthError> {
        let mut registry = self.load()?;
        let id = Uuid::new_v4();
        let password = new_password();
        let subscriber = Subscriber {
            id,
            client_id,
            name: name.to_owned(),
            user: format!("subscriber-{}", id.simple()),
            password_hash: hash(&password)?,
            created_at: Utc::now(),
        };
        registry.subscribers.push(subscriber.clone());
        self.save(&registry)?;
        let credentials = Credentials {
            user: subscriber.user.clone(),
            password,
        };
        Ok((subscriber, credentials))
    }

    /// Every subscriber, oldest first.
    pub fn list(&self) -> Result<Vec<Subscriber>, AuthError> {
        Ok(self.load()?.subscribers)
    }

    /// Removes a subscriber (by id or user name).
    pub fn revoke(&self, which: &str) -> Result<Subscriber, AuthError> {
        let mut registry = self.load()?;
        let at = registry
            .subscribers
            .iter()
            .position(|s| s.id.to_string() == which || s.user == which)
            .ok_or_else(|| AuthError::UnknownSubscriber(which.to_owned()))?;
        let removed = registry.subscribers.remove(at);
        self.save(&registry)?;
        Ok(removed)
    }

    fn load(&self) -> Result<Registry, AuthError> {
        let path = self.dir.join(REGISTRY);
        let text = match std::fs::read(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(AuthError::NotInitialized(self.dir.clone()));
            }
            Err(e) => return Err(AuthError::Io(format!("{}: {e}", path.display()))),
        };
        serde_json::from_slice(&text).map_err(|e| AuthError::Io(format!("{}: {e}", path.display())))
    }

    /// Writes the registry, then the config rendered from it, each through a temporary file
    /// renamed into place (a reload never reads half a file).
    fn save(&self, registry: &Registry) -> Result<(), AuthError> {
        let json = serde_json::to_vec_pretty(registry)
            .map_err(|e| AuthError::Io(format!("encoding the users: {e}")))?;
        write_file(&self.dir.join(REGISTRY), &json, 0o600)?;
        // nats-server (often its own user) must read it; it holds no password, only hashes of
        // 32 random characters.
        write_file(&self.config_path(), render(registry).as_bytes(), 0o644)
    }
}

/// `auth.conf` for `registry`: nats-server's `authorization` block (JSON values are valid in
/// its configuration language).
fn render(registry: &Registry) -> String {
    let mut users = vec![serde_json::json!({
        "user": SERVICE_USER,
        "password": registry.service_password_hash,
    })];
    for s in &registry.subscribers {
        users.push(serde_json::json!({
            "user": s.user,
            "password": s.password_hash,
            "permissions": {
                "publish": { "deny": [">"] },
                "subscribe": { "allow": [s.subjects()] },
            },
        }));
    }
    let users = serde_json::to_string_pretty(&users).unwrap_or_else(|_| "[]".into());
    format!(
        "# Written by `ai-cache subscriber`; edits are overwritten. Reload nats-server after a\n\
         # change: `nats-server --signal reload` (or send it SIGHUP).\n\
         authorization {{\n  users: {users}\n}}\n"
    )
}

/// A password of 32 letters and digits: safe in a URL as it is.
fn new_password() -> String {
    rand::rng()
        .sample_iter(rand::distr::Alphanumeric)
        .take(32)
        .map(char::from)
        .collect()
}

/// A bcrypt hash in the `$2a$` form nats-server reads.
fn hash(password: &str) -> Result<String, AuthError> {
    bcrypt::hash_with_result(password, BCRYPT_COST)
        .map(|parts| parts.format_for_version(bcrypt::Version::TwoA))
        .map_err(|e| AuthError::Io(format!("hashing a password: {e}")))
}

fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), AuthError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let temporary = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&temporary)
        .map_err(io(&temporary))?;
    file.write_all(bytes).map_err(io(&temporary))?;
    file.sync_all().map_err(io(&temporary))?;
    std::fs::rename(&temporary, path).map_err(io(path))
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> AuthError + '_ {
    move |e| AuthError::Io(format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscribers_may_read_their_clients_updates_only_and_publish_nothing() {
        let dir = tempfile::tempdir().expect("dir");
        let auth = AuthDir::new(dir.path().join("auth"));
        assert!(matches!(
            auth.create(Uuid::new_v4(), "x"),
            Err(AuthError::NotInitialized(_))
        ));
        let service = auth.init().expect("init");
        assert!(matches!(auth.init(), Err(AuthError::AlreadyInitialized(_))));
        let client = Uuid::from_u128(42);
        let (subscriber, credentials) = auth.create(client, "partner").expect("create");
        let config = std::fs::read_to_string(auth.config_path()).expect("config");
        assert!(
            config.contains(&format!("\"pages.updated.{client}.>\"")),
            "{config}"
        );
        assert!(config.contains("\"deny\": [\n"), "{config}");
        for secret in [&service.password, &credentials.password] {
            assert!(
                !config.contains(secret.as_str()),
                "no password in the config"
            );
        }
        assert!(bcrypt::verify(&credentials.password, &subscriber.password_hash).expect("hash"));
        assert!(subscriber.password_hash.starts_with("$2a$"));
        assert_eq!(auth.list().expect("list"), vec![subscriber.clone()]);
        assert_eq!(
            auth.revoke(&subscriber.user).expect("revoke").id,
            subscriber.id
        );
        assert!(auth.list().expect("list").is_empty());
        assert!(matches!(
            auth.revoke(&subscriber.id.to_string()),
            Err(AuthError::UnknownSubscriber(_))
        ));
        assert!(
            !std::fs::read_to_string(auth.config_path())
                .expect("config")
                .contains(&subscriber.user)
        );
    }
}
