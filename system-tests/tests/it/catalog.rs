//! Browsing the catalog as a storefront does: pages, a category, a text
//! search, and a clear INVALID_ARGUMENT for what cannot be answered.

use std::collections::BTreeSet;

use shop_harness::{Service, Stack};
use shop_proto::catalog::v1::{
    ListCategoriesRequest, ListProductsRequest, Product, catalog_service_client::CatalogServiceClient,
};
use tonic::{Code, transport::Channel};

type Catalog = CatalogServiceClient<Channel>;

async fn catalog(stack: &Stack) -> anyhow::Result<Catalog> {
    Ok(CatalogServiceClient::new(stack.channel(Service::Inventory).await?))
}

/// Every page of `request`, following the tokens; the pages' sizes too.
async fn all_pages(catalog: &mut Catalog, request: ListProductsRequest) -> anyhow::Result<(Vec<Product>, Vec<usize>)> {
    let (mut products, mut sizes) = (Vec::new(), Vec::new());
    let mut token = String::new();
    loop {
        let page = catalog
            .list_products(ListProductsRequest {
                page_token: token,
                ..request.clone()
            })
            .await?
            .into_inner();
        sizes.push(page.products.len());
        products.extend(page.products);
        if page.next_page_token.is_empty() {
            return Ok((products, sizes));
        }
        token = page.next_page_token;
    }
}

fn skus(products: &[Product]) -> Vec<&str> {
    products.iter().map(|p| p.sku.as_str()).collect()
}

#[tokio::test]
async fn pages_cover_the_catalog_once_in_sku_order_and_categories_count_it() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let mut catalog = catalog(&stack).await?;
    let (products, sizes) = all_pages(
        &mut catalog,
        ListProductsRequest {
            page_size: 7,
            ..Default::default()
        },
    )
    .await?;
    let listed = skus(&products);
    let mut sorted = listed.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(listed, sorted, "in SKU order, each once");
    assert!(products.len() >= 30, "a catalog a shop needs: {}", products.len());
    assert!(sizes[..sizes.len() - 1].iter().all(|&n| n == 7), "{sizes:?}");

    let categories = catalog
        .list_categories(ListCategoriesRequest {})
        .await?
        .into_inner()
        .categories;
    assert!(categories.len() >= 5, "{categories:?}");
    let counted: i32 = categories.iter().map(|c| c.product_count).sum();
    assert_eq!(usize::try_from(counted)?, products.len());
    let named: BTreeSet<&str> = products.iter().map(|p| p.category.as_str()).collect();
    let listed_categories: BTreeSet<&str> = categories.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(named, listed_categories);

    // One category, on small pages: only its products, all of them.
    let kitchen = categories
        .iter()
        .find(|c| c.name == "kitchen")
        .expect("a kitchen category");
    let (in_kitchen, _) = all_pages(
        &mut catalog,
        ListProductsRequest {
            page_size: 2,
            category: "kitchen".into(),
            ..Default::default()
        },
    )
    .await?;
    assert_eq!(in_kitchen.len(), usize::try_from(kitchen.product_count)?);
    assert!(in_kitchen.iter().all(|p| p.category == "kitchen"));
    Ok(())
}

#[tokio::test]
async fn a_text_search_matches_word_prefixes_within_the_filters() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let mut catalog = catalog(&stack).await?;
    let search = |query: &str, category: &str| ListProductsRequest {
        query: query.into(),
        category: category.into(),
        page_size: 100,
        ..Default::default()
    };
    let (mugs, _) = all_pages(&mut catalog, search("mug", "")).await?;
    assert_eq!(skus(&mugs), ["SKU-MUG-001", "SKU-MUG-002"]);
    let (enamel, _) = all_pages(&mut catalog, search("ENAM", "")).await?;
    assert_eq!(skus(&enamel), ["SKU-KETTLE-001", "SKU-MUG-001"], "a prefix, any case");
    let (both, _) = all_pages(&mut catalog, search("enamel kettle", "")).await?;
    assert_eq!(skus(&both), ["SKU-KETTLE-001"], "every word must match");
    let (filtered, _) = all_pages(&mut catalog, search("canvas", "bags")).await?;
    assert!(!filtered.is_empty() && filtered.iter().all(|p| p.category == "bags"));
    let (none, _) = all_pages(&mut catalog, search("zzz-nothing", "")).await?;
    assert!(none.is_empty());
    let (syntax, _) = all_pages(&mut catalog, search("mug & | ! :* (", "")).await?;
    assert_eq!(
        skus(&syntax),
        skus(&mugs),
        "tsquery syntax in the text is only separators"
    );
    Ok(())
}

#[tokio::test]
async fn bad_pages_categories_and_searches_name_the_field() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let mut catalog = catalog(&stack).await?;
    for (request, field) in [
        (
            ListProductsRequest {
                page_size: 101,
                ..Default::default()
            },
            "page_size",
        ),
        (
            ListProductsRequest {
                page_size: -3,
                ..Default::default()
            },
            "page_size",
        ),
        (
            ListProductsRequest {
                page_token: "garbage token".into(),
                ..Default::default()
            },
            "page_token",
        ),
        (
            ListProductsRequest {
                category: "Kitchen & Home".into(),
                ..Default::default()
            },
            "category",
        ),
        (
            ListProductsRequest {
                query: "x".repeat(101),
                ..Default::default()
            },
            "query",
        ),
    ] {
        let status = catalog.list_products(request).await.expect_err(field);
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(
            status.message().starts_with(&format!("{field}: ")),
            "{}",
            status.message()
        );
    }
    Ok(())
}
