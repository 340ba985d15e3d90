-- Refresh state becomes one fixed-size part of each session row, whatever the number of
-- refreshes, instead of one `refresh_tokens` row per generation.
--
-- A refresh token now carries its session id and generation beside its secret. The
-- secrets of one session form a chain, secret(n + 1) = HMAC(successor key, secret(n)),
-- and the session stores only the keyed hash of the current secret. The server proves
-- that an older token belongs to the chain by walking it forward to the current
-- generation (bounded), so any earlier generation is still recognised as reuse.

ALTER TABLE sessions
    -- The generation of the current refresh token (0 after login).
    ADD COLUMN refresh_generation  integer     NOT NULL DEFAULT 0
        CHECK (refresh_generation >= 0),
    -- HMAC(hash key, current secret); NULL when the session has no refresh token left.
    ADD COLUMN refresh_hash        bytea       CHECK (octet_length(refresh_hash) = 32),
    -- When the current generation was issued by a rotation (NULL: never rotated).
    ADD COLUMN refresh_rotated_at  timestamptz,
    -- Keyed fingerprint of the client (IP, user agent) that performed that rotation: only
    -- it may retry the previous token inside the grace window.
    ADD COLUMN refresh_rotated_by  bytea       CHECK (octet_length(refresh_rotated_by) = 32),
    -- Retries of the previous token since that rotation (bounded by the caller).
    ADD COLUMN refresh_retries     integer     NOT NULL DEFAULT 0 CHECK (refresh_retries >= 0);

-- Upgrade: the current token of every session becomes generation 0 of its chain. The old
-- token format (43 characters, no session id) is found through this table, one row per
-- session that existed before the upgrade, removed with its session.
CREATE TABLE legacy_refresh_tokens (
    token_hash bytea PRIMARY KEY CHECK (octet_length(token_hash) = 32),
    session_id uuid  NOT NULL UNIQUE REFERENCES sessions (id) ON DELETE CASCADE
);

UPDATE sessions s
   SET refresh_hash = t.token_hash
  FROM refresh_tokens t
 WHERE t.session_id = s.id AND t.rotated_at IS NULL;

INSERT INTO legacy_refresh_tokens (token_hash, session_id)
SELECT token_hash, session_id FROM refresh_tokens WHERE rotated_at IS NULL;

-- Every per-generation row goes at once: dropping a table does not touch its rows one by
-- one. Tokens rotated before the upgrade are unknown from now on (refused, but no longer
-- recognised as reuse).
DROP FUNCTION session_guard_rotate_refresh(bytea, bytea, interval, interval, inet);
DROP TABLE refresh_tokens;

