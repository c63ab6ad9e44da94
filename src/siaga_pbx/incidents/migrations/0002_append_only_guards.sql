-- The timeline is append-only: UPDATE, DELETE and TRUNCATE raise.
-- The single exception is the retention purge, which deletes deliberately
-- inside a transaction that has run SET LOCAL siaga.retention_purge = 'on'
-- and records every deletion in purge_audit.
-- (Against a hostile superuser this is no defence; in production the service
-- role should also lack UPDATE/DELETE privileges. It stops mistakes and bugs.)
CREATE FUNCTION timeline_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' AND current_setting('siaga.retention_purge', true) = 'on' THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'timeline is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege',
              HINT = 'only the retention purge may delete timeline entries';
END
$$;

CREATE TRIGGER timeline_no_update_delete
    BEFORE UPDATE OR DELETE ON timeline
    FOR EACH ROW EXECUTE FUNCTION timeline_append_only();
CREATE TRIGGER timeline_no_truncate
    BEFORE TRUNCATE ON timeline
    FOR EACH STATEMENT EXECUTE FUNCTION timeline_append_only();

-- The purge audit itself is never changed or removed.
CREATE FUNCTION purge_audit_immutable() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'purge_audit is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE TRIGGER purge_audit_no_update_delete
    BEFORE UPDATE OR DELETE ON purge_audit
    FOR EACH ROW EXECUTE FUNCTION purge_audit_immutable();
CREATE TRIGGER purge_audit_no_truncate
    BEFORE TRUNCATE ON purge_audit
    FOR EACH STATEMENT EXECUTE FUNCTION purge_audit_immutable();
