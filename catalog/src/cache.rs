//! The copy of products, and the rule that keeps it from going stale: it is
//! read and filled only while the change feed is followed, every change
//! replaces (or drops) the product, and a fill that began before any change
//! is not stored (it may have read the product before the change).

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use shop_runtime::{series, values::Sku};

use crate::Product;

pub(crate) struct Cache {
    products: moka::sync::Cache<Sku, Product>,
    /// Held while a fill is stored and while products are dropped, so that
    /// neither happens halfway through the other.
    state: Mutex<State>,
}

#[derive(Debug, Clone, Copy)]
struct State {
    /// Whether changes are followed now: without the feed, a change could
    /// go unnoticed, so the copy is not used.
    following: bool,
    /// Counts drops; a fill stores its products only if none happened
    /// since its lookup.
    generation: u64,
}

/// What a lookup found, and the token its fill must present.
pub(crate) struct Lookup {
    pub hits: Vec<Product>,
    pub misses: Vec<Sku>,
    /// `None` while changes are not followed: nothing is stored.
    pub fill: Option<u64>,
}

impl Cache {
    pub(crate) fn new(ttl: Duration, capacity: u64) -> Self {
        Self {
            products: moka::sync::Cache::builder()
                .max_capacity(capacity)
                .time_to_live(ttl)
                .build(),
            state: Mutex::new(State {
                following: false,
                generation: 0,
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn lookup(&self, skus: &[Sku]) -> Lookup {
        let State { following, generation } = *self.state();
        if !following {
            return Lookup {
                hits: Vec::new(),
                misses: skus.to_vec(),
                fill: None,
            };
        }
        let (mut hits, mut misses) = (Vec::new(), Vec::new());
        for sku in skus {
            match self.products.get(sku) {
                Some(product) => hits.push(product),
                None => misses.push(sku.clone()),
            }
        }
        metrics::counter!(series::CATALOG_CACHE_LOOKUPS, "result" => "hit").increment(hits.len() as u64);
        metrics::counter!(series::CATALOG_CACHE_LOOKUPS, "result" => "miss").increment(misses.len() as u64);
        Lookup {
            hits,
            misses,
            fill: Some(generation),
        }
    }

    /// Stores what a lookup's misses fetched, unless something was dropped
    /// since the lookup (or the feed stopped).
    pub(crate) fn fill(&self, token: Option<u64>, fetched: &[Product]) {
        let state = self.state();
        if token.is_some_and(|generation| state.following && generation == state.generation) {
            for product in fetched {
                self.products.insert(product.sku.clone(), product.clone());
            }
        }
    }

    pub(crate) fn following(&self) -> bool {
        self.state().following
    }

    /// A product changed to `product`.
    pub(crate) fn changed(&self, product: Product) {
        let mut state = self.state();
        state.generation += 1;
        self.products.insert(product.sku.clone(), product);
    }

    /// A product changed, to what is not known here.
    pub(crate) fn drop_product(&self, sku: &Sku) {
        let mut state = self.state();
        state.generation += 1;
        self.products.invalidate(sku);
    }

    /// The feed is live from here on; what was kept before may have missed
    /// changes, so it goes.
    pub(crate) fn start_following(&self) {
        let mut state = self.state();
        state.generation += 1;
        state.following = true;
        self.products.invalidate_all();
    }

    /// The feed ended: changes may go unnoticed from here on.
    pub(crate) fn stop_following(&self) {
        let mut state = self.state();
        state.generation += 1;
        state.following = false;
        self.products.invalidate_all();
    }
}

#[cfg(test)]
mod tests {
    use shop_runtime::values::{Currency, Money};

    use super::*;

    fn product(sku: &str, minor: i64) -> Product {
        Product {
            sku: Sku::parse(sku).expect("valid SKU"),
            name: sku.to_lowercase(),
            unit_price: Some(Money::new(Currency::parse("EUR").expect("valid"), minor)),
        }
    }

    fn sku(raw: &str) -> Sku {
        Sku::parse(raw).expect("valid SKU")
    }

    fn followed() -> Cache {
        let cache = Cache::new(Duration::from_secs(60), 100);
        cache.start_following();
        cache
    }

    #[test]
    fn a_filled_product_is_a_hit_until_it_changes() {
        let cache = followed();
        let first = cache.lookup(&[sku("MUG")]);
        assert_eq!((first.hits.len(), first.misses.len()), (0, 1));
        cache.fill(first.fill, &[product("MUG", 1_250)]);
        let second = cache.lookup(&[sku("MUG"), sku("TEA")]);
        assert_eq!(second.hits, vec![product("MUG", 1_250)]);
        assert_eq!(second.misses, vec![sku("TEA")]);
        cache.drop_product(&sku("MUG"));
        assert_eq!(cache.lookup(&[sku("MUG")]).misses, vec![sku("MUG")]);
    }

    #[test]
    fn a_fill_that_began_before_a_change_is_not_stored() {
        let cache = followed();
        let before = cache.lookup(&[sku("MUG")]);
        // The fetch read the old price; the change arrives before it is stored.
        cache.drop_product(&sku("MUG"));
        cache.fill(before.fill, &[product("MUG", 1_250)]);
        assert!(cache.lookup(&[sku("MUG")]).hits.is_empty(), "a stale price was kept");
        // A change of another product counts too: the fill cannot tell.
        let before = cache.lookup(&[sku("MUG")]);
        cache.drop_product(&sku("TEA"));
        cache.fill(before.fill, &[product("MUG", 1_300)]);
        assert!(cache.lookup(&[sku("MUG")]).hits.is_empty());
    }

    #[test]
    fn without_the_feed_nothing_is_read_or_kept() {
        let cache = Cache::new(Duration::from_secs(60), 100);
        let unfollowed = cache.lookup(&[sku("MUG")]);
        assert_eq!(unfollowed.fill, None);
        cache.fill(unfollowed.fill, &[product("MUG", 1_250)]);
        cache.start_following();
        assert!(cache.lookup(&[sku("MUG")]).hits.is_empty());

        let lookup = cache.lookup(&[sku("MUG")]);
        cache.fill(lookup.fill, &[product("MUG", 1_250)]);
        assert_eq!(cache.lookup(&[sku("MUG")]).hits.len(), 1);
        cache.stop_following();
        assert!(cache.lookup(&[sku("MUG")]).hits.is_empty(), "kept while unfollowed");
        // A fill in flight when the feed stopped is not stored either.
        cache.start_following();
        let lookup = cache.lookup(&[sku("MUG")]);
        cache.stop_following();
        cache.start_following();
        cache.fill(lookup.fill, &[product("MUG", 1_250)]);
        assert!(cache.lookup(&[sku("MUG")]).hits.is_empty());
    }
}
