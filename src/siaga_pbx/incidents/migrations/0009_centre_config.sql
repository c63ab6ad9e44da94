-- The centre's configuration as data (issue 14): queues, call takers and
-- priority numbers, next to the agencies of 0004. Every item has a version
-- (1 when created, one more on every change) for optimistic concurrency: a
-- write that names another version than the row's is refused (HTTP 409).
-- The service seeds these tables from its settings on its first start (when
-- they are empty), loads them at every start, and keeps a local copy of the
-- last good configuration so that it starts without PostgreSQL.

CREATE TABLE queues (
    name       text PRIMARY KEY CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$'),
    -- every setting of the queue but its name and priority numbers, as the
    -- service's strict model writes them (siaga_pbx.config.QueueSettings)
    settings   jsonb NOT NULL CHECK (jsonb_typeof(settings) = 'object'),
    position   integer NOT NULL DEFAULT 0,
    version    integer NOT NULL DEFAULT 1 CHECK (version >= 1),
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE call_takers (
    taker_id   text PRIMARY KEY CHECK (taker_id ~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$'),
    endpoint   text NOT NULL CHECK (length(endpoint) BETWEEN 1 AND 200),
    queues     text[] NOT NULL CHECK (array_position(queues, NULL) IS NULL),
    logged_in  boolean NOT NULL DEFAULT true,     -- logged in when the service starts
    -- a linear queue rings its takers in this order
    position   integer NOT NULL DEFAULT 0,
    version    integer NOT NULL DEFAULT 1 CHECK (version >= 1),
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE priority_numbers (
    queue      text NOT NULL REFERENCES queues (name) ON DELETE CASCADE,
    number     text NOT NULL CHECK (number ~ '^\+?[0-9*#]{1,32}$'),
    priority   integer NOT NULL CHECK (priority BETWEEN 0 AND 1000),   -- lower is served first
    label      text NOT NULL DEFAULT '' CHECK (length(label) <= 100),
    version    integer NOT NULL DEFAULT 1 CHECK (version >= 1),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (queue, number)
);

ALTER TABLE agencies ADD COLUMN version integer NOT NULL DEFAULT 1 CHECK (version >= 1);
-- real lost digits (12.3 came back as 12.300000190734863); double precision
-- round-trips what the API was given.
ALTER TABLE agencies ALTER COLUMN ring_timeout_s TYPE double precision;
