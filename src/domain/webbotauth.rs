//! Web Bot Auth (draft-meunier-webbotauth-httpsig-protocol over HTTP Message Signatures, RFC
//! 9421): a signed request names its agent (`Signature-Agent: "https://chatgpt.com"`), and
//! the `web-bot-auth`-tagged member of `Signature-Input`/`Signature` must cover `@authority`
//! and `signature-agent`, carry `created` and `expires`, and verify with an Ed25519 key of the
//! agent's key directory (`/.well-known/http-message-signatures-directory`, a JWKS) whose JWK
//! thumbprint is the `keyid`. Parsing and the base are the `web-bot-auth` crate's (Cloudflare's
//! reference implementation); the time window and which agents count are ours. Pure: the
//! directory is fetched by the caller (`infra::key_directory`).

use web_bot_auth::components::{CoveredComponent, DerivedComponent, HTTPField};

use super::bots::{Classification, VisitorType};
use web_bot_auth::keyring::{JSONWebKeySet, KeyRing};
use web_bot_auth::message_signatures::SignedMessage;
use web_bot_auth::{SignatureAgentLink, WebBotAuthVerifier};

/// How far in the future `created` may be (clocks differ).
pub const CLOCK_SKEW_SECS: i64 = 60;
/// The longest validity accepted (`expires - created`): the draft asks for short-lived
/// signatures, and a long one is a replayable one.
pub const MAX_VALIDITY_SECS: i64 = 24 * 60 * 60;

/// A request as the signature covers it.
pub struct Request<'a> {
    /// `@authority`: the `Host` the request was sent to.
    pub authority: &'a str,
    /// Every value of a header, by lowercase name.
    pub header: &'a dyn Fn(&str) -> Vec<String>,
}

impl SignedMessage for Request<'_> {
    fn lookup_component(&self, name: &CoveredComponent) -> Vec<String> {
        match name {
            CoveredComponent::Derived(DerivedComponent::Authority { req: false }) => {
                vec![self.authority.to_ascii_lowercase()]
            }
            CoveredComponent::HTTP(HTTPField { name, .. }) => (self.header)(name),
            _ => vec![],
        }
    }
}

/// Why a signature does not count.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("the signature headers are not a web-bot-auth signature: {0}")]
    Malformed(String),
    #[error("the signature names no agent directory to fetch keys from")]
    NoAgent,
    #[error("the signature was created in the future")]
    CreatedInFuture,
    #[error("the signature has expired")]
    Expired,
    #[error("the signature is valid for longer than a day")]
    TooLong,
    #[error("the agent's directory has no key {0}")]
    NoSuchKey(String),
    #[error("the signature does not verify: {0}")]
    Invalid(String),
}

/// A parsed signature, waiting for its agent's keys.
pub struct Signature {
    verifier: WebBotAuthVerifier,
    /// The agent's origin (`https://chatgpt.com`), whose directory holds the keys.
    pub agent: String,
    /// The key's JWK thumbprint.
    pub keyid: String,
}

/// Whether the request carries signature headers at all (then [`parse`] decides).
pub fn is_signed(header: &dyn Fn(&str) -> Vec<String>) -> bool {
    !header("signature").is_empty() && !header("signature-input").is_empty()
}

/// Parses the request's `web-bot-auth` signature and checks its time window at `now` (Unix
/// seconds). Only an agent named by an `https` (or, for tests and private setups, `http`)
/// URL counts: keys inlined in the request prove nothing of who sent it.
pub fn parse(request: &Request<'_>, now: i64) -> Result<Signature, Refused> {
    let verifier =
        WebBotAuthVerifier::parse(request).map_err(|e| Refused::Malformed(e.to_string()))?;
    let details = &verifier.get_parsed_label().base.parameters.details;
    let (Some(created), Some(expires)) = (details.created, details.expires) else {
        return Err(Refused::Malformed(
            "created and expires are required".into(),
        ));
    };
    if created > now + CLOCK_SKEW_SECS {
        return Err(Refused::CreatedInFuture);
    }
    if expires <= now {
        return Err(Refused::Expired);
    }
    if expires - created > MAX_VALIDITY_SECS {
        return Err(Refused::TooLong);
    }
    let keyid = details
        .keyid
        .clone()
        .ok_or_else(|| Refused::Malformed("keyid is required".into()))?;
    let agent = verifier
        .get_signature_agents()
        .iter()
        .find_map(|link| match link {
            SignatureAgentLink::External(url) => origin(url),
            SignatureAgentLink::Inline(_) => None,
        })
        .ok_or(Refused::NoAgent)?;
    Ok(Signature {
        verifier,
        agent,
        keyid,
    })
}

