//! svc-order, for checkout: PlaceOrder and LookupOrder on the caller's
//! behalf, with the identity token the gateway gave the caller's Checkout
//! (good for both), on a serving replica.
//!
//! Each call carries its deadline in `grpc-timeout`, so svc-order gives up
//! on it too: once the deadline has passed (and the in-flight window of
//! [`crate::carts`] with it), a PlaceOrder that did not answer can no longer
//! place an order, and LookupOrder's answer about it is final.

use std::time::Duration;

use shop_proto::order::v1::{LookupOrderRequest, Order, PlaceOrderRequest, order_service_client::OrderServiceClient};
use shop_runtime::CancellationToken;
use shop_runtime::{
    identity,
    upstream::{Balanced, Replicas, UpstreamSettings},
};
use tonic::{Code, Request, Status, metadata::MetadataMap};

pub(crate) struct Orders {
    client: OrderServiceClient<Balanced>,
    timeout: Duration,
}

impl Orders {
    pub(crate) fn new(replicas: &Replicas, upstream: &UpstreamSettings, shutdown: CancellationToken) -> Self {
        Self {
            client: OrderServiceClient::new(upstream.balanced("order", replicas, shutdown)),
            timeout: upstream.timeout,
        }
    }

    /// A request as the caller whose request metadata is `caller`: svc-order
    /// checks ownership and keys idempotency by that user.
    fn on_behalf<T>(&self, caller: &MetadataMap, body: T) -> Request<T> {
        let mut request = Request::new(body);
        identity::forward(caller, request.metadata_mut());
        request.set_timeout(self.timeout);
        request
    }

    /// Places the order. A failure for which
    /// [`shop_runtime::upstream::was_unsent`] holds reached no replica.
    pub(crate) async fn place(&self, caller: &MetadataMap, request: PlaceOrderRequest) -> Result<Order, Status> {
        let mut client = self.client.clone();
        client
            .place_order(self.on_behalf(caller, request))
            .await
            .map(tonic::Response::into_inner)
    }

    /// The caller's order placed under `key`, `None` when there is none.
    pub(crate) async fn lookup(&self, caller: &MetadataMap, key: &str) -> Result<Option<Order>, Status> {
        let mut client = self.client.clone();
        let request = LookupOrderRequest {
            idempotency_key: key.to_owned(),
        };
        match client.lookup_order(self.on_behalf(caller, request)).await {
            Ok(order) => Ok(Some(order.into_inner())),
            Err(status) if status.code() == Code::NotFound => Ok(None),
            Err(status) => Err(status),
        }
    }
}
