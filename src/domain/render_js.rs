//! JavaScript rendering: which pages need a browser, and what the browser may load. Pure: the
//! scraper asks [`decide`] about each fetched page of a client with `render_js` on, the
//! `renderer-js` role asks [`judge_request`] about every request the page's scripts make.

use serde::{Deserialize, Serialize};

/// A client's `render_js` setting.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RenderJs {
    /// Pages are read as fetched (the default, and every client's before the setting).
    #[default]
    Never,
    /// The scraper looks at each fetched page and hands it to the browser when it looks like
    /// a shell whose content scripts fill in ([`decide`]).
    Auto,
    /// Every page goes through the browser.
    Always,
}

impl RenderJs {
    pub fn is_never(&self) -> bool {
        *self == Self::Never
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Never => "never",
            Self::Auto => "auto",
            Self::Always => "always",
        }
    }

    /// The setting as stored (`never` for anything unknown).
    pub fn parse(s: &str) -> Self {
        match s {
            "auto" => Self::Auto,
            "always" => Self::Always,
            _ => Self::Never,
        }
    }
}

/// Why a page goes through the browser (in its `pages.render_requested`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RenderReason {
    /// The client renders every page (`render_js: always`).
    Always,
    /// An application's mount point is empty (`<div id="root"></div>`, `<app-root>`...).
    EmptyAppRoot { element: String },
    /// A `<noscript>` asks for JavaScript.
    NoscriptAsksForJs,
    /// Far more script than text.
    ScriptHeavy { script_bytes: u64, text_chars: u64 },
}

impl RenderReason {
    /// One line for people (the page's history).
    pub fn describe(&self) -> String {
        match self {
            Self::Always => "the client renders every page".into(),
            Self::EmptyAppRoot { element } => format!("the application root {element} is empty"),
            Self::NoscriptAsksForJs => "a <noscript> asks for JavaScript".into(),
            Self::ScriptHeavy {
                script_bytes,
                text_chars,
            } => format!("{script_bytes} bytes of script for {text_chars} characters of text"),
        }
    }
}

/// A page with at least this much main text is never rendered in `auto`: whatever its scripts
/// do, the fetched page already has content to serve.
pub const AUTO_MAX_TEXT_CHARS: usize = 500;
/// `ScriptHeavy`: at least this many bytes of script per character of main text.
const SCRIPT_PER_TEXT: u64 = 20;
/// `ScriptHeavy`: and at least this much script (a page with one small inline script and
/// little text is just short).
const SCRIPT_HEAVY_MIN_BYTES: u64 = 2_000;

/// What an external script counts for in `ScriptHeavy` (so a page with one and under 250
/// characters of text is taken for script-built).
const EXTERNAL_SCRIPT_BYTES: u64 = 5_000;

/// The ids and tags single-page application frameworks mount into (React, Vue, Next.js,
/// Nuxt, Gatsby, Angular, Svelte, Ember, Quasar).
const APP_ROOT_IDS: &[&str] = &[
    "root",
    "app",
    "__next",
    "__nuxt",
    "___gatsby",
    "svelte",
    "ember-app",
    "q-app",
    "main-app",
];
const APP_ROOT_TAGS: &[&str] = &["app-root"];

/// Whether a fetched page goes to the browser, and why. `main_text_chars` is the length of
/// the main text the local generator found (whitespace excluded). `html` has passed the
/// generator's bounds (`html_bounds`), so parsing it is bounded.
pub fn decide(mode: RenderJs, html: &str, main_text_chars: usize) -> Option<RenderReason> {
    match mode {
        RenderJs::Never => None,
        RenderJs::Always => Some(RenderReason::Always),
        RenderJs::Auto if main_text_chars >= AUTO_MAX_TEXT_CHARS => None,
        RenderJs::Auto => looks_script_built(html, main_text_chars),
    }
}

