//! The catalog in Postgres: products, their prices and categories.

use shop_runtime::values::Sku;
use sqlx::{PgConnection, PgPool};

use crate::{browse::Browse, changes::ProductChanges};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Product {
    pub sku: String,
    pub name: String,
    pub description: String,
    pub price_minor: i64,
    pub currency: String,
    pub category: String,
}

/// The columns of a [`Product`], for `concat!` into literal SQL.
macro_rules! product_columns {
    () => {
        "sku, name, description, price_minor, currency, category"
    };
}

/// The products with these SKUs, by SKU.
pub(crate) async fn with_skus(pool: &PgPool, skus: &[Sku]) -> Result<Vec<Product>, sqlx::Error> {
    let skus: Vec<&str> = skus.iter().map(Sku::as_str).collect();
    sqlx::query_as(concat!(
        "SELECT ",
        product_columns!(),
        " FROM products WHERE sku = ANY($1) ORDER BY sku"
    ))
    .bind(&skus)
    .fetch_all(pool)
    .await
}

/// One page of `browse`, by SKU, and one product more when there are more
/// (so the caller knows whether to hand out a next page token).
pub(crate) async fn page(pool: &PgPool, browse: &Browse) -> Result<Vec<Product>, sqlx::Error> {
    sqlx::query_as(concat!(
        "SELECT ",
        product_columns!(),
        " FROM products
          WHERE ($1::text IS NULL OR sku > $1)
            AND ($2::text IS NULL OR category = $2)
            AND ($3::text IS NULL OR search @@ to_tsquery('simple', $3))
          ORDER BY sku
          LIMIT $4"
    ))
    .bind(browse.after.as_ref().map(Sku::as_str))
    .bind(browse.category.as_deref())
    .bind(browse.tsquery())
    .bind(browse.size.get() + 1)
    .fetch_all(pool)
    .await
}

/// Every category with products: `(name, product count)`, by name.
pub(crate) async fn categories(pool: &PgPool) -> Result<Vec<(String, i64)>, sqlx::Error> {
    sqlx::query_as("SELECT category, count(*) FROM products GROUP BY category ORDER BY category")
        .fetch_all(pool)
        .await
}

pub(crate) async fn find(pool: &PgPool, sku: &Sku) -> Result<Option<Product>, sqlx::Error> {
    sqlx::query_as(concat!("SELECT ", product_columns!(), " FROM products WHERE sku = $1"))
        .bind(sku.as_str())
        .fetch_optional(pool)
        .await
}

/// Applies `changes` to the product `sku`, in the caller's transaction;
/// `None` when there is no such product.
pub(crate) async fn update(
    conn: &mut PgConnection,
    sku: &Sku,
    changes: &ProductChanges,
) -> Result<Option<Product>, sqlx::Error> {
    sqlx::query_as(concat!(
        "UPDATE products
            SET name = coalesce($2, name),
                description = coalesce($3, description),
                price_minor = coalesce($4, price_minor),
                currency = coalesce($5, currency),
                category = coalesce($6, category)
          WHERE sku = $1
         RETURNING ",
        product_columns!()
    ))
    .bind(sku.as_str())
    .bind(changes.name.as_deref())
    .bind(changes.description.as_deref())
    .bind(changes.price.map(|p| p.minor))
    .bind(changes.price.map(|p| p.currency.as_str().to_owned()))
    .bind(changes.category.as_deref())
    .fetch_optional(conn)
    .await
}
