-- The visits read model: one row per visit (`visits`), projected from the VISITS stream by
-- src/projections/visits.rs, and the analytics read from it.
--
-- Each statement is a constant of `crate::projections::sql::visits` (build.rs); `{name}`
-- stands for the fragment of that name.

-- name: insert_visit
-- `visits.recorded` (a replay keeps the first).
INSERT INTO visits (id, page_id, client_id, url, visitor_type, user_agent,
        ip_hash, referrer, bot_name, operator, category, verification,
        format_served, status, visited_at, charged_price, signature_agent, robots, bytes)
    SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::text[],
        $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::text[],
        $12::text[], $13::text[], $14::int[], $15::timestamptz[], $16::text[], $17::text[],
        $18::text[], $19::bigint[])
    ON CONFLICT (id) DO NOTHING;

-- name: bot_key
-- A visit's bot: its name, or `human` / `unknown bot` when it has none.
coalesce(bot_name, CASE visitor_type WHEN 'human' THEN 'human' ELSE 'unknown bot' END)

-- name: operator_key
-- A visit's operator, or `human` / `unknown operator`.
coalesce(operator, CASE visitor_type WHEN 'human' THEN 'human' ELSE 'unknown operator' END)

-- name: category_key
-- A visit's category, or `human` / `unknown`.
coalesce(category, CASE visitor_type WHEN 'human' THEN 'human' ELSE 'unknown' END)

-- name: referrer_key
-- The AI assistant that referred a visit (its operator), `other site`, or `none`.
coalesce(ref_operator, CASE WHEN url_host(referrer) IS NULL THEN 'none' ELSE 'other site' END)

-- name: section_key
-- The first directory of a visit's path, as a prefix (`/blog/*`), or `/` for pages at the top.
coalesce(substring(regexp_replace(page_key(url), '^[^/?#]*', '') from '^(/[^/?#]+)/') || '/*', '/')

-- name: filtered_visits
-- A client's (`$1`) visits in `[$2, $3)`, each filter skipped when NULL: the bot (`$4`),
-- operator (`$5`), category (`$6`) as the groups name them, verified identities only (`$7`),
-- one page (`$8`, its `page_key`); joined to the AI assistants' hosts (`$9`) and operators
-- (`$10`) as `ref_host`, `ref_operator`.
visits LEFT JOIN unnest($9::text[], $10::text[]) AS ai_ref(ref_host, ref_operator)
        ON ai_ref.ref_host = url_host(referrer)
    WHERE client_id = $1 AND visited_at >= $2 AND visited_at < $3
      AND ($4::text IS NULL OR {bot_key} = $4)
      AND ($5::text IS NULL OR {operator_key} = $5)
      AND ($6::text IS NULL OR {category_key} = $6)
      AND (NOT $7::bool OR verification IN ('ip_verified', 'rdns', 'signature'))
      AND ($8::text IS NULL OR page_key(url) = $8)

-- name: totals
-- A client's visit totals over a time range.
SELECT count(*),
         count(*) FILTER (WHERE visitor_type = 'ai_bot'),
         count(*) FILTER (WHERE visitor_type = 'search_bot'),
         count(*) FILTER (WHERE visitor_type = 'other_bot'),
         count(*) FILTER (WHERE visitor_type = 'human'),
         count(*) FILTER (WHERE visitor_type = 'worker_proxy'),
         count(*) FILTER (WHERE verification = 'ip_verified'),
         count(*) FILTER (WHERE verification = 'ip_mismatch'),
         count(*) FILTER (WHERE format_served IN ('markdown', 'html')),
         count(*) FILTER (WHERE robots = 'disallowed'),
         count(*) FILTER (WHERE verification IN ('ip_verified', 'rdns', 'signature')),
         count(*) FILTER (WHERE ref_operator IS NOT NULL AND visitor_type = 'human'),
         coalesce(sum(bytes), 0)::bigint
    FROM {filtered_visits};

-- name: top_ai_pages
-- The client's pages AI bots read most over a time range: visits answered below 400, to a
-- page the client has (not removed), whatever the scheme and port they came by (`page_key`).
SELECT p.url, p.id AS page_id, v.ai_visits, v.bots
    FROM (SELECT page_key(url) AS key, count(*) AS ai_visits, count(DISTINCT bot_name) AS bots
            FROM {filtered_visits}
             AND visitor_type = 'ai_bot' AND (status IS NULL OR status < 400)
           GROUP BY 1) v
    JOIN LATERAL (SELECT id, url FROM pages
                   WHERE client_id = $1 AND page_key(url) = v.key AND status <> 'removed'
                   ORDER BY url LIMIT 1) p ON true
    ORDER BY v.ai_visits DESC, p.url ASC LIMIT 10;

-- name: top_ai_misses
-- What AI bots asked for that is not a page of the client (or was answered 400 or more),
-- most asked first, as `//host/path` (any scheme and port).
SELECT '//' || key AS url, NULL::uuid AS page_id, count(*) AS ai_visits,
        count(DISTINCT bot_name) AS bots
    FROM (SELECT page_key(url) AS key, bot_name, status
            FROM {filtered_visits} AND visitor_type = 'ai_bot') x
   WHERE x.status >= 400
      OR NOT EXISTS (SELECT 1 FROM pages p WHERE p.client_id = $1
                        AND page_key(p.url) = x.key AND p.status <> 'removed')
   GROUP BY key ORDER BY ai_visits DESC, key ASC LIMIT 10;

