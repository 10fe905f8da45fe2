// The ai-cache Worker, in front of a client's site. A known AI agent, a request with
// `Accept: text/markdown` or a request for a page's `.md` variant gets the cached Markdown or
// minimal HTML from KV (written by ai-cache's uploader), with `Vary`, `Link`, `ETag` and
// `Last-Modified`; everything else, and any page not in KV, goes to the origin untouched.
// Every GET/HEAD is recorded as a visit, posted to ai-cache's ingestion API off the
// response path.
//
// Bindings (wrangler.toml): AI_CACHE_KV (the client's KV namespace), AI_CACHE_API_URL, the
// secret AI_CACHE_INGEST_KEY (an `ingest` key of the client), VISITS_FLUSH_MS (optional).

import { classify } from "./classify.js";
import { VARY, decide, linkHeader } from "./edge.js";
import { htmlKey, kvKey, markdownKey } from "./kvkey.js";
import { VisitBuffer } from "./visits.js";

const visits = new VisitBuffer();

export default {
  async fetch(request, env, ctx) {
    if (request.method !== "GET" && request.method !== "HEAD") return fetch(request);
    const url = new URL(request.url);
    const userAgent = request.headers.get("user-agent") || "";
    const visitor = classify(userAgent);
    const decision = decide(url.pathname, request.headers.get("accept") || "", visitor);
    let response = null;
    let format = "origin";
    if (decision.serve !== "pass") {
      try {
        response = await fromCache(request, env, url, decision);
        if (response) format = decision.serve;
      } catch {
        response = null; // KV unavailable: the origin answers.
      }
    }
    if (!response) response = await fetch(request);
    if (env.AI_CACHE_API_URL) {
      visits.add({
        id: crypto.randomUUID(),
        url: request.url,
        user_agent: userAgent,
        ip: request.headers.get("cf-connecting-ip"),
        referrer: request.headers.get("referer"),
        timestamp: new Date().toISOString(),
        format_served: format,
        status: response.status,
        cf_worker: request.headers.get("cf-worker") || undefined,
      });
      ctx.waitUntil(visits.flush(env, Number(env.VISITS_FLUSH_MS ?? 1000)));
    }
    return response;
  },
};

async function fromCache(request, env, url, decision) {
  const page = new URL(url);
  page.pathname = decision.pagePath;
  const base = await kvKey(page);
  const key = decision.serve === "markdown" ? markdownKey(base) : htmlKey(base);
  const { value, metadata } = await env.AI_CACHE_KV.getWithMetadata(key, { type: "arrayBuffer" });
  if (value === null) return null;
  const meta = metadata || {};
  const headers = new Headers({
    "content-type": meta.content_type || (decision.serve === "markdown" ? "text/markdown; charset=utf-8" : "text/html; charset=utf-8"),
    vary: VARY,
    link: linkHeader("", decision.pagePath, url.search),
    "cache-control": "public, max-age=300",
    "x-ai-cache": "hit",
  });
  const etag = meta.hash ? `"${meta.hash}"` : null;
  if (etag) headers.set("etag", etag);
  const updated = meta.updated_at ? new Date(meta.updated_at) : null;
  if (updated && !Number.isNaN(updated.getTime())) headers.set("last-modified", updated.toUTCString());
  if (notModified(request, etag, updated)) return new Response(null, { status: 304, headers });
  headers.set("content-length", String(value.byteLength));
  return new Response(request.method === "HEAD" ? null : value, { status: 200, headers });
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
