// What the edge serves, as in src/domain/edge.rs (both are tested against
// tests/fixtures/edge-vectors.json).

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

/** {serve: "markdown"|"html"|"pass", pagePath, explicitMarkdown}. */
export function decide(path, accept, visitor) {
  const page = pageOfMarkdownPath(path);
  if (page !== null) return { serve: "markdown", pagePath: page, explicitMarkdown: true };
  let serve = "pass";
  if (acceptsMarkdown(accept)) serve = "markdown";
  else if (visitor.visitor_type === "ai_bot") serve = "html";
  return { serve, pagePath: path, explicitMarkdown: false };
}

/** The Link header to the Markdown variant. */
export function linkHeader(prefix, pagePath, search) {
  return `<${prefix}${markdownPath(pagePath)}${search || ""}>; rel="alternate"; type="text/markdown"`;
}
