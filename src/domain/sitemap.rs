//! The sitemap parser: urlset and sitemap index documents, plain-text sitemaps, gzip (detected
//! by its magic bytes, so an already inflated body works too), BOM, CDATA, entity references,
//! any namespace or none. Pure: bytes in, entries out, no IO.
//!
//! Hostile input cannot hurt it: a DTD (and with it every entity-expansion and external-entity
//! attack) is refused, compressed and inflated sizes are capped before they are read, and so
//! are the number of entries, the length of a URL and the nesting depth. Malformed XML gives a
//! clear error together with the entries completed before the fault.
//!
//! Written on quick-xml's event reader rather than serde so that unknown extension tags
//! (image, news, video, xhtml) are skipped structurally and a fault keeps what came before it.

use std::io::Read;

use quick_xml::events::Event;
use quick_xml::name::{Namespace, ResolveResult};
use quick_xml::reader::NsReader;
use serde::Serialize;

/// Caps on what one sitemap document may make us do.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Largest body as received (compressed or not), in bytes.
    pub max_body_bytes: usize,
    /// Largest inflated body, in bytes (the protocol allows 50 MB).
    pub max_inflated_bytes: usize,
    /// Most entries read from one document (the protocol allows 50,000).
    pub max_entries: usize,
    /// Longest `loc` accepted, in bytes (the protocol says under 2,048 characters).
    pub max_url_len: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 50 * 1024 * 1024,
            max_inflated_bytes: 52_428_800,
            max_entries: 50_000,
            max_url_len: 2048,
        }
    }
}

/// Deepest element nesting accepted (real sitemaps need 4).
const MAX_DEPTH: usize = 32;

/// What kind of document it was.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    UrlSet,
    Index,
    Text,
    /// An RSS 2.0, RSS 1.0 or Atom feed (sitemaps.org accepts them as sitemaps): each item's
    /// or entry's link is a page.
    Feed,
}

/// One `<url>` (or `<sitemap>` of an index, or line of a text sitemap).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Entry {
    pub loc: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lastmod: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub changefreq: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub priority: Option<String>,
    /// The page's translations (`xhtml:link rel="alternate" hreflang`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub alternates: Vec<Alternate>,
}

/// A translation of a page named by its sitemap.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Alternate {
    /// The language (`de`, `en-GB`, `x-default`).
    pub hreflang: String,
    pub href: String,
}

/// A parsed document: entries (pages, or sitemaps for an index), and what was odd about it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Parsed {
    pub kind: Kind,
    pub entries: Vec<Entry>,
    /// Dropped values and skipped parts, for people.
    pub warnings: Vec<String>,
    /// More entries followed than `max_entries`.
    pub truncated: bool,
    /// Set when the document broke off: `entries` holds what was complete before the fault.
    pub error: Option<SitemapError>,
}

/// Why a document could not be (fully) read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize)]
#[serde(tag = "code", content = "detail", rename_all = "snake_case")]
pub enum SitemapError {
    #[error("the document is empty")]
    Empty,
    #[error("the body is larger than {0} bytes")]
    TooLarge(usize),
    #[error("the body inflates to more than {0} bytes (gzip bomb?)")]
    InflatedTooLarge(usize),
    #[error("invalid gzip data: {0}")]
    Gzip(String),
    #[error(
        "the document has a DTD: refused (entity expansion and external entities are not allowed)"
    )]
    Dtd,
    /// A web page was given where a sitemap was expected.
    #[error("this is an HTML page, not a sitemap")]
    HtmlPage,
    #[error(
        "not a sitemap: the root element is <{0}>, expected <urlset>, <sitemapindex>, <rss> or <feed>"
    )]
    NotASitemap(String),
    #[error("malformed XML at byte {position}: {message}")]
    Xml { position: u64, message: String },
    #[error("elements are nested deeper than {MAX_DEPTH} levels")]
    TooDeep,
}

/// Parses one sitemap document.
///
/// `Err` when nothing usable could be read; `Ok` with `error` set when the document broke off
/// after some complete entries.
pub fn parse(body: &[u8], limits: &Limits) -> Result<Parsed, SitemapError> {
    if body.len() > limits.max_body_bytes {
        return Err(SitemapError::TooLarge(limits.max_body_bytes));
    }
    let inflated;
    let bytes = if body.starts_with(&[0x1f, 0x8b]) {
        inflated = inflate(body, limits.max_inflated_bytes)?;
        &inflated[..]
    } else if body.len() > limits.max_inflated_bytes {
        return Err(SitemapError::InflatedTooLarge(limits.max_inflated_bytes));
    } else {
        body
    };
    let mut warnings = Vec::new();
    let text = match std::str::from_utf8(bytes) {
        Ok(text) => std::borrow::Cow::Borrowed(text),
        Err(_) => {
            warnings
                .push("the document is not valid UTF-8: invalid bytes were replaced".to_owned());
            String::from_utf8_lossy(bytes)
        }
    };
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text).trim_start();
    if text.trim().is_empty() {
        return Err(SitemapError::Empty);
    }
    let mut parsed = if text.starts_with('<') {
        parse_xml(text, limits)?
    } else {
        parse_text(text, limits)
    };
    warnings.append(&mut parsed.warnings);
    parsed.warnings = warnings;
    Ok(parsed)
}

