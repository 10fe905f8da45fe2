// The ai-cache Worker, in front of a client's site. What each visitor gets is the client's edge
// policy (policy.js; written by ai-cache's uploader to the KV key `settings:edge`, the default
// policy when absent): by default a known AI agent, a request with `Accept: text/markdown` or
// a request for a page's `.md` variant gets the cached Markdown or minimal HTML from KV (with
// `Vary`, `Link`, `ETag` and `Last-Modified`; Markdown also with `x-markdown-tokens`, a
// canonical link, and `noindex` at its `.md` URL); rules may block (403) or charge (402,
// Cloudflare's pay-per-crawl headers). Everything else, and any page not in KV, goes to the
// origin untouched. The site's `/llms.txt` and `/llms-full.txt` (written by ai-cache's uploader
// like a page) are served to everyone, and its `/robots.txt` (with the policy's Content-Signal)
// when the policy's `robots_txt` lets ai-cache serve it. Every GET/HEAD is recorded as a visit, posted to
// ai-cache's ingestion API off the response path.
//
// Verification: a request signed with Web Bot Auth (webbotauth.js) whose signature verifies with
// its agent's published keys is `signature`, and its visit names the agent; otherwise this
// Worker knows a bot by its user agent (`claimed`), and ai-cache checks the address against the
// operator's ranges and reverse DNS when the visit arrives. Rules that require `ip_verified` or
// `rdns` therefore apply on the built-in edge, not here.
//
// One Worker serves many sites: pages of every site live in one KV namespace under keys that
// name their host, each site's policy under `settings:edge:<domain>`, and visits are posted
// with the `ingest` key of the site's client.
//
// Bindings (wrangler.toml): AI_CACHE_KV (the KV namespace), AI_CACHE_API_URL, the secret
// AI_CACHE_SITES (JSON: each domain's `ingest` key, `{"example.com": "aic_..."}`) or, for one
// site, AI_CACHE_INGEST_KEY; VISITS_QUEUE (a Cloudflare Queue, optional: visits then survive
// isolate evictions), VISITS_FLUSH_MS and POLICY_TTL_MS (optional).

import { classify } from "./classify.js";
import { VARY, canonicalLink, frontMatter, linkHeader } from "./edge.js";
import { htmlKey, kvKey, markdownKey } from "./kvkey.js";
import { decide } from "./policy.js";
import { attribute, signatureAgent } from "./webbotauth.js";
import { VisitBuffer, postVisits } from "./visits.js";

const visits = new VisitBuffer();

/** How long an isolate keeps a site's policy (KV itself propagates within about a minute);
 * POLICY_TTL_MS overrides it. */
const POLICY_TTL_MS = 30000;
const policies = new Map();

/** The site a host belongs to: the host itself, or without its `www.`. */
function sitesOf(host) {
  return host.startsWith("www.") ? [host, host.slice(4)] : [host];
}

/** The edge policy of the site of `host` (`settings:edge:<domain>`, written by ai-cache). */
async function policyOf(env, host) {
  const now = Date.now();
  const known = policies.get(host);
  if (known && now - known.at < Number(env.POLICY_TTL_MS ?? POLICY_TTL_MS)) return known.policy;
  let policy = known ? known.policy : null;
  try {
    policy = null;
    for (const site of sitesOf(host)) {
      policy = await env.AI_CACHE_KV.get(`settings:edge:${site}`, { type: "json" });
      if (policy) break;
    }
  } catch {
    // KV unavailable or the value unreadable: keep what this isolate had (the default at first).
    policy = known ? known.policy : null;
  }
  if (policies.size >= 1000) policies.clear();
  policies.set(host, { at: now, policy });
  return policy;
}

