//! Subject builders: `<stream>.<event>.<client_id>[.<page_id>]`, lowercase.
//!
//! External systems subscribe with the filters built here: `pages.updated.>` for every client,
//! `pages.updated.<client_id>.*` for one.

use crate::domain::ids::{ClientId, PageId};

/// The subject of an event of type `event_type` (which already reads `<stream>.<event>`).
pub fn event_subject(event_type: &str, client: ClientId, page: Option<PageId>) -> String {
    match page {
        Some(page) => format!("{event_type}.{client}.{page}"),
        None => format!("{event_type}.{client}"),
    }
}

/// Every event of one type, all clients: `pages.updated.>`.
pub fn all_of_type(event_type: &str) -> String {
    format!("{event_type}.>")
}

/// Every event of one type for one client's pages: `pages.updated.<client_id>.*`.
pub fn client_pages_of_type(event_type: &str, client: ClientId) -> String {
    format!("{event_type}.{client}.*")
}

/// Every event of one client on a stream: `pages.*.<client_id>.>` (page events) or
/// `clients.*.<client_id>` (client events). Used to purge a deleted client's data.
pub fn client_on_stream(subject_prefix: &str, client: ClientId, has_pages: bool) -> String {
    if has_pages {
        format!("{subject_prefix}.*.{client}.>")
    } else {
        format!("{subject_prefix}.*.{client}")
    }
}

/// The subject a dead letter from `consumer` is stored under.
pub fn dead_letter(consumer: &str) -> String {
    format!("deadletter.{}", consumer.to_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids() -> (ClientId, PageId) {
        (
            "11111111-1111-4111-8111-111111111111"
                .parse()
                .expect("uuid"),
            "22222222-2222-4222-8222-222222222222"
                .parse()
                .expect("uuid"),
        )
    }

    #[test]
    fn page_events_carry_client_and_page() {
        let (c, p) = ids();
        assert_eq!(
            event_subject("pages.content_changed", c, Some(p)),
            "pages.content_changed.11111111-1111-4111-8111-111111111111.22222222-2222-4222-8222-222222222222"
        );
    }

    #[test]
    fn client_events_carry_only_the_client() {
        let (c, _) = ids();
        assert_eq!(
            event_subject("clients.registered", c, None),
            "clients.registered.11111111-1111-4111-8111-111111111111"
        );
    }

    #[test]
    fn subscription_filters_match_the_documented_forms() {
        let (c, _) = ids();
        assert_eq!(all_of_type("pages.updated"), "pages.updated.>");
        assert_eq!(
            client_pages_of_type("pages.updated", c),
            "pages.updated.11111111-1111-4111-8111-111111111111.*"
        );
        assert_eq!(dead_letter("Markdown"), "deadletter.markdown");
    }
}