/// Inflates gzip (several members too), reading at most `max + 1` bytes.
fn inflate(body: &[u8], max: usize) -> Result<Vec<u8>, SitemapError> {
    let mut out = Vec::new();
    let decoder = flate2::read::MultiGzDecoder::new(body);
    decoder
        .take(max as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| SitemapError::Gzip(e.to_string()))?;
    if out.len() > max {
        return Err(SitemapError::InflatedTooLarge(max));
    }
    Ok(out)
}

/// A plain-text sitemap: one URL per line.
fn parse_text(text: &str, limits: &Limits) -> Parsed {
    let mut parsed = Parsed {
        kind: Kind::Text,
        entries: Vec::new(),
        warnings: Vec::new(),
        truncated: false,
        error: None,
    };
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if !(line.starts_with("http://") || line.starts_with("https://")) {
            parsed
                .warnings
                .push(format!("line {}: not an http(s) URL, skipped", n + 1));
            continue;
        }
        if !push_entry(
            &mut parsed,
            Entry {
                loc: line.to_owned(),
                ..Entry::default()
            },
            limits,
        ) {
            break;
        }
    }
    parsed
}

/// Adds an entry unless a limit says otherwise; `false` when no more may follow.
fn push_entry(parsed: &mut Parsed, entry: Entry, limits: &Limits) -> bool {
    if entry.loc.len() > limits.max_url_len {
        parsed.warnings.push(format!(
            "a URL of {} bytes is longer than {} and was skipped",
            entry.loc.len(),
            limits.max_url_len
        ));
        return true;
    }
    if parsed.entries.len() >= limits.max_entries {
        parsed.truncated = true;
        return false;
    }
    parsed.entries.push(entry);
    true
}

/// A field of an entry being read from its element's text.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Field {
    Loc,
    Lastmod,
    Changefreq,
    Priority,
    /// An RSS item's `<link>` (the first non-empty one is the page).
    FeedLink,
    /// An RSS `pubDate`, `dc:date` or an Atom `updated`/`modified`: RFC 822 or W3C.
    FeedDate,
    /// An Atom `published`/`issued`: the date when no update is given.
    FeedPublished,
}

/// Namespaces whose elements are the document's own: sitemaps (sitemaps.org, Google's old
/// one), Atom 1.0 and 0.3, RSS 1.0. Elements without a namespace count too (sloppy sitemaps,
/// RSS 2.0), and so does the root element's own, whatever it is.
const OWN_NAMESPACES: &[&str] = &[
    "http://www.sitemaps.org/schemas/sitemap/0.9",
    "http://www.google.com/schemas/sitemap/0.84",
    "http://www.google.com/schemas/sitemap/0.9",
    "http://www.w3.org/2005/Atom",
    "http://purl.org/atom/ns#",
    "http://purl.org/rss/1.0/",
];
const XHTML: &str = "http://www.w3.org/1999/xhtml";
const DUBLIN_CORE: &str = "http://purl.org/dc/elements/1.1/";

/// Where an element's name lives.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Ns {
    /// The document's own (or none).
    Own,
    /// `xhtml:` (a `<url>`'s `xhtml:link` alternates).
    Xhtml,
    /// Dublin Core (`dc:date` of RSS 1.0 items).
    DublinCore,
    /// An extension (image, news, video...) or an unknown prefix.
    Other,
}

