// Visits, posted to the ingestion API with the `ingest` key of their site's client.
//
// With a VISITS_QUEUE binding, each visit is a queue message and the queue consumer posts them
// (index.js): nothing is lost when an isolate is evicted. Without one, requests of an isolate
// share a buffer: the first request of a burst schedules a flush a moment later and the others
// join it; when the API is down or slow, visits stay buffered (up to a bound, oldest dropped
// first) and go with a later flush. Either way each visit carries an id, so a batch resent
// after a lost answer still counts once.

export const BATCH_SIZE = 500;
export const MAX_BUFFERED = 5000;

let sitesCache = { raw: undefined, sites: {} };

/** The `ingest` key for visits to `host`: AI_CACHE_SITES (JSON, by domain, `www.` stripped
 * when only the bare domain is named), else AI_CACHE_INGEST_KEY (a Worker for one site). */
export function ingestKeyFor(env, host) {
  if (sitesCache.raw !== env.AI_CACHE_SITES) {
    let sites = {};
    try {
      sites = env.AI_CACHE_SITES ? JSON.parse(env.AI_CACHE_SITES) : {};
    } catch {
      sites = {};
    }
    sitesCache = { raw: env.AI_CACHE_SITES, sites };
  }
  const sites = sitesCache.sites;
  const bare = host.startsWith("www.") ? host.slice(4) : host;
  return sites[host] || sites[bare] || env.AI_CACHE_INGEST_KEY || "";
}

/**
 * Posts `visits` of `host` in batches: "ok" (stored, or refused for good: a 4xx resending
 * cannot change), or "retry" (unreachable, overloaded, rate-limited, or the key not
 * checkable now), with the visits not yet posted left for the caller to keep.
 */
export async function postVisits(env, host, visits, sent = () => {}) {
  const timeoutMs = Number(env.VISITS_TIMEOUT_MS || 5000);
  for (let i = 0; i < visits.length; i += BATCH_SIZE) {
    const batch = visits.slice(i, i + BATCH_SIZE);
    let status = 0;
    try {
      const res = await fetch(new URL("/api/v1/visits/batch", env.AI_CACHE_API_URL), {
        method: "POST",
        headers: { "content-type": "application/json", "x-api-key": ingestKeyFor(env, host) },
        body: JSON.stringify({ visits: batch }),
        signal: AbortSignal.timeout(timeoutMs),
      });
      status = res.status;
      await res.body?.cancel();
    } catch {
      status = 0;
    }
    if (status === 0 || status === 429 || status >= 500) return "retry";
    sent(batch.length);
  }
  return "ok";
}

export class VisitBuffer {
  constructor() {
    this.queue = []; // {host, visit}
    this.pending = null;
    this.dropped = 0;
  }

  add(host, visit) {
    if (this.queue.length >= MAX_BUFFERED) {
      this.queue.shift();
      this.dropped += 1;
    }
    this.queue.push({ host, visit });
  }

  /** A promise that posts what is buffered after `delayMs`; never rejects. */
  flush(env, delayMs) {
    if (!this.pending) {
      this.pending = new Promise((resolve) => setTimeout(resolve, delayMs))
        .then(() => this.send(env))
        .catch(() => {})
        .finally(() => {
          this.pending = null;
        });
    }
    return this.pending;
  }

  async send(env) {
    while (this.queue.length > 0) {
      const taken = this.queue.splice(0, this.queue.length);
      const bySite = new Map();
      for (const entry of taken) {
        if (!bySite.has(entry.host)) bySite.set(entry.host, []);
        bySite.get(entry.host).push(entry);
      }
      const done = new Set();
      for (const [host, entries] of bySite) {
        let posted = 0;
        const outcome = await postVisits(env, host, entries.map((e) => e.visit), (n) => {
          posted += n;
        });
        for (const entry of outcome === "ok" ? entries : entries.slice(0, posted)) done.add(entry);
        if (outcome === "retry") {
          // Keep what was not posted, of every site, for a later flush.
          this.queue.unshift(...taken.filter((e) => !done.has(e)));
          if (this.queue.length > MAX_BUFFERED) {
            this.dropped += this.queue.length - MAX_BUFFERED;
            this.queue.splice(0, this.queue.length - MAX_BUFFERED);
          }
          return;
        }
      }
    }
  }
}
