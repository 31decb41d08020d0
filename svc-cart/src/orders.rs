//! svc-order, for checkout: PlaceOrder on the caller's behalf, with the
//! caller's identity metadata and a deadline, behind a circuit breaker.

use shop_proto::order::v1::{Order, PlaceOrderRequest, order_service_client::OrderServiceClient};
use shop_runtime::{
    breaker::{BreakerOpen, CircuitBreaker},
    grpc::{TracedChannel, UpstreamSettings},
    identity::{USER_ID_HEADER, USER_ROLES_HEADER},
};
use tonic::{Request, Status, metadata::MetadataMap};

pub(crate) struct Orders {
    client: OrderServiceClient<TracedChannel>,
    breaker: CircuitBreaker,
}

impl Orders {
    pub(crate) fn new(url: &str, upstream: &UpstreamSettings) -> Result<Self, tonic::transport::Error> {
        let (channel, breaker) = upstream.client("order", url)?;
        Ok(Self {
            client: OrderServiceClient::new(channel),
            breaker,
        })
    }

    /// Places the order as the caller whose request metadata is `caller`:
    /// svc-order checks ownership and keys idempotency by that user.
    pub(crate) async fn place(
        &self,
        caller: &MetadataMap,
        request: PlaceOrderRequest,
    ) -> Result<Result<Order, Status>, BreakerOpen> {
        let mut request = Request::new(request);
        for header in [USER_ID_HEADER, USER_ROLES_HEADER] {
            if let Some(value) = caller.get(header) {
                request.metadata_mut().insert(header, value.clone());
            }
        }
        let mut client = self.client.clone();
        self.breaker
            .call(async move { client.place_order(request).await.map(tonic::Response::into_inner) })
            .await
    }
}
