//! The catalog (svc-inventory): does a SKU exist, and what does it cost now.
//! A deadline, a short connect timeout and a circuit breaker make a dead
//! catalog a fast UNAVAILABLE rather than a hanging AddItem.

use shop_proto::catalog::v1::{GetProductRequest, catalog_service_client::CatalogServiceClient};
use shop_runtime::{
    api_error::ApiError,
    breaker::CircuitBreaker,
    grpc::{TracedChannel, UpstreamSettings},
    values::{Money, Sku},
};
use tonic::Code;

use crate::{carts::Product, error::catalog_unavailable};

pub(crate) struct Catalog {
    client: CatalogServiceClient<TracedChannel>,
    breaker: CircuitBreaker,
}

impl Catalog {
    /// Connects lazily: the first call dials, and the channel reconnects
    /// after failures on its own.
    pub(crate) fn new(url: &str, upstream: &UpstreamSettings) -> Result<Self, tonic::transport::Error> {
        let (channel, breaker) = upstream.client("catalog", url)?;
        Ok(Self {
            client: CatalogServiceClient::new(channel),
            breaker,
        })
    }

    pub(crate) async fn product(&self, sku: &Sku) -> Result<Product, ApiError> {
        let mut client = self.client.clone();
        let answer = self
            .breaker
            .call(client.get_product(GetProductRequest {
                sku: sku.as_str().to_owned(),
            }))
            .await
            .map_err(|_| catalog_unavailable())?;
        let product = match answer {
            Ok(response) => response.into_inner(),
            Err(status) if matches!(status.code(), Code::NotFound | Code::InvalidArgument) => {
                return Err(ApiError::invalid("sku", format!("no product {sku} in the catalog")));
            }
            Err(status) => {
                tracing::warn!(sku = %sku, code = ?status.code(), message = status.message(), "catalog call failed");
                return Err(catalog_unavailable());
            }
        };
        let unit_price = product.price.as_ref().and_then(|p| Money::from_proto(p).ok());
        match unit_price {
            Some(unit_price) if unit_price.minor >= 0 => Ok(Product {
                name: product.name,
                unit_price,
            }),
            _ => Err(ApiError::FailedPrecondition(format!(
                "product {sku} has no valid price"
            ))),
        }
    }
}