-- name: pages_by_key
-- The client's pages with these keys (`page_key`), for the `page` groups of `groups`.
SELECT DISTINCT ON (page_key(url)) page_key(url), id, url FROM pages
    WHERE client_id = $1 AND page_key(url) = ANY($2) AND status <> 'removed'
    ORDER BY page_key(url), url;

-- name: count_visits
-- How many visits are stored (the bench).
SELECT count(*) FROM visits;

-- name: groups
-- A client's visits over a time range, grouped by `{expr}` (one of the `*_key` fragments,
-- a day, an hour...) and ordered by `{order}`: the code fills both from a closed set. Paged
-- by `$11` (limit) and `$12` (offset).
SELECT {expr} AS key, count(*) AS visits,
        count(*) FILTER (WHERE visitor_type = 'ai_bot') AS ai_visits,
        count(*) FILTER (WHERE verification = 'ip_verified') AS ip_verified,
        count(*) FILTER (WHERE verification = 'ip_mismatch') AS ip_mismatch,
        coalesce(sum(bytes), 0)::bigint AS bytes,
        max(visited_at) AS last_visit_at,
        count(*) OVER () AS total_groups
    FROM {filtered_visits}
    GROUP BY 1 ORDER BY {order} LIMIT $11 OFFSET $12;

-- name: count_groups
-- How many groups `groups` has (asked past its last page).
SELECT count(DISTINCT {expr}) FROM {filtered_visits};

-- name: series
-- A client's visits per `{bucket}` (a day or an hour) and `{expr}` (as in `groups`).
SELECT {bucket} AS bucket, {expr} AS key, count(*) AS visits
    FROM {filtered_visits}
    GROUP BY 1, 2;

-- name: referrals
-- Per operator: its AI bots' crawls (every request but those a person triggered:
-- `user_fetch` and `agent`) and the people its assistant referred (visits of humans whose
-- `Referer` is one of its assistant's hosts).
SELECT operator, sum(crawls)::bigint AS crawls, sum(referrals)::bigint AS referrals
  FROM (SELECT operator, count(*) AS crawls, 0 AS referrals
          FROM {filtered_visits}
           AND visitor_type = 'ai_bot' AND operator IS NOT NULL
           AND coalesce(category, '') NOT IN ('user_fetch', 'agent')
         GROUP BY operator
        UNION ALL
        SELECT ref_operator, 0, count(*)
          FROM {filtered_visits} AND ref_operator IS NOT NULL AND visitor_type = 'human'
         GROUP BY ref_operator) x
 GROUP BY operator
 ORDER BY referrals DESC, crawls DESC, operator ASC;

-- name: referrals_per_day
-- The people AI assistants referred, per day and operator.
SELECT to_char(visited_at AT TIME ZONE 'UTC', 'YYYY-MM-DD') AS bucket,
       ref_operator AS key, count(*) AS visits
    FROM {filtered_visits} AND ref_operator IS NOT NULL AND visitor_type = 'human'
    GROUP BY 1, 2;

-- name: list
-- A client's visits, newest first, after the cursor (`$11`, `$12`: the last visit's time
-- and id of the previous page), `$13` of them.
SELECT id, visited_at, url, page_key(url) AS key, visitor_type, bot_name, operator, category,
       verification, format_served, status, bytes, referrer, ref_operator AS referred_by,
       user_agent, robots, signature_agent, charged_price
    FROM {filtered_visits}
      AND ($11::timestamptz IS NULL OR (visited_at, id) < ($11, $12::uuid))
    ORDER BY visited_at DESC, id DESC LIMIT $13;

-- name: robots_violations
-- A client's visits robots.txt disallowed over a time range, per bot: how many, the first and
-- last, and the paths read most (up to $4 per bot).
WITH v AS (
    SELECT coalesce(bot_name, '') AS bot_name, coalesce(operator, '') AS operator, url,
           visited_at
      FROM visits
     WHERE client_id = $1 AND visited_at >= $2 AND visited_at < $3
       AND robots = 'disallowed'
), per_url AS (
    SELECT bot_name, url, count(*) AS visits,
           row_number() OVER (PARTITION BY bot_name ORDER BY count(*) DESC, url ASC) AS rank
      FROM v GROUP BY bot_name, url
)
SELECT b.bot_name, b.operator, b.violations, b.first_seen, b.last_seen,
       coalesce((SELECT jsonb_agg(jsonb_build_object('url', p.url, 'visits', p.visits)
                                  ORDER BY p.rank)
                   FROM per_url p WHERE p.bot_name = b.bot_name AND p.rank <= $4),
                '[]'::jsonb) AS urls
  FROM (SELECT bot_name, max(operator) AS operator, count(*) AS violations,
               min(visited_at) AS first_seen, max(visited_at) AS last_seen
          FROM v GROUP BY bot_name) b
 ORDER BY b.violations DESC, b.bot_name ASC;

-- name: page_key_of
-- A client's page's `page_key` (the visits filter of one page).
SELECT page_key(url) FROM pages WHERE client_id = $1 AND id = $2;
