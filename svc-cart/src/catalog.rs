//! What AddItem asks of the catalog: does the SKU exist, and what does it
//! cost now. The shared client keeps a copy of products fresh from the
//! catalog's changes, with a deadline and a circuit breaker in front of
//! svc-inventory, so a dead catalog means a fast UNAVAILABLE for products
//! not kept, not a hanging AddItem.

use shop_catalog::Catalog;
use shop_runtime::{api_error::ApiError, values::Sku};

use crate::{carts::Product, error::catalog_unavailable};

pub(crate) async fn product(catalog: &Catalog, sku: &Sku) -> Result<Product, ApiError> {
    let found = catalog.products(std::slice::from_ref(sku)).await.map_err(|e| {
        tracing::warn!(sku = %sku, error = %e, "catalog call failed");
        catalog_unavailable()
    })?;
    let product = found
        .into_iter()
        .find(|p| &p.sku == sku)
        .ok_or_else(|| ApiError::invalid("sku", format!("no product {sku} in the catalog")))?;
    match product.unit_price {
        Some(unit_price) => Ok(Product {
            name: product.name,
            unit_price,
        }),
        None => Err(ApiError::FailedPrecondition(format!(
            "product {sku} has no valid price"
        ))),
    }
}
