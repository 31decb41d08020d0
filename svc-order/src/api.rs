//! gRPC adapter: `shop.order.v1.OrderService`. Proto types stop here.

use std::pin::Pin;

use chrono::{DateTime, Utc};
use shop_catalog::Catalog;
use shop_proto::{common::v1::Money as ProtoMoney, order::v1 as pb};
use shop_runtime::{
    api_error::{self, ApiError, ORDERS},
    identity::Caller,
    outbox::Outbox,
    values::{IdempotencyKey, OrderId, PageSize, Sku, timestamp},
};
use sqlx::PgPool;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::{
    contract,
    domain::{self, CatalogPrice, PaymentMethod, PricingError, Trigger},
    refunds::{self, Refused},
    saga::{self, Applied},
    store::{self, Cursor, OrderRecord, RefundRecord, StoredLine},
    watch::Announcer,
};

#[derive(Clone)]
pub(crate) struct OrderApi {
    pub pool: PgPool,
    pub outbox: Outbox,
    pub catalog: Catalog,
    pub accepted_payment_methods: Vec<PaymentMethod>,
    pub announcer: Announcer,
}

fn lines_to_proto(lines: &[StoredLine], currency: &str) -> Vec<pb::OrderLine> {
    lines
        .iter()
        .map(|l| pb::OrderLine {
            sku: l.sku.clone(),
            quantity: l.quantity,
            unit_price: Some(ProtoMoney {
                currency_code: currency.to_owned(),
                amount_minor: l.unit_price_minor,
            }),
        })
        .collect()
}

fn refund_to_proto(refund: &RefundRecord) -> pb::Refund {
    pb::Refund {
        refund_id: refund.refund_id.to_string(),
        status: contract::refund_status(refund.status) as i32,
        amount: Some(ProtoMoney {
            currency_code: refund.currency.clone(),
            amount_minor: refund.amount_minor,
        }),
        lines: lines_to_proto(&refund.lines, &refund.currency),
        restock: refund.restock,
        failure_reason: refund.failure_reason.clone().unwrap_or_default(),
        created_at: Some(timestamp(refund.created_at)),
        updated_at: Some(timestamp(refund.updated_at)),
    }
}

fn to_proto(order: OrderRecord) -> pb::Order {
    let money = |minor| {
        Some(ProtoMoney {
            currency_code: order.currency.clone(),
            amount_minor: minor,
        })
    };
    let (status, cancel_reason) = contract::order_status(order.status);
    let refunded = order
        .refunds
        .iter()
        .filter(|r| r.status == refunds::RefundStatus::Succeeded)
        .fold(0i64, |sum, r| sum.saturating_add(r.amount_minor));
    pb::Order {
        order_id: order.order_id.to_string(),
        user_id: order.user_id.clone(),
        status: status as i32,
        cancel_reason: cancel_reason as i32,
        lines: lines_to_proto(&order.lines, &order.currency),
        total: money(order.total_minor),
        created_at: Some(timestamp(order.created_at)),
        updated_at: Some(timestamp(order.updated_at)),
        payment_method: order.payment_method.clone(),
        payment_wait: contract::payment_wait(order.status) as i32,
        // Only while the payment waits for the customer (the store keeps it
        // no longer).
        next_action_url: match contract::payment_wait(order.status) {
            pb::PaymentWait::CustomerAction => order.next_action_url.clone().unwrap_or_default(),
            pb::PaymentWait::Unspecified | pb::PaymentWait::Processing => String::new(),
        },
        refunds: order.refunds.iter().map(refund_to_proto).collect(),
        refunded: money(refunded),
    }
}

fn parse_order_id(raw: &str) -> Result<Uuid, ApiError> {
    OrderId::parse(raw)
        .map(OrderId::uuid)
        .map_err(|reason| ApiError::invalid("order_id", reason))
}

/// Page tokens are `<created_at micros>.<order id>` of the last order shown.
fn encode_cursor(c: Cursor) -> String {
    format!("{}.{}", c.created_at.timestamp_micros(), c.order_id)
}