fn looks_script_built(html: &str, text_chars: usize) -> Option<RenderReason> {
    let doc = scraper::Html::parse_document(html);
    for element in doc
        .root_element()
        .descendants()
        .filter_map(scraper::ElementRef::wrap)
    {
        let name = element.value().name();
        let id = element.value().id();
        let is_root =
            APP_ROOT_TAGS.contains(&name) || id.is_some_and(|id| APP_ROOT_IDS.contains(&id));
        if is_root
            && name != "html"
            && name != "body"
            && element.text().all(|t| t.trim().is_empty())
        {
            let element = match id {
                Some(id) => format!("<{name} id=\"{id}\">"),
                None => format!("<{name}>"),
            };
            return Some(RenderReason::EmptyAppRoot { element });
        }
    }
    let mut script_bytes = 0u64;
    for element in doc
        .root_element()
        .descendants()
        .filter_map(scraper::ElementRef::wrap)
    {
        match element.value().name() {
            "noscript" => {
                let text: String = element.text().collect::<String>().to_lowercase();
                if text.contains("javascript") {
                    return Some(RenderReason::NoscriptAsksForJs);
                }
            }
            "script" if is_code(element.value().attr("type")) => {
                let inline = element.text().map(str::len).sum::<usize>() as u64;
                // An external script counts as a modest one: its size is unknown without
                // fetching it.
                let external = if element.value().attr("src").is_some() {
                    EXTERNAL_SCRIPT_BYTES
                } else {
                    0
                };
                script_bytes += inline + external;
            }
            _ => {}
        }
    }
    let text_chars = text_chars as u64;
    (script_bytes >= SCRIPT_HEAVY_MIN_BYTES && script_bytes >= SCRIPT_PER_TEXT * text_chars.max(1))
        .then_some(RenderReason::ScriptHeavy {
            script_bytes,
            text_chars,
        })
}

/// Whether a `<script type=...>` runs as code (JSON-LD and templates do not).
fn is_code(kind: Option<&str>) -> bool {
    match kind.map(|k| k.trim().to_ascii_lowercase()) {
        None => true,
        Some(k) => {
            k.is_empty() || k == "module" || k.contains("javascript") || k.contains("ecmascript")
        }
    }
}

/// What the browser asks to load, as the DevTools protocol names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResourceKind {
    Document,
    Script,
    Stylesheet,
    /// XHR and `fetch()`.
    Data,
    /// Images, media, fonts: nothing the text needs.
    Media,
    /// Beacons, reports, prefetches, event streams: nothing the text needs, and an event
    /// stream would keep the network from ever being quiet.
    Background,
    Other,
}

impl ResourceKind {
    /// From the protocol's `ResourceType` name.
    pub fn from_protocol(name: &str) -> Self {
        match name {
            "Document" => Self::Document,
            "Script" => Self::Script,
            "Stylesheet" => Self::Stylesheet,
            "XHR" | "Fetch" => Self::Data,
            "Image" | "Media" | "Font" | "TextTrack" | "Manifest" => Self::Media,
            "Ping" | "CSPViolationReport" | "Prefetch" | "EventSource" | "SignedExchange" => {
                Self::Background
            }
            _ => Self::Other,
        }
    }
}

/// Why a request of the page was refused before any address rule (those are the guarded
/// client's).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Images, fonts, media: never loaded (the text does not need them).
    NotNeeded,
    /// A known tracker or advertising host.
    Tracker,
    /// Not http(s), or a method that could change something (only GET, HEAD, POST).
    NotAllowed,
}

/// Hosts of analytics, advertising and tag managers: a render never loads them (nor
/// anything below them).
const TRACKER_HOSTS: &[&str] = &[
    "google-analytics.com",
    "googletagmanager.com",
    "googlesyndication.com",
    "googleadservices.com",
    "doubleclick.net",
    "connect.facebook.net",
    "facebook.com",
    "analytics.twitter.com",
    "static.ads-twitter.com",
    "bat.bing.com",
    "clarity.ms",
    "hotjar.com",
    "segment.com",
    "segment.io",
    "mixpanel.com",
    "amplitude.com",
    "fullstory.com",
    "newrelic.com",
    "nr-data.net",
    "sentry.io",
    "scorecardresearch.com",
    "quantserve.com",
    "taboola.com",
    "outbrain.com",
    "criteo.com",
    "adnxs.com",
    "hubspot.com",
    "hs-analytics.net",
    "plausible.io",
    "matomo.cloud",
    "cloudflareinsights.com",
];

