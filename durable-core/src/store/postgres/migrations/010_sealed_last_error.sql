-- durable schema, version 10: an activity's last error sealed like the event bodies.
--
-- A retry's error message can quote a payload. With a codec the store now keeps it as
-- the codec's bytes in `last_error_sealed` (and `last_error` NULL), as SQLite does in its
-- one column, so nothing a payload said reaches the database in clear. Without a codec
-- it stays text in `last_error`. Rows written before this version keep their text.
ALTER TABLE activity_tasks ADD COLUMN last_error_sealed BYTEA;
