-- The compliance audit records the client IP of the request (the API
-- client's address: the integrator's backend, not its end customer), and
-- becomes append-only like the ledger log.
ALTER TABLE compliance_audit_events ADD COLUMN client_ip TEXT;
CREATE TRIGGER compliance_audit_events_no_update BEFORE UPDATE ON compliance_audit_events BEGIN SELECT RAISE(ABORT, 'compliance_audit_events is append-only'); END;
CREATE TRIGGER compliance_audit_events_no_delete BEFORE DELETE ON compliance_audit_events BEGIN SELECT RAISE(ABORT, 'compliance_audit_events is append-only'); END;
