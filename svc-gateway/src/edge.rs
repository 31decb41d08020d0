//! The gateway's request path: every call, gRPC or (already translated)
//! gRPC-web, passes here. In order: is it gRPC, which RPC is it (unknown →
//! `UNIMPLEMENTED`), who is calling (a bearer token, verified even where
//! none is needed; one not verified recently first spends a call of the
//! peer's anonymous budget), may they (the contract's access policy), are
//! they within their rate, then the gateway vouches for the caller with an identity
//! token of its own ([`shop_runtime::identity`]) in place of anything the
//! client sent, and the call goes to the gateway's own services or is
//! forwarded to its owner.

use std::{
    collections::HashMap,
    convert::Infallible,
    future::Future,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use http::{HeaderMap, HeaderValue, Method, Request, Response, header};
use shop_runtime::{
    identity::{IDENTITY_HEADER, IdentityIssuer},
    series,
};
use tonic::{body::Body, service::Routes};
use tower::ServiceExt;

use crate::{
    access::{Access, AccessTable, MethodPolicy},
    authentication::{Identity, TokenVerifier},
    error::Error,
    forwarding::{self, CallPlan},
    rate_limits::{RateKey, RateLimits},
    upstreams::Upstreams,
};

/// The TCP peer of a request, put into its extensions by the server.
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub SocketAddr);

/// Marks a request that arrived as gRPC-web (before its translation).
#[derive(Debug, Clone, Copy)]
pub struct ArrivedAsGrpcWeb;

/// Headers that carry a call's outcome.
const STATUS_HEADERS: [&str; 3] = ["grpc-status", "grpc-message", "grpc-status-details-bin"];

/// Turns a trailers-only answer (status in the headers, no body) into
/// headers plus a body that ends with the status as trailers. gRPC-web then
/// encodes it as a trailers frame, which every gRPC-web client reads, and
/// which a browser can read without CORS exposing the status headers.
fn status_as_trailers(response: Response<Body>) -> Response<Body> {
    if !response.headers().contains_key("grpc-status") || !http_body::Body::is_end_stream(response.body()) {
        return response;
    }
    let (mut parts, _empty) = response.into_parts();
    let mut trailers = HeaderMap::new();
    for name in STATUS_HEADERS {
        if let Some(value) = parts.headers.remove(name) {
            trailers.insert(name, value);
        }
    }
    for name in [crate::error::RETRY_AFTER_MS, crate::error::GRPC_RETRY_PUSHBACK_MS] {
        if let Some(value) = parts.headers.get(name) {
            trailers.insert(name, value.clone());
        }
    }
    Response::from_parts(parts, Body::new(OnlyTrailers(Some(trailers))))
}

/// A body of nothing but trailers.
struct OnlyTrailers(Option<HeaderMap>);

impl http_body::Body for OnlyTrailers {
    type Data = bytes::Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<bytes::Bytes>, Infallible>>> {
        Poll::Ready(self.0.take().map(|trailers| Ok(http_body::Frame::trailers(trailers))))
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_none()
    }
}

/// Calls that create orders get the stricter per-user limit.
const ORDER_CREATING: [&str; 2] = [
    "/shop.order.v1.OrderService/PlaceOrder",
    "/shop.cart.v1.CartService/Checkout",
];

/// Services the gateway answers itself, besides the development tokens.
const GATEWAY_OWN_PUBLIC: [(&str, &str, bool, bool); 4] = [
    // (path, service, client streaming, server streaming)
    ("/grpc.health.v1.Health/Check", "grpc.health.v1.Health", false, false),
    ("/grpc.health.v1.Health/Watch", "grpc.health.v1.Health", false, true),
    (
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        "grpc.reflection.v1.ServerReflection",
        true,
        true,
    ),
    (
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        "grpc.reflection.v1alpha.ServerReflection",
        true,
        true,
    ),
];

pub const DEV_AUTH_SERVICE: &str = "shop.auth.v1.DevAuthService";

enum Destination {
    Gateway,
    Upstream(Arc<shop_runtime::upstream::Upstream>),
}

struct Route {
    policy: MethodPolicy,
    destination: Destination,
    creates_order: bool,
    /// The paths an identity token for a call of this route is good for:
    /// its own and those it calls on the caller's behalf.
    vouches_for: Vec<String>,
}

pub struct EdgeSettings {
    pub request_timeout: Duration,
    pub max_message_bytes: usize,
    pub dev_auth_enabled: bool,
}

struct EdgeState {
    routes: HashMap<String, Route>,
    verifier: Arc<TokenVerifier>,
    issuer: Arc<IdentityIssuer>,
    rate_limits: Arc<RateLimits>,
    own_services: Routes,
    settings: EdgeSettings,
}

