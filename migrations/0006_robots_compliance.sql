-- Whether the site's robots.txt (as the scraper last read it) allows a named bot the path it
-- read: 'allowed', 'disallowed', or NULL when not judged (people, unnamed bots, no file read).
ALTER TABLE visits ADD COLUMN robots TEXT;

-- The violations list reads only the disallowed visits of a client and range.
CREATE INDEX visits_robots_disallowed ON visits (client_id, visited_at)
    WHERE robots = 'disallowed';
