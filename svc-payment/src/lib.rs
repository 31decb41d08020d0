//! svc-payment
