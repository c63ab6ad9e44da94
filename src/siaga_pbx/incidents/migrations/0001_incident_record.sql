-- The incident record, shaped after NENA EIDO (see DOMAIN.md "The incident record").
-- All times are timestamptz; the service's clock is UNIX epoch seconds.

CREATE TABLE incidents (
    id              uuid PRIMARY KEY,
    opened_at       timestamptz NOT NULL,
    category        text CHECK (category IN ('fire', 'medical', 'traffic_accident', 'crime',
                                             'disaster', 'sanitation', 'animal_rescue', 'other')),
    priority        smallint CHECK (priority BETWEEN 1 AND 5),
    status          text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'closed')),
    disposition     text CHECK (disposition IN ('emergency', 'information', 'prank', 'ghost',
                                                'abandoned', 'test')),
    address_text    text NOT NULL DEFAULT '',
    notes           text NOT NULL DEFAULT '',
    responders      text[] NOT NULL DEFAULT '{}',
    lat             double precision CHECK (lat BETWEEN -90 AND 90),
    lon             double precision CHECK (lon BETWEEN -180 AND 180),
    accuracy_m      double precision CHECK (accuracy_m >= 0),
    location_source text CHECK (location_source IN ('aml', 'sip', 'spoken')),
    location_at     timestamptz,
    language        text NOT NULL DEFAULT '',
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX incidents_opened_at ON incidents (opened_at DESC, id DESC);

-- One row per call. Answer time, taker and talk time are NOT stored here: they
-- are derived from the timeline (view call_times, migration 0003).
-- *_raw hold the original bytes only when the text had to be altered to be
-- storable (NUL, lone surrogates from bad UTF-8), so evidence stays bit-exact.
CREATE TABLE calls (
    call_id           text PRIMARY KEY,
    incident_id       uuid NOT NULL REFERENCES incidents (id) ON DELETE CASCADE,
    caller_number     text NOT NULL DEFAULT '',
    caller_name       text NOT NULL DEFAULT '',
    pai               text NOT NULL DEFAULT '',
    best_number       text GENERATED ALWAYS AS
                          (CASE WHEN pai <> '' THEN pai ELSE caller_number END) STORED,
    caller_number_raw bytea,
    caller_name_raw   bytea,
    pai_raw           bytea,
    trunk             text NOT NULL DEFAULT '',
    queue             text NOT NULL DEFAULT '',
    language          text NOT NULL DEFAULT '',
    arrived_at        timestamptz NOT NULL,
    ended_at          timestamptz,
    hangup_side       text,
    hangup_cause      text
);
CREATE INDEX calls_incident ON calls (incident_id);
CREATE INDEX calls_best_number ON calls (best_number, arrived_at DESC) WHERE best_number <> '';

CREATE TABLE incident_links (
    incident_id        uuid NOT NULL REFERENCES incidents (id) ON DELETE CASCADE,
    linked_incident_id uuid NOT NULL REFERENCES incidents (id) ON DELETE CASCADE,
    kind               text NOT NULL CHECK (kind IN ('repeat_caller', 'merged', 'related')),
    created_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (incident_id, linked_incident_id, kind),
    CHECK (incident_id <> linked_incident_id)
);
CREATE INDEX incident_links_linked ON incident_links (linked_incident_id);

-- Append-only (migration 0002). incident_id is NULL only when the call's
-- OpenIncident never reached PostgreSQL (dead-lettered): the entry is kept anyway.
CREATE TABLE timeline (
    id          bigserial PRIMARY KEY,
    incident_id uuid REFERENCES incidents (id) ON DELETE CASCADE,
    call_id     text,
    stage       text NOT NULL,
    at          timestamptz NOT NULL,
    detail      jsonb NOT NULL DEFAULT '{}',
    recorded_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX timeline_call ON timeline (call_id, at, id);
CREATE INDEX timeline_incident ON timeline (incident_id, at, id);

-- ON DELETE RESTRICT: an incident cannot vanish while a recording row (and so
-- a file on disk) still points at it; retention must delete the file first.
CREATE TABLE recordings (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    call_id       text NOT NULL,
    incident_id   uuid REFERENCES incidents (id) ON DELETE RESTRICT,
    path          text NOT NULL UNIQUE,
    started_at    timestamptz NOT NULL,
    ended_at      timestamptz,
    duration_s    double precision CHECK (duration_s >= 0),
    size_bytes    bigint NOT NULL CHECK (size_bytes >= 0),
    sha256        text NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    registered_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX recordings_call ON recordings (call_id);
CREATE INDEX recordings_incident ON recordings (incident_id);
CREATE INDEX recordings_started_at ON recordings (started_at);

-- wait_s is derived from the two times, never stored independently.
CREATE TABLE callbacks (
    call_id         text PRIMARY KEY,
    incident_id     uuid REFERENCES incidents (id) ON DELETE CASCADE,
    number          text NOT NULL,
    number_raw      bytea,
    arrived_at      timestamptz NOT NULL,
    abandoned_at    timestamptz NOT NULL,
    wait_s          double precision GENERATED ALWAYS AS
                        (EXTRACT(EPOCH FROM (abandoned_at - arrived_at))::double precision) STORED,
    queue           text NOT NULL DEFAULT '',
    where_abandoned text NOT NULL CHECK (where_abandoned IN ('waiting', 'ringing')),
    status          text NOT NULL DEFAULT 'pending'
                        CHECK (status IN ('pending', 'attempted', 'done')),
    status_at       timestamptz,
    status_by       text
);
CREATE INDEX callbacks_pending ON callbacks (abandoned_at) WHERE status <> 'done';

-- Which outbox ops are already applied: written in the same transaction as the
-- op's effect, so a relay that crashes before its local ack replays harmlessly.
CREATE TABLE applied_ops (
    outbox_id  uuid NOT NULL,
    seq        bigint NOT NULL,
    kind       text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (outbox_id, seq)
);

-- What retention deleted, when and why. No personal data is copied here:
-- keeping caller numbers in the audit would defeat the deletion (UU PDP).
CREATE TABLE purge_audit (
    id          bigserial PRIMARY KEY,
    purged_at   timestamptz NOT NULL DEFAULT now(),
    object_kind text NOT NULL CHECK (object_kind IN ('recording', 'incident', 'timeline', 'callback')),
    object_id   text NOT NULL,
    reason      text NOT NULL,
    detail      jsonb NOT NULL DEFAULT '{}'
);