-- One refresh, one round trip, one short transaction, one lookup by primary key (or, for
-- a token of the old format, one by the legacy table's primary key first).
--
-- The caller passes what it derived from the presented token with its key:
--   p_session, p_generation  from the token (p_session NULL for the old format)
--   p_hash                   HMAC(hash key, presented secret)
--   p_next_hash              HMAC(hash key, successor of the presented secret)
--   p_client                 keyed fingerprint of the calling client
--
-- outcome:
--   rotated   the token was current: the successor is now current
--   retried   the token is the previous generation, inside the grace window, from the
--             client that rotated it, under the retry bound: the successor again
--   reused    the previous generation from any other client, after the window or over
--             the bound: theft; the session is revoked and the event recorded
--   stale     an older generation: the caller walks the chain (it holds the key) and,
--             when the token proves genuine, revokes with session_guard_revoke_reused
--   revoked   the session was already revoked
--   expired   the session is past its idle timeout or absolute lifetime
--   unknown   no such session, or a token that is not its chain's: nothing changes
CREATE FUNCTION session_guard_refresh(
    p_session     uuid,
    p_generation  integer,
    p_hash        bytea,
    p_next_hash   bytea,
    p_client      bytea,
    p_grace       interval,
    p_idle        interval,
    p_max_retries integer,
    p_ip          inet
) RETURNS TABLE (
    outcome             text,
    session_id          uuid,
    user_id             uuid,
    generation          integer,
    current_hash        bytea,
    idle_expires_at     timestamptz,
    absolute_expires_at timestamptz
)
LANGUAGE plpgsql AS $$
DECLARE
    v_session uuid := p_session;
    s sessions%ROWTYPE;
BEGIN
    IF v_session IS NULL THEN
        SELECT l.session_id INTO v_session FROM legacy_refresh_tokens l
         WHERE l.token_hash = p_hash;
    END IF;
    SELECT * INTO s FROM sessions x WHERE x.id = v_session FOR UPDATE;
    IF NOT FOUND OR s.refresh_hash IS NULL OR p_generation > s.refresh_generation
       OR (p_generation = s.refresh_generation AND s.refresh_hash <> p_hash)
       OR (p_generation = s.refresh_generation - 1 AND s.refresh_hash <> p_next_hash) THEN
        RETURN QUERY SELECT 'unknown'::text, NULL::uuid, NULL::uuid, NULL::integer,
                            NULL::bytea, NULL::timestamptz, NULL::timestamptz;
        RETURN;
    END IF;
    IF s.revoked_at IS NOT NULL THEN
        outcome := 'revoked';
    ELSIF least(s.idle_expires_at, s.absolute_expires_at) <= now() THEN
        outcome := 'expired';
    ELSIF p_generation = s.refresh_generation THEN
        UPDATE sessions x
           SET refresh_generation = x.refresh_generation + 1,
               refresh_hash = p_next_hash,
               refresh_rotated_at = now(),
               refresh_rotated_by = p_client,
               refresh_retries = 0,
               last_used_at = now(),
               ip = coalesce(p_ip, x.ip),
               idle_expires_at = least(now() + p_idle, x.absolute_expires_at)
         WHERE x.id = s.id
        RETURNING x.refresh_generation, x.idle_expires_at
             INTO s.refresh_generation, s.idle_expires_at;
        outcome := 'rotated';
    ELSIF p_generation = s.refresh_generation - 1
          AND now() - s.refresh_rotated_at <= p_grace
          AND s.refresh_rotated_by = p_client
          AND s.refresh_retries < p_max_retries THEN
        UPDATE sessions x SET refresh_retries = x.refresh_retries + 1 WHERE x.id = s.id;
        INSERT INTO security_events (kind, user_id, session_id, ip, detail)
            VALUES ('refresh_retried', s.user_id, s.id, p_ip,
                    jsonb_build_object('generation', p_generation,
                                       'retry', s.refresh_retries + 1));
        outcome := 'retried';
    ELSIF p_generation = s.refresh_generation - 1 THEN
        PERFORM session_guard_revoke_reused(s.id, p_generation, p_ip);
        outcome := 'reused';
    ELSE
        outcome := 'stale';
    END IF;
    RETURN QUERY SELECT outcome, s.id, s.user_id, s.refresh_generation, s.refresh_hash,
                        s.idle_expires_at, s.absolute_expires_at;
END
$$;

-- Theft: a genuine earlier refresh token was presented when it must not be. Revokes the
-- session (if still live) and records the event; returns whether this call revoked it.
CREATE FUNCTION session_guard_revoke_reused(p_session uuid, p_generation integer, p_ip inet)
RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    v_user uuid;
    v_current integer;
BEGIN
    UPDATE sessions x SET revoked_at = now(), revoked_reason = 'refresh_reuse'
     WHERE x.id = p_session AND x.revoked_at IS NULL
    RETURNING x.user_id, x.refresh_generation INTO v_user, v_current;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    INSERT INTO security_events (kind, user_id, session_id, ip, detail)
        VALUES ('refresh_reuse', v_user, p_session, p_ip,
                jsonb_build_object('generation', p_generation,
                                   'current_generation', v_current));
    RETURN true;
END
$$;

-- Deleting a session that had already ended (the purge, or an operator cleaning up) tells
-- nobody: no instance can be holding it as live. Deleting a live one still announces it.
DROP TRIGGER sessions_notify_revoked_on_delete ON sessions;
CREATE TRIGGER sessions_notify_revoked_on_delete
    AFTER DELETE ON sessions
    FOR EACH ROW
    WHEN (OLD.revoked_at IS NULL
          AND least(OLD.idle_expires_at, OLD.absolute_expires_at) > now())
    EXECUTE FUNCTION session_guard_notify_revoked();
