-- Indexes for the account hardening of issue 11.

-- The purge job deletes security events older than the retention, oldest first.
CREATE INDEX security_events_occurred_at ON security_events (occurred_at);

-- "How many wrong current passwords has this session given?" (revoked after a few).
CREATE INDEX security_events_by_session_kind ON security_events (session_id, kind)
    WHERE session_id IS NOT NULL;

-- "Was this account used from this IP recently?", which lets its owner through a login
-- limit that someone else's guesses exhausted. Also serves the cascade from users.
CREATE INDEX sessions_by_user_ip ON sessions (user_id, ip);
