//! The catalog in Postgres: products and their prices.

use shop_runtime::values::Sku;
use sqlx::PgPool;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Product {
    pub sku: String,
    pub name: String,
    pub description: String,
    pub price_minor: i64,
    pub currency: String,
}

/// The products with these SKUs, or every product when `skus` is empty; by SKU.
pub(crate) async fn list(pool: &PgPool, skus: &[Sku]) -> Result<Vec<Product>, sqlx::Error> {
    if skus.is_empty() {
        return sqlx::query_as("SELECT sku, name, description, price_minor, currency FROM products ORDER BY sku")
            .fetch_all(pool)
            .await;
    }
    let skus: Vec<&str> = skus.iter().map(Sku::as_str).collect();
    sqlx::query_as(
        "SELECT sku, name, description, price_minor, currency FROM products WHERE sku = ANY($1) ORDER BY sku",
    )
    .bind(&skus)
    .fetch_all(pool)
    .await
}

pub(crate) async fn find(pool: &PgPool, sku: &Sku) -> Result<Option<Product>, sqlx::Error> {
    sqlx::query_as("SELECT sku, name, description, price_minor, currency FROM products WHERE sku = $1")
        .bind(sku.as_str())
        .fetch_optional(pool)
        .await
}
