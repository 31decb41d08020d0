//! gRPC adapter: `shop.catalog.v1.CatalogService` and
//! `shop.inventory.v1.InventoryService`. Proto types stop here.

use shop_proto::{catalog::v1 as catalog, common::v1::Money, events::v1 as ev, inventory::v1 as inventory};
use shop_runtime::{
    api_error::{ApiError, CATALOG, Resource},
    identity::Caller,
    outbox::Outbox,
    values::{Sku, timestamp},
};
use sqlx::PgPool;
use tonic::{Request, Response, Status};

use crate::{
    browse::Browse,
    changes::ProductChanges,
    products::{self, Product},
    stock::{self, StockLevel},
};

/// What clients are told is away when something internal fails.
const INVENTORY: Resource = Resource::singular("inventory");

/// Largest single restock; bigger numbers are almost certainly typos.
const MAX_RESTOCK: i64 = 1_000_000;

#[derive(Clone)]
pub(crate) struct InventoryApi {
    pub pool: PgPool,
    pub outbox: Outbox,
}

impl From<Product> for catalog::Product {
    fn from(r: Product) -> Self {
        Self {
            sku: r.sku,
            name: r.name,
            description: r.description,
            price: Some(Money {
                currency_code: r.currency,
                amount_minor: r.price_minor,
            }),
            category: r.category,
        }
    }
}

impl From<&Product> for ev::ProductChanged {
    fn from(r: &Product) -> Self {
        let product = catalog::Product::from(r.clone());
        Self {
            sku: product.sku,
            name: product.name,
            description: product.description,
            price: product.price,
            category: product.category,
            changed_at: Some(timestamp(chrono::Utc::now())),
        }
    }
}

impl From<StockLevel> for inventory::Stock {
    fn from(r: StockLevel) -> Self {
        Self {
            available: r.on_hand - r.reserved,
            sku: r.sku,
            on_hand: r.on_hand,
            reserved: r.reserved,
        }
    }
}

fn sku(field: &'static str, raw: &str) -> Result<Sku, ApiError> {
    Sku::parse(raw).map_err(|reason| ApiError::invalid(field, reason))
}

#[tonic::async_trait]
impl catalog::catalog_service_server::CatalogService for InventoryApi {
    async fn list_products(
        &self,
        request: Request<catalog::ListProductsRequest>,
    ) -> Result<Response<catalog::ListProductsResponse>, Status> {
        let body = request.get_ref();
        if !body.skus.is_empty() {
            if body.skus.len() > 1000 {
                return Err(ApiError::invalid("skus", "at most 1000 SKUs per call").into());
            }
            let wanted: Vec<Sku> = body.skus.iter().map(|raw| sku("skus", raw)).collect::<Result<_, _>>()?;
            let found = products::with_skus(&self.pool, &wanted)
                .await
                .map_err(ApiError::internal(INVENTORY, "listing products"))?;
            return Ok(Response::new(catalog::ListProductsResponse {
                products: found.into_iter().map(Into::into).collect(),
                next_page_token: String::new(),
            }));
        }
        let browse = Browse::parse(body.page_size, &body.page_token, &body.category, &body.query)
            .map_err(|e| ApiError::invalid(e.field, e.reason))?;
        let mut found = products::page(&self.pool, &browse)
            .await
            .map_err(ApiError::internal(INVENTORY, "listing products"))?;
        let more = found.len() as i64 > browse.size.get();
        found.truncate(usize::try_from(browse.size.get()).unwrap_or(usize::MAX));
        let next_page_token = match (more, found.last()) {
            (true, Some(last)) => last.sku.clone(),
            _ => String::new(),
        };
        Ok(Response::new(catalog::ListProductsResponse {
            products: found.into_iter().map(Into::into).collect(),
            next_page_token,
        }))
    }

    async fn list_categories(
        &self,
        _request: Request<catalog::ListCategoriesRequest>,
    ) -> Result<Response<catalog::ListCategoriesResponse>, Status> {
        let categories = products::categories(&self.pool)
            .await
            .map_err(ApiError::internal(INVENTORY, "listing categories"))?;
        Ok(Response::new(catalog::ListCategoriesResponse {
            categories: categories
                .into_iter()
                .map(|(name, count)| catalog::Category {
                    name,
                    product_count: i32::try_from(count).unwrap_or(i32::MAX),
                })
                .collect(),
        }))
    }

