//! The wire contract: the event envelope, subjects, and one enum per stream.
//!
//! Every event type has a stable name (`pages.discovered`) separate from its Rust name, and a
//! schema version. A published version is never edited: a change adds the next version, an
//! upcast from the previous one, and a golden fixture under `tests/fixtures/events/`.
//! The catalogue for external developers is `docs/EVENTS.md`.

pub mod clients;
pub mod envelope;
pub mod pages;
pub mod subjects;
pub mod visits;

pub use clients::ClientEvent;
pub use envelope::{DecodeError, Event, EventFamily, Meta};
pub use pages::PageEvent;
pub use visits::VisitEvent;

/// The JetStream streams of ai-cache. Their definitions live in `streams/`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StreamName {
    Pages,
    Clients,
    Visits,
    DeadLetter,
}

impl StreamName {
    /// Every stream, in the order they are applied.
    pub const ALL: [StreamName; 4] = [Self::Clients, Self::Pages, Self::Visits, Self::DeadLetter];

    /// The stream's name in JetStream.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Pages => "PAGES",
            Self::Clients => "CLIENTS",
            Self::Visits => "VISITS",
            Self::DeadLetter => "DEADLETTER",
        }
    }

    /// The first token of every subject on the stream.
    pub const fn subject_prefix(self) -> &'static str {
        match self {
            Self::Pages => "pages",
            Self::Clients => "clients",
            Self::Visits => "visits",
            Self::DeadLetter => "deadletter",
        }
    }
}

impl std::fmt::Display for StreamName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
