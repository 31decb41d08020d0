//! Every metric the platform exports, by name: dashboards and alerts rely
//! on these names, so they live here once and the code that records them
//! uses the constants. Label values are bounded (no order or user ids).
//!
//! What a gRPC series already says is not said twice: a checkout on
//! svc-cart, or a WatchOrder refused for the cap, is
//! [`GRPC_HANDLED`] with its method and code.

/// gRPC calls answered, `{grpc_service, grpc_method, grpc_code}`
/// ([`crate::grpc_metrics`]).
pub const GRPC_HANDLED: &str = "grpc_server_handled_total";
/// gRPC call duration histogram, `{grpc_service, grpc_method}`.
pub const GRPC_HANDLING_SECONDS: &str = "grpc_server_handling_seconds";

/// Events a consumer finished with, `{consumer, result}`: `handled`,
/// `retried` (redelivered later) or `parked` (on the DLQ).
pub const CONSUMER_EVENTS: &str = "shop_consumer_events_total";
/// Time a handler took, `{consumer}`, whatever its result.
pub const CONSUMER_HANDLING_SECONDS: &str = "shop_consumer_handling_seconds";
/// Messages of a consumer's stream not yet delivered to it, `{consumer}`
/// (its lag), from JetStream's consumer info.
pub const CONSUMER_PENDING: &str = "shop_consumer_pending";
/// Messages delivered and not yet acknowledged, `{consumer}`.
pub const CONSUMER_ACK_PENDING: &str = "shop_consumer_ack_pending";
/// Messages waiting for a redelivery after a transient failure,
/// `{consumer}`: stays up while a dependency is down.
pub const CONSUMER_WAITING_RETRY: &str = "shop_consumer_waiting_retry";
/// Messages the server stopped delivering to a consumer after its
/// `max_deliver` without an outcome (its `MAX_DELIVERIES` advisory),
/// `{consumer}`; each is parked. Any at all pages.
pub const CONSUMER_GIVEN_UP: &str = "shop_consumer_given_up_total";
/// A consumer's `max_ack_pending`, `{consumer}`: delivery stops once
/// `shop_consumer_ack_pending` reaches it.
pub const CONSUMER_MAX_ACK_PENDING: &str = "shop_consumer_max_ack_pending";

/// Outbox rows not yet published, `{service}`.
pub const OUTBOX_PENDING_ROWS: &str = "shop_outbox_pending_rows";
/// Age of the oldest unpublished outbox row, `{service}`.
pub const OUTBOX_OLDEST_AGE_SECONDS: &str = "shop_outbox_oldest_age_seconds";
/// Time to publish one batch and have its PubAcks, `{service}`.
pub const OUTBOX_PUBLISH_SECONDS: &str = "shop_outbox_publish_seconds";
/// Events an outbox stored on their stream, `{service}`; a copy the stream
/// already had (a row sent again before its mark landed) is not counted.
pub const OUTBOX_PUBLISHED: &str = "shop_outbox_published_total";
/// Outbox rows whose publishing failed (to be tried again), `{service}`.
pub const OUTBOX_PUBLISH_FAILURES: &str = "shop_outbox_publish_failures_total";

/// Orders by what happened to them, `{status, reason}`: `placed`,
/// `confirmed`, or `cancelled` with its reason (`out_of_stock`, …).
pub const ORDERS: &str = "shop_orders_total";
/// Time from an order's placing to its end, `{status}` (`confirmed`,
/// `cancelled`).
pub const ORDER_SETTLE_SECONDS: &str = "shop_order_settle_seconds";

/// Checked-out lines svc-cart removed once their order was confirmed.
pub const CART_CHECKOUTS_CLEARED: &str = "shop_cart_checkouts_cleared_total";
/// Expired reservations svc-inventory could not release (left for the
/// next sweep).
pub const RESERVATION_RELEASE_FAILURES: &str = "shop_reservation_release_failures_total";
/// Orders past their deadline svc-order could not cancel (left for the
/// next sweep).
pub const ORDER_DEADLINE_FAILURES: &str = "shop_order_deadline_failures_total";
/// Payment provider webhooks by what became of them, `{result}`: at the
/// gateway (`forwarded`, `too_large`, `incomplete`, `rate_limited`,
/// `upstream_unavailable`) and at svc-payment (`stored`, `duplicate`,
/// `bad_signature`, `stale`, `no_secret`, `malformed`, `too_large`,
/// `unavailable`).
pub const WEBHOOKS: &str = "shop_webhooks_total";
/// Rounds of payment reconciliation, `{result}`: `ok`, `failed`.
pub const RECONCILIATIONS: &str = "shop_payment_reconciliations_total";

/// Products svc-order and svc-cart looked up in their copy of the catalog
/// (`shop_catalog`), `{result}`: `hit` or `miss` (asked of svc-inventory).
/// Nothing counts while the copy is off or its change feed is lost.
pub const CATALOG_CACHE_LOOKUPS: &str = "shop_catalog_cache_lookups_total";
/// `catalog.product_changed` events a copy of the catalog acted on.
pub const CATALOG_CHANGES_SEEN: &str = "shop_catalog_changes_total";

/// Messages parked on the DLQ stream.
pub const DLQ_MESSAGES: &str = "shop_dlq_messages";

/// Spans sent to the OTLP collector ([`crate::telemetry`]).
pub const TRACE_SPANS_EXPORTED: &str = "shop_trace_spans_exported_total";
/// Spans that never reached the collector, `{reason}`: `queue_full` (the
/// collector is slower than the service) or `export_failed` (down, or
/// refusing them).
pub const TRACE_SPANS_DROPPED: &str = "shop_trace_spans_dropped_total";

/// Calls the gateway refused for their credentials, `{reason}`: `missing`,
/// `expired`, `not_yet_valid`, `wrong_audience`, `wrong_issuer`, `invalid`.
pub const GATEWAY_AUTH_FAILURES: &str = "shop_gateway_auth_failures_total";
/// Calls the gateway refused over a rate limit, `{limit}`: `user`, `order`
/// or `anonymous`.
pub const GATEWAY_RATE_LIMITED: &str = "shop_gateway_rate_limited_total";
/// Time until the gateway's response headers, `{method}` (a known method
/// path, or `unknown`).
pub const GATEWAY_RESPONSE_HEADERS_SECONDS: &str = "shop_gateway_response_headers_seconds";
/// Time an upstream took to answer the gateway, `{upstream}`.
pub const GATEWAY_UPSTREAM_RESPONSE_SECONDS: &str = "shop_gateway_upstream_response_seconds";

/// How many replicas of an upstream have their breaker open, `{upstream}`.
pub const UPSTREAM_BREAKER_OPEN: &str = "shop_upstream_breaker_open";
