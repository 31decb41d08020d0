//! gRPC adapter: `shop.payment.v1.PaymentService`.

use chrono::{DateTime, Utc};
use shop_proto::{common::v1::Money, payment::v1 as pb};
use shop_runtime::{
    api_error::{ApiError, Resource},
    identity::Caller,
    values::{OrderId, timestamp},
};
use sqlx::PgPool;
use tonic::{Request, Response, Status};
use uuid::Uuid;

/// What clients are told is away when something internal fails.
const PAYMENTS: Resource = Resource::plural("payments");

#[derive(Clone)]
pub struct PaymentApi {
    pub pool: PgPool,
}

#[derive(sqlx::FromRow)]
struct PaymentRow {
    payment_id: Uuid,
    order_id: String,
    user_id: String,
    status: String,
    amount_minor: i64,
    currency: String,
    failure_reason: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

fn status_of(raw: &str) -> pb::PaymentStatus {
    match raw {
        // Still unsettled to the customer: it ends `failed`.
        "pending" | "voiding" => pb::PaymentStatus::Pending,
        "succeeded" => pb::PaymentStatus::Succeeded,
        "failed" => pb::PaymentStatus::Failed,
        "refunded" => pb::PaymentStatus::Refunded,
        "cancelled" => pb::PaymentStatus::Cancelled,
        _ => pb::PaymentStatus::Unspecified,
    }
}

#[tonic::async_trait]
impl pb::payment_service_server::PaymentService for PaymentApi {
    async fn get_payment(&self, request: Request<pb::GetPaymentRequest>) -> Result<Response<pb::Payment>, Status> {
        let caller = Caller::from_metadata(request.metadata())?;
        let order_id = OrderId::parse(&request.get_ref().order_id)
            .map_err(|reason| ApiError::invalid("order_id", reason))?
            .to_string();
        let row: Option<PaymentRow> = sqlx::query_as(
            "SELECT payment_id, order_id, user_id, status, amount_minor, currency, failure_reason, created_at, updated_at
               FROM payments WHERE order_id = $1",
        )
        .bind(&order_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(ApiError::internal(PAYMENTS, "loading the payment"))?;
        // Another user's payment is reported as absent, not forbidden, so
        // its existence does not leak.
        let row = row
            .filter(|r| caller.may_access(&r.user_id))
            .ok_or_else(|| ApiError::NotFound(format!("no payment for order {order_id}")))?;
        Ok(Response::new(pb::Payment {
            payment_id: row.payment_id.to_string(),
            order_id: row.order_id,
            status: status_of(&row.status) as i32,
            amount: Some(Money {
                currency_code: row.currency,
                amount_minor: row.amount_minor,
            }),
            user_id: row.user_id,
            failure_reason: row.failure_reason.unwrap_or_default(),
            created_at: Some(timestamp(row.created_at)),
            updated_at: Some(timestamp(row.updated_at)),
        }))
    }
}
