-- A relay leases the rows it publishes instead of holding their row locks
-- across the PubAck wait: a relay that stalls or dies holds nothing but a
-- lease, which runs out by itself.
ALTER TABLE outbox ADD COLUMN leased_until timestamptz;
