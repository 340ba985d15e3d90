-- Security events (theft detected, revocations, failed logins), kept for audit. No
-- secrets or tokens are ever written here.
CREATE TABLE security_events (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    occurred_at timestamptz NOT NULL DEFAULT now(),
    kind        text        NOT NULL CHECK (kind ~ '^[a-z][a-z_]{0,63}$'),
    user_id     uuid,
    session_id  uuid,
    ip          inet,
    detail      jsonb       NOT NULL DEFAULT '{}'
);

-- The purge job finds sessions that ended long ago: least() skips the NULL revoked_at.
CREATE INDEX sessions_ended_at ON sessions (least(revoked_at, idle_expires_at, absolute_expires_at));

-- One refresh, one round trip, one short transaction. The caller passes the hash of the
-- presented token and the hash of its deterministic successor (the server derives the
-- successor from the token with its key, so a retry derives the same one).
--
-- outcome:
--   rotated   the presented token was current: it is now rotated, the successor stored
--   retried   it was rotated within the grace window: the successor is handed out again
--   reused    it was rotated before the grace window: theft; the session is revoked
--   revoked   the session was already revoked
--   expired   the session is past its idle timeout or absolute lifetime
--   unknown   no such token: nothing changes (a guess cannot sign anyone out)
CREATE FUNCTION session_guard_rotate_refresh(
    p_token_hash bytea,
    p_next_hash  bytea,
    p_grace      interval,
    p_idle       interval,
    p_ip         inet
) RETURNS TABLE (
    outcome             text,
    session_id          uuid,
    user_id             uuid,
    idle_expires_at     timestamptz,
    absolute_expires_at timestamptz
)
LANGUAGE plpgsql AS $$
DECLARE
    t refresh_tokens%ROWTYPE;
    s sessions%ROWTYPE;
BEGIN
    SELECT * INTO t FROM refresh_tokens r WHERE r.token_hash = p_token_hash FOR UPDATE;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'unknown'::text, NULL::uuid, NULL::uuid, NULL::timestamptz, NULL::timestamptz;
        RETURN;
    END IF;
    SELECT * INTO s FROM sessions x WHERE x.id = t.session_id FOR UPDATE;
    IF s.revoked_at IS NOT NULL THEN
        outcome := 'revoked';
    ELSIF least(s.idle_expires_at, s.absolute_expires_at) <= now() THEN
        outcome := 'expired';
    ELSIF t.rotated_at IS NULL THEN
        UPDATE refresh_tokens r SET rotated_at = now() WHERE r.token_hash = p_token_hash;
        INSERT INTO refresh_tokens (token_hash, session_id, generation)
            VALUES (p_next_hash, t.session_id, t.generation + 1);
        UPDATE sessions x
           SET last_used_at = now(),
               ip = coalesce(p_ip, x.ip),
               idle_expires_at = least(now() + p_idle, x.absolute_expires_at)
         WHERE x.id = s.id
        RETURNING x.idle_expires_at INTO s.idle_expires_at;
        outcome := 'rotated';
    ELSIF now() - t.rotated_at <= p_grace
          AND EXISTS (SELECT 1 FROM refresh_tokens r
                       WHERE r.token_hash = p_next_hash AND r.session_id = t.session_id) THEN
        outcome := 'retried';
    ELSIF now() - t.rotated_at <= p_grace THEN
        outcome := 'unknown';
    ELSE
        UPDATE sessions x SET revoked_at = now(), revoked_reason = 'refresh_reuse'
         WHERE x.id = s.id;
        INSERT INTO security_events (kind, user_id, session_id, ip, detail)
            VALUES ('refresh_reuse', s.user_id, s.id, p_ip,
                    jsonb_build_object('generation', t.generation,
                                       'rotated_at', t.rotated_at));
        outcome := 'reused';
    END IF;
    RETURN QUERY SELECT outcome, s.id, s.user_id, s.idle_expires_at, s.absolute_expires_at;
END
$$;
