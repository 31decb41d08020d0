//! Prices from svc-inventory's catalog, with a deadline and a circuit
//! breaker, so a slow or dead catalog means a fast UNAVAILABLE, not a
//! hanging PlaceOrder.

use std::sync::Arc;

use shop_proto::catalog::v1::{ListProductsRequest, catalog_service_client::CatalogServiceClient};
use shop_runtime::{
    breaker::CircuitBreaker,
    grpc::{TracedChannel, UpstreamSettings},
    values::Money,
};

use crate::domain::CatalogPrice;

#[derive(Clone)]
pub(crate) struct Catalog {
    client: CatalogServiceClient<TracedChannel>,
    breaker: Arc<CircuitBreaker>,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum CatalogError {
    #[error("catalog unavailable: {0}")]
    Unavailable(String),
}

impl Catalog {
    /// Connects lazily: the first call dials, reconnecting after failures.
    pub(crate) fn new(url: &str, upstream: &UpstreamSettings) -> Result<Self, tonic::transport::Error> {
        let (channel, breaker) = upstream.client("catalog", url)?;
        Ok(Self {
            client: CatalogServiceClient::new(channel),
            breaker: Arc::new(breaker),
        })
    }

    /// The prices of the products among `skus` that exist.
    pub(crate) async fn prices(&self, skus: Vec<String>) -> Result<Vec<CatalogPrice>, CatalogError> {
        let mut client = self.client.clone();
        let answer = self
            .breaker
            .call(client.list_products(ListProductsRequest {
                skus,
                ..Default::default()
            }))
            .await
            .map_err(|_open| CatalogError::Unavailable("circuit breaker open".into()))?;
        let response = answer.map_err(|status| CatalogError::Unavailable(status.message().to_owned()))?;
        Ok(response
            .into_inner()
            .products
            .into_iter()
            .map(|product| CatalogPrice {
                unit_price: product.price.as_ref().and_then(|p| Money::from_proto(p).ok()),
                sku: product.sku,
            })
            .collect())
    }
}
