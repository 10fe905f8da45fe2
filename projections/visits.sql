-- The visits read model: one row per visit (`visits`), projected from the VISITS stream by
-- src/projections/visits.rs, and the analytics read from it.
--
-- Each statement is a constant of `crate::projections::sql::visits` (build.rs); `{name}`
-- stands for the fragment of that name.

-- name: insert_visit
-- `visits.recorded` (a replay keeps the first).
INSERT INTO visits (id, page_id, client_id, url, visitor_type, user_agent,
        ip_hash, referrer, bot_name, operator, category, verification,
        format_served, status, visited_at, charged_price, signature_agent, robots)
    SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::text[],
        $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::text[],
        $12::text[], $13::text[], $14::int[], $15::timestamptz[], $16::text[], $17::text[],
        $18::text[])
    ON CONFLICT (id) DO NOTHING;

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
         count(*) FILTER (WHERE robots = 'disallowed')
    FROM visits WHERE client_id = $1 AND visited_at >= $2 AND visited_at < $3;

-- name: top_ai_pages
-- The client's pages AI bots read most over a time range: visits answered below 400, to a
-- page the client has (not removed), whatever the scheme and port they came by (`page_key`).
SELECT p.url, p.id AS page_id, v.ai_visits, v.bots
    FROM (SELECT page_key(url) AS key, count(*) AS ai_visits, count(DISTINCT bot_name) AS bots
            FROM visits
           WHERE client_id = $1 AND visited_at >= $2 AND visited_at < $3
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
    FROM (SELECT page_key(v.url) AS key, v.bot_name, v.status
            FROM visits v
           WHERE v.client_id = $1 AND v.visited_at >= $2 AND v.visited_at < $3
             AND v.visitor_type = 'ai_bot') x
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
-- A client's visits over a time range, grouped by `{expr}` (bot, operator, category, day,
-- page key or visitor type) and ordered by `{order}`: the code fills both from a closed set.
SELECT {expr} AS key, count(*) AS visits,
        count(*) FILTER (WHERE visitor_type = 'ai_bot') AS ai_visits,
        count(*) FILTER (WHERE verification = 'ip_verified') AS ip_verified,
        count(*) FILTER (WHERE verification = 'ip_mismatch') AS ip_mismatch,
        max(visited_at) AS last_visit_at,
        count(*) OVER () AS total_groups
    FROM visits WHERE client_id = $1 AND visited_at >= $2 AND visited_at < $3
    GROUP BY 1 ORDER BY {order} LIMIT $4 OFFSET $5;

-- name: count_groups
-- How many groups `groups` has (asked past its last page).
SELECT count(DISTINCT {expr}) FROM visits
    WHERE client_id = $1 AND visited_at >= $2 AND visited_at < $3;

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