/// The request path as a tower service (cheap to clone).
#[derive(Clone)]
pub struct Edge {
    state: Arc<EdgeState>,
}

impl Edge {
    /// Routes every RPC of `access` that has an owner. Development tokens are
    /// routed only when enabled; otherwise they look like any unknown method.
    pub fn new(
        access: &AccessTable,
        upstreams: &Upstreams,
        own_services: Routes,
        verifier: Arc<TokenVerifier>,
        issuer: Arc<IdentityIssuer>,
        rate_limits: Arc<RateLimits>,
        settings: EdgeSettings,
    ) -> Self {
        let mut routes = HashMap::new();
        for (path, policy) in access.iter() {
            let destination = if policy.service == DEV_AUTH_SERVICE {
                if !settings.dev_auth_enabled {
                    continue;
                }
                Destination::Gateway
            } else if let Some(upstream) = upstreams.owner_of(&policy.service) {
                Destination::Upstream(upstream.clone())
            } else {
                continue;
            };
            routes.insert(
                path.to_owned(),
                Route {
                    policy: policy.clone(),
                    destination,
                    creates_order: ORDER_CREATING.contains(&path),
                    vouches_for: access.vouched_paths(path),
                },
            );
        }
        for (path, service, client_streaming, server_streaming) in GATEWAY_OWN_PUBLIC {
            routes.insert(
                path.to_owned(),
                Route {
                    policy: MethodPolicy {
                        service: service.to_owned(),
                        access: Access::Public,
                        client_streaming,
                        server_streaming,
                        calls_on_behalf: Vec::new(),
                    },
                    destination: Destination::Gateway,
                    creates_order: false,
                    vouches_for: vec![path.to_owned()],
                },
            );
        }
        Self {
            state: Arc::new(EdgeState {
                routes,
                verifier,
                issuer,
                rate_limits,
                own_services,
                settings,
            }),
        }
    }
}

impl tower::Service<Request<Body>> for Edge {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let state = self.state.clone();
        Box::pin(async move {
            let started = Instant::now();
            let grpc_web = request.extensions().get::<ArrivedAsGrpcWeb>().is_some();
            let known = state.routes.contains_key(request.uri().path());
            let label = if known {
                request.uri().path().to_owned()
            } else {
                "unknown".to_owned()
            };
            let response = match state.handle(request).await {
                Ok(response) => response,
                Err(e) => {
                    tracing::debug!(method = label, error = %e, "refused at the edge");
                    e.count();
                    e.into_response()
                }
            };
            metrics::histogram!(series::GATEWAY_RESPONSE_HEADERS_SECONDS, "method" => label)
                .record(started.elapsed().as_secs_f64());
            // Calls are counted by code around the edge (`grpc_metrics`).
            let decided = response.headers().contains_key("grpc-status");
            Ok(if decided && grpc_web {
                status_as_trailers(response)
            } else {
                response
            })
        })
    }
}

/// The bearer token of `authorization`, if any.
fn bearer_token(headers: &HeaderMap) -> Result<Option<&str>, Error> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let text = value
        .to_str()
        .map_err(|_| Error::MissingCredentials("authorization metadata must be ASCII: Bearer <token>"))?;
    match text.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() => {
            Ok(Some(token.trim()))
        }
        _ => Err(Error::MissingCredentials(
            "authorization metadata must be: Bearer <token>",
        )),
    }
}

fn authorize(access: Access, identity: Option<&Identity>) -> Result<(), Error> {
    let signed_in = || {
        identity.ok_or(Error::MissingCredentials(
            "this method needs a signed-in user: send authorization: Bearer <token>",
        ))
    };
    match access {
        Access::Unspecified => Err(Error::PermissionDenied("this method has no access policy")),
        Access::Internal => Err(Error::PermissionDenied("this method is not served through the gateway")),
        // Dev-only methods are routed only while dev auth is on.
        Access::Public | Access::DevOnly => Ok(()),
        Access::Customer => {
            let identity = signed_in()?;
            if identity.has_role("customer") || identity.has_role("admin") {
                Ok(())
            } else {
                Err(Error::PermissionDenied("this method needs the customer role"))
            }
        }
        Access::Admin => {
            if signed_in()?.has_role("admin") {
                Ok(())
            } else {
                Err(Error::PermissionDenied("this method needs the admin role"))
            }
        }
    }
}

fn is_grpc(request: &Request<Body>) -> bool {
    request.method() == Method::POST
        && request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct == "application/grpc" || ct.starts_with("application/grpc+"))
}

