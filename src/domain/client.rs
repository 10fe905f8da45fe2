//! Tenants: validation and normalization of what a client is made of. Pure: no IO.

use serde::{Deserialize, Serialize};

use super::policy::EdgePolicy;
use super::render_js::RenderJs;

/// A field that failed validation: which one, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Where a client's pages are served from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EdgeTarget {
    /// Cloudflare KV when the client has Cloudflare credentials, else the built-in store.
    #[default]
    Auto,
    Cloudflare,
    Builtin,
}

/// Per-client pipeline settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClientSettings {
    /// How often pages are re-fetched, in seconds.
    pub refresh_interval_secs: u64,
    /// Requests per minute the scraper may send to the client's hosts.
    pub crawl_rate_per_minute: u32,
    /// Generate Markdown with Gemini (when a key is available) instead of locally.
    pub use_gemini: bool,
    pub edge_target: EdgeTarget,
    /// Accept URLs on subdomains of the client's domain.
    pub allow_subdomains: bool,
    /// What the edge serves to whom (absent from events written before policies: the
    /// default policy, which is the behaviour of that time).
    #[serde(default, skip_serializing_if = "EdgePolicy::is_default")]
    pub edge: EdgePolicy,
    /// Whether pages go through a browser before extraction (absent from events written
    /// before rendering: `never`).
    #[serde(default, skip_serializing_if = "RenderJs::is_never")]
    pub render_js: RenderJs,
    /// A CSS selector a rendered page is complete with (else: the network is idle).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub render_wait_for: Option<String>,
}

impl Default for ClientSettings {
    fn default() -> Self {
        Self {
            refresh_interval_secs: 24 * 60 * 60,
            crawl_rate_per_minute: 60,
            use_gemini: false,
            edge_target: EdgeTarget::Auto,
            allow_subdomains: false,
            edge: EdgePolicy::default(),
            render_js: RenderJs::Never,
            render_wait_for: None,
        }
    }
}

/// Longest client name accepted.
pub const MAX_NAME_LEN: usize = 200;
/// Bounds of `refresh_interval_secs`: five minutes to thirty days.
pub const REFRESH_INTERVAL_SECS: std::ops::RangeInclusive<u64> = 300..=30 * 24 * 3600;
/// Bounds of `crawl_rate_per_minute`.
pub const CRAWL_RATE_PER_MINUTE: std::ops::RangeInclusive<u32> = 1..=600;

