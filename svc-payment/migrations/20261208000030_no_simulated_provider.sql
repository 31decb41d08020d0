-- The simulated provider is gone: svc-payment charges through a provider's
-- HTTP API (in development, the payment-provider emulator), whose own books
-- say where the money is.
DROP SCHEMA simulated_provider CASCADE;
