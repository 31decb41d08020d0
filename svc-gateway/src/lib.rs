//! svc-gateway: the one public port of the shop.
//!
//! Native gRPC (HTTP/2), gRPC-web (HTTP/1.1 or HTTP/2, with CORS for the
//! storefront), server reflection and gRPC health share one port (8080),
//! with the storefront's files ([`storefront`]) and the payment provider's
//! webhooks (`POST /webhooks/payments`, [`webhooks`]: handed to
//! svc-payment, never through CORS, gRPC-web or the edge).
//! Every call passes the [`edge`]:
//!
//! 1. **Routing without re-encoding** ([`forwarding`]): `/<package.Service>/<Method>`
//!    picks the owning service; request frames stream through untouched and
//!    the response, trailers included, streams back (server streaming works).
//!    Deadlines: a client's shorter `grpc-timeout` wins over `REQUEST_TIMEOUT`;
//!    streams are bounded only until the upstream answers. Unknown methods
//!    answer `UNIMPLEMENTED`.
//! 2. **A circuit breaker per upstream** ([`shop_runtime::breaker`]) with a short
//!    connect timeout: a dead service answers `UNAVAILABLE` "system busy, try
//!    later" within milliseconds, never a hang, and is probed again after a
//!    cool-down.
//! 3. **Authentication** ([`authentication`]): asymmetric JWTs only, keys from
//!    a JWKS file or URL (reloaded on an unknown `kid`, rate-limited), `alg`
//!    pinned per key, `iss`/`aud`/`exp`/`sub` required, `nbf` honoured, 30 s
//!    leeway. `sub` becomes the user id; roles come from a `roles` array claim
//!    or Keycloak's `realm_access.roles`.
//! 4. **Authorization from the contract** ([`access`]): the
//!    `(shop.options.v1.access)` option of each RPC (public, customer, admin,
//!    dev-only). The gateway then vouches for the caller to the service with
//!    an identity token it signs (`IDENTITY_SIGNING_KEY_FILE`), good for
//!    this call's method and those the contract says it calls on the
//!    caller's behalf (`(shop.options.v1.calls_on_behalf)`); anything the
//!    client sent in its place is dropped.
//! 5. **Rate limits** ([`rate_limits`]) per user, stricter for `PlaceOrder` and
//!    `Checkout`, per peer address for anonymous calls; `RESOURCE_EXHAUSTED`
//!    carries `retry-after-ms` and `grpc-retry-pushback-ms`.
//! 6. **Development tokens** ([`dev_tokens`]), only with `DEV_AUTH=on`.
//!
//! ## Pointing it at Keycloak
//!
//! ```sh
//! JWKS_URL=https://<host>/realms/<realm>/protocol/openid-connect/certs
//! JWT_ISSUER=https://<host>/realms/<realm>
//! JWT_AUDIENCE=<client id>
//! ```
//!
//! Keycloak puts the client id into `aud` only with an audience mapper on the
//! client (Client scopes → dedicated scope → "Audience"); give users the realm
//! roles `customer` and/or `admin`.

pub mod access;
pub mod authentication;
pub mod config;
pub mod dev_tokens;
pub mod edge;
pub mod error;
pub mod forwarding;
pub mod message_limit;
pub mod rate_limits;
pub mod server;
pub mod storefront;
pub mod upstreams;
pub mod webhooks;

use std::sync::Arc;

use shop_proto::auth::v1::dev_auth_service_server::DevAuthServiceServer;
use shop_runtime::{CancellationToken, Listeners, host::Host, registry};
use tonic::service::Routes;
use tonic_health::ServingStatus;

pub use config::Config;
pub use error::StartError;

/// The services reflection lists: every service of the registry that has
/// a method callable through the gateway (not one only the platform calls,
/// as svc-payment's webhook intake), and the development tokens.
pub fn public_services(access: &access::AccessTable) -> Vec<&'static str> {
    registry::ALL
        .iter()
        .flat_map(|spec| spec.serves.iter().copied())
        .filter(|service| access.has_public_methods(service))
        .chain([edge::DEV_AUTH_SERVICE])
        .collect()
}

