//! What an operator relies on: every service serves gRPC health and server
//! reflection on its own port, listing exactly its public services.

use futures::StreamExt;
use shop_harness::{Service, Stack};
use tonic_reflection::pb::v1::{
    ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
    server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
};

async fn listed_services(stack: &Stack, service: Service) -> anyhow::Result<Vec<String>> {
    let mut client = ServerReflectionClient::new(stack.channel(service).await?);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await?
        .into_inner();
    let response = responses
        .next()
        .await
        .ok_or_else(|| anyhow::anyhow!("no reflection answer"))??;
    match response.message_response {
        Some(MessageResponse::ListServicesResponse(list)) => {
            let mut names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
            names.sort();
            Ok(names)
        }
        other => anyhow::bail!("unexpected reflection answer {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_service_serves_health_and_reflection_of_its_own_api() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let expected: [(Service, &[&str]); 4] = [
        (Service::Order, &["shop.order.v1.OrderService"]),
        (
            Service::Inventory,
            &["shop.catalog.v1.CatalogService", "shop.inventory.v1.InventoryService"],
        ),
        // The webhook intake too: the gateway routes it only from its
        // HTTP endpoint, but it is svc-payment's own API.
        (
            Service::Payment,
            &[
                "shop.payment.v1.PaymentService",
                "shop.payment.v1.PaymentWebhookService",
            ],
        ),
        (Service::Notify, &["shop.notify.v1.NotificationService"]),
    ];
    for (service, public) in expected {
        let names = listed_services(&stack, service).await?;
        for name in public.iter().copied().chain(["grpc.health.v1.Health"]) {
            assert!(
                names.iter().any(|n| n == name),
                "{service:?} does not list {name}: {names:?}"
            );
        }
        let shop_services: Vec<&String> = names.iter().filter(|n| n.starts_with("shop.")).collect();
        assert_eq!(
            shop_services.len(),
            public.len(),
            "{service:?} lists another service's API: {names:?}"
        );
        // Health was already checked by Stack::start (SERVING).
    }
    Ok(())
}