export default {
  /** The queue consumer: posts each site's visits with its key; what could not be posted now
   * is retried by the queue (with its backoff), what the API refused for good is dropped. */
  async queue(batch, env) {
    const bySite = new Map();
    for (const message of batch.messages) {
      const host = message.body?.host || "";
      if (!bySite.has(host)) bySite.set(host, []);
      bySite.get(host).push(message);
    }
    for (const [host, messages] of bySite) {
      const outcome = await postVisits(env, host, messages.map((m) => m.body.visit));
      for (const message of messages) {
        if (outcome === "retry") message.retry();
        else message.ack();
      }
    }
  },

  async fetch(request, env, ctx) {
    if (request.method !== "GET" && request.method !== "HEAD") return fetch(request);
    const url = new URL(request.url);
    const userAgent = request.headers.get("user-agent") || "";
    // A Web Bot Auth signature that verifies with its agent's published keys names the agent.
    const agent = await signatureAgent(request);
    const visitor = agent ? attribute(classify(userAgent), agent) : classify(userAgent);
    const record = (env, ctx, request, userAgent, format, response, charged) =>
      recordVisit(env, ctx, request, userAgent, format, response, charged, agent);
    const policy = await policyOf(env, url.hostname);
    // The site's llms.txt files (written by ai-cache like a page) are public: everyone gets them.
    // So is its robots.txt (the site's own, with the policy's Content-Signal) when the policy
    // lets ai-cache serve it.
    const isRobots = url.pathname === "/robots.txt";
    // robots.txt is never a page: without the policy's say-so it is the origin's, for everyone.
    if (isRobots && policy?.robots_txt !== true) {
      const response = await fetch(request);
      record(env, ctx, request, userAgent, "origin", response, null);
      return response;
    }
    if (isRobots || url.pathname === "/llms.txt" || url.pathname === "/llms-full.txt") {
      let file = null;
      try {
        file = await fromCache(request, env, new URL(url.origin + url.pathname), { answer: "markdown", pagePath: url.pathname, file: true }, policy);
      } catch {
        file = null;
      }
      if (file) {
        record(env, ctx, request, userAgent, "markdown", file, null);
        return file;
      }
    }
    const decision = decide(policy, {
      path: url.pathname,
      accept: request.headers.get("accept") || "",
      visitor,
      verification: agent ? "signature" : visitor.visitor_type === "human" ? "none" : "claimed",
      exactPrice: request.headers.get("crawler-exact-price"),
      maxPrice: request.headers.get("crawler-max-price"),
    });
    let response = null;
    let format = "origin";
    let charged = null;
    if (decision.answer === "block") {
      response = refusal(403, decision.body, decision.markdown, {});
      format = "blocked";
    } else if (decision.answer === "payment") {
      const headers = { "crawler-price": decision.price };
      if (decision.error) headers["crawler-error"] = decision.error;
      const body = `This content costs ${decision.price} under the site's pay-per-crawl terms: retry with crawler-exact-price or crawler-max-price.\n`;
      response = refusal(decision.status, body, false, headers);
      format = "payment_required";
    } else if (decision.answer !== "pass") {
      try {
        response = await fromCache(request, env, url, decision, policy);
        if (response) {
          format = decision.answer;
          if (response.status === 200 && decision.charged) charged = decision.charged;
        }
      } catch {
        response = null; // KV unavailable: the origin answers.
      }
    }
    if (!response) response = await fetch(request);
    record(env, ctx, request, userAgent, format, response, charged);
    return response;
  },
};

/** Records the request as a visit, sent after the response: to the VISITS_QUEUE when bound
 * (an evicted isolate then loses nothing), else buffered in the isolate and posted in batches. */
function recordVisit(env, ctx, request, userAgent, format, response, charged, agent) {
  if (!env.AI_CACHE_API_URL) return;
  // Bytes served: the body's length when the response says it (ours always do; an origin's
  // streamed answer may not), none for HEAD.
  const length = Number(response.headers.get("content-length"));
  const bytes = request.method === "HEAD" ? 0 : Number.isInteger(length) && response.headers.has("content-length") ? length : undefined;
  const visit = {
    id: crypto.randomUUID(),
    url: request.url,
    user_agent: userAgent,
    ip: request.headers.get("cf-connecting-ip"),
    referrer: request.headers.get("referer"),
    timestamp: new Date().toISOString(),
    format_served: format,
    status: response.status,
    bytes,
    cf_worker: request.headers.get("cf-worker") || undefined,
    charged_price: charged || undefined,
    signature_agent: agent || undefined,
  };
  if (env.VISITS_QUEUE) {
    // The message names the site, not its key: secrets stay out of the queue.
    ctx.waitUntil(env.VISITS_QUEUE.send({ host: new URL(request.url).hostname, visit }).catch(() => {}));
    return;
  }
  visits.add(new URL(request.url).hostname, visit);
  ctx.waitUntil(visits.flush(env, Number(env.VISITS_FLUSH_MS ?? 1000)));
}