fn decode_cursor(raw: &str) -> Result<Option<Cursor>, ApiError> {
    if raw.is_empty() {
        return Ok(None);
    }
    let bad = || {
        ApiError::invalid(
            "page_token",
            "is not a token returned by ListOrders; omit it for the first page",
        )
    };
    let (micros, id) = raw.split_once('.').ok_or_else(bad)?;
    let micros: i64 = micros.parse().map_err(|_| bad())?;
    Ok(Some(Cursor {
        created_at: DateTime::<Utc>::from_timestamp_micros(micros).ok_or_else(bad)?,
        order_id: Uuid::parse_str(id).map_err(|_| bad())?,
    }))
}

impl OrderApi {
    /// Loads an order the caller may see; others' orders are NOT_FOUND so
    /// their existence does not leak.
    async fn visible_order(&self, caller: &Caller, order_id: Uuid) -> Result<OrderRecord, ApiError> {
        let mut conn = self
            .pool
            .acquire()
            .await
            .map_err(ApiError::internal(ORDERS, "connecting to the database"))?;
        let order = store::load(&mut conn, order_id)
            .await
            .map_err(ApiError::internal(ORDERS, "loading the order"))?;
        match order {
            Some(order) if caller.may_access(&order.user_id) => Ok(order),
            _ => Err(ApiError::NotFound(format!("no order {order_id}"))),
        }
    }

    async fn place_order(&self, caller: &Caller, request: pb::PlaceOrderRequest) -> Result<OrderRecord, ApiError> {
        let lines: Vec<(String, i32)> = request.lines.iter().map(|l| (l.sku.clone(), l.quantity)).collect();
        let command = domain::validate_place_order(
            &request.idempotency_key,
            &lines,
            &request.payment_method,
            &self.accepted_payment_methods,
        )
        .map_err(|e| ApiError::invalid(e.field, e.reason))?;
        let user = caller.user_id.as_str();

        // A retry is answered from the database, without the catalog.
        let existing = store::find_by_key(&self.pool, user, command.key.as_str())
            .await
            .map_err(ApiError::internal(ORDERS, "looking up the idempotency key"))?;
        if let Some(existing) = existing {
            return same_request(existing, &command);
        }

        let skus: Vec<Sku> = command.lines.iter().map(|l| l.sku.clone()).collect();
        let prices: Vec<CatalogPrice> = self
            .catalog
            .products(&skus)
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "catalog call failed");
                ApiError::Unavailable(api_error::CATALOG)
            })?
            .into_iter()
            .map(|product| CatalogPrice {
                sku: product.sku,
                unit_price: product.unit_price,
            })
            .collect();
        let priced = command.price(&prices).map_err(|e| match e {
            PricingError::UnknownSku { line, .. } => ApiError::invalid(format!("lines[{line}].sku"), e.to_string()),
            PricingError::NoPrice { .. } | PricingError::CannotTotal => ApiError::FailedPrecondition(e.to_string()),
        })?;

        let mut tx = self
            .outbox
            .begin(&self.pool)
            .await
            .map_err(ApiError::internal(ORDERS, "beginning a transaction"))?;
        let inserted = store::insert(&mut tx, user, &command, &priced)
            .await
            .map_err(ApiError::internal(ORDERS, "inserting the order"))?;
        let Some(order) = inserted else {
            // A concurrent request with the same key won; answer like a retry.
            drop(tx);
            let existing = store::find_by_key(&self.pool, user, command.key.as_str())
                .await
                .map_err(ApiError::internal(ORDERS, "looking up the idempotency key"))?
                .ok_or_else(|| ApiError::FailedPrecondition("the order for this key is being created; retry".into()))?;
            return same_request(existing, &command);
        };
        let order_id = order.order_id;
        self.outbox
            .enqueue(&mut tx, &saga::placed(order_id, user, &command, &priced))
            .await
            .map_err(ApiError::internal(ORDERS, "staging orders.placed"))?;
        self.outbox
            .commit(tx)
            .await
            .map_err(ApiError::internal(ORDERS, "committing the placed order"))?;
        tracing::info!(order_id = %order_id, user, "order placed");
        saga::count_placed();
        Ok(order)
    }
}

