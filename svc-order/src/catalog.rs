//! Prices from svc-inventory's catalog, with a deadline so a slow or dead
//! catalog means a fast UNAVAILABLE, not a hanging PlaceOrder.

use std::time::Duration;

use shop_proto::catalog::v1::{ListProductsRequest, Product, catalog_service_client::CatalogServiceClient};
use tonic::transport::{Channel, Endpoint};

#[derive(Clone)]
pub struct Catalog {
    client: CatalogServiceClient<Channel>,
}

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("catalog unavailable: {0}")]
    Unavailable(String),
}

impl Catalog {
    /// Connects lazily: the first call dials, reconnecting after failures.
    pub fn new(url: &str, timeout: Duration) -> Result<Self, tonic::transport::Error> {
        let channel = Endpoint::from_shared(url.to_owned())?
            .connect_timeout(timeout)
            .timeout(timeout)
            .tcp_nodelay(true)
            .connect_lazy();
        Ok(Self {
            client: CatalogServiceClient::new(channel),
        })
    }

    /// The products among `skus` that exist.
    pub async fn products(&self, skus: Vec<String>) -> Result<Vec<Product>, CatalogError> {
        let response = self
            .client
            .clone()
            .list_products(ListProductsRequest { skus })
            .await
            .map_err(|status| CatalogError::Unavailable(status.message().to_owned()))?;
        Ok(response.into_inner().products)
    }
}
