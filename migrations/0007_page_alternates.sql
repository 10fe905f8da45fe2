-- A page's translations as its sitemap names them (`xhtml:link rel="alternate" hreflang`):
-- a JSON array of {hreflang, href}; NULL when the sitemap names none.
ALTER TABLE pages ADD COLUMN alternates JSONB;