/// Agents known by their origin: (origin, bot name, operator, category), the names as the
/// bot catalogue spells them, so policy rules by bot or operator match a signed agent whatever
/// its user agent says (ChatGPT's agent browses with a browser's).
pub const KNOWN_AGENTS: &[(&str, &str, &str, &str)] =
    &[("https://chatgpt.com", "ChatGPT Agent", "OpenAI", "agent")];

/// Who a verified agent is: a known agent by its catalogue name, else a bot named by its
/// origin (unless its user agent already names one).
pub fn attribute(mut visitor: Classification, agent: &str) -> Classification {
    if let Some((_, name, operator, category)) =
        KNOWN_AGENTS.iter().find(|(origin, ..)| *origin == agent)
    {
        return Classification {
            visitor_type: VisitorType::AiBot,
            bot_name: Some((*name).to_owned()),
            operator: Some((*operator).to_owned()),
            category: Some((*category).to_owned()),
        };
    }
    if !visitor.is_bot() {
        visitor.visitor_type = VisitorType::OtherBot;
        visitor.bot_name = Some(agent.to_owned());
    }
    visitor
}

/// The origin an agent is named by (`https://chatgpt.com/x` → `https://chatgpt.com`), if it
/// is an `https` or `http` URL of at most 200 bytes.
pub fn agent_origin(url: &str) -> Option<String> {
    (url.len() <= 200).then(|| origin(url)).flatten()
}

/// `https://chatgpt.com/anything` → `https://chatgpt.com`.
fn origin(url: &str) -> Option<String> {
    let url = url::Url::parse(url).ok()?;
    matches!(url.scheme(), "https" | "http")
        .then(|| url.origin().ascii_serialization())
        .filter(|o| o != "null")
}

impl Signature {
    /// The URL of the agent's key directory.
    pub fn directory_url(&self) -> String {
        format!(
            "{}/.well-known/http-message-signatures-directory",
            self.agent
        )
    }

    /// Verifies the signature with the agent's `keys`.
    pub fn verify(self, keys: &JSONWebKeySet) -> Result<(), Refused> {
        let mut ring = KeyRing::default();
        // Keys the crate cannot use (not Ed25519) are left out; the keyid decides.
        let _ = ring.import_jwks(keys.clone());
        if ring.get(&self.keyid).is_none() {
            return Err(Refused::NoSuchKey(self.keyid));
        }
        self.verifier
            .verify(&ring, None)
            .map(|_| ())
            .map_err(|e| Refused::Invalid(e.to_string()))
    }
}

/// Signing requests as an agent, the way a signed crawler does (the tests sign with it, and it
/// documents what a verifiable request looks like).
pub mod agent {
    use std::collections::HashMap;

    use base64::Engine;
    use indexmap::IndexMap;
    use web_bot_auth::components::{
        CoveredComponent, DerivedComponent, HTTPField, HTTPFieldParameters, HTTPFieldParametersSet,
    };
    use web_bot_auth::keyring::{Algorithm, JSONWebKeySet};
    use web_bot_auth::message_signatures::{MessageSigner, UnsignedMessage};

    /// The JWKS publishing the public key of `secret`.
    pub fn jwks(secret: &[u8; 32]) -> JSONWebKeySet {
        let public = ed25519_dalek::SigningKey::from_bytes(secret)
            .verifying_key()
            .to_bytes();
        let x = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(public);
        serde_json::from_value(serde_json::json!({
            "keys": [{"kty": "OKP", "crv": "Ed25519", "x": x}]
        }))
        .expect("jwks")
    }

    /// The keyid (JWK thumbprint) of `secret`'s public key.
    pub fn keyid(secret: &[u8; 32]) -> String {
        jwks(secret).keys[0].b64_thumbprint()
    }

