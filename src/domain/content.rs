//! Content addressing: SHA-256 hashes of content, and references to blobs by hash.

use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// A SHA-256 digest in lowercase hex (64 characters).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ContentHash(String);

/// A string that is not a SHA-256 hex digest.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("not a sha-256 hex digest: {0:?}")]
pub struct InvalidHash(String);

impl ContentHash {
    /// The hash of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Self(hex::encode(Sha256::digest(bytes)))
    }

    /// Parses a hex digest, accepting upper case.
    pub fn parse(s: &str) -> Result<Self, InvalidHash> {
        if s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
            Ok(Self(s.to_ascii_lowercase()))
        } else {
            Err(InvalidHash(s.to_owned()))
        }
    }

    /// The hex text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for ContentHash {
    type Error = InvalidHash;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<ContentHash> for String {
    fn from(value: ContentHash) -> Self {
        value.0
    }
}

/// Large content kept out of events: its hash (the blob store key) and size in bytes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobRef {
    pub hash: ContentHash,
    pub size: u64,
}

impl BlobRef {
    /// The reference for `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Self {
            hash: ContentHash::of(bytes),
            size: bytes.len() as u64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_of_empty_input_is_the_known_sha256() {
        assert_eq!(
            ContentHash::of(b"").as_str(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn parse_accepts_upper_case_and_refuses_other_text() {
        let upper = "E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855";
        assert_eq!(ContentHash::parse(upper), Ok(ContentHash::of(b"")));
        assert!(ContentHash::parse("abc").is_err());
        assert!(ContentHash::parse(&"g".repeat(64)).is_err());
    }
}
