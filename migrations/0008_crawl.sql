-- The crawl that found a page (or started from it), and how many links from a start page it
-- is: a crawl's budget and progress are counted on them.
ALTER TABLE pages ADD COLUMN crawl_run UUID;
ALTER TABLE pages ADD COLUMN crawl_depth INT;
CREATE INDEX pages_crawl_run ON pages (crawl_run) WHERE crawl_run IS NOT NULL;
