-- Wait, answer and talk times, derived from the timeline (never stored).
-- The clock starts when the call reaches the system: the 'arrived' entry, or
-- the call's arrived_at when no such entry exists.
--   wait_s: arrival -> first 'answered' (or, never answered, -> the end)
--   talk_s: first 'answered' -> the last ending entry
CREATE VIEW call_times AS
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
           max(e.at) FILTER (WHERE e.stage IN ('hung_up', 'abandoned', 'overflowed')) AS ended_at,
           (array_agg(e.detail ->> 'taker_id' ORDER BY e.at, e.id)
                FILTER (WHERE e.stage = 'answered'))[1] AS taker_id
    FROM timeline e
    WHERE e.call_id = c.call_id
) t ON true;
