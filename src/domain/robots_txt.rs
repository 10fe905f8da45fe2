//! The robots.txt the edge serves for a client that lets ai-cache serve one: the site's own
//! robots.txt, every rule kept, with the client's `Content-Signal` (Cloudflare's Content
//! Signals Policy: `search=yes, ai-train=no, ai-input=yes`) stated in its `User-agent: *`
//! group. Pure and deterministic: the same file and signal give the same bytes.
//!
//! The line goes right after the user-agent lines of every group that names `*` (a group may
//! name several agents); a file without such a group gets one that allows everything, which
//! is what a missing `*` group means anyway, so no crawler's rules change.

/// The file's path.
pub const ROBOTS_TXT: &str = "/robots.txt";

/// What the Content-Signal lines mean, for the people who read the file (Cloudflare's policy
/// text, abridged).
const PREAMBLE: &str = "\
# Content signals (https://contentsignals.org): what the site's owner allows its content to be
# used for after it is accessed. search: building a search index and showing links and short
# excerpts. ai-input: feeding it into AI models' answers (retrieval, grounding). ai-train:
# training or fine-tuning AI models. yes allows, no refuses; a use not named is not stated.
";

/// `origin_body`: the site's robots.txt (none when it has none: a 4xx); `signal`: the
/// client's Content-Signal value, if any.
pub fn served_robots_txt(origin_body: Option<&str>, signal: Option<&str>) -> String {
    let body = origin_body.unwrap_or_default();
    let Some(signal) = signal.map(str::trim).filter(|s| !s.is_empty()) else {
        return if body.is_empty() {
            "User-agent: *\nAllow: /\n".to_owned()
        } else {
            body.to_owned()
        };
    };
    let signal_line = format!("Content-Signal: {signal}");
    let mut out = String::with_capacity(body.len() + PREAMBLE.len() + 128);
    out.push_str(PREAMBLE);
    out.push('\n');
    let mut found = false;
    // Within a run of user-agent lines (a group's head): whether one of them names `*`.
    let mut in_head = false;
    let mut head_has_star = false;
    let flush = |out: &mut String, head_has_star: bool, found: &mut bool| {
        if head_has_star {
            out.push_str(&signal_line);
            out.push('\n');
            *found = true;
        }
    };
    for line in body.lines() {
        let directive = line.split('#').next().unwrap_or_default().trim();
        let (key, value) = directive.split_once(':').unwrap_or((directive, ""));
        let is_agent = key.trim().eq_ignore_ascii_case("user-agent");
        // An existing Content-Signal line is the site's own statement: ours replaces it.
        let is_signal = key.trim().eq_ignore_ascii_case("content-signal");
        if in_head && !is_agent && !directive.is_empty() {
            flush(&mut out, head_has_star, &mut found);
            in_head = false;
            head_has_star = false;
        }
        if is_agent {
            in_head = true;
            head_has_star |= value.trim() == "*";
        }
        if !is_signal {
            out.push_str(line.trim_end_matches('\r'));
            out.push('\n');
        }
    }
    if in_head {
        flush(&mut out, head_has_star, &mut found);
    }
    if !found {
        if !body.is_empty() {
            out.push('\n');
        }
        out.push_str(&format!("User-agent: *\n{signal_line}\nAllow: /\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIGNAL: &str = "ai-train=no, search=yes, ai-input=yes";

    #[test]
    fn the_signal_joins_the_star_group_and_every_rule_stays() {
        let origin = "User-agent: GPTBot\nDisallow: /\n\nUser-agent: Bingbot\nUser-agent: *\n\
                      Disallow: /private/ # no\nSitemap: https://example.com/sitemap.xml\n";
        let served = served_robots_txt(Some(origin), Some(SIGNAL));
        assert!(served.starts_with("# Content signals"), "{served}");
        let body = served.split_once("\n\n").expect("preamble").1;
        assert_eq!(
            body,
            "User-agent: GPTBot\nDisallow: /\n\nUser-agent: Bingbot\nUser-agent: *\n\
             Content-Signal: ai-train=no, search=yes, ai-input=yes\n\
             Disallow: /private/ # no\nSitemap: https://example.com/sitemap.xml\n"
        );
        // The served file means the same to every crawler.
        for agent in ["GPTBot", "Bingbot", "ClaudeBot"] {
            for path in ["/", "/private/x", "/blog"] {
                let url = format!("https://example.com{path}");
                let before = texting_robots::Robot::new(agent, origin.as_bytes()).expect("parse");
                let after = texting_robots::Robot::new(agent, served.as_bytes()).expect("parse");
                assert_eq!(before.allowed(&url), after.allowed(&url), "{agent} {path}");
            }
        }
    }

    #[test]
    fn a_file_without_a_star_group_or_without_a_file_gets_one_that_allows_everything() {
        let served = served_robots_txt(Some("User-agent: GPTBot\nDisallow: /\n"), Some(SIGNAL));
        assert!(
            served.ends_with(
                "User-agent: GPTBot\nDisallow: /\n\nUser-agent: *\n\
                 Content-Signal: ai-train=no, search=yes, ai-input=yes\nAllow: /\n"
            ),
            "{served}"
        );
        let none = served_robots_txt(None, Some(SIGNAL));
        assert!(
            none.ends_with(
                "\n\nUser-agent: *\nContent-Signal: ai-train=no, search=yes, ai-input=yes\nAllow: /\n"
            ),
            "{none}"
        );
    }

    #[test]
    fn the_sites_own_signal_is_replaced_and_no_signal_leaves_the_file_as_it_is() {
        let origin = "User-agent: *\nContent-Signal: ai-train=yes\nAllow: /\n";
        let served = served_robots_txt(Some(origin), Some(SIGNAL));
        assert_eq!(served.matches("Content-Signal:").count(), 1, "{served}");
        assert!(served.contains("Content-Signal: ai-train=no"), "{served}");
        assert_eq!(served_robots_txt(Some(origin), None), origin);
        assert_eq!(
            served_robots_txt(None, Some("  ")),
            "User-agent: *\nAllow: /\n"
        );
        assert_eq!(
            served_robots_txt(Some(origin), Some(SIGNAL)),
            served,
            "deterministic"
        );
    }
}
