//! Connecting to NATS.

use std::time::Duration;

use async_nats::jetstream;

/// A connected NATS client and its JetStream context.
#[derive(Clone)]
pub struct Nats {
    pub client: async_nats::Client,
    pub js: jetstream::Context,
}

/// Connecting failed.
#[derive(Debug, thiserror::Error)]
#[error("cannot connect to nats at {url}: {source}")]
pub struct ConnectError {
    url: String,
    #[source]
    source: async_nats::ConnectError,
}

impl Nats {
    /// Connects to `url`, failing fast when nobody answers; reconnects forever afterwards.
    pub async fn connect(url: &str, name: &str) -> Result<Self, ConnectError> {
        let client = async_nats::ConnectOptions::new()
            .name(name)
            .connection_timeout(Duration::from_secs(5))
            .max_reconnects(None)
            .event_callback(|event| async move {
                match event {
                    async_nats::Event::Disconnected => tracing::warn!("nats disconnected"),
                    async_nats::Event::Connected => tracing::info!("nats connected"),
                    other => tracing::debug!(event = %other, "nats event"),
                }
            })
            .connect(url)
            .await
            .map_err(|source| ConnectError {
                url: url.to_owned(),
                source,
            })?;
        let js = jetstream::new(client.clone());
        Ok(Self { client, js })
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
