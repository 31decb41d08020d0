//! Contract tests on the compiled descriptors: every public RPC declares
//! who may call it, and the public API has the names clients rely on.

use prost_reflect::{DescriptorPool, Value};
use shop_proto::FILE_DESCRIPTOR_SET;

fn pool() -> DescriptorPool {
    DescriptorPool::decode(FILE_DESCRIPTOR_SET).expect("descriptor set decodes")
}

#[test]
fn every_rpc_declares_an_access_policy() {
    let pool = pool();
    let access = pool
        .get_extension_by_name("shop.options.v1.access")
        .expect("access option exists");
    let mut checked = 0;
    for service in pool.services() {
        for method in service.methods() {
            let options = method.options();
            let value = options.get_extension(&access);
            let policy = match value.as_ref() {
                Value::EnumNumber(n) => *n,
                other => panic!("{}: unexpected option value {other:?}", method.full_name()),
            };
            assert_ne!(
                policy,
                0,
                "{} has no (shop.options.v1.access) policy",
                method.full_name()
            );
            checked += 1;
        }
    }
    assert!(checked >= 16, "only {checked} RPCs found");
}

#[test]
fn public_services_have_the_documented_methods() {
    let pool = pool();
    let expected: &[(&str, &[&str])] = &[
        (
            "shop.catalog.v1.CatalogService",
            &["ListProducts", "ListCategories", "GetProduct", "UpdateProduct"],
        ),
        ("shop.inventory.v1.InventoryService", &["GetStock", "Restock"]),
        (
            "shop.cart.v1.CartService",
            &[
                "GetCart",
                "AddItem",
                "UpdateItem",
                "RemoveItem",
                "ClearCart",
                "Checkout",
            ],
        ),
        (
            "shop.order.v1.OrderService",
            &[
                "PlaceOrder",
                "GetOrder",
                "LookupOrder",
                "ListOrders",
                "CancelOrder",
                "WatchOrder",
                "RefundOrder",
            ],
        ),
        ("shop.payment.v1.PaymentService", &["GetPayment"]),
        ("shop.payment.v1.PaymentWebhookService", &["ReceiveWebhook"]),
        ("shop.notify.v1.NotificationService", &["ListNotifications"]),
        ("shop.auth.v1.DevAuthService", &["IssueToken"]),
    ];
    for (service, methods) in expected {
        let descriptor = pool
            .get_service_by_name(service)
            .unwrap_or_else(|| panic!("{service} missing"));
        let mut names: Vec<String> = descriptor.methods().map(|m| m.name().to_owned()).collect();
        names.sort();
        let mut wanted: Vec<String> = methods.iter().map(|m| (*m).to_owned()).collect();
        wanted.sort();
        assert_eq!(names, wanted, "{service}");
    }
    let watch = pool
        .get_service_by_name("shop.order.v1.OrderService")
        .and_then(|s| s.methods().find(|m| m.name() == "WatchOrder"))
        .expect("WatchOrder");
    assert!(watch.is_server_streaming());
}

#[test]
fn money_is_integer_minor_units() {
    let pool = pool();
    let money = pool.get_message_by_name("shop.common.v1.Money").expect("Money");
    let amount = money.get_field_by_name("amount_minor").expect("amount_minor");
    assert_eq!(amount.kind(), prost_reflect::Kind::Int64);
}
