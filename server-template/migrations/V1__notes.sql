-- The example resource of the generated backend: each user's notes. This schema is the
-- application's own, applied after Portcullis's (which owns `users` and `sessions`)
-- and recorded in its own history table, `app_schema_history`. Add your tables as
-- V2__…, V3__…; delete this file (and src/notes/) to drop
-- the example before your first deployment.
CREATE TABLE notes (
    id         uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id    uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    title      text        NOT NULL CHECK (char_length(title) BETWEEN 1 AND 200),
    body       text        NOT NULL CHECK (char_length(body) <= 10000),
    created_at timestamptz NOT NULL DEFAULT now()
);

-- A user's notes, newest first.
CREATE INDEX notes_by_user ON notes (user_id, created_at DESC, id);