/// Health, reflection (v1 and v1alpha) and, when on, development tokens.
fn own_services(
    health: tonic_health::pb::health_server::HealthServer<impl tonic_health::pb::health_server::Health>,
    public_services: &[&'static str],
    dev_tokens: Option<Arc<dev_tokens::DevTokenIssuer>>,
    max_message_bytes: usize,
) -> Result<Routes, tonic_reflection::server::Error> {
    let (v1, v1alpha) = shop_runtime::grpc::reflection(public_services)?;
    let mut routes = Routes::new(health).add_service(v1).add_service(v1alpha);
    if let Some(issuer) = dev_tokens {
        routes = routes.add_service(
            DevAuthServiceServer::new(dev_tokens::DevAuthApi { issuer }).max_decoding_message_size(max_message_bytes),
        );
    }
    Ok(routes)
}

/// Runs the gateway until `shutdown` is cancelled.
pub async fn run(config: Config, listeners: Listeners, shutdown: CancellationToken) -> Result<(), StartError> {
    let dev_tokens = match &config.dev_auth {
        Some(settings) => {
            tracing::warn!(
                "DEV_AUTH is ON: anyone who reaches this port can mint tokens for any user, admin included. \
                 Never run this in production."
            );
            Some(Arc::new(dev_tokens::DevTokenIssuer::new(
                settings,
                &config.auth.issuer,
                &config.auth.audience,
            )?))
        }
        None => None,
    };
    let pinned_keys = dev_tokens.iter().map(|issuer| issuer.public_jwk()).collect();
    let verifier = authentication::TokenVerifier::start(&config.auth, pinned_keys).await?;
    let access = access::AccessTable::shop()?;
    let public_services = public_services(&access);
    let upstreams = Arc::new(upstreams::Upstreams::new(&config.upstreams, config.reach));
    let rate_limits = Arc::new(rate_limits::RateLimits::new(&config.rate_limits));

    let (health, health_service) = tonic_health::server::health_reporter();
    // Not serving until the first poll of the upstreams says otherwise.
    health.set_service_status("", ServingStatus::NotServing).await;
    health
        .set_service_status(
            edge::DEV_AUTH_SERVICE,
            if dev_tokens.is_some() {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            },
        )
        .await;
    let edge = edge::Edge::new(
        &access,
        &upstreams,
        own_services(
            health_service,
            &public_services,
            dev_tokens.clone(),
            config.max_message_bytes,
        )?,
        verifier.clone(),
        config.identity.clone(),
        rate_limits.clone(),
        edge::EdgeSettings {
            request_timeout: config.request_timeout,
            max_message_bytes: config.max_message_bytes,
            dev_auth_enabled: dev_tokens.is_some(),
        },
    );

    let mut host = Host::new(&config.basics, shutdown);
    host.spawn(upstreams::resolve_periodically(
        upstreams.clone(),
        config.reach.resolve_interval,
        host.shutdown(),
    ));
    host.spawn(upstreams::report_health(
        upstreams.clone(),
        health,
        config.reach.health_interval,
        host.shutdown(),
    ));
    {
        let rate_limits = rate_limits.clone();
        let interval = config.rate_limits.eviction_interval;
        let shutdown = host.shutdown();
        host.spawn(async move { rate_limits.evict_periodically(interval, shutdown).await });
    }
    host.spawn(
        verifier
            .clone()
            .reload_periodically(config.auth.jwks_refresh_interval, host.shutdown()),
    );
    // Ready once it can verify tokens; upstream trouble shows in gRPC health
    // per service instead, so one dead service does not take the edge out of
    // a load balancer.
    host.ready_when(
        "signing keys",
        Arc::new(move || {
            let has_keys = verifier.has_keys();
            Box::pin(async move {
                if has_keys {
                    Ok(())
                } else {
                    Err("token signing keys not loaded".to_owned())
                }
            })
        }),
    );
    let webhooks = webhooks::Webhooks::new(&upstreams, rate_limits.clone(), config.request_timeout);
    let cors = server::cors_layer(&config.cors);
    let storefront = match &config.storefront {
        Some(settings) => {
            tracing::info!(dir = %settings.dir.display(), connects_to = ?settings.connects_to, "serving the storefront");
            Some(storefront::Storefront::new(settings)?)
        }
        None => None,
    };
    host.serve_with(listeners, |listener, shutdown| async move {
        server::serve(listener, edge, cors, storefront, webhooks, &public_services, shutdown).await;
        Ok(())
    })
    .await?;
    Ok(())
}
