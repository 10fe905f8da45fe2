//! Secrets at rest: Fernet tokens, compatible with Python `cryptography`'s Fernet both ways.
//!
//! Several keys may be configured (`FERNET_KEYS`, comma-separated, or the original system's
//! single `FERNET_KEY`): the first encrypts, all decrypt, so keys can be rotated without a
//! window where old tokens are unreadable. `ai-cache secrets rotate` then re-encrypts every
//! stored secret with the first key.

use std::fmt;

use fernet::{Fernet, MultiFernet};

/// A secret in clear. Its `Debug` and `Display` never show the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value, for the one place that must send it (an HTTP header, a response asked for
    /// with `include_secrets=true`).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// The Fernet keys could not be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecretsError {
    #[error(
        "no fernet key configured: set FERNET_KEY or FERNET_KEYS (generate one with `ai-cache secrets generate-key`)"
    )]
    NoKey,
    #[error("fernet key number {0} is not a valid key (32 url-safe base64 bytes)")]
    InvalidKey(usize),
    #[error("a stored secret cannot be decrypted with any configured fernet key")]
    Undecryptable,
}

/// Encrypts with the first key, decrypts with any.
pub struct Secrets {
    primary: Fernet,
    all: MultiFernet,
    key_count: usize,
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secrets({} keys)", self.key_count)
    }
}

impl Secrets {
    /// From keys in order: the first encrypts.
    pub fn new<S: AsRef<str>>(keys: &[S]) -> Result<Self, SecretsError> {
        let parsed: Vec<Fernet> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| Fernet::new(k.as_ref().trim()).ok_or(SecretsError::InvalidKey(i + 1)))
            .collect::<Result<_, _>>()?;
        let primary = parsed.first().cloned().ok_or(SecretsError::NoKey)?;
        Ok(Self {
            primary,
            key_count: parsed.len(),
            all: MultiFernet::new(parsed),
        })
    }

    /// From `FERNET_KEYS` (comma-separated) or, failing that, `FERNET_KEY`.
    pub fn from_config(keys: Option<&str>, key: Option<&str>) -> Result<Self, SecretsError> {
        let list: Vec<&str> = keys
            .or(key)
            .map(|s| {
                s.split(',')
                    .map(str::trim)
                    .filter(|k| !k.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        Self::new(&list)
    }

    /// A new random key, in the format both this crate and Python accept.
    pub fn generate_key() -> String {
        Fernet::generate_key()
    }

    pub fn encrypt(&self, secret: &Secret) -> String {
        self.primary.encrypt(secret.expose().as_bytes())
    }

    pub fn decrypt(&self, token: &str) -> Result<Secret, SecretsError> {
        let bytes = self
            .all
            .decrypt(token.trim())
            .map_err(|_| SecretsError::Undecryptable)?;
        String::from_utf8(bytes)
            .map(Secret)
            .map_err(|_| SecretsError::Undecryptable)
    }

    /// Whether `token` is already encrypted with the first key (rotation skips it).
    pub fn is_current(&self, token: &str) -> bool {
        self.primary.decrypt(token.trim()).is_ok()
    }

    /// `token` re-encrypted with the first key, or `None` if it already is.
    pub fn reencrypt(&self, token: &str) -> Result<Option<String>, SecretsError> {
        if self.is_current(token) {
            return Ok(None);
        }
        let secret = self.decrypt(token)?;
        Ok(Some(self.encrypt(&secret)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_never_shows_in_debug_output() {
        let s = Secret::new("cf-token-123");
        assert_eq!(format!("{s:?}"), "Secret(***)");
    }

    #[test]
    fn the_first_key_encrypts_and_every_key_decrypts() {
        let (old, new) = (Secrets::generate_key(), Secrets::generate_key());
        let before = Secrets::new(&[&old]).expect("keys");
        let token = before.encrypt(&Secret::new("t0ken"));
        let rotated = Secrets::new(&[&new, &old]).expect("keys");
        assert_eq!(
            rotated.decrypt(&token).expect("old token").expose(),
            "t0ken"
        );
        assert!(!rotated.is_current(&token));
        let fresh = rotated
            .reencrypt(&token)
            .expect("reencrypt")
            .expect("changed");
        assert!(rotated.is_current(&fresh));
        assert_eq!(
            Secrets::new(&[&new])
                .expect("keys")
                .decrypt(&fresh)
                .expect("new key alone")
                .expose(),
            "t0ken"
        );
        assert_eq!(rotated.reencrypt(&fresh), Ok(None));
    }

    #[test]
    fn configuration_reads_fernet_keys_first_then_fernet_key() {
        let (a, b) = (Secrets::generate_key(), Secrets::generate_key());
        let s = Secrets::from_config(Some(&format!("{a}, {b}")), Some("ignored")).expect("keys");
        assert_eq!(s.key_count, 2);
        assert_eq!(
            Secrets::from_config(None, Some(&a)).expect("key").key_count,
            1
        );
        assert_eq!(
            Secrets::from_config(None, None).expect_err("none"),
            SecretsError::NoKey
        );
        assert_eq!(
            Secrets::from_config(Some("nope"), None).expect_err("bad"),
            SecretsError::InvalidKey(1)
        );
    }

    #[test]
    fn a_token_of_an_unknown_key_or_garbage_is_undecryptable() {
        let s = Secrets::new(&[Secrets::generate_key()]).expect("key");
        let other = Secrets::new(&[Secrets::generate_key()]).expect("key");
        assert_eq!(
            s.decrypt(&other.encrypt(&Secret::new("x"))),
            Err(SecretsError::Undecryptable)
        );
        assert_eq!(s.decrypt("garbage"), Err(SecretsError::Undecryptable));
    }
}
