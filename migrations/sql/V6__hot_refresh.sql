-- A refresh becomes a HOT update: PostgreSQL rewrites the session's row on the same page
-- and touches no index, because no indexed column moves.
--
-- Until V5 a refresh moved `last_used_at` and `idle_expires_at`, which
-- `sessions_live_by_user` and `sessions_ended_at` index, so every refresh wrote a new
-- entry into all four indexes of `sessions` (and locked the row with a separate write
-- first). From V6:
--
-- - "a user's live sessions" is indexed by user alone; the handful of live sessions of a
--   user are sorted by `last_used_at` after they are found;
-- - the purge finds sessions by `idle_expires_floor`, a lower bound of `idle_expires_at`
--   that moves only when it falls more than a day (or a quarter of the idle timeout)
--   behind: once a day for a session in constant use, instead of on every refresh;
-- - the page keeps room for the new version of a row (fillfactor), and the refresh
--   function rotates the current token in one UPDATE instead of a locking SELECT and an
--   UPDATE.
--
-- Expand only: every column stays, and servers built before V6 keep working against this
-- schema (their refreshes go through the function below; their purge query still finds
-- the right sessions, through a sequential scan, until they are replaced). See
-- docs/schema.md, "Upgrading", for the contract step of a later release.

-- Always at or before `idle_expires_at`, so "ended before the cutoff by idle timeout"
-- implies "floor before the cutoff": the purge searches by the floor and rechecks the
-- exact deadline.
ALTER TABLE sessions ADD COLUMN idle_expires_floor timestamptz;

-- Before the trigger below exists, so this is the only write of the column here. No
-- notification: the revocation trigger watches other columns.
UPDATE sessions SET idle_expires_floor = idle_expires_at;

ALTER TABLE sessions ALTER COLUMN idle_expires_floor SET NOT NULL;

-- Keeps the floor a floor whoever writes the row: a server built before V6 inserts
-- sessions without it, and an operator's plain SQL may move `idle_expires_at` earlier.
-- The WHEN clause is evaluated without calling the function, so a refresh, which keeps
-- the floor at or below the new deadline, pays almost nothing for it.
CREATE FUNCTION session_guard_idle_floor() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.idle_expires_floor := NEW.idle_expires_at;
    RETURN NEW;
END
$$;

CREATE TRIGGER sessions_idle_floor_on_insert
    BEFORE INSERT ON sessions
    FOR EACH ROW
    WHEN (NEW.idle_expires_floor IS NULL OR NEW.idle_expires_floor > NEW.idle_expires_at)
    EXECUTE FUNCTION session_guard_idle_floor();

CREATE TRIGGER sessions_idle_floor_on_update
    BEFORE UPDATE OF idle_expires_at, idle_expires_floor ON sessions
    FOR EACH ROW
    WHEN (NEW.idle_expires_floor IS NULL OR NEW.idle_expires_floor > NEW.idle_expires_at)
    EXECUTE FUNCTION session_guard_idle_floor();

-- The purge of sessions that ended long ago: `least()` skips a NULL `revoked_at`.
CREATE INDEX sessions_ended_at_floor
    ON sessions (least(revoked_at, idle_expires_floor, absolute_expires_at));

-- "Live sessions of a user": the list route, revoke-all and the session cap, which sort
-- what they find by `last_used_at`.
CREATE INDEX sessions_live_by_user_id ON sessions (user_id) WHERE revoked_at IS NULL;

-- Any index on a column that a refresh moves makes every refresh a non-HOT update.
DROP INDEX sessions_live_by_user;
DROP INDEX sessions_ended_at;

-- Room on each page for new versions of its rows (applies to pages filled from now on).
ALTER TABLE sessions SET (fillfactor = 70);

-- The same function (name, arguments, result, outcomes) as V3's. The current token of a
-- live session, by far the most frequent case, is rotated by one UPDATE, which finds the
-- row by primary key, locks it and writes the new version, HOT when the page has room;
-- everything else takes V3's path (lock the row, then decide). A concurrent rotation of
-- the same generation makes the UPDATE find no row (it rechecks its conditions on the
-- version that committed), and the slow path then sees the rotation that won.
CREATE OR REPLACE FUNCTION session_guard_refresh(
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
    -- How far `idle_expires_floor` may lag behind `idle_expires_at` before a refresh
    -- moves it (and pays for one non-HOT update).
    v_lag interval := least(interval '1 day', p_idle / 4);
    s sessions%ROWTYPE;
BEGIN
    IF v_session IS NOT NULL THEN
        UPDATE sessions x
           SET refresh_generation = p_generation + 1,
               refresh_hash = p_next_hash,
               refresh_rotated_at = now(),
               refresh_rotated_by = p_client,
               refresh_retries = 0,
               last_used_at = now(),
               ip = coalesce(p_ip, x.ip),
               idle_expires_at = least(now() + p_idle, x.absolute_expires_at),
               idle_expires_floor = CASE
                   WHEN least(now() + p_idle, x.absolute_expires_at) - x.idle_expires_floor > v_lag
                   THEN least(now() + p_idle, x.absolute_expires_at)
                   ELSE x.idle_expires_floor
               END
         WHERE x.id = v_session
           AND x.refresh_generation = p_generation
           AND x.refresh_hash = p_hash
           AND x.revoked_at IS NULL
           AND least(x.idle_expires_at, x.absolute_expires_at) > now()
        RETURNING x.user_id, x.idle_expires_at, x.absolute_expires_at
             INTO user_id, idle_expires_at, absolute_expires_at;
        IF FOUND THEN
            -- What V3 answered: the new generation, and the hash that was current.
            outcome := 'rotated';
            session_id := v_session;
            generation := p_generation + 1;
            current_hash := p_hash;
            RETURN NEXT;
            RETURN;
        END IF;
    ELSE
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
        -- The current token of a legacy (pre-V3) session.
        UPDATE sessions x
           SET refresh_generation = x.refresh_generation + 1,
               refresh_hash = p_next_hash,
               refresh_rotated_at = now(),
               refresh_rotated_by = p_client,
               refresh_retries = 0,
               last_used_at = now(),
               ip = coalesce(p_ip, x.ip),
               idle_expires_at = least(now() + p_idle, x.absolute_expires_at),
               idle_expires_floor = CASE
                   WHEN least(now() + p_idle, x.absolute_expires_at) - x.idle_expires_floor > v_lag
                   THEN least(now() + p_idle, x.absolute_expires_at)
                   ELSE x.idle_expires_floor
               END
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