fn parse_xml(text: &str, limits: &Limits) -> Result<Parsed, SitemapError> {
    let mut reader = NsReader::from_str(text);
    reader.config_mut().check_end_names = true;
    // `<x/>` becomes a start and an end, so the element stack stays balanced.
    reader.config_mut().expand_empty_elements = true;
    let mut doc = XmlDoc::default();
    loop {
        let (ns, event) = match reader.read_resolved_event() {
            Ok((ns, event)) => (doc.namespace(&ns), event),
            Err(e) => {
                let err = SitemapError::Xml {
                    position: reader.error_position(),
                    message: e.to_string(),
                };
                return doc.stop(err);
            }
        };
        let flow = match event {
            // `<!DOCTYPE html>`: a web page, not an attack; say so.
            Event::DocType(d) if is_html_doctype(d.as_ref().as_bytes()) => {
                return Err(SitemapError::HtmlPage);
            }
            Event::DocType(_) => return Err(SitemapError::Dtd),
            Event::Start(e) => doc.start(&e, ns)?,
            Event::End(_) => doc.end(limits),
            Event::Text(t) => doc.text(&t.xml10_content()),
            Event::CData(c) => doc.text(&c.xml10_content()),
            Event::GeneralRef(r) => {
                let resolved = match r.resolve_char_ref() {
                    Ok(Some(c)) => Some(c),
                    Ok(None) => predefined_entity(&r),
                    Err(_) => None,
                };
                match resolved {
                    Some(c) => doc.text(c.encode_utf8(&mut [0; 4])),
                    None => {
                        let err = SitemapError::Xml {
                            position: reader.buffer_position(),
                            message: format!("unknown entity &{};", &*r),
                        };
                        return doc.stop(err);
                    }
                }
            }
            Event::Eof => break,
            Event::Empty(_) | Event::Decl(_) | Event::PI(_) | Event::Comment(_) => Flow::Go,
        };
        if flow == Flow::Stop {
            return Ok(doc.parsed);
        }
    }
    doc.finish(reader.buffer_position())
}

/// Whether reading goes on after an element.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Flow {
    Go,
    /// A limit was reached: what was read is the result.
    Stop,
}

/// The feed format of a `Kind::Feed` document.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Format {
    Sitemap,
    /// RSS 2.0: `<rss><channel><item>`.
    Rss,
    /// RSS 1.0: `<rdf:RDF><item>`.
    Rdf,
    /// Atom 1.0 or 0.3: `<feed><entry>`.
    Atom,
}

/// What has been read of an XML sitemap so far.
struct XmlDoc {
    parsed: Parsed,
    format: Format,
    /// The root element's namespace (its elements are the document's own).
    root_ns: Option<String>,
    /// The local names of the open elements.
    stack: Vec<String>,
    /// The `<url>`, `<sitemap>`, `<item>` or `<entry>` being read.
    entry: Option<Entry>,
    /// The field of `entry` being read, and its text so far.
    field: Option<(Field, String)>,
    /// A feed entry's publication date, used when it gives no update date.
    published: Option<String>,
    root_seen: bool,
}

impl Default for XmlDoc {
    fn default() -> Self {
        Self {
            parsed: Parsed {
                kind: Kind::UrlSet,
                entries: Vec::new(),
                warnings: Vec::new(),
                truncated: false,
                error: None,
            },
            format: Format::Sitemap,
            root_ns: None,
            stack: Vec::new(),
            entry: None,
            field: None,
            published: None,
            root_seen: false,
        }
    }
}

impl XmlDoc {
    /// Ends reading on a syntax error: an error before the root element is the answer,
    /// after it the entries read so far are kept with the error.
    fn stop(mut self, err: SitemapError) -> Result<Parsed, SitemapError> {
        if !self.root_seen {
            return Err(err);
        }
        self.parsed.error = Some(err);
        Ok(self.parsed)
    }

    fn namespace(&self, ns: &ResolveResult<'_>) -> Ns {
        match ns {
            ResolveResult::Unbound => Ns::Own,
            ResolveResult::Bound(Namespace(uri)) => {
                let uri = uri.strip_suffix('/').unwrap_or(uri);
                let own = |n: &str| n.strip_suffix('/').unwrap_or(n) == uri;
                if OWN_NAMESPACES.iter().any(|n| own(n))
                    || !self.root_seen
                    || self.root_ns.as_deref().is_some_and(own)
                {
                    Ns::Own
                } else if own(XHTML) {
                    Ns::Xhtml
                } else if own(DUBLIN_CORE) {
                    Ns::DublinCore
                } else {
                    Ns::Other
                }
            }
            ResolveResult::Unknown(_) => Ns::Other,
        }
    }

    /// The depth of an entry's element, and its local name.
    fn item(&self) -> (usize, &'static str) {
        match (self.format, self.parsed.kind) {
            (Format::Sitemap, Kind::Index) => (1, "sitemap"),
            (Format::Sitemap, _) => (1, "url"),
            (Format::Rss, _) => (2, "item"),
            (Format::Rdf, _) => (1, "item"),
            (Format::Atom, _) => (1, "entry"),
        }
    }