impl OrderApi {
    /// Records a refund of a confirmed order with its
    /// `orders.refund_requested`, under the order's row lock: refunds of
    /// one order are planned one after the other, so two cannot take the
    /// same units. The same key again answers the order as it stands.
    async fn refund_order(&self, caller: &Caller, request: pb::RefundOrderRequest) -> Result<OrderRecord, ApiError> {
        if !caller.is_admin() {
            return Err(ApiError::PermissionDenied("RefundOrder needs the admin role".into()));
        }
        let order_id = parse_order_id(&request.order_id)?;
        let lines: Vec<(String, i32)> = request.lines.iter().map(|l| (l.sku.clone(), l.quantity)).collect();
        let command = refunds::validate_refund_order(&request.idempotency_key, &lines, request.restock)
            .map_err(|e| ApiError::invalid(e.field, e.reason))?;
        let not_found = || ApiError::NotFound(format!("no order {order_id}"));

        let mut tx = self
            .outbox
            .begin(&self.pool)
            .await
            .map_err(ApiError::internal(ORDERS, "beginning a transaction"))?;
        store::lock(&mut tx, order_id)
            .await
            .map_err(ApiError::internal(ORDERS, "locking the order"))?
            .ok_or_else(not_found)?;
        let mut order = store::load(&mut tx, order_id)
            .await
            .map_err(ApiError::internal(ORDERS, "loading the order"))?
            .ok_or_else(not_found)?;
        // A retry is answered with the order as it stands, whatever became
        // of the refund since.
        if let Some(existing) = order.refunds.iter().find(|r| r.idempotency_key == command.key.as_str()) {
            return if command.is_retry_of(&existing.request_fingerprint) {
                Ok(order)
            } else {
                Err(ApiError::AlreadyExists(format!(
                    "idempotency_key {:?} was already used for a different refund of this order ({}); use a new \
                     key for a new refund",
                    command.key.as_str(),
                    existing.refund_id
                )))
            };
        }
        let refundable = order
            .refundable()
            .map_err(ApiError::internal(ORDERS, "reading the order's refunds"))?;
        let planned = refundable.plan(&command).map_err(|refused| match refused {
            Refused::NotOnOrder { line, .. } => ApiError::invalid(format!("lines[{line}].sku"), refused.to_string()),
            Refused::NotRefundable(_)
            | Refused::NothingLeft { .. }
            | Refused::MoreThanLeft { .. }
            | Refused::NothingToGive { .. }
            | Refused::CannotTotal => ApiError::FailedPrecondition(refused.to_string()),
        })?;
        let refund = store::insert_refund(&mut tx, order_id, &command, &planned)
            .await
            .map_err(ApiError::internal(ORDERS, "recording the refund"))?;
        self.outbox
            .enqueue(&mut tx, &saga::refund_requested(&order, &refund))
            .await
            .map_err(ApiError::internal(ORDERS, "staging orders.refund_requested"))?;
        self.outbox
            .commit(tx)
            .await
            .map_err(ApiError::internal(ORDERS, "committing the refund"))?;
        tracing::info!(
            %order_id,
            refund_id = %refund.refund_id,
            amount_minor = refund.amount_minor,
            admin = caller.user_id.as_str(),
            "refund requested"
        );
        order.refunds.push(refund);
        Ok(order)
    }
}

fn same_request(existing: OrderRecord, command: &domain::PlaceOrder) -> Result<OrderRecord, ApiError> {
    if command.is_retry_of(&existing.request_fingerprint) {
        Ok(existing)
    } else {
        Err(ApiError::AlreadyExists(format!(
            "idempotency_key {:?} was already used for a different order ({}); use a new key for a new order",
            command.key.as_str(),
            existing.order_id
        )))
    }
}