    async fn get_product(
        &self,
        request: Request<catalog::GetProductRequest>,
    ) -> Result<Response<catalog::Product>, Status> {
        let sku = sku("sku", &request.get_ref().sku)?;
        let product = products::find(&self.pool, &sku)
            .await
            .map_err(ApiError::internal(INVENTORY, "loading the product"))?;
        let product = product.ok_or_else(|| ApiError::NotFound(format!("no product with sku {sku}")))?;
        Ok(Response::new(product.into()))
    }

    /// The change and its `catalog.product_changed` event commit together:
    /// every copy of the product is dropped once the event is out.
    async fn update_product(
        &self,
        request: Request<catalog::UpdateProductRequest>,
    ) -> Result<Response<catalog::Product>, Status> {
        let caller = Caller::of(&request)?;
        if !caller.is_admin() {
            return Err(ApiError::PermissionDenied("UpdateProduct needs the admin role".into()).into());
        }
        let body = request.get_ref();
        let sku = sku("sku", &body.sku)?;
        let changes = ProductChanges::parse(
            body.name.as_deref(),
            body.description.as_deref(),
            body.price.as_ref(),
            body.category.as_deref(),
        )
        .map_err(|e| ApiError::invalid(e.field, e.reason))?;
        let mut tx = self
            .outbox
            .begin(&self.pool)
            .await
            .map_err(ApiError::internal(CATALOG, "beginning a transaction"))?;
        let product = products::update(&mut tx, &sku, &changes)
            .await
            .map_err(ApiError::internal(CATALOG, "updating the product"))?
            .ok_or_else(|| ApiError::NotFound(format!("no product with sku {sku}")))?;
        self.outbox
            .enqueue(&mut tx, &ev::ProductChanged::from(&product))
            .await
            .map_err(ApiError::internal(CATALOG, "staging catalog.product_changed"))?;
        self.outbox
            .commit(tx)
            .await
            .map_err(ApiError::internal(CATALOG, "committing the product change"))?;
        tracing::info!(sku = %sku, by = %caller.user_id, "product changed");
        Ok(Response::new(product.into()))
    }
}

#[tonic::async_trait]
impl inventory::inventory_service_server::InventoryService for InventoryApi {
    async fn get_stock(
        &self,
        request: Request<inventory::GetStockRequest>,
    ) -> Result<Response<inventory::Stock>, Status> {
        Caller::of(&request)?;
        let sku = sku("sku", &request.get_ref().sku)?;
        let level = stock::level(&self.pool, &sku)
            .await
            .map_err(ApiError::internal(INVENTORY, "loading the stock"))?;
        let level = level.ok_or_else(|| ApiError::NotFound(format!("no stock for sku {sku}")))?;
        Ok(Response::new(level.into()))
    }

    async fn restock(&self, request: Request<inventory::RestockRequest>) -> Result<Response<inventory::Stock>, Status> {
        let caller = Caller::of(&request)?;
        if !caller.is_admin() {
            return Err(ApiError::PermissionDenied("Restock needs the admin role".into()).into());
        }
        let body = request.get_ref();
        let sku = sku("sku", &body.sku)?;
        if body.quantity <= 0 || body.quantity > MAX_RESTOCK {
            return Err(ApiError::invalid(
                "quantity",
                format!("must be between 1 and {MAX_RESTOCK}, got {}", body.quantity),
            )
            .into());
        }
        let level = stock::restock(&self.pool, &sku, body.quantity)
            .await
            .map_err(ApiError::internal(INVENTORY, "restocking"))?;
        let level = level.ok_or_else(|| ApiError::NotFound(format!("no stock for sku {sku}")))?;
        tracing::info!(sku = %sku, added = body.quantity, by = %caller.user_id, "restocked");
        Ok(Response::new(level.into()))
    }
}
