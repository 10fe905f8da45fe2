// The Worker, run in workerd (Miniflare), against the same test vectors as the Rust side:
// KV keys (tests/fixtures/kv-keys.json), classification (tests/fixtures/classify-vectors.json)
// and serving rules (tests/fixtures/edge-vectors.json). The origin and ai-cache's ingestion API
// are played by Miniflare's outbound service.

import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, beforeEach, describe, mock, test } from "node:test";
import { fileURLToPath } from "node:url";

import { build } from "esbuild";
import { Miniflare } from "miniflare";

import { classify } from "../src/classify.js";
import { frontMatter } from "../src/edge.js";
import { verifiedAgent } from "../src/webbotauth.js";
import { signatureHeaders } from "web-bot-auth";
import { signerFromJWK } from "web-bot-auth/crypto";
import { kvKey } from "../src/kvkey.js";
import { DEFAULT_BLOCK_BODY, decide } from "../src/policy.js";

/** src/index.js bundled with its npm imports, as wrangler deploys it (esbuild, wrangler's own
 * bundler, pinned in package-lock.json). */
let bundle = null;
async function bundled() {
  if (!bundle) {
    const out = await build({
      entryPoints: [fileURLToPath(new URL("../src/index.js", import.meta.url))],
      bundle: true,
      format: "esm",
      platform: "neutral",
      mainFields: ["module", "main"],
      conditions: ["workerd", "worker", "import"],
      write: false,
    });
    bundle = out.outputFiles[0].text;
  }
  return bundle;
}

const fixture = (name) =>
  JSON.parse(readFileSync(fileURLToPath(new URL(`../../tests/fixtures/${name}`, import.meta.url)), "utf8"));

const GPTBOT = "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; GPTBot/1.2; +https://openai.com/gptbot)";
const FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:140.0) Gecko/20100101 Firefox/140.0";
const API = "http://api.ai-cache.test";

/** What the outbound service saw, and how the API behaves. */
const world = {
  origin: [], // requests that reached the origin
  batches: [], // visit batches the API received
  apiMode: "ok", // "ok" | "down" | "slow"
  directoryFetches: 0, // fetches of agent.example's key directory
};

async function outbound(request) {
  const url = new URL(request.url);
  if (url.origin === API) {
    if (world.apiMode === "down") return new Response("unavailable", { status: 503 });
    if (world.apiMode === "slow") await new Promise((r) => setTimeout(r, 1500));
    const body = await request.json();
    world.batches.push({ key: request.headers.get("x-api-key"), visits: body.visits });
    return Response.json({ accepted: body.visits.length, duplicates: 0, rejected: [] });
  }
  if (url.origin === "https://down.example") {
    world.directoryFetches += 1;
    return new Response("unavailable", { status: 503 });
  }
  if (url.origin === "https://agent.example" && url.pathname === "/.well-known/http-message-signatures-directory") {
    world.directoryFetches += 1;
    return Response.json(fixture("web-bot-auth-vectors.json").key_directory, { headers: { "cache-control": "max-age=3600" } });
  }
  const body = request.method === "GET" || request.method === "HEAD" ? null : await request.text();
  world.origin.push({ method: request.method, url: request.url, headers: Object.fromEntries(request.headers), body });
  return new Response(`ORIGIN ${request.method} ${url.pathname}`, {
    status: 200,
    headers: { "content-type": "text/html", "x-origin": "yes", "set-cookie": "s=1" },
  });
}

let mf;
let kv;

before(async () => {
  mf = new Miniflare({
    modules: true,
    script: await bundled(),
    compatibilityDate: "2026-04-01",
    kvNamespaces: ["AI_CACHE_KV"],
    bindings: { AI_CACHE_API_URL: API, AI_CACHE_INGEST_KEY: "aic_test_ingest", VISITS_FLUSH_MS: "100", VISITS_TIMEOUT_MS: "5000", POLICY_TTL_MS: "0" },
    outboundService: outbound,
  });
  kv = await mf.getKVNamespace("AI_CACHE_KV");
});

after(async () => {
  await mf.dispose();
});

beforeEach(() => {
  world.origin = [];
  world.batches = [];
  world.apiMode = "ok";
});