    fn start(
        &mut self,
        e: &quick_xml::events::BytesStart<'_>,
        ns: Ns,
    ) -> Result<Flow, SitemapError> {
        let local: String = e.local_name().as_ref().to_owned();
        if !self.root_seen {
            self.root_seen = true;
            if let Some(uri) = e
                .attributes()
                .flatten()
                .find(|a| a.key.as_ref() == "xmlns")
                .map(|a| a.value.into_owned())
            {
                self.root_ns = Some(uri);
            }
            (self.parsed.kind, self.format) = match local.as_str() {
                "urlset" => (Kind::UrlSet, Format::Sitemap),
                "sitemapindex" => (Kind::Index, Format::Sitemap),
                "rss" => (Kind::Feed, Format::Rss),
                "RDF" => (Kind::Feed, Format::Rdf),
                "feed" => (Kind::Feed, Format::Atom),
                "html" => return Err(SitemapError::HtmlPage),
                other => return Err(SitemapError::NotASitemap(other.to_owned())),
            };
        }
        let (item_depth, item) = self.item();
        let depth = self.stack.len();
        if depth == item_depth && local == item && ns == Ns::Own {
            self.entry = Some(Entry::default());
            self.published = None;
        } else if depth == item_depth + 1 && self.entry.is_some() {
            self.field = self.field_of(&local, ns, e);
            let known = self.field.is_some()
                || ns != Ns::Own
                || is_extension(&local)
                || self.format != Format::Sitemap;
            if !known {
                self.warn(format!("unknown tag <{local}> ignored"));
            }
        } else if depth == 1 && ns == Ns::Own && self.format == Format::Sitemap {
            self.warn(format!("unknown tag <{local}> ignored"));
        }
        self.stack.push(local);
        if self.stack.len() > MAX_DEPTH {
            return Err(SitemapError::TooDeep);
        }
        Ok(Flow::Go)
    }

    /// The field an element of an entry fills (an Atom link or an xhtml alternate is read
    /// from its attributes at once).
    fn field_of(
        &mut self,
        local: &str,
        ns: Ns,
        e: &quick_xml::events::BytesStart<'_>,
    ) -> Option<(Field, String)> {
        let attr = |name: &str| {
            e.attributes()
                .flatten()
                .find(|a| a.key.local_name().as_ref() == name)
                .and_then(|a| {
                    a.normalized_value(quick_xml::XmlVersion::Implicit1_0)
                        .ok()
                        .map(|v| v.trim().to_owned())
                })
        };
        let field = match (self.format, ns, local) {
            (Format::Sitemap, Ns::Own, "loc") => Field::Loc,
            (Format::Sitemap, Ns::Own, "lastmod") => Field::Lastmod,
            (Format::Sitemap, Ns::Own, "changefreq") => Field::Changefreq,
            (Format::Sitemap, Ns::Own, "priority") => Field::Priority,
            (Format::Sitemap, Ns::Xhtml, "link") => {
                let (rel, lang, href) = (attr("rel"), attr("hreflang"), attr("href"));
                if let (Some("alternate"), Some(lang), Some(href), Some(entry)) =
                    (rel.as_deref(), lang, href, self.entry.as_mut())
                    && !lang.is_empty()
                    && !href.is_empty()
                    && entry.alternates.len() < MAX_ALTERNATES
                {
                    entry.alternates.push(Alternate {
                        hreflang: lang,
                        href,
                    });
                }
                return None;
            }
            (Format::Rss | Format::Rdf, Ns::Own, "link") => Field::FeedLink,
            (Format::Rss, Ns::Own, "pubDate") | (Format::Rdf, Ns::DublinCore, "date") => {
                Field::FeedDate
            }
            (Format::Atom, Ns::Own, "link") => {
                let rel = attr("rel");
                if matches!(rel.as_deref(), None | Some("alternate"))
                    && let (Some(href), Some(entry)) = (attr("href"), self.entry.as_mut())
                    && entry.loc.is_empty()
                    && !href.is_empty()
                {
                    entry.loc = href;
                }
                return None;
            }
            (Format::Atom, Ns::Own, "updated" | "modified") => Field::FeedDate,
            (Format::Atom, Ns::Own, "published" | "issued") => Field::FeedPublished,
            _ => return None,
        };
        Some((field, String::new()))
    }

    fn end(&mut self, limits: &Limits) -> Flow {
        let closed = self.stack.pop().unwrap_or_default();
        let (item_depth, _) = self.item();
        let depth = self.stack.len();
        if depth == item_depth + 1 {
            if let (Some((f, value)), Some(e)) = (self.field.take(), self.entry.as_mut()) {
                let value = value.trim();
                match f {
                    Field::FeedPublished => self.published = feed_date(value),
                    _ => set_field(e, f, value, &mut self.parsed.warnings),
                }
            }
        } else if depth == item_depth
            && let Some(mut e) = self.entry.take()
        {
            if e.lastmod.is_none() {
                e.lastmod = self.published.take();
            }
            if e.loc.is_empty() {
                self.warn(format!("a <{closed}> without a page URL was skipped"));
            } else if !push_entry(&mut self.parsed, e, limits) {
                return Flow::Stop;
            }
        }
        Flow::Go
    }

