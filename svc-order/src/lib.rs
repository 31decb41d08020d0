//! svc-order
