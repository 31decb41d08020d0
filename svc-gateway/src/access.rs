//! Who may call what, read from the contract: the `(shop.options.v1.access)`
//! option on each RPC in the compiled descriptors. There is no second table
//! to keep in sync; a method without a policy is refused.

use std::collections::HashMap;

use prost_reflect::{DescriptorPool, Value};

/// The policy of one RPC (mirrors `shop.options.v1.Access`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No policy declared: refused.
    Unspecified,
    /// Anyone; a token, if sent, is still verified and passed on.
    Public,
    /// A signed-in `customer` or `admin`.
    Customer,
    /// A signed-in `admin`.
    Admin,
    /// Anyone, only while development auth is on.
    DevOnly,
    /// Never routed: the platform calls it itself.
    Internal,
}

impl Access {
    fn from_number(n: i32) -> Self {
        match n {
            1 => Self::Public,
            2 => Self::Customer,
            3 => Self::Admin,
            4 => Self::DevOnly,
            5 => Self::Internal,
            _ => Self::Unspecified,
        }
    }
}

/// What the gateway knows about one RPC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MethodPolicy {
    /// Full service name, e.g. `shop.order.v1.OrderService`.
    pub service: String,
    pub access: Access,
    pub client_streaming: bool,
    pub server_streaming: bool,
    /// Paths (`/package.Service/Method`) this RPC calls on its caller's
    /// behalf (`(shop.options.v1.calls_on_behalf)`): the identity the
    /// gateway vouches for on a call of it is good for those too.
    pub calls_on_behalf: Vec<String>,
}

/// Every RPC of the contract by its HTTP/2 path (`/package.Service/Method`).
#[derive(Debug, Clone)]
pub struct AccessTable {
    methods: HashMap<String, MethodPolicy>,
}