type OrderStream = Pin<Box<dyn Stream<Item = Result<pb::Order, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl pb::order_service_server::OrderService for OrderApi {
    async fn place_order(&self, request: Request<pb::PlaceOrderRequest>) -> Result<Response<pb::Order>, Status> {
        let caller = Caller::of(&request)?;
        let order = OrderApi::place_order(self, &caller, request.into_inner()).await?;
        Ok(Response::new(to_proto(order)))
    }

    async fn get_order(&self, request: Request<pb::GetOrderRequest>) -> Result<Response<pb::Order>, Status> {
        let caller = Caller::of(&request)?;
        let order_id = parse_order_id(&request.get_ref().order_id)?;
        Ok(Response::new(to_proto(self.visible_order(&caller, order_id).await?)))
    }

    async fn lookup_order(&self, request: Request<pb::LookupOrderRequest>) -> Result<Response<pb::Order>, Status> {
        let caller = Caller::of(&request)?;
        let raw = &request.get_ref().idempotency_key;
        let key = IdempotencyKey::parse(raw).map_err(|reason| ApiError::invalid("idempotency_key", reason))?;
        // Keys are per user: the caller's own, admins included.
        let order = store::find_by_key(&self.pool, caller.user_id.as_str(), key.as_str())
            .await
            .map_err(ApiError::internal(ORDERS, "looking up the idempotency key"))?
            .ok_or_else(|| ApiError::NotFound(format!("no order placed under idempotency_key {raw:?}")))?;
        Ok(Response::new(to_proto(order)))
    }

    async fn list_orders(
        &self,
        request: Request<pb::ListOrdersRequest>,
    ) -> Result<Response<pb::ListOrdersResponse>, Status> {
        let caller = Caller::of(&request)?;
        let body = request.get_ref();
        let page_size = PageSize::parse(body.page_size)
            .map_err(|reason| ApiError::invalid("page_size", reason))?
            .get();
        let cursor = decode_cursor(&body.page_token)?;
        // Everyone lists their own orders; ListOrders is "my orders" for admins too.
        let mut orders = store::list(&self.pool, Some(caller.user_id.as_str()), cursor, page_size + 1)
            .await
            .map_err(ApiError::internal(ORDERS, "listing orders"))?;
        let next_page_token = if orders.len() as i64 > page_size {
            orders.truncate(page_size as usize);
            orders
                .last()
                .map(|o| {
                    encode_cursor(Cursor {
                        created_at: o.created_at,
                        order_id: o.order_id,
                    })
                })
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(pb::ListOrdersResponse {
            orders: orders.into_iter().map(to_proto).collect(),
            next_page_token,
        }))
    }

    async fn cancel_order(&self, request: Request<pb::CancelOrderRequest>) -> Result<Response<pb::Order>, Status> {
        let caller = Caller::of(&request)?;
        let order_id = parse_order_id(&request.get_ref().order_id)?;
        self.visible_order(&caller, order_id).await?;
        let mut tx = self
            .outbox
            .begin(&self.pool)
            .await
            .map_err(ApiError::internal(ORDERS, "beginning a transaction"))?;
        let applied = saga::apply(&mut tx, &self.outbox, order_id, Trigger::CustomerCancel)
            .await
            .map_err(ApiError::internal(ORDERS, "cancelling the order"))?;
        match applied {
            Applied::Moved { .. } | Applied::Ignored => {}
            Applied::Refused(why) => return Err(ApiError::FailedPrecondition(why.to_owned()).into()),
            Applied::Missing => return Err(ApiError::NotFound(format!("no order {order_id}")).into()),
        }
        let order = store::load(&mut tx, order_id)
            .await
            .map_err(ApiError::internal(ORDERS, "reading the cancelled order back"))?;
        self.outbox
            .commit(tx)
            .await
            .map_err(ApiError::internal(ORDERS, "committing the cancellation"))?;
        saga::committed(&applied, &self.announcer, order_id).await;
        let order = order.ok_or_else(|| ApiError::NotFound(format!("no order {order_id}")))?;
        Ok(Response::new(to_proto(order)))
    }

    type WatchOrderStream = OrderStream;

    async fn refund_order(&self, request: Request<pb::RefundOrderRequest>) -> Result<Response<pb::Order>, Status> {
        let caller = Caller::of(&request)?;
        let order = OrderApi::refund_order(self, &caller, request.into_inner()).await?;
        Ok(Response::new(to_proto(order)))
    }

    async fn watch_order(
        &self,
        request: Request<pb::WatchOrderRequest>,
    ) -> Result<Response<Self::WatchOrderStream>, Status> {
        let caller = Caller::of(&request)?;
        let order_id = parse_order_id(&request.get_ref().order_id)?;
        let first = async { Ok(self.visible_order(&caller, order_id).await?) };
        let updates = self
            .announcer
            .watch(self.pool.clone(), caller.user_id.as_str(), order_id, first, to_proto)
            .await?;
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(
            updates,
        ))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_tokens_round_trip_and_reject_garbage() {
        let c = Cursor {
            created_at: DateTime::<Utc>::from_timestamp_micros(1_700_000_000_123_456).expect("valid"),
            order_id: Uuid::now_v7(),
        };
        assert_eq!(decode_cursor(&encode_cursor(c)).expect("valid"), Some(c));
        assert_eq!(decode_cursor("").expect("empty"), None);
        assert!(decode_cursor("nonsense").is_err());
        assert!(decode_cursor("12.not-a-uuid").is_err());
    }
}
