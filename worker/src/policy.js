// A client's edge policy, evaluated as src/domain/policy.rs does (both are tested against
// tests/fixtures/policy-vectors.json): ordered rules matched on who the visitor is, the first
// match deciding; the default rule for everyone else. See that file for the actions.

import { acceptsMarkdown, pageOfMarkdownPath } from "./edge.js";

export const DEFAULT_BLOCK_BODY =
  "Access to this content by automated agents is not allowed by the site owner.\n";

const PRICE = /^([A-Z]{3}) ([0-9]{1,9})(?:\.([0-9]{1,6}))?$/;

/** `USD 0.01` → {currency, micros} (millionths, exact), or null. */
export function parsePrice(text) {
  const m = PRICE.exec(String(text ?? "").trim().replace(/ +/, " "));
  if (!m) return null;
  const micros = BigInt(m[2]) * 1000000n + BigInt((m[3] || "").padEnd(6, "0"));
  return { currency: m[1], micros };
}

/** {currency, micros} → `USD 0.01` (at least two decimals, trailing zeros dropped). */
export function formatPrice(price) {
  const units = price.micros / 1000000n;
  const fraction = String(price.micros % 1000000n).padStart(6, "0").replace(/0+$/, "").padEnd(2, "0");
  return `${price.currency} ${units}.${fraction}`;
}

function same(want, have) {
  return want == null || (have != null && String(have).toLowerCase() === String(want).toLowerCase());
}

function matches(rule, visitor, verification) {
  return (
    same(rule.bot, visitor.bot_name) &&
    same(rule.operator, visitor.operator) &&
    (rule.category == null || visitor.category === rule.category) &&
    (rule.visitor_type == null || visitor.visitor_type === rule.visitor_type) &&
    (rule.verification == null || rule.verification.includes(verification))
  );
}

/**
 * What a request gets: {answer: "markdown"|"html"|"pass"|"block"|"payment", pagePath,
 * explicitMarkdown, status?, body?, markdown?, price?, error?, charged?}.
 * `request` is {path, accept, visitor, verification, exactPrice, maxPrice}.
 */
export function decide(policy, request) {
  const p = policy || {};
  const page = pageOfMarkdownPath(request.path);
  const explicitMarkdown = page !== null;
  const pagePath = explicitMarkdown ? page : request.path;
  const asksMarkdown = explicitMarkdown || acceptsMarkdown(request.accept);
  const rules = Array.isArray(p.rules) ? p.rules : [];
  const rule = rules.find((r) => matches(r, request.visitor, request.verification)) || p.default || {};
  const aiFormat = p.ai_format === "markdown" ? "markdown" : "html";
  const base = { pagePath, explicitMarkdown };
  const asked = (otherwise) => ({ ...base, answer: asksMarkdown ? "markdown" : otherwise });
  const block = () => ({
    ...base,
    answer: "block",
    status: 403,
    body: rule.body ?? DEFAULT_BLOCK_BODY,
    markdown: asksMarkdown,
  });
  switch (rule.action || "auto") {
    case "auto":
      return asked(request.visitor.visitor_type === "ai_bot" ? aiFormat : "pass");
    case "pass":
      return asked("pass");
    case "serve_markdown":
      return { ...base, answer: "markdown" };
    case "serve_html":
      return asked("html");
    case "block":
      return block();
    case "charge": {
      const price = parsePrice(rule.price);
      // Validated on the Rust side; an unusable stored price refuses rather than gives away.
      if (!price) return { ...block(), body: DEFAULT_BLOCK_BODY };
      return { ...base, ...charge(price, request, asksMarkdown ? "markdown" : aiFormat) };
    }
    default:
      // An action this Worker does not know (a newer ai-cache): the origin decides.
      return asked("pass");
  }
}

function charge(price, request, served) {
  const refuse = (status, error) => ({ answer: "payment", status, price: formatPrice(price), error });
  const exact = request.exactPrice || null;
  const max = request.maxPrice || null;
  if (exact === null && max === null) return refuse(402, null);
  if (exact !== null && max !== null) return refuse(400, "ConflictingPriceHeaders");
  const offer = parsePrice(exact ?? max);
  if (!offer) return refuse(400, "InvalidCrawlerPriceValue");
  if (exact !== null && (offer.currency !== price.currency || offer.micros !== price.micros)) {
    return refuse(402, "InvalidCrawlerExactPrice");
  }
  if (max !== null && (offer.currency !== price.currency || offer.micros < price.micros)) {
    return refuse(402, "InvalidCrawlerMaxPrice");
  }
  return { answer: served, charged: formatPrice(price) };
}
