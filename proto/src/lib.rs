//! The shop's public contract, generated from `proto/shop/**/*.proto`.
//!
//! Every message also implements serde with proto3 JSON mapping (pbjson), which
//! is how events travel on JetStream. [`FILE_DESCRIPTOR_SET`] holds the compiled
//! descriptors for server reflection and for reading the `(shop.options.v1.access)`
//! method option.

#![allow(clippy::all, missing_docs, unreachable_pub)]

/// Encoded `google.protobuf.FileDescriptorSet` of every shop proto file.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/shop_descriptor.bin"));

macro_rules! package {
    ($name:literal) => {
        include!(concat!(env!("OUT_DIR"), "/", $name, ".rs"));
        include!(concat!(env!("OUT_DIR"), "/", $name, ".serde.rs"));
    };
}

pub mod shop {
    pub mod common {
        pub mod v1 {
            package!("shop.common.v1");
        }
    }
    pub mod options {
        pub mod v1 {
            package!("shop.options.v1");
        }
    }
    pub mod catalog {
        pub mod v1 {
            package!("shop.catalog.v1");
        }
    }
    pub mod inventory {
        pub mod v1 {
            package!("shop.inventory.v1");
        }
    }
    pub mod order {
        pub mod v1 {
            package!("shop.order.v1");
        }
    }
    pub mod cart {
        pub mod v1 {
            package!("shop.cart.v1");
        }
    }
    pub mod payment {
        pub mod v1 {
            package!("shop.payment.v1");
        }
    }
    pub mod notify {
        pub mod v1 {
            package!("shop.notify.v1");
        }
    }
    pub mod auth {
        pub mod v1 {
            package!("shop.auth.v1");
        }
    }
    pub mod events {
        pub mod v1 {
            package!("shop.events.v1");
        }
    }
}

pub use shop::{auth, cart, catalog, common, events, inventory, notify, options, order, payment};