/// A client name: trimmed, non-empty, at most [`MAX_NAME_LEN`] characters.
pub fn validate_name(name: &str) -> Result<String, FieldError> {
    let name = name.trim();
    if name.is_empty() {
        return Err(FieldError::new("name", "must not be empty"));
    }
    if name.chars().count() > MAX_NAME_LEN {
        return Err(FieldError::new(
            "name",
            format!("must be at most {MAX_NAME_LEN} characters"),
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(FieldError::new(
            "name",
            "must not contain control characters",
        ));
    }
    Ok(name.to_owned())
}

/// A domain as stored: lowercase, IDN in punycode, no scheme, port, path or trailing dot.
/// A scheme with nothing after the host (`https://Example.com/`) is tolerated and dropped;
/// anything else that is not a bare host name is refused.
pub fn normalize_domain(input: &str) -> Result<String, FieldError> {
    let err = |m: &str| FieldError::new("domain", m);
    let mut s = input.trim();
    for scheme in ["https://", "http://"] {
        // Compared as bytes: slicing the text could cut a multi-byte character.
        let bytes = s.as_bytes();
        if bytes.len() >= scheme.len()
            && bytes[..scheme.len()].eq_ignore_ascii_case(scheme.as_bytes())
        {
            s = &s[scheme.len()..];
            s = s.strip_suffix('/').unwrap_or(s);
        }
    }
    if s.is_empty() {
        return Err(err("must not be empty"));
    }
    if s.contains("://") || s.contains(['/', '?', '#', '@', ':', ' ']) {
        return Err(err(
            "must be a bare host name such as example.com (no scheme, port or path)",
        ));
    }
    let s = s.strip_suffix('.').unwrap_or(s);
    let host = match url::Host::parse(s) {
        Ok(url::Host::Domain(d)) => d,
        Ok(_) => return Err(err("must be a domain name, not an IP address")),
        Err(_) => return Err(err("is not a valid domain name")),
    };
    let labels: Vec<&str> = host.split('.').collect();
    let valid_label = |l: &&str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    if labels.len() < 2 && labels.iter().all(valid_label) {
        // `localhost`, `intranet`: a site here needs a name with a dot.
        return Err(err(
            "must be a public domain name with a dot, such as example.com; for a site on this machine, \
             use a test name such as mysite.test and point it at the machine with \
             FETCH_RESOLVE=mysite.test=127.0.0.1",
        ));
    }
    if labels.len() < 2 || !labels.iter().all(valid_label) || host.len() > 253 {
        return Err(err("is not a valid domain name"));
    }
    Ok(host)
}

/// Settings supplied by a caller: any subset, the rest from the current (or default) value.
#[derive(Clone, Debug, Default, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SettingsPatch {
    /// Seconds between refreshes of each page (300 to 2,592,000).
    pub refresh_interval_secs: Option<u64>,
    /// Requests per minute to the client's hosts (1 to 600).
    pub crawl_rate_per_minute: Option<u32>,
    /// Generate Markdown with Gemini when a key is available.
    pub use_gemini: Option<bool>,
    /// `auto`, `cloudflare` or `builtin`.
    #[schema(value_type = Option<String>)]
    pub edge_target: Option<EdgeTarget>,
    /// Accept URLs on subdomains of the client's domain.
    pub allow_subdomains: Option<bool>,
    /// The client's whole edge policy (replaces the current one).
    pub edge: Option<EdgePolicy>,
    /// `never` (pages are read as fetched), `auto` (pages that look built by scripts go
    /// through a browser) or `always`.
    #[schema(value_type = Option<String>)]
    pub render_js: Option<RenderJs>,
    /// A CSS selector a rendered page is complete with (at most 200 characters); `""` clears
    /// it (then a render waits for the network to be idle).
    pub render_wait_for: Option<String>,
}

impl SettingsPatch {
    /// `base` with this patch applied, validated.
    pub fn apply(&self, base: &ClientSettings) -> Result<ClientSettings, FieldError> {
        let s = ClientSettings {
            refresh_interval_secs: self
                .refresh_interval_secs
                .unwrap_or(base.refresh_interval_secs),
            crawl_rate_per_minute: self
                .crawl_rate_per_minute
                .unwrap_or(base.crawl_rate_per_minute),
            use_gemini: self.use_gemini.unwrap_or(base.use_gemini),
            edge_target: self.edge_target.unwrap_or(base.edge_target),
            allow_subdomains: self.allow_subdomains.unwrap_or(base.allow_subdomains),
            edge: self.edge.clone().unwrap_or_else(|| base.edge.clone()),
            render_js: self.render_js.unwrap_or(base.render_js),
            render_wait_for: match &self.render_wait_for {
                None => base.render_wait_for.clone(),
                Some(selector) => wait_selector(selector)?,
            },
        };
        s.edge.validate()?;
        if !REFRESH_INTERVAL_SECS.contains(&s.refresh_interval_secs) {
            return Err(FieldError::new(
                "settings.refresh_interval_secs",
                format!(
                    "must be between {} and {}",
                    REFRESH_INTERVAL_SECS.start(),
                    REFRESH_INTERVAL_SECS.end()
                ),
            ));
        }
        if !CRAWL_RATE_PER_MINUTE.contains(&s.crawl_rate_per_minute) {
            return Err(FieldError::new(
                "settings.crawl_rate_per_minute",
                format!(
                    "must be between {} and {}",
                    CRAWL_RATE_PER_MINUTE.start(),
                    CRAWL_RATE_PER_MINUTE.end()
                ),
            ));
        }
        Ok(s)
    }
}

/// Longest `render_wait_for` accepted.
pub const MAX_WAIT_SELECTOR_LEN: usize = 200;

/// A `render_wait_for` selector: trimmed, empty clears it, printable and bounded. Whether it
/// is a valid selector only the browser can tell: an invalid one never matches, so the
/// render waits for its time budget.
fn wait_selector(selector: &str) -> Result<Option<String>, FieldError> {
    let selector = selector.trim();
    if selector.is_empty() {
        return Ok(None);
    }
    if selector.chars().count() > MAX_WAIT_SELECTOR_LEN || selector.chars().any(char::is_control) {
        return Err(FieldError::new(
            "settings.render_wait_for",
            format!(
                "must be a CSS selector of at most {MAX_WAIT_SELECTOR_LEN} printable characters"
            ),
        ));
    }
    Ok(Some(selector.to_owned()))
}

/// An optional text field (Cloudflare ids): trimmed, empty means absent, bounded length.
pub fn optional_text(
    field: &str,
    value: Option<&str>,
    max: usize,
) -> Result<Option<String>, FieldError> {
    let Some(v) = value.map(str::trim).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    if v.len() > max || v.chars().any(char::is_control) {
        return Err(FieldError::new(
            field,
            format!("must be at most {max} printable characters"),
        ));
    }
    Ok(Some(v.to_owned()))
}

/// A Cloudflare account or namespace id (optional): letters, digits, `-` and `_` only, at
/// most `max` (Cloudflare's are 32 hex digits). Both go into the path of Cloudflare's API, so
/// `../`, `?`, `/` or `%` must never get through.
pub fn cloudflare_id(
    field: &str,
    value: Option<&str>,
    max: usize,
) -> Result<Option<String>, FieldError> {
    let Some(v) = optional_text(field, value, max)? else {
        return Ok(None);
    };
    if !is_cloudflare_id(&v) {
        return Err(FieldError::new(
            field,
            "must be a Cloudflare id: letters, digits, '-' and '_' only",
        ));
    }
    Ok(Some(v))
}

/// Whether `v` has the shape of a Cloudflare account or namespace id.
pub fn is_cloudflare_id(v: &str) -> bool {
    !v.is_empty()
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The Cloudflare edge needs all three of account id, API token and namespace id.
pub fn check_edge_target(
    target: EdgeTarget,
    has_account: bool,
    has_token: bool,
    has_namespace: bool,
) -> Result<(), FieldError> {
    if target == EdgeTarget::Cloudflare && !(has_account && has_token && has_namespace) {
        return Err(FieldError::new(
            "settings.edge_target",
            "cloudflare needs cloudflare_account_id, cloudflare_api_token and cloudflare_kv_namespace_id",
        ));
    }
    Ok(())
}

/// What a per-client API key may do.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Read the client's configuration, pages, content and analytics.
    Read,
    /// Change the client's configuration and pages.
    Write,
    /// Send visits (the Worker's key).
    Ingest,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Write => "write",
            Self::Ingest => "ingest",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "read" => Some(Self::Read),
            "write" => Some(Self::Write),
            "ingest" => Some(Self::Ingest),
            _ => None,
        }
    }
}

