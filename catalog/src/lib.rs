//! svc-inventory's catalog as svc-order (pricing) and svc-cart (AddItem)
//! read it: products by SKU, from a copy kept in memory when possible.
//!
//! A checkout reads the catalog twice, so asking svc-inventory every time
//! costs a hop and its CPU on the critical path. The copy is safe because:
//!
//! - svc-inventory commits a product change together with its
//!   `catalog.product_changed.<sku>` event in its outbox, so the event
//!   follows every change;
//! - each process follows those events with an ordered consumer of its own
//!   ([`Catalog::follow_changes`], from start-up) and keeps the product as
//!   each says it is now; a fetch that began before a change is not kept.
//!   The stream keeps each product's last change, and the consumer starts
//!   with those (`last_per_subject`), so a process starts with every
//!   product that ever changed already in its copy;
//! - the copy is used only while the feed is followed: starting to follow
//!   clears it, and so does losing the feed;
//! - an entry lives at most `CATALOG_CACHE_TTL`, a bound for what no event
//!   could reach.
//!
//! So a price is never served from the copy once its change has arrived.
//! Unknown SKUs are always asked for. With svc-inventory down, cached
//! products are still served; the others fail fast behind
//! the breakers of its replicas.

mod cache;

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{
    self,
    consumer::{DeliverPolicy, pull},
};
use futures::StreamExt;
use shop_proto::{
    catalog::v1::{ListProductsRequest, catalog_service_client::CatalogServiceClient},
    events::v1::ProductChanged,
};
use shop_runtime::{
    config::EnvReader,
    event::{Event, IncomingEvent},
    host::{Bus, Host, HostError},
    registry, series,
    upstream::{Balanced, Replicas, UpstreamSettings},
    values::{Money, Sku},
};
use tokio_util::sync::CancellationToken;

use cache::Cache;

/// Pause between attempts to follow the changes again once the feed is
/// lost.
const REFOLLOW_AFTER: Duration = Duration::from_secs(1);

/// Where the catalog is and how much of it a process keeps: the same
/// settings in every reader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogSettings {
    /// `CATALOG_URL`: svc-inventory's replicas.
    pub replicas: Replicas,
    pub cache: CacheSettings,
}

impl CatalogSettings {
    pub fn read(env: &mut EnvReader) -> Self {
        Self {
            replicas: Replicas::read(env, &registry::INVENTORY, "CATALOG_URL"),
            cache: CacheSettings::read(env),
        }
    }
}

/// How much of the catalog a process keeps, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheSettings {
    /// `CATALOG_CACHE_TTL`: the longest a product is kept (default 5m);
    /// `0s` turns the cache off.
    pub ttl: Duration,
    /// `CATALOG_CACHE_CAPACITY`: the most products kept (default 10000).
    pub capacity: u64,
}

impl CacheSettings {
    pub fn read(env: &mut EnvReader) -> Self {
        Self {
            ttl: env.duration("CATALOG_CACHE_TTL", Duration::from_secs(300)),
            capacity: env.count("CATALOG_CACHE_CAPACITY", 10_000),
        }
    }
}

/// A product as its readers need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Product {
    pub sku: Sku,
    pub name: String,
    /// `None`: listed without a valid price.
    pub unit_price: Option<Money>,
}