    fn text(&mut self, text: &str) -> Flow {
        if let Some((_, value)) = self.field.as_mut() {
            value.push_str(text);
        }
        Flow::Go
    }

    fn warn(&mut self, warning: String) {
        self.parsed.warnings.push(warning);
    }

    /// The result at the end of the input.
    fn finish(mut self, position: u64) -> Result<Parsed, SitemapError> {
        if !self.root_seen {
            return Err(SitemapError::Empty);
        }
        if let Some(open) = self.stack.last() {
            self.parsed.error = Some(SitemapError::Xml {
                position,
                message: format!("the document ends inside <{open}>"),
            });
        }
        Ok(self.parsed)
    }
}

/// Most `xhtml:link` alternates kept per page.
const MAX_ALTERNATES: usize = 64;

/// A feed's date as a W3C datetime: RFC 822/2822 (RSS) or already W3C (Atom).
fn feed_date(value: &str) -> Option<String> {
    if is_w3c_datetime(value) {
        return Some(value.to_owned());
    }
    chrono::DateTime::parse_from_rfc2822(value).ok().map(|t| {
        t.with_timezone(&chrono::Utc)
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    })
}

/// Extension elements that may appear inside `<url>` without a prefix in sloppy sitemaps.
fn is_extension(local: &str) -> bool {
    matches!(local, "image" | "news" | "video" | "link" | "mobile")
}

fn predefined_entity(name: &str) -> Option<char> {
    match name {
        "amp" => Some('&'),
        "lt" => Some('<'),
        "gt" => Some('>'),
        "quot" => Some('"'),
        "apos" => Some('\''),
        _ => None,
    }
}

fn set_field(entry: &mut Entry, field: Field, value: &str, warnings: &mut Vec<String>) {
    if value.is_empty() {
        return;
    }
    match field {
        Field::Loc => entry.loc = value.to_owned(),
        Field::FeedLink if entry.loc.is_empty() => entry.loc = value.to_owned(),
        Field::FeedLink | Field::FeedPublished => {}
        Field::FeedDate => match feed_date(value) {
            Some(date) => entry.lastmod = Some(date),
            None => warnings.push(format!(
                "date {value:?} is neither RFC 822 nor W3C, dropped"
            )),
        },
        Field::Lastmod if is_w3c_datetime(value) => entry.lastmod = Some(value.to_owned()),
        Field::Changefreq if CHANGEFREQS.contains(&value.to_ascii_lowercase().as_str()) => {
            entry.changefreq = Some(value.to_ascii_lowercase());
        }
        Field::Priority if value.parse::<f64>().is_ok_and(|p| (0.0..=1.0).contains(&p)) => {
            entry.priority = Some(value.to_owned());
        }
        Field::Lastmod => {
            warnings.push(format!("lastmod {value:?} is not a W3C datetime, dropped"))
        }
        Field::Changefreq => warnings.push(format!(
            "changefreq {value:?} is not one of {CHANGEFREQS:?}, dropped"
        )),
        Field::Priority => warnings.push(format!(
            "priority {value:?} is not a number from 0.0 to 1.0, dropped"
        )),
    }
}

const CHANGEFREQS: [&str; 7] = [
    "always", "hourly", "daily", "weekly", "monthly", "yearly", "never",
];

/// The W3C datetime profile of ISO 8601 that sitemaps use: `YYYY`, `YYYY-MM`, `YYYY-MM-DD`, or
/// a date and time with a zone (seconds and fractions optional).
pub fn is_w3c_datetime(s: &str) -> bool {
    use chrono::{DateTime, NaiveDate};
    if DateTime::parse_from_rfc3339(s).is_ok() || NaiveDate::parse_from_str(s, "%Y-%m-%d").is_ok() {
        return true;
    }
    let digits = |t: &str, n: usize| t.len() == n && t.bytes().all(|b| b.is_ascii_digit());
    match s.split('-').collect::<Vec<_>>().as_slice() {
        [y] => digits(y, 4),
        [y, m] => digits(y, 4) && digits(m, 2) && (1..=12).contains(&m.parse::<u32>().unwrap_or(0)),
        _ => {
            DateTime::parse_from_str(s, "%Y-%m-%dT%H:%M%:z").is_ok()
                || chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%MZ").is_ok()
        }
    }
}