impl EdgeState {
    async fn handle(&self, mut request: Request<Body>) -> Result<Response<Body>, Error> {
        if !is_grpc(&request) {
            return Err(Error::NotGrpc(
                "not a gRPC call: expected POST with content-type application/grpc (or gRPC-web)",
            ));
        }
        let path = request.uri().path();
        let route = self
            .routes
            .get(path)
            .ok_or_else(|| Error::UnknownMethod(path.to_owned()))?;

        let peer = request
            .extensions()
            .get::<PeerAddr>()
            .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |p| p.0.ip());
        let identity = match bearer_token(request.headers())? {
            Some(token) => match self.verifier.remembered(token) {
                Some(identity) => Some(identity),
                None => {
                    // Until its signature is checked a token proves nothing:
                    // the check is paid from the peer's anonymous budget
                    // first, so junk tokens past it cost no CPU.
                    self.rate_limits
                        .check(RateKey::Peer(peer), false)
                        .map_err(Error::rate_limited)?;
                    Some(self.verifier.verify(token).await?)
                }
            },
            None => None,
        };
        authorize(route.policy.access, identity.as_ref())?;

        let rate_key = match &identity {
            Some(identity) => RateKey::User(identity.user_id.as_str()),
            None => RateKey::Peer(peer),
        };
        self.rate_limits
            .check(rate_key, route.creates_order)
            .map_err(Error::rate_limited)?;

        // A declared length over the limit is refused before any upstream work.
        let limit = self.settings.max_message_bytes;
        let declared_length = request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        if !route.policy.client_streaming && declared_length.is_some_and(|n| n > limit.saturating_add(5)) {
            return Err(Error::MessageTooLarge { limit });
        }

        // Only the gateway speaks for the caller, and only to the methods
        // this call may reach.
        let headers = request.headers_mut();
        headers.remove(IDENTITY_HEADER);
        headers.remove(header::AUTHORIZATION);
        if let Some(identity) = &identity {
            let token = self
                .issuer
                .issue(&identity.user_id, &identity.roles, &route.vouches_for);
            let token = HeaderValue::from_str(&token)
                .map_err(|_| Error::Internal("an identity token is not a header value".into()))?;
            headers.insert(IDENTITY_HEADER, token);
        }

