// The variants of a page and the headers of cached answers, as in src/domain/edge.rs (both
// are tested against tests/fixtures/edge-vectors.json); who gets what is policy.js.

export const MARKDOWN_SUFFIX = ".md";
export const VARY = "Accept, User-Agent";

/** The path of a page's Markdown variant. */
export function markdownPath(pagePath) {
  return pagePath.endsWith("/") ? `${pagePath}index${MARKDOWN_SUFFIX}` : `${pagePath}${MARKDOWN_SUFFIX}`;
}

/** The page path a Markdown variant path stands for, or null. */
export function pageOfMarkdownPath(path) {
  if (!path.endsWith(MARKDOWN_SUFFIX)) return null;
  const stem = path.slice(0, -MARKDOWN_SUFFIX.length);
  if (stem.endsWith("/index")) return stem.slice(0, -"index".length);
  if (stem === "" || stem.endsWith("/")) return null;
  return stem;
}

/** Whether Accept asks for Markdown (text/markdown with a non-zero quality). */
export function acceptsMarkdown(accept) {
  return (accept || "").split(",").some((item) => {
    const parts = item.split(";").map((p) => p.trim());
    if (parts[0].toLowerCase() !== "text/markdown") return false;
    return !parts.slice(1).some((p) => p.startsWith("q=") && Number.parseFloat(p.slice(2)) <= 0);
  });
}

/** The Link header to the Markdown variant. */
export function linkHeader(prefix, pagePath, search) {
  return `<${prefix}${markdownPath(pagePath)}${search || ""}>; rel="alternate"; type="text/markdown"`;
}

/** The Link value naming the page as canonical (sent with its Markdown copy). */
export function canonicalLink(pageUrl) {
  return `<${pageUrl}>; rel="canonical"`;
}

/** The YAML front matter before a page's Markdown when the policy asks for it, as in
 * src/domain/front_matter.rs (both tested against tests/fixtures/front-matter-vectors.json):
 * each value a double-quoted scalar in JSON's escaping, so no value can end the block. */
export function frontMatter({ title, source, description, language, lastModified }) {
  const lines = ["---"];
  const field = (name, value) => {
    const v = typeof value === "string" ? value.trim() : "";
    if (v) lines.push(`${name}: ${JSON.stringify(v)}`);
  };
  field("title", title);
  field("source", source);
  field("description", description);
  field("language", language);
  const modified = new Date(lastModified);
  if (!Number.isNaN(modified.getTime())) field("last_modified", modified.toISOString().replace(/\.\d{3}Z$/, "Z"));
  return `${lines.join("\n")}\n---\n\n`;
}
