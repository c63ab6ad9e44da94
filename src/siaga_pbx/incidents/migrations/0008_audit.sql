-- The audit of every action (docs/AUDIT.md): one row per state-changing
-- request, accepted, refused or failed, written through the local outbox
-- (``AppendAudit``) so an action taken while PostgreSQL is down is still
-- recorded, exactly once, when it comes back.
--
-- who:        the person (their username) or, for a configuration token,
--             'role:<token fingerprint>'; 'cli:<os user>' for the command line,
--             'taker:<id>' for a handset feature code.
-- user_id, username: the signed-in user; empty for a configuration token.
-- at:         when the action was taken (the service's clock), which may be
--             long before recorded_at when PostgreSQL was down.
-- before, after: the state around a configuration change; for records that
--             hold personal data (incidents) only the names of the fields
--             changed: the values live in the incident's timeline, which the
--             retention purge deletes with the incident.
CREATE TABLE audit (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at          timestamptz NOT NULL,
    who         text NOT NULL CHECK (who <> ''),
    user_id     text NOT NULL DEFAULT '',
    username    text NOT NULL DEFAULT '',
    role        text NOT NULL,
    action      text NOT NULL CHECK (action <> ''),
    target      text NOT NULL DEFAULT '',
    outcome     text NOT NULL CHECK (outcome IN ('accepted', 'refused', 'failed')),
    status      integer,
    reason      text NOT NULL DEFAULT '',
    before      jsonb,
    after       jsonb,
    source      text NOT NULL DEFAULT '',
    request_id  text NOT NULL DEFAULT '',
    recorded_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX audit_at ON audit (at DESC, id DESC);
CREATE INDEX audit_who ON audit (who, at DESC);
CREATE INDEX audit_username ON audit (username, at DESC) WHERE username <> '';
CREATE INDEX audit_action ON audit (action, at DESC);
CREATE INDEX audit_target ON audit (target, at DESC);

-- Append-only, with the guard of the timeline (0002) but without its one
-- exception: the audit holds no caller data, so the retention purge has no
-- reason to delete from it. UPDATE, DELETE and TRUNCATE raise for everyone,
-- the table's owner included (only ALTER TABLE ... DISABLE TRIGGER, which
-- needs ownership, gets past it: a deliberate act outside the service).
-- In production the service's role also lacks UPDATE/DELETE/TRUNCATE on the
-- table (docs/AUDIT.md); the trigger stops mistakes and bugs.
CREATE FUNCTION audit_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege',
              HINT = 'audit rows are never changed or removed';
END
$$;

CREATE TRIGGER audit_no_update_delete
    BEFORE UPDATE OR DELETE ON audit
    FOR EACH ROW EXECUTE FUNCTION audit_append_only();
CREATE TRIGGER audit_no_truncate
    BEFORE TRUNCATE ON audit
    FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only();
