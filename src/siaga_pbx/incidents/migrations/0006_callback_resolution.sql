-- PostgreSQL is the record of pending callbacks (issue 13, defect 7): every
-- abandoned call's callback is written here through the outbox, read back when
-- the service starts, and resolved here (who, when, how) when staff deal with
-- it. The service holds only a bounded copy in memory.
--
-- A callback is 'pending' until resolved; 'attempted' is kept for automatic
-- callbacks that have dialled but not yet reached the caller. The old 'done'
-- (marked by hand, before this migration) becomes 'resolved' / 'called_back'.

ALTER TABLE callbacks
    ADD COLUMN resolved_at     timestamptz,
    ADD COLUMN resolved_by     text,
    ADD COLUMN resolution      text CHECK (resolution IN ('called_back', 'called_again',
                                                          'unreachable', 'not_needed')),
    ADD COLUMN resolution_note text NOT NULL DEFAULT '';

ALTER TABLE callbacks DROP CONSTRAINT callbacks_status_check;
UPDATE callbacks
   SET status = 'resolved', resolved_at = COALESCE(status_at, abandoned_at),
       resolved_by = COALESCE(status_by, ''), resolution = 'called_back'
 WHERE status = 'done';
ALTER TABLE callbacks
    ADD CONSTRAINT callbacks_status_check
        CHECK (status IN ('pending', 'attempted', 'resolved')),
    ADD CONSTRAINT callbacks_resolved_complete
        CHECK ((status = 'resolved') = (resolved_at IS NOT NULL AND resolved_by IS NOT NULL
                                        AND resolution IS NOT NULL));

DROP INDEX callbacks_pending;
CREATE INDEX callbacks_pending ON callbacks (abandoned_at) WHERE status <> 'resolved';

-- A queue-to-queue overflow is not the end of a call (defect 8): the caller is
-- still waiting, in the backup queue. Only an overflow that redirected the
-- caller out of the centre (to a dial string, or the dialplan fallback) ends it.
CREATE OR REPLACE VIEW call_times AS
SELECT c.call_id,
       c.incident_id,
       COALESCE(t.arrived_at, c.arrived_at) AS arrived_at,
       t.answered_at,
       COALESCE(t.ended_at, c.ended_at) AS ended_at,
       t.taker_id,
       EXTRACT(EPOCH FROM (COALESCE(t.answered_at, t.ended_at, c.ended_at)
                           - COALESCE(t.arrived_at, c.arrived_at)))::double precision AS wait_s,
       EXTRACT(EPOCH FROM (COALESCE(t.ended_at, c.ended_at) - t.answered_at))::double precision
           AS talk_s
FROM calls c
LEFT JOIN LATERAL (
    SELECT min(e.at) FILTER (WHERE e.stage = 'arrived') AS arrived_at,
           min(e.at) FILTER (WHERE e.stage = 'answered') AS answered_at,
           max(e.at) FILTER (WHERE e.stage IN ('hung_up', 'abandoned')
                             OR (e.stage = 'overflowed' AND NOT e.detail ? 'to_queue'))
               AS ended_at,
           (array_agg(e.detail ->> 'taker_id' ORDER BY e.at, e.id)
                FILTER (WHERE e.stage = 'answered'))[1] AS taker_id
    FROM timeline e
    WHERE e.call_id = c.call_id
) t ON true;
