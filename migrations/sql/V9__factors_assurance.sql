-- Second factors (TOTP, passkeys, recovery codes), the login that waits for one, and what
-- each session knows about how its user proved who they are.
--
-- Expand only: older servers keep working against this schema. They do not write the new
-- session columns, whose defaults say what their sessions are: a password login
-- (`aal1`, `{pwd}`), proved when the session was created (`auth_time` NULL is read as
-- `created_at`). An older server does not know of factors, so during a rolling upgrade a
-- login it serves skips the second factor: finish the upgrade before users enrol.
-- `session_guard_refresh` is untouched; the new server reads these columns beside it.

ALTER TABLE sessions
    -- The authenticator assurance level the user reached at the last proof.
    ADD COLUMN aal       text        NOT NULL DEFAULT 'aal1' CHECK (aal IN ('aal1', 'aal2')),
    -- How the user proved it (RFC 8176 method references: pwd, otp, hwk, swk, user, mfa).
    ADD COLUMN amr       text[]      NOT NULL DEFAULT '{pwd}'
        CHECK (cardinality(amr) BETWEEN 1 AND 8),
    -- When the user last proved it (sign-in or step-up); NULL: at `created_at`.
    ADD COLUMN auth_time timestamptz;

-- A user's second factors. A TOTP factor is pending (`confirmed_at` NULL) until its first
-- code proves the user holds it; only confirmed factors count. A passkey is confirmed when
-- it is registered.
CREATE TABLE mfa_factors (
    id            uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id       uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    kind          text        NOT NULL CHECK (kind IN ('totp', 'passkey')),
    name          text        NOT NULL CHECK (length(name) BETWEEN 1 AND 128),
    created_at    timestamptz NOT NULL DEFAULT now(),
    confirmed_at  timestamptz,
    last_used_at  timestamptz,
    -- TOTP: nonce ‖ AES-256-GCM of the shared secret, under a key derived from the
    -- server's refresh-token key: a dump of the database alone does not give it away.
    totp_secret   bytea       CHECK (octet_length(totp_secret) BETWEEN 28 AND 128),
    -- TOTP: the last time step whose code was accepted; a code is accepted once.
    totp_last_step bigint,
    -- Passkey: the credential id (unique across accounts) and the relying party's record
    -- of the public key (webauthn-rs's `Passkey`, JSON; no secret).
    credential_id bytea       UNIQUE CHECK (octet_length(credential_id) BETWEEN 1 AND 1023),
    passkey       jsonb,
    CHECK ((kind = 'totp') = (totp_secret IS NOT NULL)),
    CHECK ((kind = 'passkey') = (credential_id IS NOT NULL AND passkey IS NOT NULL))
);
CREATE INDEX mfa_factors_by_user ON mfa_factors (user_id);

-- Single-use recovery codes, stored only as keyed hashes. A new set replaces the old.
CREATE TABLE mfa_recovery_codes (
    user_id   uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    code_hash bytea       NOT NULL CHECK (octet_length(code_hash) = 32),
    used_at   timestamptz,
    PRIMARY KEY (user_id, code_hash)
);

-- A login whose password checked out and that waits for a second factor: the keyed hash
-- of its single-use `mfa_token`, and what the session will be opened with.
CREATE TABLE mfa_challenges (
    token_hash   bytea       PRIMARY KEY CHECK (octet_length(token_hash) = 32),
    user_id      uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    transport    text        NOT NULL CHECK (transport IN ('bearer', 'cookie')),
    user_agent   text        CHECK (length(user_agent) <= 512),
    device_label text        CHECK (length(device_label) <= 128),
    device_name  text        CHECK (length(device_name) <= 128),
    ip           inet,
    -- The password hash the login verified: a password change since voids the token.
    password_hash text       NOT NULL,
    failures     integer     NOT NULL DEFAULT 0 CHECK (failures >= 0),
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL,
    CHECK (expires_at > created_at)
);
CREATE INDEX mfa_challenges_by_user ON mfa_challenges (user_id);
CREATE INDEX mfa_challenges_by_expiry ON mfa_challenges (expires_at);

-- Wrong codes per account in a window, fleet-wide: bounds guessing across mfa_tokens.
CREATE TABLE mfa_failures (
    user_id         uuid        PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    window_start    timestamptz NOT NULL,
    failures        integer     NOT NULL CHECK (failures >= 0)
);

-- The server's half of a WebAuthn ceremony between its two requests: the challenge and
-- what the response must match (webauthn-rs's state, JSON). Single use; short-lived.
CREATE TABLE webauthn_ceremonies (
    id         uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    -- The user registering or stepping up; NULL for a sign-in, where the passkey says.
    user_id    uuid        REFERENCES users (id) ON DELETE CASCADE,
    purpose    text        NOT NULL CHECK (purpose IN ('registration', 'authentication')),
    state      jsonb       NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    CHECK (expires_at > created_at)
);
CREATE INDEX webauthn_ceremonies_by_expiry ON webauthn_ceremonies (expires_at);
