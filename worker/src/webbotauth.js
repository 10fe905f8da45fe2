// Web Bot Auth in the Worker, as src/domain/webbotauth.rs does it on the built-in edge (both
// tested against tests/fixtures/web-bot-auth-vectors.json): a request's `web-bot-auth`
// signature (RFC 9421, the npm `web-bot-auth` package: Cloudflare's implementation) covering
// `@authority` and `signature-agent`, within its created/expires window (at most a day), whose
// key is in its agent's key directory (`<Signature-Agent>/.well-known/
// http-message-signatures-directory`, a JWKS), makes the visit `signature` with its agent.
//
// The package verifies the first member of `Signature-Input`; that member must be the
// `web-bot-auth` one (the built-in edge also finds it further along the dictionary).

import { helpers, jwkToKeyID, verify } from "web-bot-auth";
import { verifierFromJWK } from "web-bot-auth/crypto";

export const CLOCK_SKEW_SECS = 60;
export const MAX_VALIDITY_SECS = 24 * 60 * 60;
export const DIRECTORY_PATH = "/.well-known/http-message-signatures-directory";
/** Known agents by origin: their catalogue name, operator and category (as in Rust). */
export const KNOWN_AGENTS = { "https://chatgpt.com": { name: "ChatGPT Agent", operator: "OpenAI", category: "agent" } };

const MAX_DIRECTORY_BYTES = 64 * 1024;
const DIRECTORY_TIMEOUT_MS = 5000;
const MIN_TTL_SECS = 60;
const MAX_TTL_SECS = 24 * 60 * 60;
const FAILED_TTL_SECS = 60;
const directories = new Map();

class Refused extends Error {
  constructor(reason, message) {
    super(message || reason);
    this.reason = reason;
  }
}

/** The first member of Signature-Input: its covered components and parameters. */
function firstMember(input) {
  const m = /^\s*[A-Za-z*][A-Za-z0-9_.*-]*=\(([^)]*)\)(.*)$/.exec(input);
  if (!m) throw new Refused("malformed", "Signature-Input is not a signature");
  const components = [...m[1].matchAll(/"([^"]*)"/g)].map((c) => c[1]);
  const params = {};
  for (const p of m[2].matchAll(/;([a-z]+)=("([^"]*)"|-?\d+)/g)) params[p[1]] = p[3] ?? Number(p[2]);
  return { components, params };
}

/** `"https://agent.example"` or `a1="https://agent.example"` → the agent's origin. */
function agentOrigin(value) {
  const quoted = /"([^"]*)"/.exec(value || "");
  if (!quoted) return null;
  try {
    const url = new URL(quoted[1]);
    return url.protocol === "https:" || url.protocol === "http:" ? url.origin : null;
  } catch {
    return null;
  }
}

/** The agent whose signature `headers` (a get(name) function) carries for `authority`, checked
 * at `now` (Unix seconds) with the keys `keysOf(agent)` gives, or throws Refused. */
export async function verifiedAgent(headers, authority, now, keysOf) {
  const input = headers("signature-input");
  const signature = headers("signature");
  if (!input || !signature) throw new Refused("malformed", "not signed");
  const { components, params } = firstMember(input);
  if (params.tag !== "web-bot-auth") throw new Refused("malformed", "not a web-bot-auth signature");
  if (typeof params.created !== "number" || typeof params.expires !== "number") throw new Refused("malformed", "created and expires are required");
  if (typeof params.keyid !== "string") throw new Refused("malformed", "keyid is required");
  if (params.created > now + CLOCK_SKEW_SECS) throw new Refused("created_in_future");
  if (params.expires <= now) throw new Refused("expired");
  if (params.expires - params.created > MAX_VALIDITY_SECS) throw new Refused("too_long");
  const agentHeader = headers("signature-agent");
  const agent = agentOrigin(agentHeader);
  // The agent is only known if the signature vouches for the header that names it.
  if (!agent || !components.includes("signature-agent") || !components.includes("@authority")) {
    throw new Refused("malformed", "the signature must cover @authority and a signature-agent naming its agent");
  }
  const keys = (await keysOf(agent)) || [];
  let key = null;
  for (const jwk of keys) {
    if (jwk?.kty !== "OKP" || jwk?.crv !== "Ed25519") continue;
    const id = await jwkToKeyID({ kty: jwk.kty, crv: jwk.crv, x: jwk.x }, helpers.WEBCRYPTO_SHA256, helpers.BASE64URL_DECODE);
    if (id === params.keyid) {
      key = jwk;
      break;
    }
  }
  if (!key) throw new Refused("no_such_key");
  const message = {
    method: "GET",
    url: `https://${authority}/`,
    headers: { "signature-input": input, signature, "signature-agent": agentHeader },
  };
  try {
    await verify(message, await verifierFromJWK({ kty: key.kty, crv: key.crv, x: key.x }));
  } catch (e) {
    throw new Refused("invalid", String(e?.message || e));
  }
  return agent;
}

/** The keys of `agent`'s directory, fetched (size and time capped) and kept per its
 * Cache-Control (a minute to a day; a failure a minute) in this isolate. */
export async function directoryKeys(agent, fetcher = fetch) {
  const now = Date.now();
  const known = directories.get(agent);
  if (known && known.until > now) return known.keys;
  let keys = null;
  let ttl = FAILED_TTL_SECS;
  try {
    const response = await fetcher(agent + DIRECTORY_PATH, { signal: AbortSignal.timeout(DIRECTORY_TIMEOUT_MS), redirect: "manual" });
    const length = Number(response.headers.get("content-length") || 0);
    if (response.ok && length <= MAX_DIRECTORY_BYTES) {
      const body = await response.arrayBuffer();
      if (body.byteLength <= MAX_DIRECTORY_BYTES) {
        const parsed = JSON.parse(new TextDecoder().decode(body));
        if (Array.isArray(parsed?.keys)) {
          keys = parsed.keys;
          const age = /max-age=(\d+)/.exec(response.headers.get("cache-control") || "");
          ttl = Math.min(MAX_TTL_SECS, Math.max(MIN_TTL_SECS, age ? Number(age[1]) : MIN_TTL_SECS));
        }
      }
    }
  } catch {
    keys = null;
  }
  if (directories.size >= 1000) directories.clear();
  directories.set(agent, { keys, until: now + ttl * 1000 });
  return keys;
}

/** The verified agent of `request`, or null (unsigned, or a signature that does not count). */
export async function signatureAgent(request) {
  if (!request.headers.get("signature") || !request.headers.get("signature-input")) return null;
  try {
    return await verifiedAgent(
      (name) => request.headers.get(name),
      new URL(request.url).host,
      Math.floor(Date.now() / 1000),
      (agent) => directoryKeys(agent),
    );
  } catch {
    return null;
  }
}

/** Who a verified agent is, as src/domain/webbotauth.rs's `attribute`. */
export function attribute(visitor, agent) {
  const known = KNOWN_AGENTS[agent];
  if (known) return { visitor_type: "ai_bot", bot_name: known.name, operator: known.operator, category: known.category };
  if (visitor.visitor_type === "human") return { ...visitor, visitor_type: "other_bot", bot_name: agent };
  return visitor;
}