impl Product {
    /// A product as the catalog lists it or a change announces it; `None`
    /// for a SKU that is not one.
    fn listed(sku: &str, name: String, price: Option<&shop_proto::common::v1::Money>) -> Option<Self> {
        Some(Self {
            sku: Sku::parse(sku).ok()?,
            name,
            unit_price: price.and_then(|p| Money::from_proto(p).ok()).filter(|p| p.minor >= 0),
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("catalog unavailable: {0}")]
    Unavailable(String),
}

/// The catalog client, with its copy; cheap to clone.
#[derive(Clone)]
pub struct Catalog {
    client: CatalogServiceClient<Balanced>,
    cache: Option<Arc<Cache>>,
}

impl Catalog {
    /// Connects lazily: the first call dials, reconnecting after failures;
    /// replicas' names are resolved again until `shutdown`. Nothing is kept
    /// until [`follow_changes`](Self::follow_changes) runs.
    pub fn new(
        replicas: &Replicas,
        upstream: &UpstreamSettings,
        cache: &CacheSettings,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            client: CatalogServiceClient::new(upstream.balanced("catalog", replicas, shutdown)),
            cache: (!cache.ttl.is_zero()).then(|| Arc::new(Cache::new(cache.ttl, cache.capacity))),
        }
    }

    /// The client of a service on `host`, its copy following the changes
    /// on `bus` from now until the host shuts down.
    pub async fn on_host(
        host: &mut Host,
        bus: &Bus,
        settings: &CatalogSettings,
        upstream: &UpstreamSettings,
    ) -> Result<Self, HostError> {
        let catalog = Self::new(&settings.replicas, upstream, &settings.cache, host.shutdown());
        let follow = catalog
            .follow_changes(bus.js.clone(), host.shutdown())
            .await
            .map_err(|e| HostError::setup("following the catalog's changes", e))?;
        host.spawn(follow);
        Ok(catalog)
    }

    /// Whether the copy is in use: the cache is on and its change feed live.
    pub fn follows_changes(&self) -> bool {
        self.cache.as_ref().is_some_and(|cache| cache.following())
    }

    /// The products among `skus` that exist, in no particular order; those
    /// not kept are fetched in one call.
    pub async fn products(&self, skus: &[Sku]) -> Result<Vec<Product>, CatalogError> {
        let Some(cache) = &self.cache else {
            return self.fetch(skus).await;
        };
        let lookup = cache.lookup(skus);
        let mut products = lookup.hits;
        if !lookup.misses.is_empty() {
            let fetched = self.fetch(&lookup.misses).await?;
            cache.fill(lookup.fill, &fetched);
            products.extend(fetched);
        }
        Ok(products)
    }

    async fn fetch(&self, skus: &[Sku]) -> Result<Vec<Product>, CatalogError> {
        let mut client = self.client.clone();
        let request = ListProductsRequest {
            skus: skus.iter().map(|s| s.as_str().to_owned()).collect(),
            ..Default::default()
        };
        let response = client
            .list_products(request)
            .await
            .map_err(|status| CatalogError::Unavailable(format!("{:?}: {}", status.code(), status.message())))?;
        Ok(response
            .into_inner()
            .products
            .into_iter()
            .filter_map(|product| Product::listed(&product.sku, product.name, product.price.as_ref()))
            .collect())
    }

    /// Follows `catalog.product_changed`, dropping each changed product:
    /// the copy is in use once this returns, for as long as the returned
    /// task runs (until `shutdown`) and the feed is live. A lost feed is
    /// followed again after a pause. With the cache off, the task does
    /// nothing.
    pub async fn follow_changes(
        &self,
        js: jetstream::Context,
        shutdown: CancellationToken,
    ) -> Result<impl Future<Output = ()> + Send + 'static, FeedLost> {
        let followed = match &self.cache {
            Some(cache) => Some((cache.clone(), subscribe(&js, cache).await?)),
            None => None,
        };
        Ok(async move {
            let Some((cache, mut messages)) = followed else { return };
            loop {
                let lost = tokio::select! {
                    () = shutdown.cancelled() => return,
                    lost = apply_changes(&mut messages, &cache) => lost,
                };
                cache.stop_following();
                tracing::warn!(error = %lost, "lost the catalog's changes; asking the catalog for every product until they are followed again");
                messages = loop {
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = tokio::time::sleep(REFOLLOW_AFTER) => {}
                    }
                    match subscribe(&js, &cache).await {
                        Ok(messages) => break messages,
                        Err(e) => tracing::debug!(error = %e, "still not following the catalog's changes"),
                    }
                };
            }
        })
    }
}

/// Why the feed of changes is not followed.
#[derive(Debug, thiserror::Error)]
pub enum FeedLost {
    #[error("cannot follow {subject}: {source}")]
    Subscribe {
        subject: String,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("the feed failed: {0}")]
    Failed(Box<dyn std::error::Error + Send + Sync>),
    #[error("the feed ended")]
    Ended,
}

/// An ordered consumer of this process's own, from each product's last
/// change on; the copy is cleared and in use from here. The consumer
/// resumes by itself after a reconnect, from the last change it delivered,
/// so no change is skipped while it lasts.
async fn subscribe(js: &jetstream::Context, cache: &Cache) -> Result<pull::Ordered, FeedLost> {
    let subject = format!("{}.*", ProductChanged::SUBJECT);
    let lost = |source: Box<dyn std::error::Error + Send + Sync>| FeedLost::Subscribe {
        subject: subject.clone(),
        source,
    };
    let stream = js.stream_by_subject(&subject).await.map_err(|e| lost(e.into()))?;
    let stream = js.get_stream(stream).await.map_err(|e| lost(e.into()))?;
    let consumer = stream
        .create_consumer(pull::OrderedConfig {
            filter_subject: subject.clone(),
            deliver_policy: DeliverPolicy::LastPerSubject,
            ..Default::default()
        })
        .await
        .map_err(|e| lost(e.into()))?;
    let messages = consumer.messages().await.map_err(|e| lost(e.into()))?;
    cache.start_following();
    Ok(messages)
}

/// Keeps each product as its change says it is now, until the feed fails.
async fn apply_changes(messages: &mut pull::Ordered, cache: &Cache) -> FeedLost {
    while let Some(message) = messages.next().await {
        let message = match message {
            Ok(message) => message,
            Err(e) => return FeedLost::Failed(e.into()),
        };
        // The subject's last token is the SKU; one that is not a SKU names
        // no product the cache could hold.
        let Some(sku) = message.subject.rsplit('.').next().and_then(|raw| Sku::parse(raw).ok()) else {
            continue;
        };
        metrics::counter!(series::CATALOG_CHANGES_SEEN).increment(1);
        let changed = IncomingEvent::from_message(&message.subject, message.headers.as_ref(), message.payload.clone())
            .and_then(|event| event.decode::<ProductChanged>())
            .ok()
            .and_then(|e| Product::listed(&e.sku, e.name, e.price.as_ref()))
            .filter(|product| product.sku == sku);
        match changed {
            Some(product) => cache.changed(product),
            // Unreadable: the product is asked for again.
            None => cache.drop_product(&sku),
        }
    }
    FeedLost::Ended
}