async function cache(url, markdown, html, updatedAt = "2026-11-20T10:00:00Z") {
  const base = await kvKey(url);
  const meta = (type, hash) => ({ content_type: type, source_url: url, hash, version: 1, updated_at: updatedAt });
  await kv.put(`md:${base}`, markdown, { metadata: meta("text/markdown; charset=utf-8", "a".repeat(64)) });
  await kv.put(`html:${base}`, html, { metadata: meta("text/html; charset=utf-8", "b".repeat(64)) });
}

const get = (url, headers = {}) => mf.dispatchFetch(url, { headers, redirect: "manual" });

/** The visits posted so far whose path starts with `prefix`, once there are `n`. */
async function visitsPosted(prefix, n) {
  const deadline = Date.now() + 5000;
  while (Date.now() < deadline) {
    const visits = world.batches
      .flatMap((b) => b.visits)
      .filter((v) => new URL(v.url).pathname.startsWith(prefix));
    if (visits.length >= n) return visits;
    await new Promise((r) => setTimeout(r, 20));
  }
  assert.fail(`expected ${n} visits under ${prefix}, got ${JSON.stringify(world.batches)}`);
}

describe("shared vectors", () => {
  test("KV keys are the Rust ones", async () => {
    for (const v of fixture("kv-keys.json")) {
      assert.equal(await kvKey(v.url), v.key, v.url);
    }
  });

  test("every user agent of the lists is classified as the Rust classifier does", () => {
    const vectors = fixture("classify-vectors.json");
    assert.ok(vectors.length > 2000);
    for (const v of vectors) {
      const c = classify(v.user_agent);
      assert.deepEqual(
        [c.visitor_type, c.bot_name, c.operator, c.category],
        [v.visitor_type, v.bot_name, v.operator, v.category],
        v.user_agent,
      );
    }
  });

  test("every policy vector gets what the Rust policy gives", () => {
    const { cases } = fixture("policy-vectors.json");
    assert.ok(cases.length >= 20);
    for (const c of cases) {
      const d = decide(c.policy, {
        path: c.path,
        accept: c.accept || "",
        visitor: classify(c.user_agent),
        verification: c.verification || "claimed",
        exactPrice: c.exact_price ?? null,
        maxPrice: c.max_price ?? null,
      });
      const got = { answer: d.answer, page_path: d.pagePath };
      for (const [k, v] of [["status", d.status], ["price", d.price], ["charged", d.charged], ["error", d.error], ["body", d.body]]) {
        if (v !== undefined && v !== null) got[k] = v;
      }
      const want = { ...c.expect };
      if (want.answer === "block" && want.body === undefined) want.body = DEFAULT_BLOCK_BODY;
      assert.deepEqual(got, want, c.name);
    }
  });

  test("in workerd, each KV key vector's page is served from its key", async () => {
    const vectors = fixture("kv-keys.json");
    for (const v of vectors) {
      await kv.put(`html:${v.key}`, `page under ${v.key}`);
    }
    for (const v of vectors) {
      const res = await get(v.url, { "user-agent": GPTBOT });
      assert.equal(await res.text(), `page under ${v.key}`, v.url);
    }
  });

  test("in workerd, each edge vector gets what the Rust edge gives", async () => {
    for (const v of fixture("edge-vectors.json")) {
      await cache(`https://site.test${v.page_path}`, `MD ${v.page_path}`, `HTML ${v.page_path}`);
      const res = await get(`https://site.test${v.path}`, { "user-agent": v.user_agent, accept: v.accept });
      const body = await res.text();
      const what = `${v.path} ${v.user_agent} ${v.accept}`;
      if (v.serve === "pass") {
        assert.equal(body, `ORIGIN GET ${v.path}`, what);
        continue;
      }
      assert.equal(res.status, 200, what);
      assert.equal(body, `${v.serve === "markdown" ? "MD" : "HTML"} ${v.page_path}`, what);
      assert.equal(res.headers.get("vary"), "Accept, User-Agent", what);
      const canonical = `, <https://site.test${v.page_path}>; rel="canonical"`;
      assert.equal(res.headers.get("link"), v.link + (v.serve === "markdown" ? canonical : ""), what);
    }
  });
});

