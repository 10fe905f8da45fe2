//! URL normalization, defined once: every page URL passes through [`NormalizedUrl::parse`]
//! before it is stored, compared or hashed into a page id.
//!
//! The rules (each has a test below):
//! - only `http` and `https`; a host is required; no user name or password;
//! - scheme and host lowercase, IDN hosts in punycode, a trailing dot on the host dropped;
//! - the default port (80 for http, 443 for https) dropped;
//! - `.` and `..` path segments resolved, an empty path becomes `/`;
//! - percent-encoding made canonical (as the WHATWG URL standard does);
//! - the fragment dropped, an empty query (`?` alone) dropped;
//! - the query is otherwise kept as it is: reordering parameters can change what a site serves.
//!
//! The `url` crate implements the WHATWG parser; this module only adds the rules above.

use std::fmt;

use serde::{Deserialize, Serialize};
use url::Url;

/// Longest URL accepted, in bytes after normalization.
pub const MAX_URL_LEN: usize = 8 * 1024;

/// Why a string is not an acceptable page URL.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UrlError {
    #[error("invalid url: {0}")]
    Invalid(#[from] url::ParseError),
    #[error("unsupported scheme {0:?}: only http and https")]
    Scheme(String),
    #[error("url has no host")]
    NoHost,
    #[error("url carries a user name or password")]
    Credentials,
    #[error("url is longer than {MAX_URL_LEN} bytes")]
    TooLong,
}

/// A URL in its one canonical form.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct NormalizedUrl(Url);

impl NormalizedUrl {
    /// Parses and normalizes `input`.
    pub fn parse(input: &str) -> Result<Self, UrlError> {
        let mut url = Url::parse(input.trim())?;
        match url.scheme() {
            "http" | "https" => {}
            other => return Err(UrlError::Scheme(other.to_owned())),
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(UrlError::Credentials);
        }
        let host = url.host_str().ok_or(UrlError::NoHost)?;
        if host.is_empty() {
            return Err(UrlError::NoHost);
        }
        if let Some(stripped) = host.strip_suffix('.') {
            let stripped = stripped.to_owned();
            url.set_host(Some(&stripped))?;
        }
        url.set_fragment(None);
        if url.query() == Some("") {
            url.set_query(None);
        }
        if url.as_str().len() > MAX_URL_LEN {
            return Err(UrlError::TooLong);
        }
        Ok(Self(url))
    }

    /// The normalized URL text.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    /// The host, lowercase (punycode for IDN, brackets around IPv6).
    pub fn host(&self) -> &str {
        // `parse` refused URLs without a host, so this is never empty.
        self.0.host_str().unwrap_or_default()
    }

    /// The parsed form, for callers that need its parts.
    pub fn as_url(&self) -> &Url {
        &self.0
    }
}

impl fmt::Display for NormalizedUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.as_str())
    }
}

impl TryFrom<String> for NormalizedUrl {
    type Error = UrlError;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<NormalizedUrl> for String {
    fn from(value: NormalizedUrl) -> Self {
        value.0.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(s: &str) -> String {
        NormalizedUrl::parse(s).expect("valid url").to_string()
    }

    #[test]
    fn scheme_and_host_are_lowercased() {
        assert_eq!(
            norm("HTTPS://WWW.Example.COM/Path"),
            "https://www.example.com/Path"
        );
    }

    #[test]
    fn default_ports_are_dropped_and_others_kept() {
        assert_eq!(norm("https://example.com:443/a"), "https://example.com/a");
        assert_eq!(norm("http://example.com:80/a"), "http://example.com/a");
        assert_eq!(
            norm("http://example.com:8080/a"),
            "http://example.com:8080/a"
        );
    }

    #[test]
    fn fragment_and_empty_query_are_dropped() {
        assert_eq!(
            norm("https://example.com/a?#section"),
            "https://example.com/a"
        );
        assert_eq!(
            norm("https://example.com/a?x=1#s"),
            "https://example.com/a?x=1"
        );
    }

    #[test]
    fn query_order_is_kept() {
        assert_eq!(
            norm("https://example.com/?b=2&a=1"),
            "https://example.com/?b=2&a=1"
        );
    }

    #[test]
    fn dot_segments_are_resolved_and_empty_path_becomes_slash() {
        assert_eq!(
            norm("https://example.com/a/./b/../c"),
            "https://example.com/a/c"
        );
        assert_eq!(norm("https://example.com"), "https://example.com/");
    }

    #[test]
    fn idn_hosts_become_punycode_and_trailing_dot_is_dropped() {
        assert_eq!(
            norm("https://bücher.example/"),
            "https://xn--bcher-kva.example/"
        );
        assert_eq!(norm("https://example.com./a"), "https://example.com/a");
    }

    #[test]
    fn surrounding_whitespace_is_ignored() {
        assert_eq!(norm("  https://example.com/a \n"), "https://example.com/a");
    }

    #[test]
    fn other_schemes_credentials_and_garbage_are_refused() {
        assert!(matches!(
            NormalizedUrl::parse("ftp://example.com/"),
            Err(UrlError::Scheme(_))
        ));
        assert!(matches!(
            NormalizedUrl::parse("javascript:alert(1)"),
            Err(UrlError::Scheme(_))
        ));
        assert_eq!(
            NormalizedUrl::parse("https://u:p@example.com/"),
            Err(UrlError::Credentials)
        );
        assert!(matches!(
            NormalizedUrl::parse("not a url"),
            Err(UrlError::Invalid(_))
        ));
    }

    #[test]
    fn overlong_urls_are_refused() {
        let long = format!("https://example.com/{}", "a".repeat(MAX_URL_LEN));
        assert_eq!(NormalizedUrl::parse(&long), Err(UrlError::TooLong));
    }

    #[test]
    fn host_is_reported_without_port() {
        assert_eq!(
            NormalizedUrl::parse("https://Example.com:8443/x")
                .expect("url")
                .host(),
            "example.com"
        );
        assert_eq!(
            NormalizedUrl::parse("http://[::1]:8080/")
                .expect("url")
                .host(),
            "[::1]"
        );
        assert_eq!(
            NormalizedUrl::parse("http://[::1]/").expect("url").host(),
            "[::1]"
        );
    }
}
