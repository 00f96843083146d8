-- A key may carry a rate limit of its own (token bucket: tokens per second
-- and burst). Both NULL: the server's default applies.
ALTER TABLE api_keys ADD COLUMN rate_limit_per_second INTEGER CHECK (rate_limit_per_second BETWEEN 1 AND 1000000);
ALTER TABLE api_keys ADD COLUMN rate_limit_burst INTEGER CHECK (rate_limit_burst BETWEEN 1 AND 1000000);
