// The KV key of a page, as in src/domain/kv_key.rs (both are tested against
// tests/fixtures/kv-keys.json): `<scheme>/<host with dots as dashes>[:<port>]<path>[?<query>]`
// of the normalized URL; a key over 500 bytes keeps its first bytes, then `~` and the SHA-256
// of the whole key. The WHATWG URL parser does the normalization Rust's `url` crate does.

export const MAX_BASE_LEN = 500;

const encoder = new TextEncoder();
const decoder = new TextDecoder();

function hex(buffer) {
  return [...new Uint8Array(buffer)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

/** The base key of a URL (a string or URL). */
export async function kvKey(input) {
  const url = new URL(input);
  let host = url.hostname;
  if (host.endsWith(".")) host = host.slice(0, -1);
  let key = `${url.protocol.slice(0, -1)}/${host.replaceAll(".", "-")}`;
  if (url.port) key += `:${url.port}`;
  key += url.pathname || "/";
  if (url.search.length > 1) key += url.search;
  const bytes = encoder.encode(key);
  if (bytes.length <= MAX_BASE_LEN) return key;
  const digest = hex(await crypto.subtle.digest("SHA-256", bytes));
  let cut = MAX_BASE_LEN - 1 - digest.length;
  // Never cut inside a UTF-8 sequence (continuation bytes are 0b10xxxxxx).
  while (cut > 0 && (bytes[cut] & 0xc0) === 0x80) cut -= 1;
  return `${decoder.decode(bytes.slice(0, cut))}~${digest}`;
}

export const htmlKey = (base) => `html:${base}`;
export const markdownKey = (base) => `md:${base}`;