/// Scopes of a new key: at least one, each once, sorted.
pub fn validate_scopes(scopes: &[Scope]) -> Result<Vec<Scope>, FieldError> {
    if scopes.is_empty() {
        return Err(FieldError::new(
            "scopes",
            "must name at least one of read, write, ingest",
        ));
    }
    let mut s = scopes.to_vec();
    s.sort();
    s.dedup();
    Ok(s)
}

/// Per-client API keys look like `aic_` followed by 43 URL-safe base64 characters (32 random
/// bytes). The prefix makes a leaked key recognisable (secret scanners, logs).
pub const API_KEY_PREFIX: &str = "aic_";

/// Characters of a key shown in listings (`aic_` and the first 8 random characters).
pub const API_KEY_DISPLAY_LEN: usize = 12;

/// Whether `candidate` has the shape of a per-client key.
pub fn looks_like_client_key(candidate: &str) -> bool {
    candidate.len() == API_KEY_PREFIX.len() + 43
        && candidate.starts_with(API_KEY_PREFIX)
        && candidate[API_KEY_PREFIX.len()..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_byte_domains_are_judged_not_sliced() {
        for input in [
            "aaaaaa\u{e9}",
            "\u{4f8b}\u{3048}.\u{30c6}\u{30b9}\u{30c8}",
            "h\u{e9}tp://x",
            "\u{e9}",
        ] {
            let _ = normalize_domain(input);
        }
        assert_eq!(
            normalize_domain("\u{4f8b}\u{3048}.\u{30c6}\u{30b9}\u{30c8}").as_deref(),
            Ok("xn--r8jz45g.xn--zckzah")
        );
    }

    #[test]
    fn cloudflare_ids_cannot_move_the_api_path() {
        for bad in ["../accounts", "abc?x=1", "a/b", "a%2e", "a b"] {
            assert!(
                cloudflare_id("cloudflare_account_id", Some(bad), 64).is_err(),
                "{bad}"
            );
        }
        assert_eq!(
            cloudflare_id("f", Some(" 0123456789abcdef0123456789abcdef "), 64),
            Ok(Some("0123456789abcdef0123456789abcdef".to_owned()))
        );
        assert_eq!(
            cloudflare_id("f", Some("your-cf-account-id"), 64).map(|v| v.is_some()),
            Ok(true)
        );
    }

    #[test]
    fn domains_are_lowercased_and_idn_becomes_punycode() {
        assert_eq!(
            normalize_domain("Example.COM").as_deref(),
            Ok("example.com")
        );
        assert_eq!(
            normalize_domain("bücher.example").as_deref(),
            Ok("xn--bcher-kva.example")
        );
        assert_eq!(
            normalize_domain(" www.example.com. ").as_deref(),
            Ok("www.example.com")
        );
    }

    #[test]
    fn a_scheme_without_path_is_dropped() {
        assert_eq!(
            normalize_domain("https://Example.com/").as_deref(),
            Ok("example.com")
        );
        assert_eq!(
            normalize_domain("http://example.com").as_deref(),
            Ok("example.com")
        );
    }

    #[test]
    fn paths_ports_ips_and_garbage_are_refused_naming_the_field() {
        for bad in [
            "https://example.com/blog",
            "example.com:8080",
            "example.com/x",
            "127.0.0.1",
            "localhost",
            "",
            "exa mple.com",
            "-bad.com",
            "a..b",
            "user@example.com",
            "ftp://example.com",
        ] {
            let err = normalize_domain(bad).expect_err(bad);
            assert_eq!(err.field, "domain", "{bad}");
        }
    }

    #[test]
    fn names_are_trimmed_and_bounded() {
        assert_eq!(
            validate_name("  Example Corp ").as_deref(),
            Ok("Example Corp")
        );
        assert!(validate_name("   ").is_err());
        assert!(validate_name(&"x".repeat(MAX_NAME_LEN + 1)).is_err());
        assert!(validate_name("a\u{0}b").is_err());
    }

    #[test]
    fn settings_patches_apply_over_defaults_and_are_bounded() {
        let base = ClientSettings::default();
        let patched = SettingsPatch {
            crawl_rate_per_minute: Some(30),
            ..Default::default()
        }
        .apply(&base)
        .expect("valid");
        assert_eq!(patched.crawl_rate_per_minute, 30);
        assert_eq!(patched.refresh_interval_secs, base.refresh_interval_secs);
        let err = SettingsPatch {
            refresh_interval_secs: Some(10),
            ..Default::default()
        }
        .apply(&base)
        .expect_err("too often");
        assert_eq!(err.field, "settings.refresh_interval_secs");
        let err = SettingsPatch {
            crawl_rate_per_minute: Some(0),
            ..Default::default()
        }
        .apply(&base)
        .expect_err("zero");
        assert_eq!(err.field, "settings.crawl_rate_per_minute");
    }

    #[test]
    fn the_cloudflare_edge_needs_every_credential() {
        assert!(check_edge_target(EdgeTarget::Cloudflare, true, true, false).is_err());
        assert!(check_edge_target(EdgeTarget::Cloudflare, true, true, true).is_ok());
        assert!(check_edge_target(EdgeTarget::Auto, false, false, false).is_ok());
    }

    #[test]
    fn scopes_are_deduplicated_and_must_not_be_empty() {
        assert_eq!(
            validate_scopes(&[Scope::Write, Scope::Read, Scope::Write]),
            Ok(vec![Scope::Read, Scope::Write])
        );
        assert!(validate_scopes(&[]).is_err());
    }

    #[test]
    fn client_keys_are_recognised_by_shape() {
        assert!(looks_like_client_key(&format!("aic_{}", "A".repeat(43))));
        assert!(!looks_like_client_key("your-master-api-key"));
        assert!(!looks_like_client_key(&format!("aic_{}", "A".repeat(42))));
    }
}