/** A 403 or 402 of the policy, never cached by shared caches. */
function refusal(status, body, markdown, extra) {
  return new Response(body, {
    status,
    headers: {
      "content-type": markdown ? "text/markdown; charset=utf-8" : "text/plain; charset=utf-8",
      vary: VARY,
      "cache-control": "no-store",
      ...extra,
    },
  });
}

async function fromCache(request, env, url, decision, policy) {
  const page = new URL(url);
  page.pathname = decision.pagePath;
  const base = await kvKey(page);
  const markdown = decision.answer === "markdown";
  const key = markdown ? markdownKey(base) : htmlKey(base);
  const { value, metadata } = await env.AI_CACHE_KV.getWithMetadata(key, { type: "arrayBuffer" });
  if (value === null) return null;
  const meta = metadata || {};
  const isMarkdown = markdown && (!meta.content_type || meta.content_type.startsWith("text/markdown"));
  const pageMarkdown = isMarkdown && !decision.file;
  // The client's policy may want the page's front matter before its Markdown.
  let body = value;
  let front = null;
  if (pageMarkdown && policy?.front_matter === true) {
    front = frontMatter({
      title: meta.title,
      source: meta.source_url || page.href,
      description: meta.description,
      language: meta.language,
      lastModified: meta.updated_at,
    });
    const head = new TextEncoder().encode(front);
    const joined = new Uint8Array(head.byteLength + value.byteLength);
    joined.set(head, 0);
    joined.set(new Uint8Array(value), head.byteLength);
    body = joined.buffer;
  }
  const link = linkHeader("", decision.pagePath, url.search);
  const headers = new Headers({
    "content-type": meta.content_type || (markdown ? "text/markdown; charset=utf-8" : "text/html; charset=utf-8"),
    vary: VARY,
    "cache-control": "public, max-age=300",
    "x-ai-cache": "hit",
  });
  // A file that is not a page (llms.txt) has no variant to link to.
  if (!decision.file) headers.set("link", markdown ? `${link}, ${canonicalLink(meta.source_url || page.href)}` : link);
  if (isMarkdown) {
    const frontTokens = front ? Math.ceil([...front].length / 4) : 0;
    headers.set("x-markdown-tokens", String((meta.tokens ?? Math.ceil(value.byteLength / 4)) + frontTokens));
    // Only at the .md URL: at the page's own URL it would de-index the page itself.
    if (decision.explicitMarkdown) headers.set("x-robots-tag", "noindex");
  }
  if (policy?.content_signal) headers.set("content-signal", policy.content_signal);
  // The same content with and without front matter is two representations.
  const etag = meta.hash ? (front ? `"${meta.hash}-fm"` : `"${meta.hash}"`) : null;
  if (etag) headers.set("etag", etag);
  const updated = meta.updated_at ? new Date(meta.updated_at) : null;
  if (updated && !Number.isNaN(updated.getTime())) headers.set("last-modified", updated.toUTCString());
  if (notModified(request, etag, updated)) return new Response(null, { status: 304, headers });
  if (decision.charged) headers.set("crawler-charged", decision.charged);
  headers.set("content-length", String(body.byteLength));
  return new Response(request.method === "HEAD" ? null : body, { status: 200, headers });
}

function notModified(request, etag, updated) {
  const tags = request.headers.get("if-none-match");
  if (tags !== null) {
    return etag !== null && tags.split(",").some((t) => {
      const tag = t.trim();
      return tag === "*" || tag.replace(/^W\//, "") === etag;
    });
  }
  const since = Date.parse(request.headers.get("if-modified-since") || "");
  return updated !== null && !Number.isNaN(since) && Math.floor(updated.getTime() / 1000) <= Math.floor(since / 1000);
}
