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
use quick_xml::reader::Reader;
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
    #[error("not a sitemap: the root element is <{0}>, expected <urlset> or <sitemapindex>")]
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

/// The field of an entry being read.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Field {
    Loc,
    Lastmod,
    Changefreq,
    Priority,
}

fn parse_xml(text: &str, limits: &Limits) -> Result<Parsed, SitemapError> {
    let mut reader = Reader::from_str(text);
    reader.config_mut().check_end_names = true;
    // `<x/>` becomes a start and an end, so the element stack stays balanced.
    reader.config_mut().expand_empty_elements = true;
    let mut doc = XmlDoc::default();
    loop {
        let event = match reader.read_event() {
            Ok(event) => event,
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
            Event::Start(e) => doc.start(&e)?,
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

/// What has been read of an XML sitemap so far.
struct XmlDoc {
    parsed: Parsed,
    /// The local names of the open elements.
    stack: Vec<String>,
    /// The `<url>` or `<sitemap>` being read.
    entry: Option<Entry>,
    /// The field of `entry` being read, and its text so far.
    field: Option<(Field, String)>,
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
            stack: Vec::new(),
            entry: None,
            field: None,
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

    fn start(&mut self, e: &quick_xml::events::BytesStart<'_>) -> Result<Flow, SitemapError> {
        let local: String = e.local_name().as_ref().to_owned();
        let unprefixed = e.name().prefix().is_none();
        if !self.root_seen {
            self.root_seen = true;
            self.parsed.kind = match local.as_str() {
                "urlset" => Kind::UrlSet,
                "sitemapindex" => Kind::Index,
                "html" => return Err(SitemapError::HtmlPage),
                other => return Err(SitemapError::NotASitemap(other.to_owned())),
            };
        }
        let item = if self.parsed.kind == Kind::Index {
            "sitemap"
        } else {
            "url"
        };
        let depth = self.stack.len();
        if depth == 1 && local == item && unprefixed {
            self.entry = Some(Entry::default());
        } else if depth == 2 && self.entry.is_some() && unprefixed {
            self.field = match local.as_str() {
                "loc" => Some((Field::Loc, String::new())),
                "lastmod" => Some((Field::Lastmod, String::new())),
                "changefreq" => Some((Field::Changefreq, String::new())),
                "priority" => Some((Field::Priority, String::new())),
                _ => None,
            };
            if self.field.is_none() && !is_extension(&local) {
                self.warn(format!("unknown tag <{local}> ignored"));
            }
        } else if depth == 1 && unprefixed {
            self.warn(format!("unknown tag <{local}> ignored"));
        }
        self.stack.push(local);
        if self.stack.len() > MAX_DEPTH {
            return Err(SitemapError::TooDeep);
        }
        Ok(Flow::Go)
    }

    fn end(&mut self, limits: &Limits) -> Flow {
        let closed = self.stack.pop().unwrap_or_default();
        match self.stack.len() {
            2 => {
                if let (Some((f, value)), Some(e)) = (self.field.take(), self.entry.as_mut()) {
                    set_field(e, f, value.trim(), &mut self.parsed.warnings);
                }
            }
            1 => {
                if let Some(e) = self.entry.take() {
                    if e.loc.is_empty() {
                        self.warn(format!("a <{closed}> without <loc> was skipped"));
                    } else if !push_entry(&mut self.parsed, e, limits) {
                        return Flow::Stop;
                    }
                }
            }
            _ => {}
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
                priority: Some("0.8".into())
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
            parse(b"<feed><entry/></feed>", &Limits::default()),
            Err(SitemapError::NotASitemap("feed".into()))
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
