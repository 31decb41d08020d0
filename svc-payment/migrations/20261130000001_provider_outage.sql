-- The simulator's outage switch: while `down`, every call fails as an
-- unreachable provider would. Fault runs and tests flip it
-- (`SimulatedProvider::set_outage`); one row, so there is one switch.
CREATE TABLE simulated_provider.switch (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    down     boolean NOT NULL DEFAULT false
);
INSERT INTO simulated_provider.switch DEFAULT VALUES;