/// Whether the browser may load `url` (a `kind` request with `method`) at all; the address
/// rules come after, in the guarded client.
pub fn judge_request(kind: ResourceKind, method: &str, url: &url::Url) -> Result<(), Refusal> {
    if !matches!(url.scheme(), "http" | "https") || !matches!(method, "GET" | "HEAD" | "POST") {
        return Err(Refusal::NotAllowed);
    }
    if matches!(kind, ResourceKind::Media | ResourceKind::Background) {
        return Err(Refusal::NotNeeded);
    }
    let host = url.host_str().unwrap_or_default().to_ascii_lowercase();
    let tracker = TRACKER_HOSTS
        .iter()
        .any(|t| host == *t || host.strip_suffix(t).is_some_and(|rest| rest.ends_with('.')));
    if tracker {
        return Err(Refusal::Tracker);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auto(html: &str, text: usize) -> Option<RenderReason> {
        decide(RenderJs::Auto, html, text)
    }

    #[test]
    fn an_empty_mount_point_is_a_shell() {
        let shell = r#"<html><head><script src="/app.js"></script></head><body><div id="root"></div></body></html>"#;
        assert_eq!(
            auto(shell, 0),
            Some(RenderReason::EmptyAppRoot {
                element: "<div id=\"root\">".into()
            })
        );
        let angular =
            "<html><body><app-root></app-root><script src=main.js></script></body></html>";
        assert_eq!(
            auto(angular, 0),
            Some(RenderReason::EmptyAppRoot {
                element: "<app-root>".into()
            })
        );
        // A server-rendered application fills its root: read as fetched.
        let ssr = r#"<html><body><div id="__next"><main><p>Words</p></main></div><script src="/n.js"></script></body></html>"#;
        assert_eq!(auto(ssr, 300), None);
        // The same with almost no text is taken for script-built.
        assert!(matches!(
            auto(ssr, 5),
            Some(RenderReason::ScriptHeavy { .. })
        ));
    }

    #[test]
    fn noscript_and_script_weight_are_signs_too() {
        let noscript = "<html><body><noscript>You need to enable JavaScript to run this app.</noscript></body></html>";
        assert_eq!(auto(noscript, 0), Some(RenderReason::NoscriptAsksForJs));
        let heavy = format!(
            "<html><body><p>Hi</p><script>{}</script></body></html>",
            "x".repeat(5_000)
        );
        assert!(matches!(
            auto(&heavy, 2),
            Some(RenderReason::ScriptHeavy { .. })
        ));
        // JSON-LD is data, not code; a short page with a small script is just short.
        let data = format!(
            "<html><body><p>Hi</p><script type=\"application/ld+json\">{}</script></body></html>",
            "x".repeat(5_000)
        );
        assert_eq!(auto(&data, 2), None);
        assert_eq!(
            auto(
                "<html><body><p>Hi</p><script>go()</script></body></html>",
                2
            ),
            None
        );
    }

    #[test]
    fn pages_with_content_are_never_rendered_in_auto_and_the_modes_hold() {
        let shell = r#"<html><body><div id="root"></div></body></html>"#;
        assert_eq!(auto(shell, AUTO_MAX_TEXT_CHARS), None);
        assert_eq!(decide(RenderJs::Never, shell, 0), None);
        assert_eq!(
            decide(RenderJs::Always, "<p>x</p>", 10_000),
            Some(RenderReason::Always)
        );
        for mode in [RenderJs::Never, RenderJs::Auto, RenderJs::Always] {
            assert_eq!(RenderJs::parse(mode.as_str()), mode);
        }
    }

    #[test]
    fn requests_are_judged_by_kind_method_scheme_and_tracker_host() {
        let url = |s: &str| url::Url::parse(s).expect("url");
        let ok = |k, m, u: &str| judge_request(k, m, &url(u));
        assert_eq!(
            ok(ResourceKind::Script, "GET", "https://site.test/app.js"),
            Ok(())
        );
        assert_eq!(
            ok(ResourceKind::Data, "POST", "https://api.site.test/graphql"),
            Ok(())
        );
        assert_eq!(
            ok(ResourceKind::Media, "GET", "https://site.test/a.png"),
            Err(Refusal::NotNeeded)
        );
        assert_eq!(
            ok(ResourceKind::Data, "DELETE", "https://site.test/x"),
            Err(Refusal::NotAllowed)
        );
        assert_eq!(
            ok(ResourceKind::Data, "GET", "ws://site.test/x"),
            Err(Refusal::NotAllowed)
        );
        assert_eq!(
            ok(
                ResourceKind::Script,
                "GET",
                "https://www.googletagmanager.com/gtm.js"
            ),
            Err(Refusal::Tracker)
        );
        assert_eq!(
            ok(
                ResourceKind::Script,
                "GET",
                "https://notgoogletagmanager.com/x.js"
            ),
            Ok(())
        );
    }
}

#[cfg(test)]
mod corpus {
    /// No real article of the readability corpus is taken for a script-built shell: `auto`
    /// leaves pages with content alone.
    #[test]
    fn real_articles_are_not_rendered_in_auto() {
        let pages = crate::domain::html_bounds::corpus::pages();
        let mut checked = 0;
        for (path, html) in &pages {
            let Ok(generated) = crate::domain::markdown::generate(html, "https://example.com/a")
            else {
                continue;
            };
            let text = generated.main_text_chars();
            let decision = super::decide(super::RenderJs::Auto, html, text);
            assert_eq!(decision, None, "{path:?} ({text} chars of text)");
            checked += 1;
        }
        assert!(
            pages.is_empty() || checked > 100,
            "only {checked} pages checked"
        );
    }
}
