//! The services of the platform, in one place: what each is called, where
//! it listens by default, what it keeps, what it serves and how the others
//! are told where it is. The services read their default ports and their
//! gRPC service names from here, the gateway its routing table, `cargo xtask
//! up` and the test harnesses their lists; tests fail when the registry and
//! the workspace or the contract disagree.

/// One service of the platform.
#[derive(Debug, PartialEq, Eq)]
pub struct ServiceSpec {
    /// Package and binary name, e.g. `svc-order`.
    pub name: &'static str,
    /// Short name, for upstream labels and metrics: `order`.
    pub short: &'static str,
    /// Ports when `GRPC_LISTEN_ADDR` / `ADMIN_LISTEN_ADDR` are unset.
    pub grpc_port: u16,
    pub admin_port: u16,
    /// Its own PostgreSQL database, by the name `up` gives it.
    pub database: Option<&'static str>,
    /// Whether it keeps its state in Redis.
    pub redis: bool,
    /// The gRPC services it serves (full names); the gateway routes each
    /// RPC of them as its access policy says.
    pub serves: &'static [&'static str],
    /// The variables through which the others are told its URL.
    pub url_vars: &'static [&'static str],
}

impl ServiceSpec {
    /// Where it listens on this machine when nothing says otherwise.
    pub fn default_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.grpc_port)
    }
}

pub const INVENTORY: ServiceSpec = ServiceSpec {
    name: "svc-inventory",
    short: "inventory",
    grpc_port: 50052,
    admin_port: 9052,
    database: Some("shop_inventory"),
    redis: false,
    serves: &["shop.catalog.v1.CatalogService", "shop.inventory.v1.InventoryService"],
    url_vars: &["INVENTORY_URL", "CATALOG_URL"],
};

pub const PAYMENT: ServiceSpec = ServiceSpec {
    name: "svc-payment",
    short: "payment",
    grpc_port: 50053,
    admin_port: 9053,
    database: Some("shop_payment"),
    redis: false,
    serves: &[
        "shop.payment.v1.PaymentService",
        "shop.payment.v1.PaymentWebhookService",
    ],
    url_vars: &["PAYMENT_URL"],
};

pub const ORDER: ServiceSpec = ServiceSpec {
    name: "svc-order",
    short: "order",
    grpc_port: 50051,
    admin_port: 9051,
    database: Some("shop_order"),
    redis: false,
    serves: &["shop.order.v1.OrderService"],
    url_vars: &["ORDER_URL"],
};

pub const NOTIFY: ServiceSpec = ServiceSpec {
    name: "svc-notify",
    short: "notify",
    grpc_port: 50055,
    admin_port: 9055,
    database: Some("shop_notify"),
    redis: false,
    serves: &["shop.notify.v1.NotificationService"],
    url_vars: &["NOTIFY_URL"],
};

pub const CART: ServiceSpec = ServiceSpec {
    name: "svc-cart",
    short: "cart",
    grpc_port: 50054,
    admin_port: 9054,
    database: None,
    redis: true,
    serves: &["shop.cart.v1.CartService"],
    url_vars: &["CART_URL"],
};

/// The one public port; it serves the others' services by forwarding.
pub const GATEWAY: ServiceSpec = ServiceSpec {
    name: "svc-gateway",
    short: "gateway",
    grpc_port: 8080,
    admin_port: 9080,
    database: None,
    redis: false,
    serves: &[],
    url_vars: &[],
};

/// Where the payment provider emulator (`shop-provider`) listens when
/// nothing says otherwise, on loopback: where svc-payment looks for its
/// provider unless told.
pub const PAYMENT_PROVIDER_PORT: u16 = 12111;

/// Where the gateway takes the payment provider's webhooks, on its public
/// port (the provider is told `http://<gateway><this>`).
pub const PAYMENT_WEBHOOKS_PATH: &str = "/webhooks/payments";

/// The largest payment webhook body taken, at the gateway and again at
/// svc-payment: a provider's event is a few KB.
pub const PAYMENT_WEBHOOK_MAX_BYTES: usize = 64 * 1024;

/// Every service, in the order they start (what others call first).
pub const ALL: &[&ServiceSpec] = &[&INVENTORY, &PAYMENT, &ORDER, &NOTIFY, &CART, &GATEWAY];

/// The service called `name` (its package name).
pub fn by_name(name: &str) -> Option<&'static ServiceSpec> {
    ALL.iter().copied().find(|spec| spec.name == name)
}

/// The service that serves the gRPC service `full_name`.
pub fn owner_of(full_name: &str) -> Option<&'static ServiceSpec> {
    ALL.iter().copied().find(|spec| spec.serves.contains(&full_name))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn names_ports_and_variables_are_unique() {
        let mut seen = BTreeSet::new();
        for spec in ALL {
            for fact in [spec.name.to_owned(), spec.short.to_owned()]
                .into_iter()
                .chain([spec.grpc_port, spec.admin_port].map(|p| format!("port {p}")))
                .chain(spec.url_vars.iter().map(|v| (*v).to_owned()))
                .chain(spec.serves.iter().map(|s| (*s).to_owned()))
                .chain(spec.database.map(str::to_owned))
            {
                assert!(seen.insert(fact.clone()), "{fact} appears twice");
            }
        }
    }

    /// Every crate `svc-*` of the workspace is in the registry, and every
    /// entry is a crate.
    #[test]
    fn the_registry_lists_every_service_crate() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let crates: BTreeSet<String> = std::fs::read_dir(&root)
            .expect("the workspace root")
            .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
            .filter(|name| name.starts_with("svc-") && root.join(name).join("Cargo.toml").is_file())
            .collect();
        let registered: BTreeSet<String> = ALL.iter().map(|s| s.name.to_owned()).collect();
        assert_eq!(crates, registered);
    }
}
