//! svc-order, for checkout: PlaceOrder on the caller's behalf, with the
//! identity token the gateway gave the caller's Checkout (good for this
//! PlaceOrder too) and a deadline, behind a circuit breaker.

use shop_proto::order::v1::{Order, PlaceOrderRequest, order_service_client::OrderServiceClient};
use shop_runtime::{
    breaker::{BreakerOpen, CircuitBreaker},
    grpc::{TracedChannel, UpstreamSettings},
    identity,
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
        identity::forward(caller, request.metadata_mut());
        let mut client = self.client.clone();
        self.breaker
            .call(async move { client.place_order(request).await.map(tonic::Response::into_inner) })
            .await
    }
}
