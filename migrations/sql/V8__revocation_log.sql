-- The revocation log: every way a session ends is also written, in the transaction that
-- ends it, to an append-only table that a relay reads in order and publishes to a broker
-- (NATS JetStream), for fleets too large for one `NOTIFY` per revocation per instance.
-- Bulk revocations (a user's sessions, everyone's) are one row and at most one
-- notification, however many sessions they end.
--
-- Expand only: the trigger function keeps its name and channel, so servers and layers
-- of earlier versions keep working against this schema.

CREATE TABLE session_guard_revocation_log (
    position       bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- The writing transaction. Positions are handed out before commit, so a transaction
    -- holding a lower position can commit after one holding a higher: a reader that
    -- remembers "the highest position seen" would skip rows. Readers read only rows of
    -- transactions older than every transaction still in progress, in (txid, position)
    -- order, which never skips one (session_guard_revocation_log_after).
    txid           xid8        NOT NULL DEFAULT pg_current_xact_id(),
    -- 'session': one session ended (revoked, deleted, a deadline moved earlier).
    -- 'user_before': every session of user_id created before `before` ended, but
    --   except_session. 'all_before': the same for every user.
    -- 'everything': the sessions table was emptied.
    kind           text        NOT NULL
                               CHECK (kind IN ('session', 'user_before', 'all_before', 'everything')),
    session_id     uuid,
    user_id        uuid,
    before         timestamptz,
    except_session uuid,
    -- The reason a bulk revocation gave its sessions, for sessions that start while it
    -- commits (session_guard_join_bulk_revocations).
    reason         text        CHECK (reason ~ '^[a-z][a-z_]{0,63}$'),
    logged_at      timestamptz NOT NULL DEFAULT now(),
    CHECK (CASE kind
        WHEN 'session' THEN session_id IS NOT NULL AND user_id IS NULL AND before IS NULL
                            AND except_session IS NULL
        WHEN 'user_before' THEN session_id IS NULL AND user_id IS NOT NULL AND before IS NOT NULL
                                AND reason IS NOT NULL
        WHEN 'all_before' THEN session_id IS NULL AND user_id IS NULL AND before IS NOT NULL
                               AND reason IS NOT NULL
        ELSE session_id IS NULL AND user_id IS NULL AND before IS NULL AND except_session IS NULL
    END)
);

-- The reader's order.
CREATE INDEX session_guard_revocation_log_by_txid
    ON session_guard_revocation_log (txid, position);
-- The purge.
CREATE INDEX session_guard_revocation_log_by_age
    ON session_guard_revocation_log (logged_at);
-- A starting session looks for bulk revocations that cover it.
CREATE INDEX session_guard_revocation_log_user_before
    ON session_guard_revocation_log (user_id, before) WHERE kind = 'user_before';
CREATE INDEX session_guard_revocation_log_all_before
    ON session_guard_revocation_log (before) WHERE kind = 'all_before';

