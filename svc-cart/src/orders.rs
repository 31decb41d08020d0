//! svc-order, for checkout: PlaceOrder on the caller's behalf, with the
//! identity token the gateway gave the caller's Checkout (good for this
//! PlaceOrder too) and a deadline, on a serving replica.

use shop_proto::order::v1::{Order, PlaceOrderRequest, order_service_client::OrderServiceClient};
use shop_runtime::CancellationToken;
use shop_runtime::{
    identity,
    upstream::{Balanced, Replicas, UpstreamSettings},
};
use tonic::{Request, Status, metadata::MetadataMap};

pub(crate) struct Orders {
    client: OrderServiceClient<Balanced>,
}

impl Orders {
    pub(crate) fn new(replicas: &Replicas, upstream: &UpstreamSettings, shutdown: CancellationToken) -> Self {
        Self {
            client: OrderServiceClient::new(upstream.balanced("order", replicas, shutdown)),
        }
    }

    /// Places the order as the caller whose request metadata is `caller`:
    /// svc-order checks ownership and keys idempotency by that user. A
    /// failure for which [`shop_runtime::upstream::was_unsent`] holds
    /// reached no replica.
    pub(crate) async fn place(&self, caller: &MetadataMap, request: PlaceOrderRequest) -> Result<Order, Status> {
        let mut request = Request::new(request);
        identity::forward(caller, request.metadata_mut());
        let mut client = self.client.clone();
        client.place_order(request).await.map(tonic::Response::into_inner)
    }
}