describe("serving", () => {
  test("cached pages carry validators and answer conditional requests", async () => {
    await cache("https://site.test/post", "# Post", "<h1>Post</h1>");
    const other = await get("https://site.test/post?ref=x", { "user-agent": GPTBOT });
    assert.equal(await other.text(), "ORIGIN GET /post", "the query is part of the page: not cached");
    const hit = await get("https://site.test/post", { "user-agent": GPTBOT });
    assert.equal(hit.status, 200);
    assert.equal(await hit.text(), "<h1>Post</h1>");
    assert.equal(hit.headers.get("content-type"), "text/html; charset=utf-8");
    assert.equal(hit.headers.get("etag"), `"${"b".repeat(64)}"`);
    assert.equal(hit.headers.get("last-modified"), "Fri, 20 Nov 2026 10:00:00 GMT");
    const again = await get("https://site.test/post", { "user-agent": GPTBOT, "if-none-match": hit.headers.get("etag") });
    assert.equal(again.status, 304);
    await again.text();
    const since = await get("https://site.test/post", { "user-agent": GPTBOT, "if-modified-since": "Sat, 21 Nov 2026 00:00:00 GMT" });
    assert.equal(since.status, 304);
    await since.text();
  });

  test("everything else reaches the origin untouched", async () => {
    const res = await mf.dispatchFetch("https://site.test/form?a=1", {
      method: "POST",
      headers: { "user-agent": GPTBOT, "content-type": "application/x-www-form-urlencoded", cookie: "c=2" },
      body: "x=1&y=2",
    });
    assert.equal(await res.text(), "ORIGIN POST /form");
    assert.equal(res.headers.get("x-origin"), "yes");
    assert.equal(res.headers.get("set-cookie"), "s=1");
    const [seen] = world.origin;
    assert.equal(seen.url, "https://site.test/form?a=1");
    assert.equal(seen.body, "x=1&y=2");
    assert.equal(seen.headers.cookie, "c=2");
    const person = await get("https://site.test/post", { "user-agent": FIREFOX, accept: "text/html" });
    assert.equal(await person.text(), "ORIGIN GET /post");
    assert.equal(person.headers.get("x-ai-cache"), null);
  });
});

const CLAUDEBOT = "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; ClaudeBot/1.0; +claudebot@anthropic.com)";
const CHATGPT_USER = "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko); compatible; ChatGPT-User/1.0; +https://openai.com/bot";

