-- Evidence kept exactly (issue 13, defects 2 and 12).
--
-- The caller's From and P-Asserted-Identity headers as the network sent them.
-- caller_name/caller_number/pai are cleaned for display (control characters
-- become U+FFFD, and Asterisk has already replaced invalid UTF-8 before ARI
-- sees a header); these columns hold the bytes themselves, from the dialplan's
-- base64 copies (SIAGA_FROM_B64, SIAGA_PAI_B64). NULL: not captured (a call
-- from before this migration, or one the service never saw, e.g. a dialplan
-- fallback call). Bounded by the service (callerid.MAX_RAW_HEADER) and here.
ALTER TABLE calls
    ADD COLUMN from_header_raw bytea CHECK (octet_length(from_header_raw) <= 8192),
    ADD COLUMN pai_header_raw  bytea CHECK (octet_length(pai_header_raw) <= 8192);

-- A recording file that holds no audio (a WAV header only: the recorder
-- started and stopped before any frame, as the call recording does when
-- Stasis() fails at once and the dialplan fallback's own recording takes
-- over). It is registered all the same, so that retention deletes it and no
-- file of a call is unaccounted for, but marked for what it is.
ALTER TABLE recordings ADD COLUMN empty boolean NOT NULL DEFAULT false;
