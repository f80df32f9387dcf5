-- rfevents schema, version 2: the attempt that stored an event.
-- A random token per HTTP request, the same across the transaction retries
-- of that request. When a COMMIT's answer is lost (connection dropped,
-- Galera node killed) the retry finds the event it stored itself and can
-- answer "accepted" with the stored outcome instead of "duplicate".
ALTER TABLE events ADD COLUMN IF NOT EXISTS attempt BINARY(16) NULL AFTER request_id;
