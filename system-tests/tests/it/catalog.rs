//! Browsing the catalog as a storefront does: pages, a category, a text
//! search, and a clear INVALID_ARGUMENT for what cannot be answered. An
//! admin's product change, and the copies svc-order and svc-cart keep of
//! the catalog: used while svc-inventory is down, never stale once the
//! change has reached them.

use std::collections::BTreeSet;
use std::time::Duration;

use shop_catalog::{CacheSettings, Catalog as CachedCatalog};
use shop_harness::{AsUser, Service, Stack, eventually, line};
use shop_proto::{
    catalog::v1::{
        GetProductRequest, ListCategoriesRequest, ListProductsRequest, Product, UpdateProductRequest,
        catalog_service_client::CatalogServiceClient,
    },
    common::v1::Money,
    events::v1::ProductChanged,
};
use shop_runtime::{
    CancellationToken,
    config::EnvReader,
    upstream::{Replicas, UpstreamSettings},
    values::Sku,
};
use tonic::{Code, transport::Channel};

use crate::support::{PlaceOrders, header, last_stored};

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

const MUG: &str = "SKU-MUG-001";
const PEN: &str = "SKU-PEN-001";

async fn as_admin(
    stack: &Stack,
) -> anyhow::Result<CatalogServiceClient<tonic::service::interceptor::InterceptedService<Channel, AsUser>>> {
    Ok(CatalogServiceClient::with_interceptor(
        stack.channel(Service::Inventory).await?,
        AsUser::admin("ops"),
    ))
}

fn eur(minor: i64) -> Money {
    Money {
        currency_code: "EUR".into(),
        amount_minor: minor,
    }
}

async fn set_price(stack: &Stack, sku: &str, minor: i64) -> anyhow::Result<Product> {
    let request = UpdateProductRequest {
        sku: sku.into(),
        price: Some(eur(minor)),
        ..Default::default()
    };
    Ok(as_admin(stack).await?.update_product(request).await?.into_inner())
}

async fn price_of(stack: &Stack, sku: &str) -> anyhow::Result<i64> {
    let request = GetProductRequest { sku: sku.into() };
    let product = catalog(stack).await?.get_product(request).await?.into_inner();
    Ok(product.price.map_or(-1, |p| p.amount_minor))
}

/// A copy of the stack's catalog, as svc-order and svc-cart keep one,
/// following the changes.
async fn copy_of_catalog(stack: &Stack) -> anyhow::Result<(CachedCatalog, CancellationToken)> {
    let url = stack.grpc_url(Service::Inventory);
    let mut env = EnvReader::from_map([("UPSTREAM_BREAKER_FAILURES", "1000"), ("CATALOG_URL", url.as_str())]);
    let upstream = UpstreamSettings::read(&mut env);
    let replicas = Replicas::read(&mut env, &shop_runtime::registry::INVENTORY, "CATALOG_URL");
    env.finish()?;
    let settings = CacheSettings {
        ttl: Duration::from_secs(600),
        capacity: 100,
    };
    let stop = CancellationToken::new();
    let catalog = CachedCatalog::new(&replicas, &upstream, &settings, stop.clone());
    tokio::spawn(catalog.follow_changes(stack.jetstream().await?, stop.clone()).await?);
    assert!(catalog.follows_changes());
    Ok((catalog, stop))
}

async fn cached_price(catalog: &CachedCatalog, sku: &str) -> anyhow::Result<i64> {
    let products = catalog
        .products(&[Sku::parse(sku).map_err(anyhow::Error::msg)?])
        .await?;
    let product = products.first().ok_or_else(|| anyhow::anyhow!("no {sku}"))?;
    Ok(product.unit_price.map_or(-1, |p| p.minor))
}

