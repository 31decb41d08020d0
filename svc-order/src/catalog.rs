//! Prices from svc-inventory's catalog, with a deadline and a circuit
//! breaker, so a slow or dead catalog means a fast UNAVAILABLE, not a
//! hanging PlaceOrder.

use std::{sync::Arc, time::Duration};

use shop_proto::catalog::v1::{ListProductsRequest, Product, catalog_service_client::CatalogServiceClient};
use shop_runtime::breaker::{BreakerSettings, CircuitBreaker};
use tonic::transport::Channel;

/// A dead catalog's address refuses or times out connecting within this.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(250);

#[derive(Clone)]
pub(crate) struct Catalog {
    client: CatalogServiceClient<Channel>,
    breaker: Arc<CircuitBreaker>,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum CatalogError {
    #[error("catalog unavailable: {0}")]
    Unavailable(String),
}

impl Catalog {
    /// Connects lazily: the first call dials, reconnecting after failures.
    pub(crate) fn new(url: &str, timeout: Duration, breaker: BreakerSettings) -> Result<Self, tonic::transport::Error> {
        let channel = shop_runtime::grpc::lazy_channel(url, timeout, CONNECT_TIMEOUT.min(timeout))?;
        Ok(Self {
            client: CatalogServiceClient::new(channel),
            breaker: Arc::new(breaker.breaker("catalog")),
        })
    }

    /// The products among `skus` that exist.
    pub(crate) async fn products(&self, skus: Vec<String>) -> Result<Vec<Product>, CatalogError> {
        let mut client = self.client.clone();
        let answer = self
            .breaker
            .call(client.list_products(ListProductsRequest { skus }))
            .await
            .map_err(|_open| CatalogError::Unavailable("circuit breaker open".into()))?;
        let response = answer.map_err(|status| CatalogError::Unavailable(status.message().to_owned()))?;
        Ok(response.into_inner().products)
    }
}