    /// Headers of a request to `authority` signed by `secret` for `agent`, covering
    /// `@authority` and (when `cover_agent`) `signature-agent`, valid for `valid_secs`.
    pub fn signed_headers(
        secret: &[u8; 32],
        authority: &str,
        agent: &str,
        cover_agent: bool,
        valid_secs: u64,
    ) -> HashMap<String, String> {
        struct Out {
            covered: IndexMap<CoveredComponent, String>,
            input: String,
            signature: String,
        }
        impl UnsignedMessage for Out {
            fn fetch_components_to_cover(&self) -> IndexMap<CoveredComponent, String> {
                self.covered.clone()
            }
            fn register_header_contents(&mut self, input: String, signature: String) {
                self.input = format!("sig1={input}");
                self.signature = format!("sig1={signature}");
            }
        }
        let agent_header = format!("agent1=\"{agent}\"");
        let mut covered = IndexMap::new();
        covered.insert(
            CoveredComponent::Derived(DerivedComponent::Authority { req: false }),
            authority.to_owned(),
        );
        if cover_agent {
            covered.insert(
                CoveredComponent::HTTP(HTTPField {
                    name: "signature-agent".into(),
                    parameters: HTTPFieldParametersSet(vec![HTTPFieldParameters::Key(
                        "agent1".into(),
                    )]),
                }),
                agent_header.clone(),
            );
        }
        let mut out = Out {
            covered,
            input: String::new(),
            signature: String::new(),
        };
        MessageSigner {
            keyid: keyid(secret),
            nonce: "bm9uY2Utb2YtdGhlLXRlc3Q=".into(),
            tag: "web-bot-auth".into(),
        }
        .generate_signature_headers_content(
            &mut out,
            std::time::Duration::from_secs(valid_secs),
            Algorithm::Ed25519,
            secret,
        )
        .expect("signed");
        HashMap::from([
            ("signature-agent".to_owned(), agent_header),
            ("signature-input".to_owned(), out.input),
            ("signature".to_owned(), out.signature),
        ])
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use base64::Engine;
    use web_bot_auth::keyring::Algorithm;
    use web_bot_auth::message_signatures::MessageVerifier;

    use super::agent::{jwks, keyid, signed_headers};
    use super::*;

    /// RFC 9421's `test-key-ed25519` (Appendix B.1.4), private and public.
    const TEST_KEY: [u8; 32] = [
        0x9f, 0x83, 0x62, 0xf8, 0x7a, 0x48, 0x4a, 0x95, 0x4e, 0x6e, 0x74, 0x0c, 0x5b, 0x4c, 0x0e,
        0x84, 0x22, 0x91, 0x39, 0xa2, 0x0a, 0xa8, 0xab, 0x56, 0xff, 0x66, 0x58, 0x6f, 0x6a, 0x7d,
        0x29, 0xc5,
    ];
    const TEST_PUBLIC_X: &str = "JrQLj5P_89iXES9-vFgrIy29clF9CC_oPPsw3c5D0bs";
    /// Its JWK thumbprint.
    const TEST_KEYID: &str = "poqkLGiymh_W0uP6PZFw-dvez3QJT5SolqXBCW38r0U";

    fn request<'a>(authority: &'a str, lookup: &'a dyn Fn(&str) -> Vec<String>) -> Request<'a> {
        Request {
            authority,
            header: lookup,
        }
    }

    fn now() -> i64 {
        chrono::Utc::now().timestamp()
    }

    /// What a verifier concludes of a request: `signature` with its agent, or why not.
    fn conclude(
        headers: &HashMap<String, String>,
        authority: &str,
        now: i64,
        keys: &JSONWebKeySet,
    ) -> Result<String, &'static str> {
        let lookup = |name: &str| headers.get(name).cloned().into_iter().collect::<Vec<_>>();
        let refused = |e: Refused| match e {
            Refused::Malformed(_) | Refused::NoAgent => "malformed",
            Refused::CreatedInFuture => "created_in_future",
            Refused::Expired => "expired",
            Refused::TooLong => "too_long",
            Refused::NoSuchKey(_) => "no_such_key",
            Refused::Invalid(_) => "invalid",
        };
        let signature = parse(&request(authority, &lookup), now).map_err(refused)?;
        let agent = signature.agent.clone();
        signature.verify(keys).map_err(refused)?;
        Ok(agent)
    }

    /// The vectors the Worker is held to as well: requests signed by the npm `web-bot-auth`
    /// package (worker/scripts/web-bot-auth-vectors.mjs).
    #[test]
    fn the_shared_vectors_hold() {
        let text = include_str!("../../tests/fixtures/web-bot-auth-vectors.json");
        let fixture: serde_json::Value = serde_json::from_str(text).expect("json");
        let keys: JSONWebKeySet =
            serde_json::from_value(fixture["key_directory"].clone()).expect("jwks");
        let vectors = fixture["vectors"].as_array().expect("vectors");
        assert!(vectors.len() >= 8);
        for v in vectors {
            let name = v["name"].as_str().expect("name");
            let headers: HashMap<String, String> =
                serde_json::from_value(v["headers"].clone()).expect("headers");
            let got = conclude(
                &headers,
                v["authority"].as_str().expect("authority"),
                v["now"].as_i64().expect("now"),
                &keys,
            );
            let expected = &v["expected"];
            match expected["verification"].as_str() {
                Some("signature") => assert_eq!(
                    got.as_deref(),
                    Ok(expected["agent"].as_str().expect("agent")),
                    "{name}"
                ),
                _ => assert_eq!(got.err(), expected["refused"].as_str(), "{name}"),
            }
        }
    }