        match &route.destination {
            Destination::Gateway => match self.own_services.clone().oneshot(request).await {
                Ok(response) => Ok(response),
                Err(never) => match never {},
            },
            Destination::Upstream(upstream) => {
                let client_timeout = request
                    .headers()
                    .get("grpc-timeout")
                    .and_then(forwarding::parse_grpc_timeout);
                let plan = CallPlan::new(
                    client_timeout,
                    self.settings.request_timeout,
                    route.policy.server_streaming || route.policy.client_streaming,
                    limit,
                );
                forwarding::forward(upstream, request, plan).await
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    fn identity(roles: &[&str]) -> Identity {
        Identity {
            user_id: shop_runtime::identity::UserId::parse("alice").expect("user id"),
            roles: roles.iter().map(|r| (*r).to_owned()).collect(),
        }
    }

    #[test]
    fn access_policies() {
        let customer = identity(&["customer"]);
        let admin = identity(&["admin"]);
        let nobody = identity(&["offline_access"]);
        assert!(authorize(Access::Public, None).is_ok());
        assert!(matches!(
            authorize(Access::Customer, None),
            Err(Error::MissingCredentials(_))
        ));
        assert!(authorize(Access::Customer, Some(&customer)).is_ok());
        assert!(authorize(Access::Customer, Some(&admin)).is_ok());
        assert!(matches!(
            authorize(Access::Customer, Some(&nobody)),
            Err(Error::PermissionDenied(_))
        ));
        assert!(matches!(
            authorize(Access::Admin, Some(&customer)),
            Err(Error::PermissionDenied(_))
        ));
        assert!(authorize(Access::Admin, Some(&admin)).is_ok());
        for never in [Access::Unspecified, Access::Internal] {
            assert!(matches!(
                authorize(never, Some(&admin)),
                Err(Error::PermissionDenied(_))
            ));
        }
    }

    #[tokio::test]
    async fn grpc_web_answers_carry_the_status_as_trailers() {
        let response = Error::UnknownMethod("/x.Y/Z".into()).into_response();
        let (parts, body) = status_as_trailers(response).into_parts();
        assert!(parts.headers.get("grpc-status").is_none());
        let trailers = body
            .collect()
            .await
            .expect("body")
            .trailers()
            .cloned()
            .expect("trailers");
        assert_eq!(trailers["grpc-status"], "12");
    }

    /// An edge whose only reachable routes are the gateway's own (health),
    /// verifying tokens of `signer`, with a small anonymous budget.
    async fn edge_for(signer: &crate::dev_tokens::Ed25519Signer) -> (Edge, Arc<TokenVerifier>) {
        use std::num::NonZeroU32;

        use shop_runtime::config::EnvReader;

        use crate::config::{AuthSettings, Config, Rate, RateLimitSettings};

        let signing_key = shop_runtime::identity::throwaway_keys().signing.display().to_string();
        let config = Config::read(EnvReader::from_map([
            ("DEV_AUTH", "on"),
            (shop_runtime::identity::SIGNING_KEY_FILE, signing_key.as_str()),
        ]))
        .expect("config");
        let auth = AuthSettings {
            jwks: None,
            issuer: "shop-dev".into(),
            audience: "shop".into(),
            leeway: Duration::from_secs(30),
            jwks_refresh_interval: Duration::from_secs(600),
            jwks_min_refresh_interval: Duration::from_secs(30),
        };
        let verifier = TokenVerifier::start(&auth, vec![signer.public_jwk()])
            .await
            .expect("verifier");
        let rate = |per_second, burst| Rate {
            per_second: NonZeroU32::new(per_second).expect("nonzero"),
            burst: NonZeroU32::new(burst).expect("nonzero"),
        };
        let rate_limits = Arc::new(RateLimits::new(&RateLimitSettings {
            user: rate(1000, 1000),
            order: rate(1000, 1000),
            anonymous: rate(1, 3),
            eviction_interval: Duration::from_secs(60),
        }));
        let (_, health) = tonic_health::server::health_reporter();
        let edge = Edge::new(
            &AccessTable::shop().expect("access table"),
            &Upstreams::new(&config.upstreams, config.reach),
            Routes::new(health),
            verifier.clone(),
            config.identity.clone(),
            rate_limits,
            EdgeSettings {
                request_timeout: Duration::from_secs(5),
                max_message_bytes: 1024,
                dev_auth_enabled: false,
            },
        );
        (edge, verifier)
    }

    /// The gRPC status of a health check carrying `token`, from 192.0.2.7.
    async fn health_check_status(edge: &Edge, token: &str) -> Option<String> {
        let mut request = Request::post("/grpc.health.v1.Health/Check")
            .header(header::CONTENT_TYPE, "application/grpc")
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            // An empty HealthCheckRequest, framed.
            .body(Body::new(http_body_util::Full::new(bytes::Bytes::from_static(&[0; 5]))))
            .expect("request");
        request
            .extensions_mut()
            .insert(PeerAddr(SocketAddr::from(([192, 0, 2, 7], 40000))));
        let response = edge.clone().oneshot(request).await.expect("infallible");
        let (parts, body) = response.into_parts();
        let trailers = body.collect().await.expect("body").trailers().cloned();
        parts
            .headers
            .get("grpc-status")
            .or_else(|| trailers.as_ref().and_then(|t| t.get("grpc-status")))
            .map(|v| v.to_str().expect("ascii").to_owned())
    }

    #[tokio::test]
    async fn past_the_anonymous_budget_junk_tokens_are_refused_without_a_signature_check() {
        let signer = crate::dev_tokens::Ed25519Signer::generate("k1").expect("key");
        let (edge, verifier) = edge_for(&signer).await;
        let exp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs()
            + 600;
        let claims = |sub: &str| serde_json::json!({"sub": sub, "iss": "shop-dev", "aud": "shop", "exp": exp});
        let alice = signer.sign(&claims("alice")).expect("sign");
        assert_eq!(health_check_status(&edge, &alice).await.as_deref(), Some("0"));

        // Same kid, another key: each one gets as far as its signature.
        let impostor = crate::dev_tokens::Ed25519Signer::generate("k1").expect("key");
        let mut limited = 0;
        for n in 0..10 {
            let junk = impostor.sign(&claims(&format!("mallory-{n}"))).expect("sign");
            let checks_before = verifier.signature_checks();
            let status = health_check_status(&edge, &junk).await;
            match status.as_deref() {
                Some("16") => {}
                Some("8") => {
                    limited += 1;
                    assert_eq!(
                        verifier.signature_checks(),
                        checks_before,
                        "junk token {n} was refused by the limiter only after its signature was checked"
                    );
                }
                other => panic!("junk token {n}: grpc-status {other:?}"),
            }
        }
        assert!(limited > 0, "the anonymous budget (burst 3) never ran out");

        // A token verified before is remembered: it costs no signature and
        // is counted against its user, not the exhausted address.
        let checks_before = verifier.signature_checks();
        assert_eq!(health_check_status(&edge, &alice).await.as_deref(), Some("0"));
        assert_eq!(verifier.signature_checks(), checks_before);
    }

    #[test]
    fn bearer_tokens() {
        let mut headers = HeaderMap::new();
        assert_eq!(bearer_token(&headers).ok(), Some(None));
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("bearer abc.def.ghi"));
        assert_eq!(bearer_token(&headers).ok(), Some(Some("abc.def.ghi")));
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic dXNlcjpwdw=="));
        assert!(bearer_token(&headers).is_err());
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer "));
        assert!(bearer_token(&headers).is_err());
    }
}