-- Which feed carries revocations to the instances. 'postgres' (the default): the trigger
-- sends a NOTIFY on session_revoked for every revocation, as before. 'nats': a relay
-- publishes this log to NATS JetStream, and no NOTIFY is sent (its commit-time lock is
-- global to the PostgreSQL instance and serialises every notifying commit). One row;
-- servers and relays set it with session_guard_set_revocation_feed.
CREATE TABLE session_guard_revocation_feed (
    singleton  boolean     PRIMARY KEY DEFAULT true CHECK (singleton),
    feed       text        NOT NULL DEFAULT 'postgres' CHECK (feed IN ('postgres', 'nats')),
    changed_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO session_guard_revocation_feed DEFAULT VALUES;

CREATE FUNCTION session_guard_set_revocation_feed(p_feed text) RETURNS void
LANGUAGE sql AS $$
    UPDATE session_guard_revocation_feed SET feed = p_feed, changed_at = now()
     WHERE feed IS DISTINCT FROM p_feed;
$$;

-- Whether revocations are announced with NOTIFY: unless the feed is NATS (and when the
-- row went missing, announced: the safe side).
CREATE FUNCTION session_guard_notifies() RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT coalesce((SELECT feed <> 'nats' FROM session_guard_revocation_feed), true);
$$;

-- Microseconds since the Unix epoch: how bulk payloads name an instant.
CREATE FUNCTION session_guard_epoch_micros(p_at timestamptz) RETURNS bigint
LANGUAGE sql IMMUTABLE AS $$
    SELECT (extract(epoch FROM p_at) * 1000000)::bigint;
$$;

-- The advisory lock a bulk revocation of p_user (NULL: of everyone) holds, and that a
-- starting session of that user shares: (class, user). The class keeps the keys apart
-- from single-key advisory locks.
CREATE FUNCTION session_guard_bulk_lock_class() RETURNS integer
LANGUAGE sql IMMUTABLE AS $$ SELECT hashtext('portcullis bulk revocation') $$;

CREATE FUNCTION session_guard_bulk_lock_object(p_user uuid) RETURNS integer
LANGUAGE sql IMMUTABLE AS $$ SELECT CASE WHEN p_user IS NULL THEN 0 ELSE hashtext(p_user::text) END $$;

-- Every way a session ends, through the server or by an operator's plain SQL, is logged;
-- and announced on session_revoked unless the feed is NATS. The payload is the session
-- id; `*` means "every session" (TRUNCATE). A bulk revocation logs and announces itself
-- once (session_guard_revoke_sessions_before): its rows skip this.
CREATE OR REPLACE FUNCTION session_guard_notify_revoked() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    v_session uuid;
BEGIN
    IF current_setting('portcullis.bulk_revocation', true) = 'on' THEN
        RETURN NULL;
    END IF;
    IF TG_OP = 'TRUNCATE' THEN
        INSERT INTO session_guard_revocation_log (kind) VALUES ('everything');
        IF session_guard_notifies() THEN
            PERFORM pg_notify('session_revoked', '*');
        END IF;
        RETURN NULL;
    END IF;
    v_session := CASE WHEN TG_OP = 'DELETE' THEN OLD.id ELSE NEW.id END;
    INSERT INTO session_guard_revocation_log (kind, session_id) VALUES ('session', v_session);
    IF session_guard_notifies() THEN
        PERFORM pg_notify('session_revoked', v_session::text);
    END IF;
    RETURN NULL;
END
$$;

-- Skipped whole, not called per row, during a bulk revocation.
DROP TRIGGER sessions_notify_revoked_on_update ON sessions;
CREATE TRIGGER sessions_notify_revoked_on_update
    AFTER UPDATE OF revoked_at, idle_expires_at, absolute_expires_at ON sessions
    FOR EACH ROW
    WHEN (current_setting('portcullis.bulk_revocation', true) IS DISTINCT FROM 'on'
          AND ((NEW.revoked_at IS NOT NULL AND OLD.revoked_at IS NULL)
               OR NEW.idle_expires_at < OLD.idle_expires_at
               OR NEW.absolute_expires_at < OLD.absolute_expires_at))
    EXECUTE FUNCTION session_guard_notify_revoked();

-- One bulk revocation: every live session of p_user (NULL: of every user) created before
-- this transaction began, but p_except, is revoked with p_reason; one log row and at
-- most one notification say so, however many sessions it ends. Returns how many it
-- revoked and the instant they started before.
--
-- What a layer concludes from the log row ("every session of the user created before T
-- but p_except has ended") must hold in the database too, including for a session
-- whose creating transaction began before T and commits while this one runs: such a
-- session waits for this one (the shared lock in session_guard_join_bulk_revocations)
-- and is then created revoked, or this one waits for it and revokes it.
CREATE FUNCTION session_guard_revoke_sessions_before(p_user uuid, p_except uuid, p_reason text)
RETURNS TABLE (revoked bigint, before timestamptz)
LANGUAGE plpgsql AS $$
DECLARE
    v_before timestamptz := now();
    v_revoked bigint;
BEGIN
    PERFORM pg_advisory_xact_lock(session_guard_bulk_lock_class(),
                                  session_guard_bulk_lock_object(p_user));
    PERFORM set_config('portcullis.bulk_revocation', 'on', true);
    UPDATE sessions s SET revoked_at = now(), revoked_reason = p_reason
     WHERE (p_user IS NULL OR s.user_id = p_user)
       AND s.created_at < v_before
       AND s.revoked_at IS NULL
       AND s.id IS DISTINCT FROM p_except
       AND least(s.idle_expires_at, s.absolute_expires_at) > now();
    GET DIAGNOSTICS v_revoked = ROW_COUNT;
    PERFORM set_config('portcullis.bulk_revocation', 'off', true);
    INSERT INTO session_guard_revocation_log (kind, user_id, before, except_session, reason)
        VALUES (CASE WHEN p_user IS NULL THEN 'all_before' ELSE 'user_before' END,
                p_user, v_before, p_except, p_reason);
    IF session_guard_notifies() THEN
        PERFORM pg_notify('session_revoked',
            CASE WHEN p_user IS NULL THEN 'all' ELSE 'user ' || p_user::text END
            || ' before ' || session_guard_epoch_micros(v_before)::text
            || coalesce(' except ' || p_except::text, ''));
    END IF;
    RETURN QUERY SELECT v_revoked, v_before;
END
$$;

-- A starting session waits for any bulk revocation of its user or of everyone that is
-- committing, and starts revoked if one committed that covers it (it began before the
-- bulk revocation's instant): see session_guard_revoke_sessions_before.
CREATE FUNCTION session_guard_join_bulk_revocations() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    v_reason text;
BEGIN
    PERFORM pg_advisory_xact_lock_shared(session_guard_bulk_lock_class(),
                                         session_guard_bulk_lock_object(NULL));
    PERFORM pg_advisory_xact_lock_shared(session_guard_bulk_lock_class(),
                                         session_guard_bulk_lock_object(NEW.user_id));
    IF NEW.revoked_at IS NOT NULL THEN
        RETURN NEW;
    END IF;
    SELECT l.reason INTO v_reason FROM session_guard_revocation_log l
     WHERE ((l.kind = 'user_before' AND l.user_id = NEW.user_id) OR l.kind = 'all_before')
       AND l.before > NEW.created_at
       AND l.except_session IS DISTINCT FROM NEW.id
     LIMIT 1;
    IF FOUND THEN
        NEW.revoked_at := now();
        NEW.revoked_reason := v_reason;
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER sessions_join_bulk_revocations
    BEFORE INSERT ON sessions
    FOR EACH ROW
    EXECUTE FUNCTION session_guard_join_bulk_revocations();

-- The log rows after the cursor (p_txid, p_position), oldest first, up to p_limit, of
-- transactions older than every transaction still in progress: such a transaction has
-- committed or aborted, so no row can appear later before the cursor. A row of a
-- transaction still running, or committed while an older one runs, waits for the next
-- read. Returns the horizon too: the reader's next cursor is at most (horizon, 0).
CREATE FUNCTION session_guard_revocation_log_after(p_txid bigint, p_position bigint, p_limit integer)
RETURNS TABLE (log_position bigint, txid bigint, kind text, session_id uuid, user_id uuid,
               before timestamptz, except_session uuid, horizon bigint)
LANGUAGE sql STABLE AS $$
    WITH snapshot AS MATERIALIZED (
        SELECT pg_snapshot_xmin(pg_current_snapshot()) AS horizon
    )
    SELECT l.position, l.txid::text::bigint, l.kind, l.session_id, l.user_id, l.before,
           l.except_session, s.horizon::text::bigint
      FROM snapshot s
      LEFT JOIN LATERAL (
          SELECT * FROM session_guard_revocation_log r
           WHERE (r.txid, r.position) > (p_txid::text::xid8, p_position)
             AND r.txid < s.horizon
           ORDER BY r.txid, r.position
           LIMIT p_limit
      ) l ON true
     ORDER BY l.txid, l.position;
$$;

-- Deletes up to p_limit log rows logged more than p_older_than ago; returns how many.
-- Keep rows well past the layer's live TTL and the broker's retention (an hour is
-- plenty): a revocation older than the live TTL has reached every instance anyway, by
-- its next query.
CREATE FUNCTION session_guard_purge_revocation_log(p_older_than interval, p_limit integer)
RETURNS bigint
LANGUAGE sql AS $$
    WITH purged AS (
        DELETE FROM session_guard_revocation_log
         WHERE position IN (SELECT position FROM session_guard_revocation_log
                             WHERE logged_at < now() - p_older_than
                             ORDER BY logged_at LIMIT p_limit)
        RETURNING 1)
    SELECT count(*) FROM purged;
$$;