describe("policy", () => {
  after(async () => {
    await kv.delete("settings:edge:site.test");
  });

  test("the client's policy from KV blocks, charges and picks the format, with the Markdown headers", async () => {
    await cache("https://site.test/paid", "# Paid", "<h1>Paid</h1>");
    const base = await kvKey("https://site.test/paid");
    await kv.put(`md:${base}`, "# Paid", {
      metadata: { content_type: "text/markdown; charset=utf-8", source_url: "https://site.test/paid", hash: "a".repeat(64), version: 1, updated_at: "2026-11-20T10:00:00Z", tokens: 3 },
    });
    await kv.put("settings:edge:site.test", JSON.stringify({
      rules: [
        { bot: "GPTBot", action: "block", body: "# No\n" },
        { operator: "Anthropic", category: "training", action: "charge", price: "USD 0.01" },
      ],
      ai_format: "markdown",
      content_signal: "ai-train=no, search=yes, ai-input=yes",
    }));
    // Visits of earlier tests may still be on their way: let them land first.
    await new Promise((r) => setTimeout(r, 300));
    world.batches = [];

    const blocked = await get("https://site.test/paid.md", { "user-agent": GPTBOT });
    assert.equal(blocked.status, 403);
    assert.equal(blocked.headers.get("content-type"), "text/markdown; charset=utf-8");
    assert.equal(await blocked.text(), "# No\n");

    const unpaid = await get("https://site.test/paid", { "user-agent": CLAUDEBOT });
    assert.equal(unpaid.status, 402);
    assert.equal(unpaid.headers.get("crawler-price"), "USD 0.01");
    await unpaid.text();
    const low = await get("https://site.test/paid", { "user-agent": CLAUDEBOT, "crawler-max-price": "USD 0.001" });
    assert.equal(low.headers.get("crawler-error"), "InvalidCrawlerMaxPrice");
    await low.text();
    const paid = await get("https://site.test/paid", { "user-agent": CLAUDEBOT, "crawler-exact-price": "USD 0.01" });
    assert.equal(paid.status, 200);
    assert.equal(paid.headers.get("crawler-charged"), "USD 0.01");
    assert.equal(await paid.text(), "# Paid", "ai_format is markdown");

    const agent = await get("https://site.test/paid", { "user-agent": CHATGPT_USER, accept: "text/html,*/*;q=0.8" });
    assert.equal(agent.status, 200);
    assert.equal(agent.headers.get("content-type"), "text/markdown; charset=utf-8");
    assert.equal(agent.headers.get("x-markdown-tokens"), "3");
    assert.equal(agent.headers.get("content-signal"), "ai-train=no, search=yes, ai-input=yes");
    assert.equal(agent.headers.get("link"), '</paid.md>; rel="alternate"; type="text/markdown", <https://site.test/paid>; rel="canonical"');
    assert.equal(agent.headers.get("x-robots-tag"), null, "never noindex at the page's own URL");
    await agent.text();
    const variant = await get("https://site.test/paid.md", { "user-agent": CHATGPT_USER });
    assert.equal(variant.headers.get("x-robots-tag"), "noindex");
    await variant.text();
    const person = await get("https://site.test/paid", { "user-agent": FIREFOX });
    assert.equal(await person.text(), "ORIGIN GET /paid");

    const posted = await visitsPosted("/paid", 7);
    const summary = posted.map((v) => [v.format_served, v.status, v.charged_price ?? null]);
    assert.deepEqual(summary, [
      ["blocked", 403, null],
      ["payment_required", 402, null],
      ["payment_required", 402, null],
      ["markdown", 200, "USD 0.01"],
      ["markdown", 200, null],
      ["markdown", 200, null],
      ["origin", 200, null],
    ]);
  });
});

describe("web bot auth", () => {
  test("the shared vectors hold (the Rust edge is held to them too)", async () => {
    const { key_directory: directory, vectors } = fixture("web-bot-auth-vectors.json");
    assert.ok(vectors.length >= 8);
    for (const v of vectors) {
      // The package checks the window against the clock: the vector's moment is the clock.
      mock.timers.enable({ apis: ["Date"], now: v.now * 1000 });
      let got;
      try {
        got = { verification: "signature", agent: await verifiedAgent((n) => v.headers[n] ?? null, v.authority, v.now, async () => directory.keys) };
      } catch (e) {
        got = { verification: "claimed", refused: e.reason };
      } finally {
        mock.timers.reset();
      }
      assert.deepEqual(got, v.expected, v.name);
    }
  });

  test("a signed request is verified with its agent's directory, kept per Cache-Control, and policies may require it", async () => {
    const KEY = { kty: "OKP", crv: "Ed25519", d: "n4Ni-HpISpVObnQMW0wOhCKROaIKqKtW_2ZYb2p9KcU", x: "JrQLj5P_89iXES9-vFgrIy29clF9CC_oPPsw3c5D0bs", kid: "poqkLGiymh_W0uP6PZFw-dvez3QJT5SolqXBCW38r0U" };
    const sign = async (host, agent = '"https://agent.example"') => {
      const request = new Request(`https://${host}/signed`, { headers: { "Signature-Agent": agent } });
      const now = Date.now();
      const h = await signatureHeaders(request, await signerFromJWK(KEY), { created: new Date(now - 5000), expires: new Date(now + 60000) });
      return { "signature-agent": agent, "signature-input": h["Signature-Input"], signature: h["Signature"] };
    };
    await kv.put("settings:edge:site.test", JSON.stringify({ rules: [{ verification: ["signature"], action: "block", body: "signed agents: write to us\n" }] }));
    await new Promise((r) => setTimeout(r, 300));
    world.batches = [];
    world.directoryFetches = 0;
    const signed = await get("https://site.test/signed", { "user-agent": FIREFOX, ...(await sign("site.test")) });
    assert.equal(signed.status, 403, "the rule for signed agents applies");
    assert.equal(await signed.text(), "signed agents: write to us\n");
    const again = await get("https://site.test/signed", { "user-agent": FIREFOX, ...(await sign("site.test")) });
    assert.equal(again.status, 403);
    await again.text();
    assert.equal(world.directoryFetches, 1, "the directory is kept per its Cache-Control");
    // Signed for another host: not attributed, so the rule does not apply.
    const elsewhere = await get("https://site.test/signed", { "user-agent": FIREFOX, ...(await sign("other.test")) });
    assert.equal(elsewhere.status, 200);
    assert.equal(await elsewhere.text(), "ORIGIN GET /signed");
    // An agent whose directory cannot be had is not attributed, and the failure is remembered.
    world.directoryFetches = 0;
    for (let i = 0; i < 2; i++) {
      const down = await get("https://site.test/unsigned-agent-down", { "user-agent": FIREFOX, ...(await sign("site.test", '"https://down.example"')) });
      assert.equal(down.status, 200, "not attributed: the rule does not apply");
      await down.text();
    }
    assert.equal(world.directoryFetches, 1, "a failed fetch is remembered for a minute");
    const visits = await visitsPosted("/signed", 3);
    const agents = visits.map((v) => v.signature_agent ?? null).sort();
    assert.deepEqual(agents, ["https://agent.example", "https://agent.example", null]);
    await kv.delete("settings:edge:site.test");
  });
});

