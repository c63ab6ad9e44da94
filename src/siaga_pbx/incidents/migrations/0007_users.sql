-- Named users (issue 14): the people of the centre, their roles, their
-- personal API tokens. Passwords are argon2id hashes (argon2-cffi's encoded
-- form, "$argon2id$..."); tokens are kept as the SHA-256 of the secret.
-- The service keeps a local copy of both (SQLite under state_dir), so people
-- who signed in before can sign in while this database is down.

CREATE TABLE users (
    user_id       uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    username      text NOT NULL UNIQUE CHECK (username ~ '^[a-z][a-z0-9._-]{1,63}$'),
    display_name  text NOT NULL CHECK (length(btrim(display_name)) BETWEEN 1 AND 128),
    roles         text[] NOT NULL CHECK (
                      cardinality(roles) >= 1
                      AND roles <@ ARRAY['admin', 'supervisor', 'call_taker', 'dispatcher', 'ops']),
    enabled       boolean NOT NULL DEFAULT true,
    password_hash text NOT NULL CHECK (password_hash LIKE '$argon2id$%'),
    -- a call taker works as one taker of the centre, on one handset
    taker_id      text CHECK (taker_id ~ '^[A-Za-z0-9._-]{1,64}$'),
    handset       text CHECK (handset ~ '^PJSIP/[A-Za-z0-9._-]{1,64}$'),
    -- a dispatcher works for one agency (agencies.code; not a foreign key, so
    -- the agency directory can be reshaped without touching who worked there)
    agency        text CHECK (agency ~ '^[a-z0-9_-]{1,32}$'),
    version       integer NOT NULL DEFAULT 1 CHECK (version >= 1),
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    CHECK (('call_taker' = ANY (roles)) = (taker_id IS NOT NULL)),
    CHECK (handset IS NULL OR taker_id IS NOT NULL),
    CHECK (('dispatcher' = ANY (roles)) = (agency IS NOT NULL))
);

-- A 112 centre keeps who did what: users are disabled, never deleted.
CREATE FUNCTION users_never_deleted() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'users are never deleted (% refused): disable the user instead', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER users_no_delete BEFORE DELETE ON users
    FOR EACH ROW EXECUTE FUNCTION users_never_deleted();
CREATE TRIGGER users_no_truncate BEFORE TRUNCATE ON users
    FOR EACH STATEMENT EXECUTE FUNCTION users_never_deleted();

CREATE TABLE api_tokens (
    token_id     uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id      uuid NOT NULL REFERENCES users (user_id),
    name         text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    token_hash   bytea NOT NULL UNIQUE CHECK (length(token_hash) = 32),
    -- the roles the token may use; empty: all of its owner's (always capped by them)
    roles        text[] NOT NULL DEFAULT '{}' CHECK (
                     roles <@ ARRAY['admin', 'supervisor', 'call_taker', 'dispatcher', 'ops']),
    created_at   timestamptz NOT NULL DEFAULT now(),
    created_by   text NOT NULL,
    expires_at   timestamptz,
    revoked_at   timestamptz,
    last_used_at timestamptz
);
CREATE INDEX api_tokens_user ON api_tokens (user_id);
