-- Compliance reviews (issue 7): opened by the ACH rail's automatic actions
-- on a return (R16 account frozen; R05, R07, R10, R29 unauthorized debits)
-- for a person to look at. Same shape as the ACH tables (0013): the review
-- whole as JSON in `data` beside `status` (open) and `lookup` (its
-- customer, when there is one); its opening is audited in the compliance
-- audit chain in the same transaction.
CREATE TABLE compliance_reviews (
    id TEXT COLLATE "C" PRIMARY KEY,
    tenant_id BIGINT NOT NULL,
    status TEXT NOT NULL,
    lookup TEXT,
    external_id TEXT,
    version BIGINT NOT NULL,
    data TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    UNIQUE (tenant_id, external_id)
);
CREATE INDEX compliance_reviews_by_tenant ON compliance_reviews (tenant_id, id);
CREATE INDEX compliance_reviews_by_status ON compliance_reviews (status, tenant_id, id);
CREATE INDEX compliance_reviews_by_lookup ON compliance_reviews (tenant_id, lookup);
