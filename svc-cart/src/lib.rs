//! svc-cart: shopping carts in Redis with a sliding TTL, and checkout from
//! the cart (`shop.cart.v1.CartService`).
//!
//! Not built yet: the crate holds the service's place in the workspace and
//! the contract is already in `proto/shop/cart/v1/cart.proto`.
