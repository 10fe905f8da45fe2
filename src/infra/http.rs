//! The outbound HTTP client every fetch goes through (sitemaps now, pages in the scraper):
//! an identifiable user agent, only http(s), connect and total timeouts, a redirect limit,
//! a body size cap, and no connection to private, loopback, link-local or otherwise internal
//! addresses unless `ALLOW_PRIVATE_NETWORKS` is set.
//!
//! The address rule is enforced in the DNS resolver the connection itself uses, so it holds
//! for every redirect and cannot be dodged by a name that resolves differently the second time
//! (DNS rebinding); URLs with a literal IP address are checked before each request and hop.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::header::HeaderMap;
use url::Url;

use crate::domain::netaddr;

/// The default user agent: names the product and where to read about it.
pub const DEFAULT_USER_AGENT: &str = concat!(
    "ai-cache/",
    env!("CARGO_PKG_VERSION"),
    " (+https://github.com/ai-cache/ai-cache#crawler; AI-friendly page cache)"
);

/// Settings of the client.
#[derive(Clone, Debug)]
pub struct HttpConfig {
    pub user_agent: String,
    pub allow_private_networks: bool,
    pub connect_timeout: Duration,
    pub timeout: Duration,
    pub max_redirects: usize,
    /// Fixed addresses for some host names, like curl's `--resolve` (staging, the demo site,
    /// tests). The URL's port is used; these hosts skip DNS and the address rule.
    pub resolve: Vec<(String, IpAddr)>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            user_agent: DEFAULT_USER_AGENT.to_owned(),
            allow_private_networks: false,
            connect_timeout: Duration::from_secs(10),
            timeout: Duration::from_secs(30),
            max_redirects: 5,
            resolve: Vec::new(),
        }
    }
}

/// Why a fetch failed.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum FetchError {
    #[error("invalid url {0:?}")]
    InvalidUrl(String),
    #[error("only http and https urls are fetched, not {0}")]
    Scheme(String),
    #[error(
        "{0} is a private or internal address: refused (for a site on this machine or your network while testing, set ALLOW_PRIVATE_NETWORKS=true, or FETCH_RESOLVE=<test host>=<its address>)"
    )]
    BlockedAddress(String),
    /// The host name has no address: a typo, or a name that does not exist (yet).
    #[error("{host} does not resolve (DNS: {cause}): check the host name")]
    Dns { host: String, cause: String },
    #[error("more than {0} redirects")]
    TooManyRedirects(usize),
    #[error("timed out")]
    Timeout,
    #[error("cannot connect: {0}")]
    Connect(String),
    #[error("the body is larger than {0} bytes")]
    TooLarge(usize),
    #[error("{0}")]
    Other(String),
}

impl FetchError {
    /// Whether trying again later may help (network trouble, not our rules).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::Timeout | Self::Connect(_) | Self::Dns { .. } | Self::Other(_)
        )
    }
}

/// A response with its body read (up to the cap).
#[derive(Debug)]
pub struct Fetched {
    /// Where the body came from, after redirects.
    pub url: Url,
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

/// The guarded client.
#[derive(Clone)]
pub struct HttpClient {
    client: reqwest::Client,
    allow_private: bool,
    timeout: Duration,
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HttpClient(allow_private: {})", self.allow_private)
    }
}

/// Why a host name was not resolved to addresses we may connect to.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("the host does not resolve: {0}")]
    Lookup(#[from] std::io::Error),
    #[error("the host resolves to no address")]
    NoAddress,
    /// Marks a refusal so the fetch can tell it apart from other connect errors.
    #[error("{0} resolves to a private or internal address")]
    Blocked(String),
}

/// Resolves `host`, refusing (unless `allow_private`) a name with any address that is not
/// public: the one address rule of every outbound connection (fetches, webhook targets).
pub async fn resolve_guarded(
    host: &str,
    port: u16,
    allow_private: bool,
) -> Result<Vec<SocketAddr>, ResolveError> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port)).await?.collect();
    if addrs.is_empty() {
        return Err(ResolveError::NoAddress);
    }
    if !allow_private && addrs.iter().any(|a| !netaddr::is_public(a.ip())) {
        return Err(ResolveError::Blocked(host.to_owned()));
    }
    Ok(addrs)
}

struct GuardedResolver {
    allow_private: bool,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow_private = self.allow_private;
        let host = name.as_str().to_owned();
        Box::pin(async move {
            match resolve_guarded(&host, 0, allow_private).await {
                Ok(addrs) => Ok(Box::new(addrs.into_iter()) as Addrs),
                // Kept as ours so the fetch can say the name does not resolve.
                Err(e) => Err(e.into()),
            }
        })
    }
}

/// Refuses non-http(s) URLs and literal internal IPs (which no resolver sees).
fn check_url(url: &Url, allow_private: bool) -> Result<(), FetchError> {
    match url.scheme() {
        "http" | "https" => {}
        other => return Err(FetchError::Scheme(other.to_owned())),
    }
    let host = url
        .host_str()
        .ok_or_else(|| FetchError::InvalidUrl(url.to_string()))?;
    let literal = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>();
    if let Ok(ip) = literal
        && !allow_private
        && !netaddr::is_public(ip)
    {
        return Err(FetchError::BlockedAddress(host.to_owned()));
    }
    Ok(())
}