describe("front matter", () => {
  test("the shared vectors hold", () => {
    for (const v of fixture("front-matter-vectors.json")) {
      const got = frontMatter({
        title: v.input.title,
        source: v.input.source,
        description: v.input.description,
        language: v.input.language,
        lastModified: v.input.last_modified,
      });
      assert.equal(got, v.expected, v.name);
    }
  });

  test("starts a page's Markdown when the policy asks for it, with its own ETag and length", async () => {
    const base = await kvKey("https://site.test/fm");
    await kv.put(`md:${base}`, "# FM\n", {
      metadata: { content_type: "text/markdown; charset=utf-8", source_url: "https://site.test/fm", hash: "d".repeat(64), version: 1, updated_at: "2026-11-20T10:00:00Z", tokens: 2, title: "Front \"matter\"", description: "A page.", language: "en" },
    });
    await kv.put(`html:${base}`, "<h1>FM</h1>", { metadata: { content_type: "text/html; charset=utf-8", hash: "e".repeat(64) } });
    const plain = await get("https://site.test/fm.md", { "user-agent": FIREFOX });
    assert.equal(await plain.text(), "# FM\n", "no front matter by default");
    await kv.put("settings:edge:site.test", JSON.stringify({ front_matter: true }));
    const res = await get("https://site.test/fm.md", { "user-agent": FIREFOX });
    const expected = '---\ntitle: "Front \\"matter\\""\nsource: "https://site.test/fm"\ndescription: "A page."\nlanguage: "en"\nlast_modified: "2026-11-20T10:00:00Z"\n---\n\n# FM\n';
    assert.equal(await res.text(), expected);
    assert.equal(res.headers.get("content-length"), String(new TextEncoder().encode(expected).byteLength));
    assert.equal(res.headers.get("etag"), `"${"d".repeat(64)}-fm"`);
    const html = await get("https://site.test/fm", { "user-agent": GPTBOT });
    assert.equal(await html.text(), "<h1>FM</h1>", "HTML is untouched");
    await kv.delete("settings:edge:site.test");
  });
});

