-- durable schema, version 5: what a run is doing now.
--
-- The latest value workflow code published with `ctx.set_status(..)`, encoded like an
-- event body (sealed by the store's codec, if it has one). It is not part of the history:
-- the commit of an activation that published a value replaces it, and a finished run keeps
-- its last one. NULL until the run publishes anything.
ALTER TABLE runs ADD COLUMN published_status BLOB;
