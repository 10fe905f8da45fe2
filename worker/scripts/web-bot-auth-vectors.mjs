// Writes tests/fixtures/web-bot-auth-vectors.json: requests signed with the npm web-bot-auth
// package (Cloudflare's implementation) and RFC 9421's Ed25519 test key (Appendix B.1.4, a
// published test key), with what a verifier must conclude at the given time. Both the Rust
// edge (src/domain/webbotauth.rs) and the Worker (src/webbotauth.js) are tested against them.
// Run: node scripts/web-bot-auth-vectors.mjs (the signatures change each run: random nonces).
import { writeFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { jwkToKeyID, signatureHeaders, helpers } from "web-bot-auth";
import { signerFromJWK } from "web-bot-auth/crypto";

const KEY = {
  kty: "OKP",
  crv: "Ed25519",
  d: "n4Ni-HpISpVObnQMW0wOhCKROaIKqKtW_2ZYb2p9KcU",
  x: "JrQLj5P_89iXES9-vFgrIy29clF9CC_oPPsw3c5D0bs",
};
// Another Ed25519 key (RFC 8032's first test vector), for "a key the directory does not have".
const OTHER = {
  kty: "OKP",
  crv: "Ed25519",
  d: "nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A",
  x: "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo",
};
const publicJwk = ({ kty, crv, x }) => ({ kty, crv, x });
const keyid = async (jwk) => jwkToKeyID(publicJwk(jwk), helpers.WEBCRYPTO_SHA256, helpers.BASE64URL_DECODE);

const T = 1767225600; // 2026-01-01T00:00:00Z
const AGENT = '"https://agent.example"';

async function signed({ key = KEY, authority = "site.test", agent = AGENT, created = T, expires = T + 300, components }) {
  const headers = agent === null ? {} : { "Signature-Agent": agent };
  const request = new Request(`https://${authority}/page`, { headers });
  const signer = await signerFromJWK({ ...key, kid: await keyid(key) });
  const out = await signatureHeaders(request, signer, {
    created: new Date(created * 1000),
    expires: new Date(expires * 1000),
    ...(components ? { components } : {}),
  });
  return {
    ...(agent === null ? {} : { "signature-agent": agent }),
    "signature-input": out["Signature-Input"],
    signature: out["Signature"],
  };
}

const directory = { keys: [publicJwk(KEY)] };
const vectors = [
  { name: "signed by the agent's key, covering @authority and signature-agent", headers: await signed({}), authority: "site.test", now: T + 10, expected: { verification: "signature", agent: "https://agent.example" } },
  { name: "expired", headers: await signed({}), authority: "site.test", now: T + 400, expected: { verification: "claimed", refused: "expired" } },
  { name: "created in the future", headers: await signed({}), authority: "site.test", now: T - 600, expected: { verification: "claimed", refused: "created_in_future" } },
  { name: "valid for longer than a day", headers: await signed({ expires: T + 2 * 86400 }), authority: "site.test", now: T + 10, expected: { verification: "claimed", refused: "too_long" } },
  { name: "signed by a key the directory does not have", headers: await signed({ key: OTHER }), authority: "site.test", now: T + 10, expected: { verification: "claimed", refused: "no_such_key" } },
  { name: "sent to another host than it was signed for", headers: await signed({}), authority: "other.test", now: T + 10, expected: { verification: "claimed", refused: "invalid" } },
  // Signed without the header, which is then added: the signature does not vouch for it.
  { name: "signature-agent not covered", headers: { "signature-agent": AGENT, ...(await signed({ agent: null })) }, authority: "site.test", now: T + 10, expected: { verification: "claimed", refused: "malformed" } },
  { name: "no signature-agent to fetch keys from", headers: await signed({ agent: null }), authority: "site.test", now: T + 10, expected: { verification: "claimed", refused: "malformed" } },
];
const out = { key_directory: directory, vectors };
const path = fileURLToPath(new URL("../../tests/fixtures/web-bot-auth-vectors.json", import.meta.url));
writeFileSync(path, `${JSON.stringify(out, null, 2)}\n`);
console.log(`${vectors.length} vectors written to ${path}`);
