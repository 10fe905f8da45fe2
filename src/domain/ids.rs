//! Newtype identifiers for tenants and pages.
//!
//! A page id is derived from the client id and the page's normalized URL (UUID v5), so
//! rediscovering a URL can never create a second page. Nothing here does IO.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::url::NormalizedUrl;

/// Namespace for page ids. Changing it would change every page id: never do that.
const PAGE_ID_NAMESPACE: Uuid = Uuid::from_u128(0x6a1c_ac4e_0000_4000_8000_7061_6765_7321);

macro_rules! uuid_newtype {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(Uuid);

        impl $name {
            /// Wraps an existing UUID.
            pub const fn from_uuid(id: Uuid) -> Self {
                Self(id)
            }

            /// The underlying UUID.
            pub const fn as_uuid(&self) -> Uuid {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                // Lowercase hyphenated form: it is what subjects and URLs carry.
                self.0.hyphenated().fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self)
            }
        }
    };
}

uuid_newtype!(
    /// A tenant (site owner) of ai-cache.
    ClientId
);
uuid_newtype!(
    /// A page of a client, derived from (client id, normalized URL).
    PageId
);

impl ClientId {
    /// A fresh random client id.
    pub fn new_random() -> Self {
        Self(Uuid::new_v4())
    }
}

impl PageId {
    /// The page id of `url` for `client`: the same inputs always give the same id.
    pub fn derive(client: ClientId, url: &NormalizedUrl) -> Self {
        let mut name = Vec::with_capacity(16 + url.as_str().len());
        name.extend_from_slice(client.as_uuid().as_bytes());
        name.extend_from_slice(url.as_str().as_bytes());
        Self(Uuid::new_v5(&PAGE_ID_NAMESPACE, &name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> NormalizedUrl {
        NormalizedUrl::parse(s).expect("valid url")
    }

    #[test]
    fn the_same_url_spelled_differently_gives_the_same_page_id() {
        let client = ClientId::new_random();
        let a = PageId::derive(client, &url("HTTPS://Example.com:443/a#top"));
        let b = PageId::derive(client, &url("https://example.com/a"));
        assert_eq!(a, b);
    }

    #[test]
    fn the_same_url_of_two_clients_gives_two_page_ids() {
        let u = url("https://example.com/a");
        assert_ne!(
            PageId::derive(ClientId::new_random(), &u),
            PageId::derive(ClientId::new_random(), &u)
        );
    }

    #[test]
    fn page_ids_are_stable_across_releases() {
        // A golden value: if this changes, every stored page id changes with it.
        let client: ClientId = "00000000-0000-4000-8000-000000000001"
            .parse()
            .expect("uuid");
        let id = PageId::derive(client, &url("https://example.com/page"));
        assert_eq!(id.to_string(), GOLDEN_PAGE_ID);
    }

    const GOLDEN_PAGE_ID: &str = "ea53674b-c519-5dcf-ac00-368620c651f3";

    #[test]
    fn ids_print_in_lowercase_hyphenated_form() {
        let id: ClientId = "6F9619FF-8B86-D011-B42D-00C04FC964FF"
            .parse()
            .expect("uuid");
        assert_eq!(id.to_string(), "6f9619ff-8b86-d011-b42d-00c04fc964ff");
    }
}
