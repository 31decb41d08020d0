-- The W3C tracestate that goes with an outbox row's traceparent: vendor
-- trace data a caller sent is carried through the saga unchanged.
ALTER TABLE outbox ADD COLUMN tracestate text;
