-- Account mail (issue 14): email verification, password reset, and the outbox that sends
-- their mails and sign-in alerts without making a request wait for the mail server.

-- When the owner proved the address is theirs (a verification link, or a password reset,
-- which also arrives by mail); NULL until then.
ALTER TABLE users ADD COLUMN email_verified_at timestamptz;

-- One-time tokens mailed to an account's address. Only a keyed hash (HMAC-SHA256) of the
-- 256-bit token is stored. A token is deleted when used; a newer one of the same purpose
-- replaces it; expired ones are deleted by the purge job.
CREATE TABLE account_tokens (
    token_hash bytea       PRIMARY KEY CHECK (octet_length(token_hash) = 32),
    user_id    uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    purpose    text        NOT NULL CHECK (purpose IN ('verify_email', 'reset_password')),
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    CHECK (expires_at > created_at)
);

-- "The user's token of this purpose" (replaced by a newer one), and the cascade.
CREATE INDEX account_tokens_by_user ON account_tokens (user_id, purpose);
-- The purge job deletes expired tokens.
CREATE INDEX account_tokens_expires_at ON account_tokens (expires_at);

-- Mail waiting to be sent. Rows are written in the transaction of the change that causes
-- the mail, and deleted once the mail server accepted it. A failed attempt is counted,
-- its error kept, and the next one scheduled later and later.
CREATE TABLE mail_outbox (
    id              bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind            text        NOT NULL CHECK (kind ~ '^[a-z][a-z_]{0,63}$'),
    recipient       text        NOT NULL CHECK (length(recipient) BETWEEN 3 AND 320),
    subject         text        NOT NULL CHECK (length(subject) <= 998),
    body            text        NOT NULL CHECK (length(body) <= 65536),
    created_at      timestamptz NOT NULL DEFAULT now(),
    attempts        integer     NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error      text        CHECK (length(last_error) <= 1024)
);

-- The worker's "what is due, oldest first".
CREATE INDEX mail_outbox_due ON mail_outbox (next_attempt_at);

-- Wakes the mail workers of every replica when mail is queued (they also look on an
-- interval, so a lost notification only delays a mail).
CREATE FUNCTION session_guard_notify_mail() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('session_guard_mail', '');
    RETURN NULL;
END;
$$;

CREATE TRIGGER mail_outbox_notify_on_insert
    AFTER INSERT ON mail_outbox
    FOR EACH STATEMENT EXECUTE FUNCTION session_guard_notify_mail();
