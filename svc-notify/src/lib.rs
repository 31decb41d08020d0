//! svc-notify