#[derive(Debug, thiserror::Error)]
pub enum AccessTableError {
    #[error("the descriptor set does not decode: {0}")]
    Descriptors(#[from] prost_reflect::DescriptorError),
    #[error("the descriptor set has no {0} extension")]
    MissingOption(&'static str),
}

impl AccessTable {
    /// Reads the policy of every method in an encoded `FileDescriptorSet`.
    pub fn from_descriptors(encoded: &[u8]) -> Result<Self, AccessTableError> {
        let pool = DescriptorPool::decode(encoded)?;
        let extension = |name: &'static str| {
            pool.get_extension_by_name(name)
                .ok_or(AccessTableError::MissingOption(name))
        };
        let option = extension("shop.options.v1.access")?;
        let on_behalf = extension("shop.options.v1.calls_on_behalf")?;
        let mut methods = HashMap::new();
        for service in pool.services() {
            for method in service.methods() {
                let access = match method.options().get_extension(&option).as_ref() {
                    Value::EnumNumber(n) => Access::from_number(*n),
                    _ => Access::Unspecified,
                };
                let calls_on_behalf = match method.options().get_extension(&on_behalf).as_ref() {
                    Value::List(callees) => callees
                        .iter()
                        .filter_map(|callee| callee.as_str().map(|c| format!("/{c}")))
                        .collect(),
                    _ => Vec::new(),
                };
                methods.insert(
                    format!("/{}/{}", service.full_name(), method.name()),
                    MethodPolicy {
                        service: service.full_name().to_owned(),
                        access,
                        client_streaming: method.is_client_streaming(),
                        server_streaming: method.is_server_streaming(),
                        calls_on_behalf,
                    },
                );
            }
        }
        Ok(Self { methods })
    }

    /// The shop contract as compiled into `shop-proto`.
    pub fn shop() -> Result<Self, AccessTableError> {
        Self::from_descriptors(shop_proto::FILE_DESCRIPTOR_SET)
    }

    /// Adds an RPC that is not part of the shop contract (health, reflection).
    pub fn insert(&mut self, path: String, policy: MethodPolicy) {
        self.methods.insert(path, policy);
    }

    pub fn get(&self, path: &str) -> Option<&MethodPolicy> {
        self.methods.get(path)
    }

    /// The paths an identity token for a call of `path` is good for: its
    /// own, and those it calls on the caller's behalf.
    pub fn vouched_paths(&self, path: &str) -> Vec<String> {
        let on_behalf = self.get(path).map(|policy| policy.calls_on_behalf.as_slice());
        std::iter::once(path.to_owned())
            .chain(on_behalf.unwrap_or_default().iter().cloned())
            .collect()
    }

    /// Whether `service` has a method the gateway routes from outside: one
    /// whose policy is not [`Access::Internal`].
    pub fn has_public_methods(&self, service: &str) -> bool {
        self.methods
            .values()
            .any(|policy| policy.service == service && policy.access != Access::Internal)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &MethodPolicy)> {
        self.methods.iter().map(|(path, policy)| (path.as_str(), policy))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_public_rpc_has_a_policy() {
        let table = AccessTable::shop().expect("contract descriptors");
        let mut checked = 0;
        for (path, policy) in table.iter() {
            if policy.service.starts_with("shop.") {
                assert_ne!(
                    policy.access,
                    Access::Unspecified,
                    "{path} has no (shop.options.v1.access) policy"
                );
                checked += 1;
            }
        }
        assert!(checked >= 17, "only {checked} RPCs found");
    }

    /// Every service of the contract is served by a service of the
    /// registry (so the gateway routes it), except the gateway's own.
    #[test]
    fn every_service_of_the_contract_has_an_owner() {
        let table = AccessTable::shop().expect("contract descriptors");
        let services: std::collections::BTreeSet<&str> = table
            .iter()
            .map(|(_, policy)| policy.service.as_str())
            .filter(|service| service.starts_with("shop.") && *service != crate::edge::DEV_AUTH_SERVICE)
            .collect();
        assert!(services.len() >= 6, "{services:?}");
        for service in services {
            assert!(
                shop_runtime::registry::owner_of(service).is_some(),
                "no service of the registry serves {service}"
            );
        }
    }

    /// A call made on the caller's behalf names a method of the contract
    /// that a signed-in caller may call, or the callee would refuse it.
    #[test]
    fn every_call_on_behalf_names_a_method_a_caller_may_call() {
        let table = AccessTable::shop().expect("contract descriptors");
        let mut seen = 0;
        for (path, policy) in table.iter() {
            for callee in &policy.calls_on_behalf {
                let target = table
                    .get(callee)
                    .unwrap_or_else(|| panic!("{path} calls {callee} on behalf, which is no method of the contract"));
                assert!(
                    matches!(target.access, Access::Customer | Access::Public) || policy.access == target.access,
                    "{path} ({:?}) calls {callee} ({:?}) on behalf",
                    policy.access,
                    target.access
                );
                seen += 1;
            }
        }
        assert!(seen >= 1, "no call on behalf declared");
    }

    #[test]
    fn policies_match_the_design() {
        let table = AccessTable::shop().expect("contract descriptors");
        let expect = |path: &str, access: Access| {
            let policy = table.get(path).unwrap_or_else(|| panic!("{path} missing"));
            assert_eq!(policy.access, access, "{path}");
        };
        expect("/shop.catalog.v1.CatalogService/ListProducts", Access::Public);
        expect("/shop.catalog.v1.CatalogService/GetProduct", Access::Public);
        expect("/shop.inventory.v1.InventoryService/GetStock", Access::Customer);
        expect("/shop.inventory.v1.InventoryService/Restock", Access::Admin);
        expect("/shop.order.v1.OrderService/PlaceOrder", Access::Customer);
        expect("/shop.auth.v1.DevAuthService/IssueToken", Access::DevOnly);
        expect(
            "/shop.payment.v1.PaymentWebhookService/ReceiveWebhook",
            Access::Internal,
        );
        assert!(table.has_public_methods("shop.payment.v1.PaymentService"));
        assert!(!table.has_public_methods("shop.payment.v1.PaymentWebhookService"));
        let checkout = table.get("/shop.cart.v1.CartService/Checkout").expect("Checkout");
        assert_eq!(
            checkout.calls_on_behalf,
            [
                "/shop.order.v1.OrderService/PlaceOrder",
                "/shop.order.v1.OrderService/LookupOrder"
            ]
        );
        let watch = table.get("/shop.order.v1.OrderService/WatchOrder").expect("WatchOrder");
        assert!(watch.server_streaming && !watch.client_streaming);
        assert!(table.get("/shop.order.v1.OrderService/Nope").is_none());
    }
}