describe("llms.txt", () => {
  test("is served from KV to everyone, people included, as Markdown", async () => {
    await cache("https://site.test/llms.txt", "# Site\n\n> Summary\n", "# Site\n\n> Summary\n");
    for (const ua of [FIREFOX, GPTBOT]) {
      const res = await get("https://site.test/llms.txt", { "user-agent": ua });
      assert.equal(res.status, 200, ua);
      assert.equal(res.headers.get("content-type"), "text/markdown; charset=utf-8");
      assert.equal(res.headers.get("link"), null, "a file, not a page: no variant");
      assert.equal(await res.text(), "# Site\n\n> Summary\n");
    }
    const none = await get("https://site.test/llms-full.txt", { "user-agent": FIREFOX });
    assert.equal(await none.text(), "ORIGIN GET /llms-full.txt", "not made yet: the origin answers");
  });

  test("robots.txt is the origin's unless the policy lets ai-cache serve it, then it is the stored file as text", async () => {
    const robots = "# Content signals...\n\nUser-agent: *\nContent-Signal: ai-train=no\nAllow: /\n";
    const base = await kvKey("https://site.test/robots.txt");
    for (const prefix of ["md", "html"]) {
      await kv.put(`${prefix}:${base}`, robots, {
        metadata: { content_type: "text/plain; charset=utf-8", source_url: "https://site.test/robots.txt", hash: "c".repeat(64), version: 1, updated_at: "2026-11-20T10:00:00Z", tokens: 9 },
      });
    }
    const before = await get("https://site.test/robots.txt", { "user-agent": GPTBOT });
    assert.equal(await before.text(), "ORIGIN GET /robots.txt", "not the client's choice: the origin answers");
    await kv.put("settings:edge:site.test", JSON.stringify({ robots_txt: true, content_signal: "ai-train=no" }));
    for (const ua of [FIREFOX, GPTBOT]) {
      const res = await get("https://site.test/robots.txt", { "user-agent": ua });
      assert.equal(res.status, 200, ua);
      assert.equal(res.headers.get("content-type"), "text/plain; charset=utf-8");
      assert.equal(res.headers.get("x-markdown-tokens"), null, "not Markdown");
      assert.equal(await res.text(), robots);
    }
    await kv.delete("settings:edge:site.test");
  });
});

describe("visits", () => {
  test("are posted in batches with the ingest key, after the response", async () => {
    await cache("https://site.test/v", "# V", "<p>V</p>");
    // Visits of earlier tests may still be on their way: let them land first.
    await new Promise((r) => setTimeout(r, 300));
    world.apiMode = "slow";
    const started = Date.now();
    const responses = await Promise.all([
      get("https://site.test/v", { "user-agent": GPTBOT }),
      get("https://site.test/v", { "user-agent": FIREFOX, referer: "https://search.example/" }),
      get("https://site.test/v.md", { "user-agent": FIREFOX }),
    ]);
    for (const r of responses) await r.text();
    assert.ok(Date.now() - started < 1000, "no response waited for the slow API");
    const visits = await visitsPosted("/v", 3);
    assert.equal(world.batches.filter((b) => b.visits.some((v) => v.url.includes("/v"))).length, 1, "one batch");
    assert.equal(world.batches[0].key, "aic_test_ingest");
    const byFormat = Object.fromEntries(visits.map((v) => [`${v.user_agent === GPTBOT ? "bot" : "person"} ${v.format_served}`, v]));
    // The visitor's address is the CF-Connecting-IP header (Miniflare sets it to the loopback).
    assert.equal(byFormat["bot html"].ip, "127.0.0.1");
    assert.equal(byFormat["bot html"].status, 200);
    assert.equal(byFormat["person origin"].referrer, "https://search.example/");
    assert.ok(byFormat["person markdown"]);
    // Bytes served: what the cache answered ("<p>V</p>" is 8 bytes, "# V" 3).
    assert.equal(byFormat["bot html"].bytes, 8);
    assert.equal(byFormat["person markdown"].bytes, 3);
    for (const v of visits) {
      assert.match(v.id, /^[0-9a-f-]{36}$/);
      assert.ok(!Number.isNaN(Date.parse(v.timestamp)));
    }
  });

  test("survive the API being down and go with a later flush, once each", async () => {
    world.apiMode = "down";
    for (let i = 0; i < 5; i++) {
      const res = await get(`https://site.test/down/${i}`, { "user-agent": FIREFOX });
      assert.equal(await res.text(), `ORIGIN GET /down/${i}`);
    }
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(world.batches.length, 0, "nothing reached the API while it was down");
    world.apiMode = "ok";
    const res = await get("https://site.test/up", { "user-agent": FIREFOX });
    await res.text();
    const visits = [...(await visitsPosted("/down/", 5)), ...(await visitsPosted("/up", 1))];
    const urls = visits.map((v) => new URL(v.url).pathname).sort();
    assert.deepEqual(urls, ["/down/0", "/down/1", "/down/2", "/down/3", "/down/4", "/up"]);
    assert.equal(new Set(visits.map((v) => v.id)).size, 6);
  });
});