#[tokio::test]
async fn an_admin_changes_only_what_is_set_and_the_change_is_published() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let before = catalog(&stack)
        .await?
        .get_product(GetProductRequest { sku: MUG.into() })
        .await?
        .into_inner();
    let after = set_price(&stack, MUG, 1_999).await?;
    assert_eq!(after.price, Some(eur(1_999)));
    assert_eq!(
        (&after.name, &after.description, &after.category),
        (&before.name, &before.description, &before.category),
        "only the price changed"
    );
    assert_eq!(price_of(&stack, MUG).await?, 1_999);

    let js = stack.jetstream().await?;
    let subject = format!("catalog.product_changed.{MUG}");
    let stored = eventually("the change on the CATALOG stream", || {
        let (js, subject) = (js.clone(), subject.clone());
        async move { Ok(last_stored(&js, "CATALOG", &subject).await.ok()) }
    })
    .await?;
    assert_eq!(header(&stored, "ce-type"), "shop.events.v1.ProductChanged");
    assert_eq!(header(&stored, "ce-subject"), MUG);
    assert_eq!(header(&stored, "ce-source"), "svc-inventory");
    let changed: ProductChanged = serde_json::from_slice(&stored.payload)?;
    assert_eq!((changed.sku.as_str(), changed.price), (MUG, Some(eur(1_999))));
    assert_eq!(changed.name, before.name);

    let renamed = as_admin(&stack)
        .await?
        .update_product(UpdateProductRequest {
            sku: PEN.into(),
            name: Some("Fountain pen, blue".into()),
            category: Some("office".into()),
            ..Default::default()
        })
        .await?
        .into_inner();
    assert_eq!(
        (renamed.name.as_str(), renamed.category.as_str()),
        ("Fountain pen, blue", "office")
    );
    Ok(())
}

#[tokio::test]
async fn a_product_change_is_refused_with_what_to_fix() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let mut admin = as_admin(&stack).await?;
    for (request, code, said) in [
        (
            UpdateProductRequest {
                sku: MUG.into(),
                ..Default::default()
            },
            Code::InvalidArgument,
            "set at least one",
        ),
        (
            UpdateProductRequest {
                sku: MUG.into(),
                price: Some(eur(-5)),
                ..Default::default()
            },
            Code::InvalidArgument,
            "price.amount_minor: ",
        ),
        (
            UpdateProductRequest {
                sku: MUG.into(),
                name: Some(String::new()),
                ..Default::default()
            },
            Code::InvalidArgument,
            "name: ",
        ),
        (
            UpdateProductRequest {
                sku: "SKU-NONE-404".into(),
                price: Some(eur(100)),
                ..Default::default()
            },
            Code::NotFound,
            "SKU-NONE-404",
        ),
    ] {
        let status = admin.update_product(request).await.expect_err(said);
        assert_eq!(status.code(), code, "{status:?}");
        assert!(status.message().contains(said), "{}", status.message());
    }
    let mut customer =
        CatalogServiceClient::with_interceptor(stack.channel(Service::Inventory).await?, AsUser::customer("alice"));
    let refused = customer
        .update_product(UpdateProductRequest {
            sku: MUG.into(),
            price: Some(eur(1)),
            ..Default::default()
        })
        .await
        .expect_err("customers change nothing");
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    assert_ne!(price_of(&stack, MUG).await?, 1, "nothing changed");
    let stored = last_stored(
        &stack.jetstream().await?,
        "CATALOG",
        &format!("catalog.product_changed.{MUG}"),
    )
    .await;
    assert!(stored.is_err(), "a refused change publishes nothing");
    Ok(())
}

#[tokio::test]
async fn a_copy_of_the_catalog_answers_for_kept_products_while_svc_inventory_is_down() -> anyhow::Result<()> {
    let mut stack = Stack::start().await?;
    let (catalog, _stop) = copy_of_catalog(&stack).await?;
    let listed = price_of(&stack, MUG).await?;
    assert_eq!(cached_price(&catalog, MUG).await?, listed);

    stack.stop_service(Service::Inventory).await?;
    assert_eq!(cached_price(&catalog, MUG).await?, listed, "kept, so no call");
    let unknown = catalog
        .products(&[Sku::parse(PEN).map_err(anyhow::Error::msg)?])
        .await
        .expect_err("not kept, and the catalog is down");
    assert!(unknown.to_string().contains("unavailable"), "{unknown}");
    Ok(())
}

