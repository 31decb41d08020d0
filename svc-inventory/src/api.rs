//! gRPC adapter: `shop.catalog.v1.CatalogService` and
//! `shop.inventory.v1.InventoryService`. Proto types stop here.

use shop_proto::{catalog::v1 as catalog, common::v1::Money, inventory::v1 as inventory};
use shop_runtime::{
    api_error::{ApiError, Resource},
    identity::Caller,
    values::Sku,
};
use sqlx::PgPool;
use tonic::{Request, Response, Status};

/// What clients are told is away when something internal fails.
const INVENTORY: Resource = Resource::singular("inventory");

/// Largest single restock; bigger numbers are almost certainly typos.
const MAX_RESTOCK: i64 = 1_000_000;

#[derive(Clone)]
pub struct InventoryApi {
    pub pool: PgPool,
}

#[derive(sqlx::FromRow)]
struct ProductRow {
    sku: String,
    name: String,
    description: String,
    price_minor: i64,
    currency: String,
}

impl From<ProductRow> for catalog::Product {
    fn from(r: ProductRow) -> Self {
        Self {
            sku: r.sku,
            name: r.name,
            description: r.description,
            price: Some(Money {
                currency_code: r.currency,
                amount_minor: r.price_minor,
            }),
        }
    }
}

#[derive(sqlx::FromRow)]
struct StockRow {
    sku: String,
    on_hand: i64,
    reserved: i64,
}

impl From<StockRow> for inventory::Stock {
    fn from(r: StockRow) -> Self {
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
        let wanted = &request.get_ref().skus;
        if wanted.len() > 1000 {
            return Err(ApiError::invalid("skus", "at most 1000 SKUs per call").into());
        }
        for raw in wanted {
            sku("skus", raw)?;
        }
        let rows: Vec<ProductRow> = if wanted.is_empty() {
            sqlx::query_as("SELECT sku, name, description, price_minor, currency FROM products ORDER BY sku")
                .fetch_all(&self.pool)
                .await
        } else {
            sqlx::query_as(
                "SELECT sku, name, description, price_minor, currency FROM products WHERE sku = ANY($1) ORDER BY sku",
            )
            .bind(wanted)
            .fetch_all(&self.pool)
            .await
        }
        .map_err(ApiError::internal(INVENTORY, "listing products"))?;
        Ok(Response::new(catalog::ListProductsResponse {
            products: rows.into_iter().map(Into::into).collect(),
        }))
    }

    async fn get_product(
        &self,
        request: Request<catalog::GetProductRequest>,
    ) -> Result<Response<catalog::Product>, Status> {
        let sku = sku("sku", &request.get_ref().sku)?;
        let row: Option<ProductRow> =
            sqlx::query_as("SELECT sku, name, description, price_minor, currency FROM products WHERE sku = $1")
                .bind(sku.as_str())
                .fetch_optional(&self.pool)
                .await
                .map_err(ApiError::internal(INVENTORY, "loading the product"))?;
        let row = row.ok_or_else(|| ApiError::NotFound(format!("no product with sku {sku}")))?;
        Ok(Response::new(row.into()))
    }
}

#[tonic::async_trait]
impl inventory::inventory_service_server::InventoryService for InventoryApi {
    async fn get_stock(
        &self,
        request: Request<inventory::GetStockRequest>,
    ) -> Result<Response<inventory::Stock>, Status> {
        Caller::from_metadata(request.metadata())?;
        let sku = sku("sku", &request.get_ref().sku)?;
        let row: Option<StockRow> = sqlx::query_as("SELECT sku, on_hand, reserved FROM stock WHERE sku = $1")
            .bind(sku.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(ApiError::internal(INVENTORY, "loading the stock"))?;
        let row = row.ok_or_else(|| ApiError::NotFound(format!("no stock for sku {sku}")))?;
        Ok(Response::new(row.into()))
    }

    async fn restock(&self, request: Request<inventory::RestockRequest>) -> Result<Response<inventory::Stock>, Status> {
        let caller = Caller::from_metadata(request.metadata())?;
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
        let row: Option<StockRow> = sqlx::query_as(
            "UPDATE stock SET on_hand = on_hand + $2, updated_at = now() WHERE sku = $1
             RETURNING sku, on_hand, reserved",
        )
        .bind(sku.as_str())
        .bind(body.quantity)
        .fetch_optional(&self.pool)
        .await
        .map_err(ApiError::internal(INVENTORY, "restocking"))?;
        let row = row.ok_or_else(|| ApiError::NotFound(format!("no stock for sku {sku}")))?;
        tracing::info!(sku = %sku, added = body.quantity, by = %caller.user_id, "restocked");
        Ok(Response::new(row.into()))
    }
}