/// A W3C datetime as an instant (a date means its midnight UTC, a month its first day, ...).
pub fn lastmod_time(s: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeZone, Utc};
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    if let Ok(t) = DateTime::parse_from_str(s, "%Y-%m-%dT%H:%M%:z") {
        return Some(t.with_timezone(&Utc));
    }
    if let Ok(t) = NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%MZ") {
        return Some(Utc.from_utc_datetime(&t));
    }
    let date = match s.len() {
        4 => NaiveDate::parse_from_str(&format!("{s}-01-01"), "%Y-%m-%d").ok(),
        7 => NaiveDate::parse_from_str(&format!("{s}-01"), "%Y-%m-%d").ok(),
        _ => NaiveDate::parse_from_str(s, "%Y-%m-%d").ok(),
    }?;
    Some(Utc.from_utc_datetime(&date.and_hms_opt(0, 0, 0)?))
}

/// Whether a doctype declares an HTML document (`<!DOCTYPE html ...>`).
fn is_html_doctype(doctype: &[u8]) -> bool {
    doctype
        .trim_ascii_start()
        .get(..4)
        .is_some_and(|name| name.eq_ignore_ascii_case(b"html"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(s: &str) -> Parsed {
        parse(s.as_bytes(), &Limits::default()).expect("parses")
    }

    #[test]
    fn a_urlset_keeps_loc_lastmod_changefreq_and_priority() {
        let p = parse_str(
            r#"<?xml version="1.0"?><urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">
            <url><loc> https://a.example/x </loc><lastmod>2024-01-01</lastmod><changefreq>Weekly</changefreq><priority>0.8</priority></url>
            <url><loc>https://a.example/y</loc></url></urlset>"#,
        );
        assert_eq!(p.kind, Kind::UrlSet);
        assert_eq!(p.entries.len(), 2);
        assert_eq!(
            p.entries[0],
            Entry {
                loc: "https://a.example/x".into(),
                lastmod: Some("2024-01-01".into()),
                changefreq: Some("weekly".into()),
                priority: Some("0.8".into()),
                ..Default::default()
            }
        );
        assert!(p.error.is_none() && p.warnings.is_empty());
    }

    #[test]
    fn entity_references_and_cdata_are_resolved() {
        let p = parse_str(
            "<urlset><url><loc>https://a.example/?a=1&amp;b=2&#38;c=&#x33;</loc></url><url><loc><![CDATA[https://a.example/?x=1&y=2]]></loc></url></urlset>",
        );
        assert_eq!(p.entries[0].loc, "https://a.example/?a=1&b=2&c=3");
        assert_eq!(p.entries[1].loc, "https://a.example/?x=1&y=2");
    }

    #[test]
    fn a_missing_namespace_a_bom_and_a_prefix_do_not_matter() {
        let p = parse_str("\u{feff}<urlset><url><loc>https://a.example/</loc></url></urlset>");
        assert_eq!(p.entries.len(), 1);
        let p = parse_str(
            "<sitemapindex xmlns='http://www.google.com/schemas/sitemap/0.84'><sitemap><loc>https://a.example/s.xml</loc></sitemap></sitemapindex>",
        );
        assert_eq!((p.kind, p.entries.len()), (Kind::Index, 1));
    }

    #[test]
    fn elements_are_matched_by_namespace_not_by_their_prefix() {
        let p = parse_str(
            r#"<sit:urlset xmlns:sit="http://www.sitemaps.org/schemas/sitemap/0.9"><sit:url><sit:loc>https://a.example/p</sit:loc><sit:lastmod>2026-01-02</sit:lastmod></sit:url></sit:urlset>"#,
        );
        assert_eq!(p.entries.len(), 1, "{p:?}");
        assert_eq!(p.entries[0].lastmod.as_deref(), Some("2026-01-02"));
        // A prefix bound to an extension's namespace is an extension, whatever it is called.
        let p = parse_str(
            r#"<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9" xmlns:s="http://www.google.com/schemas/sitemap-image/1.1"><url><loc>https://a.example/p</loc><s:image><s:loc>https://a.example/i.jpg</s:loc></s:image></url></urlset>"#,
        );
        assert_eq!(
            p.entries.iter().map(|e| e.loc.as_str()).collect::<Vec<_>>(),
            ["https://a.example/p"]
        );
    }

    #[test]
    fn hreflang_alternates_are_kept_with_their_page() {
        let p = parse_str(
            r#"<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9" xmlns:xhtml="http://www.w3.org/1999/xhtml"><url><loc>https://a.example/en/</loc><xhtml:link rel="alternate" hreflang="de" href="https://a.example/de/"/><xhtml:link rel="alternate" hreflang="x-default" href="https://a.example/"/><xhtml:link rel="stylesheet" href="https://a.example/s.css"/></url></urlset>"#,
        );
        assert_eq!(
            p.entries[0].alternates,
            [
                Alternate {
                    hreflang: "de".into(),
                    href: "https://a.example/de/".into()
                },
                Alternate {
                    hreflang: "x-default".into(),
                    href: "https://a.example/".into()
                }
            ]
        );
        assert!(p.warnings.is_empty(), "{:?}", p.warnings);
    }

    #[test]
    fn rss_and_atom_feeds_list_their_pages_with_dates() {
        let rss = parse_str(
            r#"<rss version="2.0"><channel><title>T</title><link>https://a.example/</link><item><title>One</title><link> https://a.example/one </link><pubDate>Sun, 06 Jul 2014 12:56:00 GMT</pubDate></item><item><link>https://a.example/two</link><pubDate>not a date</pubDate></item><item><title>no link</title></item></channel></rss>"#,
        );
        let pages = |p: &Parsed| -> Vec<(String, Option<String>)> {
            p.entries
                .iter()
                .map(|e| (e.loc.clone(), e.lastmod.clone()))
                .collect()
        };
        let s = |v: &str| v.to_owned();
        assert_eq!(rss.kind, Kind::Feed);
        assert_eq!(
            pages(&rss),
            [
                (s("https://a.example/one"), Some(s("2014-07-06T12:56:00Z"))),
                (s("https://a.example/two"), None)
            ],
            "the channel's own link is not a page"
        );
        assert_eq!(rss.warnings.len(), 2, "{:?}", rss.warnings);
        let atom = parse_str(
            r#"<feed xmlns="http://www.w3.org/2005/Atom"><link href="https://a.example/"/><entry><link rel="self" href="https://a.example/feed/1"/><link rel="alternate" href="https://a.example/1"/><updated>2026-03-04T05:06:07Z</updated><published>2026-01-01T00:00:00Z</published></entry><entry><link href="https://a.example/2"/><published>2026-02-02T00:00:00+01:00</published></entry></feed>"#,
        );
        assert_eq!(atom.kind, Kind::Feed);
        assert_eq!(
            pages(&atom),
            [
                (s("https://a.example/1"), Some(s("2026-03-04T05:06:07Z"))),
                (
                    s("https://a.example/2"),
                    Some(s("2026-02-02T00:00:00+01:00"))
                )
            ]
        );
    }

    #[test]
    fn extension_locs_are_not_page_urls() {
        let p = parse_str(
            r#"<urlset xmlns:image="http://www.google.com/schemas/sitemap-image/1.1"><url><loc>https://a.example/p</loc><image:image><image:loc>https://a.example/i.jpg</image:loc></image:image></url></urlset>"#,
        );
        assert_eq!(
            p.entries.iter().map(|e| e.loc.as_str()).collect::<Vec<_>>(),
            ["https://a.example/p"]
        );
        assert!(p.warnings.is_empty());
    }

    #[test]
    fn a_dtd_is_refused_so_no_entity_attack_can_run() {
        let bomb = r#"<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]><urlset><url><loc>&lol2;</loc></url></urlset>"#;
        assert_eq!(
            parse(bomb.as_bytes(), &Limits::default()),
            Err(SitemapError::Dtd)
        );
        let xxe = r#"<?xml version="1.0"?><!DOCTYPE foo [<!ENTITY xxe SYSTEM "file:///etc/passwd">]><urlset><url><loc>&xxe;</loc></url></urlset>"#;
        assert_eq!(
            parse(xxe.as_bytes(), &Limits::default()),
            Err(SitemapError::Dtd)
        );
    }

    #[test]
    fn malformed_xml_keeps_the_entries_before_the_fault() {
        let p = parse_str(
            "<urlset><url><loc>https://a.example/1</loc></url><url><loc>https://a.example/2</loc></url><url><loc>https://a.exa</urlset>",
        );
        assert_eq!(p.entries.len(), 2);
        assert!(
            matches!(p.error, Some(SitemapError::Xml { .. })),
            "{:?}",
            p.error
        );
    }

    #[test]
    fn gzip_is_detected_by_magic_bytes_and_bombs_are_stopped() {
        use flate2::{Compression, write::GzEncoder};
        use std::io::Write;
        let xml = "<urlset><url><loc>https://a.example/</loc></url></urlset>";
        let mut gz = GzEncoder::new(Vec::new(), Compression::default());
        gz.write_all(xml.as_bytes()).expect("gzip");
        let gz = gz.finish().expect("gzip");
        assert_eq!(
            parse(&gz, &Limits::default())
                .expect("parses")
                .entries
                .len(),
            1
        );

        let mut bomb = GzEncoder::new(Vec::new(), Compression::best());
        bomb.write_all(&vec![b' '; 10 * 1024 * 1024]).expect("gzip");
        let bomb = bomb.finish().expect("gzip");
        assert!(bomb.len() < 20 * 1024, "a small body");
        let limits = Limits {
            max_inflated_bytes: 1024 * 1024,
            ..Limits::default()
        };
        assert_eq!(
            parse(&bomb, &limits),
            Err(SitemapError::InflatedTooLarge(1024 * 1024))
        );
        assert!(matches!(
            parse(&[0x1f, 0x8b, 0, 1, 2], &limits),
            Err(SitemapError::Gzip(_))
        ));
    }

    #[test]
    fn limits_on_entries_url_length_and_depth_hold() {
        let many: String = (0..10)
            .map(|i| format!("<url><loc>https://a.example/{i}</loc></url>"))
            .collect();
        let limits = Limits {
            max_entries: 3,
            ..Limits::default()
        };
        let p = parse(format!("<urlset>{many}</urlset>").as_bytes(), &limits).expect("parses");
        assert_eq!((p.entries.len(), p.truncated), (3, true));
        let long = format!(
            "<urlset><url><loc>https://a.example/{}</loc></url></urlset>",
            "a".repeat(3000)
        );
        let p = parse_str(&long);
        assert!(p.entries.is_empty() && !p.warnings.is_empty());
        let deep = format!("<urlset>{}{}</urlset>", "<a>".repeat(40), "</a>".repeat(40));
        assert_eq!(
            parse(deep.as_bytes(), &Limits::default()),
            Err(SitemapError::TooDeep)
        );
    }

    #[test]
    fn plain_text_sitemaps_are_one_url_per_line() {
        let p = parse_str("https://a.example/1\n\n  https://a.example/2  \nnot a url\n");
        assert_eq!(p.kind, Kind::Text);
        assert_eq!(p.entries.len(), 2);
        assert_eq!(p.warnings.len(), 1);
    }

    #[test]
    fn bad_values_are_dropped_with_a_warning_not_an_error() {
        let p = parse_str(
            "<urlset><url><loc>https://a.example/</loc><lastmod>yesterday</lastmod><priority>2</priority><changefreq>sometimes</changefreq></url></urlset>",
        );
        assert_eq!(
            p.entries[0],
            Entry {
                loc: "https://a.example/".into(),
                ..Entry::default()
            }
        );
        assert_eq!(p.warnings.len(), 3);
    }

    #[test]
    fn other_documents_and_empty_input_are_errors() {
        assert_eq!(parse(b"", &Limits::default()), Err(SitemapError::Empty));
        assert_eq!(
            parse(b"  \n ", &Limits::default()),
            Err(SitemapError::Empty)
        );
        assert_eq!(
            parse(b"<html><body/></html>", &Limits::default()),
            Err(SitemapError::HtmlPage)
        );
        assert_eq!(
            parse(
                b"<!DOCTYPE html>\n<html><head><title>Blog</title></head></html>",
                &Limits::default()
            ),
            Err(SitemapError::HtmlPage),
            "a web page's doctype is not taken for an entity attack"
        );
        assert_eq!(
            parse(b"<note><to>Tove</to></note>", &Limits::default()),
            Err(SitemapError::NotASitemap("note".into()))
        );
    }

    #[test]
    fn lastmod_values_become_instants() {
        let t = |s: &str| lastmod_time(s).map(|t| t.to_rfc3339());
        assert_eq!(
            t("2024-02-12T12:34:56+01:00").as_deref(),
            Some("2024-02-12T11:34:56+00:00")
        );
        assert_eq!(
            t("2024-02-12").as_deref(),
            Some("2024-02-12T00:00:00+00:00")
        );
        assert_eq!(t("2024-02").as_deref(), Some("2024-02-01T00:00:00+00:00"));
        assert_eq!(t("2024").as_deref(), Some("2024-01-01T00:00:00+00:00"));
        assert_eq!(t("soon"), None);
    }

    #[test]
    fn w3c_datetimes() {
        for ok in [
            "2024",
            "2024-02",
            "2024-02-12",
            "2024-02-12T12:34:56+01:00",
            "2024-02-12T12:34Z",
            "2004-10-01T18:23:17+00:00",
            "2018-04-27T17:00:00.000Z",
        ] {
            assert!(is_w3c_datetime(ok), "{ok}");
        }
        for bad in ["yesterday", "2024-13", "12/02/2024", "2024-02-30"] {
            assert!(!is_w3c_datetime(bad), "{bad}");
        }
    }
}