#[tokio::test]
async fn a_new_copy_starts_with_every_product_the_changes_stream_keeps() -> anyhow::Result<()> {
    let mut stack = Stack::start().await?;
    let new = price_of(&stack, MUG).await? + 300;
    set_price(&stack, MUG, new).await?;
    let js = stack.jetstream().await?;
    let subject = format!("catalog.product_changed.{MUG}");
    eventually("the change to be published", || {
        let (js, subject) = (&js, &subject);
        async move { Ok(last_stored(js, "CATALOG", subject).await.ok()) }
    })
    .await?;

    // A process that starts now (a new replica) reads the stream's last
    // change of each product into its copy, asking svc-inventory nothing.
    let (catalog, _stop) = copy_of_catalog(&stack).await?;
    stack.stop_service(Service::Inventory).await?;
    eventually("the copy to hold the changed product", || {
        let catalog = catalog.clone();
        async move { Ok(cached_price(&catalog, MUG).await.ok().filter(|price| *price == new)) }
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn a_price_change_reaches_every_copy_and_the_old_price_is_not_served_after_it() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let (catalog, _stop) = copy_of_catalog(&stack).await?;
    let old = cached_price(&catalog, MUG).await?;
    // svc-order keeps the price too, from pricing this order.
    let first = stack
        .place("alice", "before-change", vec![line(MUG, 1)], "pm_card_ok")
        .await?;
    assert_eq!(first.total.as_ref().map(|t| t.amount_minor), Some(old));

    let new = old + 500;
    set_price(&stack, MUG, new).await?;
    eventually("the copy to drop the old price", || {
        let catalog = catalog.clone();
        async move { Ok((cached_price(&catalog, MUG).await? == new).then_some(())) }
    })
    .await?;
    for _ in 0..50 {
        assert_eq!(cached_price(&catalog, MUG).await?, new, "the old price came back");
    }
    let mut attempt = 0;
    let priced = eventually("svc-order to price at the new price", || {
        attempt += 1;
        let key = format!("after-change-{attempt}");
        let stack = &stack;
        async move {
            let order = stack.place("alice", &key, vec![line(MUG, 1)], "pm_card_ok").await?;
            Ok(order.total.filter(|t| t.amount_minor == new))
        }
    })
    .await?;
    assert_eq!(priced.amount_minor, new);
    Ok(())
}

#[tokio::test]
async fn a_copy_that_lost_its_feed_to_a_broker_restart_still_sees_the_next_change() -> anyhow::Result<()> {
    let mut stack = Stack::start().await?;
    let (catalog, _stop) = copy_of_catalog(&stack).await?;
    let old = cached_price(&catalog, MUG).await?;
    stack.nats.restart().await?;
    // Kept or not meanwhile, a change after the restart must come through:
    // a feed that stalled unnoticed would serve the old price for the TTL.
    let new = old + 700;
    eventually("the change to be published after the restart", || {
        let stack = &stack;
        async move { Ok(set_price(stack, MUG, new).await.ok()) }
    })
    .await?;
    eventually("the copy to serve the new price", || {
        let catalog = catalog.clone();
        async move { Ok((cached_price(&catalog, MUG).await? == new).then_some(())) }
    })
    .await?;
    eventually("the copy to follow the changes again", || {
        let catalog = catalog.clone();
        async move { Ok(catalog.follows_changes().then_some(())) }
    })
    .await?;
    // Kept again, then changed again: the feed is live.
    assert_eq!(cached_price(&catalog, MUG).await?, new);
    set_price(&stack, MUG, new + 1).await?;
    eventually("the second change to reach the copy", || {
        let catalog = catalog.clone();
        async move { Ok((cached_price(&catalog, MUG).await? == new + 1).then_some(())) }
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn svc_order_prices_kept_products_while_svc_inventory_is_down() -> anyhow::Result<()> {
    let mut stack = Stack::start().await?;
    stack.place("alice", "warm", vec![line(MUG, 1)], "pm_card_ok").await?;
    stack.stop_service(Service::Inventory).await?;
    let order = stack
        .place("alice", "while-down", vec![line(MUG, 2)], "pm_card_ok")
        .await?;
    assert_eq!(order.lines.len(), 1);
    Ok(())
}