impl HttpClient {
    pub fn new(config: &HttpConfig) -> Result<Self, FetchError> {
        let allow_private = config.allow_private_networks;
        let max = config.max_redirects;
        let policy = reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() > max {
                return attempt.error(FetchError::TooManyRedirects(max));
            }
            match check_url(attempt.url(), allow_private) {
                Ok(()) => attempt.follow(),
                Err(e) => attempt.error(e),
            }
        });
        let mut builder = reqwest::Client::builder();
        for (host, ip) in &config.resolve {
            builder = builder.resolve(host, SocketAddr::new(*ip, 0));
        }
        let client = builder
            .user_agent(&config.user_agent)
            .connect_timeout(config.connect_timeout)
            .timeout(config.timeout)
            .redirect(policy)
            .no_proxy()
            .dns_resolver(Arc::new(GuardedResolver { allow_private }))
            .build()
            .map_err(|e| FetchError::Other(e.to_string()))?;
        Ok(Self {
            client,
            allow_private,
            timeout: config.timeout,
        })
    }

    /// The longest a request takes, redirects and body included.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// GETs `url`, reading at most `max_bytes` of body (more is an error, not a truncation).
    pub async fn get(&self, url: &str, max_bytes: usize) -> Result<Fetched, FetchError> {
        self.get_with(url, max_bytes, HeaderMap::new()).await
    }

    /// GETs `url` with extra request headers (conditional GETs).
    pub async fn get_with(
        &self,
        url: &str,
        max_bytes: usize,
        headers: HeaderMap,
    ) -> Result<Fetched, FetchError> {
        self.request(reqwest::Method::GET, url, headers, None, max_bytes)
            .await
    }

    /// Sends `method` to `url` with `headers` and `body` (a rendered page's requests), reading
    /// at most `max_bytes` of the answer (more is an error, not a truncation).
    pub async fn request(
        &self,
        method: reqwest::Method,
        url: &str,
        headers: HeaderMap,
        body: Option<Vec<u8>>,
        max_bytes: usize,
    ) -> Result<Fetched, FetchError> {
        let parsed = Url::parse(url).map_err(|_| FetchError::InvalidUrl(url.to_owned()))?;
        check_url(&parsed, self.allow_private)?;
        let mut request = self.client.request(method, parsed).headers(headers);
        if let Some(body) = body {
            request = request.body(body);
        }
        let response = request.send().await.map_err(classify)?;
        if let Some(len) = response.content_length()
            && len > max_bytes as u64
        {
            return Err(FetchError::TooLarge(max_bytes));
        }
        let url = response.url().clone();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let mut body = Vec::new();
        let mut stream = response.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(classify)?;
            if body.len() + chunk.len() > max_bytes {
                return Err(FetchError::TooLarge(max_bytes));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Fetched {
            url,
            status,
            headers,
            body,
        })
    }
}

impl HttpClient {
    /// POSTs `body` to `url` under the same address rules as every fetch; returns the status
    /// and at most `max_answer` bytes of the answer (for logs).
    pub async fn post(
        &self,
        url: &str,
        headers: HeaderMap,
        body: Vec<u8>,
        max_answer: usize,
    ) -> Result<(u16, String), FetchError> {
        let parsed = Url::parse(url).map_err(|_| FetchError::InvalidUrl(url.to_owned()))?;
        check_url(&parsed, self.allow_private)?;
        let response = self
            .client
            .post(parsed)
            .headers(headers)
            .body(body)
            .send()
            .await
            .map_err(classify)?;
        let status = response.status().as_u16();
        let mut answer = Vec::new();
        let mut stream = response.bytes_stream();
        while let Some(Ok(chunk)) = stream.next().await {
            answer.extend_from_slice(&chunk);
            if answer.len() >= max_answer {
                answer.truncate(max_answer);
                break;
            }
        }
        Ok((status, String::from_utf8_lossy(&answer).into_owned()))
    }
}

/// Turns a reqwest error into ours, finding our own refusals in its cause chain.
fn classify(e: reqwest::Error) -> FetchError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(err) = source {
        if let Some(ResolveError::Blocked(host)) = err.downcast_ref::<ResolveError>() {
            return FetchError::BlockedAddress(host.clone());
        }
        if let Some(ResolveError::Lookup(io)) = err.downcast_ref::<ResolveError>() {
            let host = e.url().and_then(Url::host_str).unwrap_or("the host");
            return FetchError::Dns {
                host: host.to_owned(),
                cause: io.to_string(),
            };
        }
        if let Some(ours) = err.downcast_ref::<FetchError>() {
            return ours.clone();
        }
        source = err.source();
    }
    if e.is_timeout() {
        FetchError::Timeout
    } else if e.is_connect() {
        // reqwest's own text ("error sending request for url ...") says nothing of why.
        FetchError::Connect(root_cause(&e))
    } else if e.is_redirect() {
        FetchError::Other(format!("redirect failed: {e}"))
    } else {
        FetchError::Other(e.to_string())
    }
}

/// The innermost cause of `e`: "Connection refused (os error 111)" rather than reqwest's
/// "error sending request".
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut last: &(dyn std::error::Error + 'static) = e;
    while let Some(next) = last.source() {
        last = next;
    }
    last.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_internal_ips_and_other_schemes_are_refused_before_any_request() {
        let url = |s: &str| Url::parse(s).expect("url");
        assert_eq!(
            check_url(&url("http://127.0.0.1/x"), false),
            Err(FetchError::BlockedAddress("127.0.0.1".into()))
        );
        assert_eq!(
            check_url(&url("http://[::1]:8080/"), false),
            Err(FetchError::BlockedAddress("[::1]".into()))
        );
        assert!(check_url(&url("http://127.0.0.1/x"), true).is_ok());
        assert_eq!(
            check_url(&url("ftp://example.com/"), false),
            Err(FetchError::Scheme("ftp".into()))
        );
        assert!(check_url(&url("https://example.com/"), false).is_ok());
    }
}
