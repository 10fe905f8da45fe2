// The user-agent classifier, as in src/domain/bots/mod.rs: the first catalogue entry whose
// pattern matches wins. The catalogue is generated (catalogue.js); nothing here is hand-copied.
import catalogue from "./catalogue.js";

const entries = catalogue.entries.map((e) => ({
  entry: e,
  re: new RegExp(e.pattern, e.ignore_case ? "i" : ""),
}));

const HUMAN = { visitor_type: "human", bot_name: null, operator: null, category: null };

// User agents repeat a lot: remember the last answers of this isolate.
const cache = new Map();
const CACHE_MAX = 10000;

/** Classifies a user agent: {visitor_type, bot_name, operator, category}. */
export function classify(userAgent) {
  const ua = (userAgent || "").trim();
  if (ua === "") return { ...HUMAN, visitor_type: "other_bot" };
  const known = cache.get(ua);
  if (known) return known;
  let answer = HUMAN;
  for (const { entry, re } of entries) {
    if (re.test(ua)) {
      answer = {
        visitor_type: entry.visitor_type,
        bot_name: entry.name ?? null,
        operator: entry.operator ?? null,
        category: entry.category ?? null,
      };
      break;
    }
  }
  if (cache.size >= CACHE_MAX) cache.clear();
  cache.set(ua, answer);
  return answer;
}
