-- The agency (OPD) directory for conferencing dispatchers into a live call (issue 5).
-- The service loads it at start-up and again on every change (NOTIFY
-- siaga_agencies), and keeps the last good copy: a call never waits for the
-- database, and with the database down the settings' copy is used.

CREATE TABLE agencies (
    code           text PRIMARY KEY CHECK (code ~ '^[a-z][a-z0-9_]{0,31}$'),
    name           text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    digit          smallint UNIQUE CHECK (digit BETWEEN 1 AND 9),   -- taker keypad *<digit>
    -- dispatcher phones: PJSIP endpoints of ours only, never a dial string
    endpoints      text[] NOT NULL CHECK (cardinality(endpoints) >= 1
                                          AND array_position(endpoints, NULL) IS NULL),
    ring_strategy  text NOT NULL DEFAULT 'ringall' CHECK (ring_strategy IN ('ringall', 'ordered')),
    ring_timeout_s real NOT NULL DEFAULT 20 CHECK (ring_timeout_s > 0 AND ring_timeout_s <= 300),
    fallback       text REFERENCES agencies (code) DEFERRABLE INITIALLY DEFERRED
                        CHECK (fallback <> code),
    join_role      text NOT NULL DEFAULT 'talk' CHECK (join_role IN ('talk', 'listen', 'whisper')),
    mass_incident  boolean NOT NULL DEFAULT false,
    enabled        boolean NOT NULL DEFAULT true,
    updated_at     timestamptz NOT NULL DEFAULT now()
);

CREATE FUNCTION agencies_check_endpoints() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM unnest(NEW.endpoints) e WHERE e !~ '^PJSIP/[A-Za-z0-9_.-]{1,64}$') THEN
        RAISE EXCEPTION 'agency %: endpoints must be PJSIP/<name>', NEW.code
            USING ERRCODE = 'check_violation';
    END IF;
    NEW.updated_at := now();
    RETURN NEW;
END
$$;

CREATE TRIGGER agencies_endpoints
    BEFORE INSERT OR UPDATE ON agencies
    FOR EACH ROW EXECUTE FUNCTION agencies_check_endpoints();

-- Tell running services to reload the directory.
CREATE FUNCTION agencies_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('siaga_agencies', '');
    RETURN NULL;
END
$$;

CREATE TRIGGER agencies_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON agencies
    FOR EACH STATEMENT EXECUTE FUNCTION agencies_notify();

-- Lab seed: the dispatchers of asterisk/pjsip.conf. Each falls back to
-- another, so a dispatcher who does not answer never ends the attempt.
INSERT INTO agencies (code, name, digit, endpoints, fallback, mass_incident) VALUES
    ('damkar', 'Damkar (pemadam kebakaran)', 1, ARRAY['PJSIP/disp-damkar'], 'polisi', true),
    ('dinkes', 'Dinkes PSC 119 (ambulans)',  2, ARRAY['PJSIP/disp-dinkes'], 'damkar', true),
    ('polisi', 'Polisi',                     3, ARRAY['PJSIP/disp-polisi'], 'dinkes', false);
