-- A key may carry a rate limit of its own (token bucket: tokens per second
-- and burst). Both NULL: the server's default applies.
ALTER TABLE api_keys
    ADD COLUMN rate_limit_per_second BIGINT CHECK (rate_limit_per_second BETWEEN 1 AND 1000000),
    ADD COLUMN rate_limit_burst BIGINT CHECK (rate_limit_burst BETWEEN 1 AND 1000000),
    ADD CONSTRAINT api_keys_rate_limit_both CHECK ((rate_limit_per_second IS NULL) = (rate_limit_burst IS NULL));
