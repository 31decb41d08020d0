//! svc-cart
