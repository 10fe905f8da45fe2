//! Connecting to NATS.

use std::time::Duration;

use async_nats::jetstream;

/// A connected NATS client and its JetStream context.
#[derive(Clone)]
pub struct Nats {
    pub client: async_nats::Client,
    pub js: jetstream::Context,
    /// Counts the client's connections: it changes each time the client reconnects.
    connections: tokio::sync::watch::Receiver<u64>,
}

/// Connecting failed. URLs in it never show a password.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The URL is wrong: waiting will not help.
    #[error("NATS_URL {url:?} is not a list of nats:// server URLs: {message}")]
    InvalidUrl { url: String, message: String },
    #[error("cannot connect to nats at {url}: {source}")]
    Unreachable {
        url: String,
        #[source]
        source: async_nats::ConnectError,
    },
}

/// The servers of `url`: one URL, or a cluster's URLs comma-separated.
pub fn servers(url: &str) -> Result<Vec<async_nats::ServerAddr>, ConnectError> {
    url.split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(|u| {
            u.parse::<async_nats::ServerAddr>()
                .map_err(|e| ConnectError::InvalidUrl {
                    url: redacted(url),
                    message: e.to_string(),
                })
        })
        .collect::<Result<Vec<_>, _>>()
        .and_then(|list| {
            if list.is_empty() {
                Err(ConnectError::InvalidUrl {
                    url: redacted(url),
                    message: "no server".into(),
                })
            } else {
                Ok(list)
            }
        })
}

/// `url` with every password replaced by `***`, for messages and logs.
pub fn redacted(url: &str) -> String {
    url.split(',')
        .map(|one| match url::Url::parse(one.trim()) {
            Ok(mut parsed) if parsed.password().is_some() => {
                let _ = parsed.set_password(Some("***"));
                parsed.to_string()
            }
            _ => one.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// The user and password in `addresses` (`nats://user:password@host:4222`), if any: the
/// service's own NATS user when the server requires authentication (docs/DEPLOY.md).
fn credentials(addresses: &[async_nats::ServerAddr]) -> Option<(String, String)> {
    addresses.iter().find_map(|a| {
        let user = a.username()?;
        let password = a.password().unwrap_or_default();
        // URL userinfo is percent-encoded (a `@` or `:` in a password is written %40, %3A).
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        };
        Some((decode(user), decode(password)))
    })
}

impl Nats {
    /// Connects to `url` (one server, or a cluster's servers comma-separated), failing fast
    /// when nobody answers; reconnects forever afterwards, to any of them. A user and
    /// password in the URL authenticate the connection.
    pub async fn connect(url: &str, name: &str) -> Result<Self, ConnectError> {
        let addresses = servers(url)?;
        let (count, connections) = tokio::sync::watch::channel(0u64);
        let count = std::sync::Arc::new(count);
        let mut options = async_nats::ConnectOptions::new();
        if let Some((user, password)) = credentials(&addresses) {
            options = options.user_and_password(user, password);
        }
        let client = options
            .name(name)
            .connection_timeout(Duration::from_secs(5))
            .max_reconnects(None)
            .event_callback(move |event| {
                let count = std::sync::Arc::clone(&count);
                async move {
                    match event {
                        async_nats::Event::Disconnected => tracing::warn!("nats disconnected"),
                        async_nats::Event::Connected => {
                            count.send_modify(|n| *n += 1);
                            tracing::info!("nats connected");
                        }
                        other => tracing::debug!(event = %other, "nats event"),
                    }
                }
            })
            .connect(addresses)
            .await
            .map_err(|source| ConnectError::Unreachable {
                url: redacted(url),
                source,
            })?;
        let js = jetstream::new(client.clone());
        Ok(Self {
            client,
            js,
            connections,
        })
    }

    /// Changes each time the client reconnects: consumers the server may have lost (ordered,
    /// ephemeral ones) are opened again at once instead of after missed heartbeats.
    pub fn reconnects(&self) -> tokio::sync::watch::Receiver<u64> {
        let mut rx = self.connections.clone();
        rx.mark_unchanged();
        rx
    }

    /// Whether the client is connected right now.
    pub fn is_connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }
}

/// The last sequence assigned on `stream` (0 for an empty stream).
pub async fn last_sequence(js: &jetstream::Context, stream: &str) -> Result<u64, String> {
    let mut stream = js.get_stream(stream).await.map_err(|e| e.to_string())?;
    let info = stream.info().await.map_err(|e| e.to_string())?;
    Ok(info.state.last_sequence)
}

/// One page of a stream's messages on `subject` (wildcards allowed) after sequence `after`,
/// oldest first, read by direct get: `keep` turns a message into an item or passes over it.
/// Returns up to `limit` items and, when more follow, the sequence to pass as the next
/// `after`.
pub async fn page_by_subject<T>(
    stream: &jetstream::stream::Stream,
    subject: &str,
    after: u64,
    limit: usize,
    mut keep: impl FnMut(&jetstream::message::StreamMessage) -> Option<T>,
) -> Result<(Vec<T>, Option<u64>), String> {
    use jetstream::stream::DirectGetErrorKind;
    let mut items = Vec::new();
    let mut last_kept = after;
    let mut next = after.saturating_add(1);
    loop {
        let msg = match stream
            .direct_get_next_for_subject(subject, Some(next))
            .await
        {
            Ok(msg) => msg,
            Err(e) if e.kind() == DirectGetErrorKind::NotFound => return Ok((items, None)),
            Err(e) => return Err(e.to_string()),
        };
        next = msg.sequence + 1;
        let Some(item) = keep(&msg) else { continue };
        if items.len() == limit {
            return Ok((items, Some(last_kept)));
        }
        items.push(item);
        last_kept = msg.sequence;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_in_the_url_authenticates_and_its_password_is_never_shown() {
        let url = "nats://ai-cache:p%40ss@n1:4222, nats://n2:4222";
        let addresses = servers(url).expect("servers");
        assert_eq!(
            credentials(&addresses),
            Some(("ai-cache".to_owned(), "p@ss".to_owned()))
        );
        assert_eq!(credentials(&servers("nats://n1:4222").expect("one")), None);
        let shown = redacted(url);
        assert!(
            !shown.contains("p%40ss") && shown.contains("ai-cache:***@n1"),
            "{shown}"
        );
        let refused = servers("nats://ai-cache:secret@n1:4222,::bad").expect_err("bad");
        assert!(!refused.to_string().contains("secret"), "{refused}");
    }
}
