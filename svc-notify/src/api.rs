//! gRPC adapter: `shop.notify.v1.NotificationService`. Proto types stop here.

use shop_proto::notify::v1 as pb;
use shop_runtime::{
    api_error::{ApiError, Resource},
    identity::Caller,
    values::{OrderId, timestamp},
};
use sqlx::PgPool;
use tonic::{Request, Response, Status};

use crate::store::{self, NotificationRecord};

/// What clients are told is away when something internal fails.
const NOTIFICATIONS: Resource = Resource::plural("notifications");

/// Most notifications returned by one call.
const MAX_LISTED: i64 = 100;

#[derive(Clone)]
pub(crate) struct NotifyApi {
    pub pool: PgPool,
}

impl From<NotificationRecord> for pb::Notification {
    fn from(r: NotificationRecord) -> Self {
        Self {
            notification_id: r.notification_id.to_string(),
            order_id: r.order_id,
            recipient: r.recipient,
            subject: r.subject,
            body: r.body,
            sent_at: r.sent_at.map(timestamp),
            user_id: r.user_id,
        }
    }
}

/// The optional `order_id` filter in the canonical form orders are stored in.
fn order_filter(raw: &str) -> Result<Option<String>, ApiError> {
    if raw.is_empty() {
        return Ok(None);
    }
    OrderId::parse(raw)
        .map(|id| Some(id.to_string()))
        .map_err(|reason| ApiError::invalid("order_id", reason))
}

#[tonic::async_trait]
impl pb::notification_service_server::NotificationService for NotifyApi {
    async fn list_notifications(
        &self,
        request: Request<pb::ListNotificationsRequest>,
    ) -> Result<Response<pb::ListNotificationsResponse>, Status> {
        let caller = Caller::of(&request)?;
        let order_id = order_filter(&request.get_ref().order_id)?;
        // Customers see their own notifications; admins see everyone's.
        let owner = (!caller.is_admin()).then_some(caller.user_id.as_str());
        let rows = store::list(&self.pool, owner, order_id.as_deref(), MAX_LISTED)
            .await
            .map_err(ApiError::internal(NOTIFICATIONS, "listing notifications"))?;
        Ok(Response::new(pb::ListNotificationsResponse {
            notifications: rows.into_iter().map(Into::into).collect(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_filter_must_be_a_uuid() {
        assert_eq!(order_filter("").expect("empty means all"), None);
        assert_eq!(
            order_filter("0190F3C4-2222-7000-8000-00000000000A")
                .expect("valid")
                .as_deref(),
            Some("0190f3c4-2222-7000-8000-00000000000a")
        );
        let status = Status::from(order_filter("o-1").expect_err("not a uuid"));
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(status.message().starts_with("order_id: "), "{}", status.message());
    }
}
