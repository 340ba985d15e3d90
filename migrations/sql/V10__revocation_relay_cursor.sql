-- Where the relay that publishes the revocation log to NATS JetStream has got to: the
-- log cursor (transaction, position) of the last row whose publication the broker
-- acknowledged. One row; only the relay holding the relay's advisory lock writes it, so
-- a relay that takes over resumes where the last one stopped. A row published again
-- after a crash between the broker's acknowledgement and this write carries the same
-- Nats-Msg-Id, and the stream's duplicate window drops it.
CREATE TABLE session_guard_relay_cursor (
    singleton      boolean     PRIMARY KEY DEFAULT true CHECK (singleton),
    txid           bigint      NOT NULL DEFAULT 0,
    position       bigint      NOT NULL DEFAULT 0,
    published_at   timestamptz
);
INSERT INTO session_guard_relay_cursor DEFAULT VALUES;
