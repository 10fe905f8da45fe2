//! Forward-confirmed reverse DNS lookups, bounded and cached: the IP's PTR names, kept when in
//! one of the operator's documented domains (`domain::bots::rdns`), confirmed when one of them
//! resolves back to the IP. Each answer is kept (a confirmation for [`CONFIRMED_TTL`], a
//! refusal for [`REFUSED_TTL`], a lookup that failed or took longer than the timeout for
//! [`FAILED_TTL`]) so a crawler's many requests cost one lookup, and the map is bounded.
//!
//! The resolver is hickory's: the system's (`/etc/resolv.conf`), or one name server given by
//! address (`RDNS_RESOLVER=127.0.0.1:5353`: the tests' own server, or an internal resolver).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::{Name, RData};

use crate::domain::bots::rdns::host_in;

/// How long a confirmation is kept.
pub const CONFIRMED_TTL: Duration = Duration::from_secs(3600);
/// How long a refusal (no PTR in the domains, or not resolving back) is kept.
pub const REFUSED_TTL: Duration = Duration::from_secs(600);
/// How long a failed lookup (timeout, server failure) is kept.
pub const FAILED_TTL: Duration = Duration::from_secs(60);
/// Longest a whole check (PTR, then forward lookups) may take.
pub const TIMEOUT: Duration = Duration::from_secs(2);
/// Most answers kept (beyond it the map starts over).
const MAX_KNOWN: usize = 100_000;
/// Most PTR names followed forward.
const MAX_NAMES: usize = 4;

/// Where the resolver's answers come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RdnsSource {
    /// No lookups: nothing is verified this way.
    Off,
    /// The system's configuration.
    System,
    /// One name server.
    Server(SocketAddr),
}

impl std::str::FromStr for RdnsSource {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "off" => Ok(Self::Off),
            "system" | "" => Ok(Self::System),
            other => other.parse().map(Self::Server).map_err(|_| {
                format!(
                    "{other:?} is not `system`, `off` or a name server's address (127.0.0.1:53)"
                )
            }),
        }
    }
}

/// An address's answer for one set of domains: when, kept how long, confirmed or not.
type Answer = (Instant, Duration, bool);

/// The lookups; cheap to clone.
#[derive(Clone)]
pub struct ReverseDns {
    resolver: Option<TokioResolver>,
    known: Arc<Mutex<HashMap<(IpAddr, &'static str), Answer>>>,
    timeout: Duration,
}

impl ReverseDns {
    pub fn new(source: &RdnsSource) -> Result<Self, String> {
        let resolver = match source {
            RdnsSource::Off => None,
            RdnsSource::System => Some(
                TokioResolver::builder_tokio()
                    .map_err(|e| format!("the system's DNS configuration: {e}"))?
                    .build()
                    .map_err(|e| e.to_string())?,
            ),
            RdnsSource::Server(addr) => {
                let mut udp = ConnectionConfig::udp();
                udp.port = addr.port();
                let mut tcp = ConnectionConfig::tcp();
                tcp.port = addr.port();
                let server = NameServerConfig::new(addr.ip(), true, vec![udp, tcp]);
                let config = ResolverConfig::from_parts(None, Vec::new(), vec![server]);
                Some(
                    TokioResolver::builder_with_config(config, TokioRuntimeProvider::default())
                        .build()
                        .map_err(|e| e.to_string())?,
                )
            }
        };
        Ok(Self {
            resolver,
            known: Arc::new(Mutex::new(HashMap::new())),
            timeout: TIMEOUT,
        })
    }

    /// Whether `ip`'s reverse DNS name is in `domains` and resolves back to `ip`.
    pub async fn confirms(&self, ip: IpAddr, domains: &'static [&'static str]) -> bool {
        let Some(resolver) = &self.resolver else {
            return false;
        };
        let key = (ip, domains.first().copied().unwrap_or_default());
        if let Some((at, ttl, confirmed)) = self
            .known
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
            .copied()
            && at.elapsed() < ttl
        {
            return confirmed;
        }
        let (confirmed, ttl) =
            match tokio::time::timeout(self.timeout, check(resolver, ip, domains)).await {
                Ok(Ok(true)) => (true, CONFIRMED_TTL),
                Ok(Ok(false)) => (false, REFUSED_TTL),
                Ok(Err(e)) => {
                    tracing::debug!(%ip, error = %e, "reverse DNS lookup failed");
                    (false, FAILED_TTL)
                }
                Err(_) => (false, FAILED_TTL),
            };
        metrics::counter!("aicache_rdns_checks_total", "confirmed" => confirmed.to_string())
            .increment(1);
        let mut known = self.known.lock().unwrap_or_else(PoisonError::into_inner);
        if known.len() >= MAX_KNOWN {
            known.clear();
        }
        known.insert(key, (Instant::now(), ttl, confirmed));
        confirmed
    }
}

/// PTR, then forward: `Err` when a lookup failed (other than "no such name").
async fn check(
    resolver: &TokioResolver,
    ip: IpAddr,
    domains: &[&str],
) -> Result<bool, hickory_resolver::net::NetError> {
    let ptr = match resolver.reverse_lookup(Name::from(ip)).await {
        Ok(lookup) => lookup,
        Err(e) if e.is_no_records_found() => return Ok(false),
        Err(e) => return Err(e),
    };
    let names: Vec<Name> = ptr
        .answers()
        .iter()
        .filter_map(|r| match &r.data {
            RData::PTR(name) => Some(name.0.clone()),
            _ => None,
        })
        .filter(|name| host_in(&name.to_ascii(), domains))
        .take(MAX_NAMES)
        .collect();
    for mut name in names {
        name.set_fqdn(true);
        match resolver.lookup_ip(name).await {
            Ok(ips) if ips.iter().any(|a| a == ip) => return Ok(true),
            Ok(_) => {}
            Err(e) if e.is_no_records_found() => {}
            Err(e) => return Err(e),
        }
    }
    Ok(false)
}