    /// RFC 9421 B.2.6: the Ed25519 signature of the example request verifies with the
    /// crate's base and verifier, and a changed component does not.
    #[test]
    fn the_rfc_9421_ed25519_test_vector_verifies() {
        struct Rfc(HashMap<&'static str, &'static str>, &'static str);
        impl SignedMessage for Rfc {
            fn lookup_component(&self, name: &CoveredComponent) -> Vec<String> {
                match name {
                    CoveredComponent::Derived(DerivedComponent::Authority { .. }) => {
                        vec![self.1.to_owned()]
                    }
                    CoveredComponent::Derived(DerivedComponent::Method { .. }) => {
                        vec!["POST".into()]
                    }
                    CoveredComponent::Derived(DerivedComponent::Path { .. }) => {
                        vec!["/foo".into()]
                    }
                    CoveredComponent::HTTP(HTTPField { name, .. }) => self
                        .0
                        .get(name.as_str())
                        .map(|v| vec![(*v).to_owned()])
                        .unwrap_or_default(),
                    _ => vec![],
                }
            }
        }
        let headers = HashMap::from([
            ("date", "Tue, 20 Apr 2021 02:07:55 GMT"),
            ("content-type", "application/json"),
            ("content-length", "18"),
            (
                "signature-input",
                "sig-b26=(\"date\" \"@method\" \"@path\" \"@authority\" \"content-type\" \"content-length\");created=1618884473;keyid=\"test-key-ed25519\"",
            ),
            (
                "signature",
                "sig-b26=:wqcAqbmYJ2ji2glfAMaRy4gruYYnx2nEFN2HN6jrnDnQCK1u02Gb04v9EDgwUPiu4A0w6vuQv5lIp5WPpBKRCw==:",
            ),
        ]);
        let ring = || {
            let mut ring = KeyRing::default();
            let public = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(TEST_PUBLIC_X)
                .expect("x");
            ring.import_raw("test-key-ed25519".into(), Algorithm::Ed25519, public);
            ring
        };
        let verify = |authority| {
            MessageVerifier::parse(&Rfc(headers.clone(), authority), |_| true)
                .expect("parsed")
                .verify(&ring(), None)
        };
        assert!(verify("example.com").is_ok());
        assert!(verify("example.org").is_err(), "another authority");
        assert_eq!(
            keyid(&TEST_KEY),
            TEST_KEYID,
            "the draft's keyid is its thumbprint"
        );
    }

    #[test]
    fn a_signature_by_the_agents_key_verifies_and_everything_else_is_refused() {
        let secret = [7u8; 32];
        let headers = signed_headers(&secret, "site.test", "https://agent.example", true, 60);
        let lookup = |name: &str| headers.get(name).cloned().into_iter().collect();
        assert!(is_signed(&lookup));
        let parsed = parse(&request("site.test", &lookup), now()).expect("parsed");
        assert_eq!(parsed.agent, "https://agent.example");
        assert_eq!(
            parsed.directory_url(),
            "https://agent.example/.well-known/http-message-signatures-directory"
        );
        parsed.verify(&jwks(&secret)).expect("verifies");

        // Another key in the directory, or the request sent to another host.
        let parsed = parse(&request("site.test", &lookup), now()).expect("parsed");
        assert!(matches!(
            parsed.verify(&jwks(&TEST_KEY)),
            Err(Refused::NoSuchKey(_))
        ));
        let parsed = parse(&request("elsewhere.test", &lookup), now()).expect("parsed");
        assert!(matches!(
            parsed.verify(&jwks(&secret)),
            Err(Refused::Invalid(_))
        ));

        // Outside its time window.
        assert_eq!(
            parse(&request("site.test", &lookup), now() + 120).err(),
            Some(Refused::Expired)
        );
        assert_eq!(
            parse(&request("site.test", &lookup), now() - 3600).err(),
            Some(Refused::CreatedInFuture)
        );
        let long = signed_headers(
            &secret,
            "site.test",
            "https://agent.example",
            true,
            2 * 86_400,
        );
        let long_lookup = |name: &str| long.get(name).cloned().into_iter().collect();
        assert_eq!(
            parse(&request("site.test", &long_lookup), now()).err(),
            Some(Refused::TooLong)
        );

        // `signature-agent` sent but not covered: anyone could have swapped it.
        let uncovered = signed_headers(&secret, "site.test", "https://agent.example", false, 60);
        let uncovered_lookup = |name: &str| uncovered.get(name).cloned().into_iter().collect();
        assert!(matches!(
            parse(&request("site.test", &uncovered_lookup), now()),
            Err(Refused::Malformed(_))
        ));

        // Keys inlined in the request itself name nobody.
        let inline = signed_headers(
            &secret,
            "site.test",
            "data:application/http-message-signatures-directory+json;base64,e30=",
            true,
            60,
        );
        let inline_lookup = |name: &str| inline.get(name).cloned().into_iter().collect();
        assert!(parse(&request("site.test", &inline_lookup), now()).is_err());

        // No signature at all.
        let none = |_: &str| Vec::new();
        assert!(!is_signed(&none));
    }
}
