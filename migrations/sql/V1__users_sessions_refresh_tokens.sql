-- Users, their sessions (one per signed-in device) and the refresh-token state of each
-- session. gen_random_uuid() is built in from PostgreSQL 13 on.

CREATE TABLE users (
    id            uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    email         text        NOT NULL CHECK (length(email) BETWEEN 3 AND 320),
    password_hash text        NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);

-- Email is unique case-insensitively, whatever casing a client or an operator writes.
CREATE UNIQUE INDEX users_email_lower_key ON users (lower(email));

CREATE TABLE sessions (
    id                  uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id             uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    user_agent          text        CHECK (length(user_agent) <= 512),
    device_label        text        CHECK (length(device_label) <= 128),
    device_name         text        CHECK (length(device_name) <= 128),
    ip                  inet,
    created_at          timestamptz NOT NULL DEFAULT now(),
    last_used_at        timestamptz NOT NULL DEFAULT now(),
    -- The session ends when it is not refreshed before this (idle timeout) ...
    idle_expires_at     timestamptz NOT NULL,
    -- ... and at this instant whatever happens (absolute lifetime).
    absolute_expires_at timestamptz NOT NULL,
    revoked_at          timestamptz,
    revoked_reason      text        CHECK (revoked_reason ~ '^[a-z][a-z_]{0,63}$'),
    CHECK (idle_expires_at <= absolute_expires_at),
    CHECK (revoked_reason IS NULL OR revoked_at IS NOT NULL)
);

-- "Live sessions of a user, newest use first": the list route and revoke-all.
CREATE INDEX sessions_live_by_user ON sessions (user_id, last_used_at DESC)
    WHERE revoked_at IS NULL;

-- One row per refresh token ever issued for a session. Only a keyed hash of the token is
-- stored. Rows of rotated tokens are kept for the session's life, so that presenting any
-- earlier token after the grace window is recognised as reuse rather than as a stranger.
CREATE TABLE refresh_tokens (
    token_hash  bytea       PRIMARY KEY CHECK (octet_length(token_hash) = 32),
    session_id  uuid        NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    generation  integer     NOT NULL CHECK (generation >= 0),
    issued_at   timestamptz NOT NULL DEFAULT now(),
    -- NULL while this is the session's current token.
    rotated_at  timestamptz,
    -- Serves the lookup by session id, and makes two concurrent rotations of the same
    -- generation collide instead of forking the session.
    UNIQUE (session_id, generation)
);

-- Every way a session can end, through the server or by an operator's plain SQL, tells
-- the layer instances listening on the channel. The payload is the session id; `*` means
-- "every session" (TRUNCATE). An UPDATE notifies when the session is newly revoked or a
-- deadline moves earlier; other updates (last_used_at, ip) stay silent.
CREATE FUNCTION session_guard_notify_revoked() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        PERFORM pg_notify('session_revoked', '*');
        RETURN NULL;
    ELSIF TG_OP = 'DELETE' THEN
        PERFORM pg_notify('session_revoked', OLD.id::text);
        RETURN OLD;
    END IF;
    PERFORM pg_notify('session_revoked', NEW.id::text);
    RETURN NEW;
END
$$;

CREATE TRIGGER sessions_notify_revoked_on_update
    AFTER UPDATE OF revoked_at, idle_expires_at, absolute_expires_at ON sessions
    FOR EACH ROW
    WHEN ((NEW.revoked_at IS NOT NULL AND OLD.revoked_at IS NULL)
          OR NEW.idle_expires_at < OLD.idle_expires_at
          OR NEW.absolute_expires_at < OLD.absolute_expires_at)
    EXECUTE FUNCTION session_guard_notify_revoked();

CREATE TRIGGER sessions_notify_revoked_on_delete
    AFTER DELETE ON sessions
    FOR EACH ROW
    EXECUTE FUNCTION session_guard_notify_revoked();

CREATE TRIGGER sessions_notify_revoked_on_truncate
    AFTER TRUNCATE ON sessions
    FOR EACH STATEMENT
    EXECUTE FUNCTION session_guard_notify_revoked();
