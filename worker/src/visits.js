// Visits, posted to the ingestion API in batches after the response (ctx.waitUntil), so no
// response ever waits for them. Requests of one isolate share a buffer: the first request of a
// burst schedules a flush a moment later and the others join it. When the API is down or slow,
// visits stay buffered (up to a bound, oldest dropped first) and go with a later flush; each
// carries an id, so a batch resent after a lost answer still counts once.

export const BATCH_SIZE = 500;
export const MAX_BUFFERED = 5000;

export class VisitBuffer {
  constructor() {
    this.queue = [];
    this.pending = null;
    this.dropped = 0;
  }

  add(visit) {
    if (this.queue.length >= MAX_BUFFERED) {
      this.queue.shift();
      this.dropped += 1;
    }
    this.queue.push(visit);
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
    const timeoutMs = Number(env.VISITS_TIMEOUT_MS || 5000);
    while (this.queue.length > 0) {
      const batch = this.queue.splice(0, BATCH_SIZE);
      let status = 0;
      try {
        const res = await fetch(new URL("/api/v1/visits/batch", env.AI_CACHE_API_URL), {
          method: "POST",
          headers: { "content-type": "application/json", "x-api-key": env.AI_CACHE_INGEST_KEY || "" },
          body: JSON.stringify({ visits: batch }),
          signal: AbortSignal.timeout(timeoutMs),
        });
        status = res.status;
        await res.body?.cancel();
      } catch {
        status = 0;
      }
      // Unreachable, overloaded, rate-limited or the key not checkable now: keep them for a
      // later flush. Any other answer is final (2xx, or a 4xx that resending cannot change).
      if (status === 0 || status === 429 || status >= 500) {
        this.queue.unshift(...batch);
        if (this.queue.length > MAX_BUFFERED) {
          this.dropped += this.queue.length - MAX_BUFFERED;
          this.queue.splice(0, this.queue.length - MAX_BUFFERED);
        }
        return;
      }
    }
  }
}
