//! gRPC adapter: `shop.payment.v1.PaymentService`.

use shop_proto::{common::v1::Money, payment::v1 as pb};
use shop_runtime::{
    api_error::{ApiError, Resource},
    identity::Caller,
    values::{OrderId, timestamp},
};
use sqlx::PgPool;
use tonic::{Request, Response, Status};

use crate::{
    domain::{Status as PaymentStatus, Wait},
    store,
};

/// What clients are told is away when something internal fails.
const PAYMENTS: Resource = Resource::plural("payments");

#[derive(Clone)]
pub(crate) struct PaymentApi {
    pub pool: PgPool,
}

fn status_of(status: PaymentStatus) -> pb::PaymentStatus {
    match status {
        // Still unsettled to the customer: it ends failed or cancelled.
        PaymentStatus::Pending { .. } | PaymentStatus::Voiding(_) => pb::PaymentStatus::Pending,
        PaymentStatus::Awaiting(Wait::Processing) => pb::PaymentStatus::Processing,
        PaymentStatus::Awaiting(Wait::CustomerAction) => pb::PaymentStatus::RequiresAction,
        PaymentStatus::Succeeded => pb::PaymentStatus::Succeeded,
        PaymentStatus::Failed => pb::PaymentStatus::Failed,
        PaymentStatus::Refunded => pb::PaymentStatus::Refunded,
        PaymentStatus::Cancelled => pb::PaymentStatus::Cancelled,
    }
}

#[tonic::async_trait]
impl pb::payment_service_server::PaymentService for PaymentApi {
    async fn get_payment(&self, request: Request<pb::GetPaymentRequest>) -> Result<Response<pb::Payment>, Status> {
        let caller = Caller::of(&request)?;
        let order_id = OrderId::parse(&request.get_ref().order_id)
            .map_err(|reason| ApiError::invalid("order_id", reason))?
            .to_string();
        let payment = store::find_by_order(&self.pool, &order_id)
            .await
            .map_err(ApiError::internal(PAYMENTS, "loading the payment"))?;
        // Another user's payment is reported as absent, not forbidden, so
        // its existence does not leak.
        let payment = payment
            .filter(|p| caller.may_access(&p.user_id))
            .ok_or_else(|| ApiError::NotFound(format!("no payment for order {order_id}")))?;
        Ok(Response::new(pb::Payment {
            payment_id: payment.payment_id.to_string(),
            order_id: payment.order_id,
            status: status_of(payment.status) as i32,
            amount: Some(Money {
                currency_code: payment.currency,
                amount_minor: payment.amount_minor,
            }),
            user_id: payment.user_id,
            failure_reason: payment.failure_reason.unwrap_or_default(),
            created_at: Some(timestamp(payment.created_at)),
            updated_at: Some(timestamp(payment.updated_at)),
            next_action_url: match payment.status {
                PaymentStatus::Awaiting(Wait::CustomerAction) => payment.next_action_url.unwrap_or_default(),
                _ => String::new(),
            },
        }))
    }
}