describe("one Worker for many sites, visits through a queue", () => {
  let many;
  let manyKv;

  before(async () => {
    many = new Miniflare({
      modules: true,
      script: await bundled(),
      compatibilityDate: "2026-04-01",
      kvNamespaces: ["AI_CACHE_KV"],
      queueProducers: { VISITS_QUEUE: "visits" },
      queueConsumers: { visits: { maxBatchSize: 50, maxBatchTimeout: 0.2, maxRetries: 10, retryDelay: 1 } },
      bindings: {
        AI_CACHE_API_URL: API,
        AI_CACHE_SITES: JSON.stringify({ "site.test": "aic_site_key", "other.test": "aic_other_key" }),
        POLICY_TTL_MS: "0",
      },
      outboundService: outbound,
    });
    manyKv = await many.getKVNamespace("AI_CACHE_KV");
  });

  after(async () => {
    await many.dispose();
  });

  test("each site has its pages and policy, and its visits reach the API with its own key, through an API outage", async () => {
    for (const [site, body] of [["site.test", "SITE"], ["other.test", "OTHER"]]) {
      const base = await kvKey(`https://${site}/q`);
      await manyKv.put(`html:${base}`, `<p>${body}</p>`, { metadata: { content_type: "text/html; charset=utf-8" } });
    }
    await manyKv.put("settings:edge:other.test", JSON.stringify({ rules: [{ bot: "GPTBot", action: "block" }] }));
    world.apiMode = "down";
    const fetchMany = (url, headers) => many.dispatchFetch(url, { headers, redirect: "manual" });
    const site = await fetchMany("https://site.test/q", { "user-agent": GPTBOT });
    assert.equal(await site.text(), "<p>SITE</p>");
    const other = await fetchMany("https://other.test/q", { "user-agent": GPTBOT });
    assert.equal(other.status, 403, "other.test's policy, not site.test's");
    await other.text();
    const www = await fetchMany("https://www.other.test/q", { "user-agent": GPTBOT });
    assert.equal(www.status, 403, "www. is the same site");
    await www.text();
    // The API is down for longer than an isolate's own flush waits: the queue keeps the
    // visits and retries them; once it is back they arrive, each site's with its key.
    await new Promise((r) => setTimeout(r, 1500));
    assert.equal(world.batches.length, 0);
    world.apiMode = "ok";
    const deadline = Date.now() + 10000;
    while (world.batches.flatMap((b) => b.visits).length < 3 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 50));
    }
    const byKey = {};
    for (const b of world.batches) for (const v of b.visits) (byKey[b.key] ||= []).push(new URL(v.url).host);
    assert.deepEqual(
      Object.fromEntries(Object.entries(byKey).map(([k, hosts]) => [k, hosts.sort()])),
      { aic_site_key: ["site.test"], aic_other_key: ["other.test", "www.other.test"] },
    );
  });
});

describe("deployment", () => {
  test("wrangler.toml deploys src/index.js with its KV, queue and variables (wrangler --dry-run)", () => {
    const out = spawnSync(
      process.execPath,
      [fileURLToPath(new URL("../node_modules/wrangler/bin/wrangler.js", import.meta.url)), "deploy", "--dry-run", "--outdir", mkdtempSync(join(tmpdir(), "wrangler-"))],
      { cwd: fileURLToPath(new URL("..", import.meta.url)), encoding: "utf8", env: { ...process.env, WRANGLER_SEND_METRICS: "false", CI: "true" }, timeout: 60000 },
    );
    assert.equal(out.status, 0, out.stderr + out.stdout);
    for (const binding of ["env.AI_CACHE_KV", "env.VISITS_QUEUE", "env.AI_CACHE_API_URL"]) {
      assert.ok(out.stdout.includes(binding), `${binding} in ${out.stdout}`);
    }
  });
});
