-- Account mail caps (issue 22): every account mail queued, by the mailbox it goes to (the
-- account's canonical address), so that a mailbox gets at most so many mails an hour and
-- a day across verification, reset and sign-in alert mail, and an account at most so
-- many sign-in alerts an hour, whichever replica queued them. Rows are written in the
-- transaction that queues the mail and purged a day later. Additive only: older server
-- binaries neither read nor need it.
CREATE TABLE account_mail_log (
    id        bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    mailbox   text        NOT NULL CHECK (length(mailbox) BETWEEN 3 AND 320),
    kind      text        NOT NULL CHECK (kind ~ '^[a-z][a-z_]{0,63}$'),
    queued_at timestamptz NOT NULL DEFAULT now()
);

-- "How many mails did this mailbox get in the last hour, the last day".
CREATE INDEX account_mail_log_by_mailbox ON account_mail_log (mailbox, queued_at);
-- The purge job deletes rows older than a day.
CREATE INDEX account_mail_log_queued_at ON account_mail_log (queued_at);

-- A password reset keeps a few live links per account (the newest ones): "the user's
-- tokens of this purpose, newest first".
CREATE INDEX account_tokens_by_user_newest ON account_tokens (user_id, purpose, created_at DESC);
