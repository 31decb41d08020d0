//! svc-gateway settings.

use std::{num::NonZeroU32, path::PathBuf, str::FromStr, sync::Arc, time::Duration};

use http::HeaderValue;
use shop_runtime::{
    config::{ConfigError, EnvReader, ServiceBasics},
    identity::{self, IdentityIssuer},
    registry::{self, ServiceSpec},
    upstream::{ReachSettings, Replicas},
};

/// Issuer and audience of development tokens when `JWT_ISSUER` /
/// `JWT_AUDIENCE` are not set.
pub const DEV_ISSUER: &str = "shop-dev";
pub const DEV_AUDIENCE: &str = "shop";

#[derive(Debug, Clone)]
pub struct Config {
    pub basics: ServiceBasics,
    pub upstreams: UpstreamUrls,
    /// `IDENTITY_SIGNING_KEY_FILE`: the key the gateway vouches for callers
    /// with (an Ed25519 PKCS#8 PEM file; the services hold its public half).
    pub identity: Arc<IdentityIssuer>,
    /// `REQUEST_TIMEOUT`: the longest a unary call may take (default 10s); a
    /// shorter client `grpc-timeout` wins. Server streams are bounded by it
    /// only until the upstream answers with headers.
    pub request_timeout: Duration,
    /// How the replicas are reached; `UPSTREAM_HEALTH_INTERVAL` is also how
    /// often the gateway's own health is brought in line with theirs.
    pub reach: ReachSettings,
    pub auth: AuthSettings,
    /// `DEV_AUTH=on` serves `DevAuthService/IssueToken` (default off).
    pub dev_auth: Option<DevAuthSettings>,
    pub rate_limits: RateLimitSettings,
    /// `MAX_MESSAGE_BYTES`: the largest request message accepted (default 4 MiB).
    pub max_message_bytes: usize,
    /// `CORS_ALLOWED_ORIGINS`: browser origins allowed to call (comma list, or `*`).
    pub cors: CorsOrigins,
    /// `STOREFRONT_DIR`: a built storefront (`web/dist`) to serve to plain
    /// GET requests, so the browser calls gRPC-web on its own origin. Unset:
    /// the port serves gRPC only.
    pub storefront: Option<StorefrontSettings>,
}

/// The storefront the gateway serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorefrontSettings {
    pub dir: PathBuf,
    /// Origins besides its own the page calls, from the `config.json`
    /// beside it (read at start): its `gatewayUrl` and its OpenID provider's
    /// `issuer`, whose token endpoint is expected on the same origin.
    pub connects_to: Vec<String>,
}

/// Where each service behind the gateway listens: every service of the
/// registry that serves something, at its first URL variable (`ORDER_URL`,
/// `INVENTORY_URL`, …; default its port on 127.0.0.1). A variable may name
/// several URLs, comma-separated, and every host name is resolved again and
/// again (`UPSTREAM_RESOLVE_INTERVAL`): the gateway balances over every
/// replica a list or a headless Service's DNS name gives.
#[derive(Debug, Clone)]
pub struct UpstreamUrls(Vec<(&'static ServiceSpec, Replicas)>);

impl UpstreamUrls {
    fn read(env: &mut EnvReader) -> Self {
        let upstreams = registry::ALL
            .iter()
            .copied()
            .filter(|spec| !spec.serves.is_empty())
            .map(|spec| {
                let var = spec.url_vars.first().copied().unwrap_or_default();
                (spec, Replicas::read(env, spec, var))
            })
            .collect();
        Self(upstreams)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&'static ServiceSpec, &Replicas)> {
        self.0.iter().map(|(spec, replicas)| (*spec, replicas))
    }

    /// The URL setting of the service called `name`.
    pub fn of(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(spec, _)| spec.name == name)
            .map(|(_, replicas)| replicas.urls.as_str())
    }
}

/// Where verification keys come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwksSource {
    File(PathBuf),
    Url(String),
}

#[derive(Debug, Clone)]
pub struct AuthSettings {
    /// `JWKS_FILE` or `JWKS_URL`; optional only with dev auth on.
    pub jwks: Option<JwksSource>,
    /// `JWT_ISSUER`: the expected `iss`.
    pub issuer: String,
    /// `JWT_AUDIENCE`: the expected `aud`.
    pub audience: String,
    /// `JWT_LEEWAY`: clock skew allowed on `exp` and `nbf` (default 30s).
    pub leeway: Duration,
    /// `JWKS_REFRESH_INTERVAL`: periodic reload of the key set (default 10m).
    pub jwks_refresh_interval: Duration,
    /// `JWKS_MIN_REFRESH_INTERVAL`: a token with an unknown `kid` reloads the
    /// key set at most this often (default 30s), so junk tokens cannot turn
    /// the gateway into a load generator against the identity provider.
    pub jwks_min_refresh_interval: Duration,
}

#[derive(Debug, Clone)]
pub struct DevAuthSettings {
    /// `DEV_AUTH_KEY_FILE`: an Ed25519 PKCS#8 PEM private key, made and
    /// written there when the file does not exist. Unset: a key for this
    /// process only (tokens then die with it).
    pub key_file: Option<PathBuf>,
    /// `DEV_AUTH_TOKEN_TTL` (default 1h).
    pub token_ttl: Duration,
}

/// A sustained rate and the burst allowed above it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub per_second: NonZeroU32,
    pub burst: NonZeroU32,
}

#[derive(Debug, Clone, Copy)]
pub struct RateLimitSettings {
    /// `RATE_LIMIT_USER_PER_SECOND` / `RATE_LIMIT_USER_BURST` (50/s, burst 100).
    pub user: Rate,
    /// `RATE_LIMIT_ORDER_PER_SECOND` / `RATE_LIMIT_ORDER_BURST`: PlaceOrder and
    /// Checkout per user, on top of the user limit (5/s, burst 10).
    pub order: Rate,
    /// `RATE_LIMIT_ANONYMOUS_PER_SECOND` / `RATE_LIMIT_ANONYMOUS_BURST`: calls
    /// without a token, per peer address (20/s, burst 40).
    pub anonymous: Rate,
    /// `RATE_LIMIT_EVICTION_INTERVAL`: how often idle keys are dropped (default 60s).
    pub eviction_interval: Duration,
}

/// Which browser origins may call the gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CorsOrigins {
    /// No cross-origin calls: the storefront must be served from the same origin.
    SameOriginOnly,
    /// `*`: any origin (development).
    Any,
    List(Vec<HeaderValue>),
}

/// `on`/`off` (also `true`/`false`, `1`/`0`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Switch(bool);

impl FromStr for Switch {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "on" | "true" | "1" | "yes" => Ok(Self(true)),
            "off" | "false" | "0" | "no" => Ok(Self(false)),
            other => Err(format!("expected on or off, got {other:?}")),
        }
    }
}

fn nonzero(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN)
}

impl shop_runtime::config::HasBasics for Config {
    fn basics(&self) -> &shop_runtime::config::ServiceBasics {
        &self.basics
    }
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::read(EnvReader::from_process_env())
    }

    pub fn read(mut env: EnvReader) -> Result<Self, ConfigError> {
        let basics = ServiceBasics::read(&mut env, &shop_runtime::registry::GATEWAY);
        let upstreams = UpstreamUrls::read(&mut env);
        let identity = IdentityIssuer::from_env(&mut env);
        let request_timeout = env.positive_duration("REQUEST_TIMEOUT", Duration::from_secs(10));
        let reach = ReachSettings::read(&mut env);

        let dev_auth_on = env.or("DEV_AUTH", Switch(false), "on or off").0;
        let dev_auth = dev_auth_on.then(|| DevAuthSettings {
            key_file: env.optional("DEV_AUTH_KEY_FILE", "a path to an Ed25519 PKCS#8 PEM key"),
            token_ttl: env.duration("DEV_AUTH_TOKEN_TTL", Duration::from_secs(3600)),
        });
        let auth = read_auth(&mut env, dev_auth_on);

        let rate_limits = RateLimitSettings {
            user: read_rate(&mut env, "USER", 50, 100),
            order: read_rate(&mut env, "ORDER", 5, 10),
            anonymous: read_rate(&mut env, "ANONYMOUS", 20, 40),
            eviction_interval: env.duration("RATE_LIMIT_EVICTION_INTERVAL", Duration::from_secs(60)),
        };
        let max_message_bytes: usize = env.or("MAX_MESSAGE_BYTES", 4 * 1024 * 1024, "a size in bytes");
        if max_message_bytes == 0 {
            env.problem("MAX_MESSAGE_BYTES must be positive");
        }
        let cors = read_cors(&mut env);
        let storefront = read_storefront(&mut env);

        env.finish()?;
        Ok(Self {
            basics,
            upstreams,
            identity: identity.ok_or_else(|| ConfigError::missing(identity::SIGNING_KEY_FILE))?,
            request_timeout,
            reach,
            auth,
            dev_auth,
            rate_limits,
            max_message_bytes,
            cors,
            storefront,
        })
    }
}

fn read_auth(env: &mut EnvReader, dev_auth_on: bool) -> AuthSettings {
    let file: Option<PathBuf> = env.optional("JWKS_FILE", "a path to a JWKS JSON file");
    let url: Option<String> = env.optional(
        "JWKS_URL",
        "e.g. https://idp.example/realms/shop/protocol/openid-connect/certs",
    );
    let jwks = match (file, url) {
        (Some(_), Some(_)) => {
            env.problem("set JWKS_FILE or JWKS_URL, not both");
            None
        }
        (Some(path), None) => Some(JwksSource::File(path)),
        (None, Some(url)) => {
            if let Err(why) = check_jwks_url(&url) {
                env.problem(format!("JWKS_URL={url:?} {why}"));
            }
            Some(JwksSource::Url(url))
        }
        (None, None) => {
            if !dev_auth_on {
                env.problem("JWKS_FILE or JWKS_URL is not set (where token signing keys come from; or DEV_AUTH=on)");
            }
            None
        }
    };
    let (issuer, audience) = if dev_auth_on {
        (
            env.or("JWT_ISSUER", DEV_ISSUER.to_owned(), "the expected iss claim"),
            env.or("JWT_AUDIENCE", DEV_AUDIENCE.to_owned(), "the expected aud claim"),
        )
    } else {
        (
            env.required(
                "JWT_ISSUER",
                "the expected iss claim, e.g. https://idp.example/realms/shop",
            )
            .unwrap_or_default(),
            env.required("JWT_AUDIENCE", "the expected aud claim, e.g. the client id")
                .unwrap_or_default(),
        )
    };
    AuthSettings {
        jwks,
        issuer,
        audience,
        leeway: env.duration("JWT_LEEWAY", Duration::from_secs(30)),
        jwks_refresh_interval: env.duration("JWKS_REFRESH_INTERVAL", Duration::from_secs(600)),
        jwks_min_refresh_interval: env.duration("JWKS_MIN_REFRESH_INTERVAL", Duration::from_secs(30)),
    }
}

/// Keys fetched over plain http could be swapped by anyone on the path, so
/// http is for an identity provider on this machine only.
fn check_jwks_url(raw: &str) -> Result<(), &'static str> {
    let url = reqwest::Url::parse(raw).map_err(|_| "is not a URL (use https://<host>/…)")?;
    let host = url.host_str().unwrap_or_default();
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    match url.scheme() {
        "https" => Ok(()),
        "http" if loopback => Ok(()),
        "http" => Err(
            "fetches the signing keys over plain http, where anyone on the path can replace them: \
             use https://, or for development http:// to a loopback host (127.0.0.1, [::1], localhost)",
        ),
        _ => Err("must be an https:// URL (http:// only to loopback in development)"),
    }
}

fn read_storefront(env: &mut EnvReader) -> Option<StorefrontSettings> {
    let dir: PathBuf = env.optional("STOREFRONT_DIR", "a directory, e.g. web/dist")?;
    if !dir.join("index.html").is_file() {
        env.problem(format!(
            "STOREFRONT_DIR={} has no index.html (build it: cd web && npm run build)",
            dir.display()
        ));
    }
    let page_config = dir.join("config.json");
    let connects_to = match std::fs::read(&page_config) {
        Ok(bytes) => page_origins(&bytes).unwrap_or_else(|why| {
            env.problem(format!("STOREFRONT_DIR: {}: {why}", page_config.display()));
            Vec::new()
        }),
        // Without one, the page calls its own origin only (web/src/config.ts).
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => {
            env.problem(format!("STOREFRONT_DIR: cannot read {}: {e}", page_config.display()));
            Vec::new()
        }
    };
    Some(StorefrontSettings { dir, connects_to })
}

/// The origins a storefront `config.json` (web/src/config.ts) makes the
/// page call: its gateway's and its OpenID provider's.
fn page_origins(bytes: &[u8]) -> Result<Vec<String>, String> {
    #[derive(serde::Deserialize)]
    struct PageConfig {
        #[serde(rename = "gatewayUrl")]
        gateway_url: Option<String>,
        auth: Option<PageAuth>,
    }
    #[derive(serde::Deserialize)]
    #[serde(tag = "kind", rename_all = "lowercase")]
    enum PageAuth {
        Dev,
        Oidc { issuer: String },
    }
    let config: PageConfig = serde_json::from_slice(bytes).map_err(|e| format!("not a storefront config: {e}"))?;
    let issuer = match config.auth {
        Some(PageAuth::Oidc { issuer }) => Some(issuer),
        Some(PageAuth::Dev) | None => None,
    };
    let mut origins = Vec::new();
    for url in config.gateway_url.iter().chain(issuer.iter()) {
        let origin = reqwest::Url::parse(url)
            .ok()
            .filter(|u| matches!(u.scheme(), "https" | "http"))
            .map(|u| u.origin().ascii_serialization())
            .ok_or_else(|| format!("{url:?} is not an http(s) URL"))?;
        if !origins.contains(&origin) {
            origins.push(origin);
        }
    }
    Ok(origins)
}

fn read_rate(env: &mut EnvReader, kind: &str, per_second: u32, burst: u32) -> Rate {
    let rate_key = format!("RATE_LIMIT_{kind}_PER_SECOND");
    let burst_key = format!("RATE_LIMIT_{kind}_BURST");
    Rate {
        per_second: env.or(&rate_key, nonzero(per_second), "a positive integer"),
        burst: env.or(&burst_key, nonzero(burst), "a positive integer"),
    }
}

fn read_cors(env: &mut EnvReader) -> CorsOrigins {
    let raw: String = env.or("CORS_ALLOWED_ORIGINS", String::new(), "");
    let entries: Vec<&str> = raw.split(',').map(str::trim).filter(|s| !s.is_empty()).collect();
    if entries.is_empty() {
        return CorsOrigins::SameOriginOnly;
    }
    if entries.contains(&"*") {
        if entries.len() > 1 {
            env.problem("CORS_ALLOWED_ORIGINS: `*` cannot be combined with other origins");
        }
        return CorsOrigins::Any;
    }
    let mut origins = Vec::new();
    for entry in entries {
        let looks_like_origin = (entry.starts_with("https://") || entry.starts_with("http://"))
            && !entry.trim_end_matches('/').contains(|c: char| c.is_whitespace())
            && entry.matches('/').count() == 2;
        match HeaderValue::from_str(entry) {
            Ok(value) if looks_like_origin => origins.push(value),
            _ => env.problem(format!(
                "CORS_ALLOWED_ORIGINS: {entry:?} is not an origin (scheme://host[:port], no path)"
            )),
        }
    }
    CorsOrigins::List(origins)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signing_key_file() -> String {
        identity::throwaway_keys().signing.display().to_string()
    }

    fn read(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let key = signing_key_file();
        Config::read(EnvReader::from_map(
            pairs
                .iter()
                .copied()
                .chain([(identity::SIGNING_KEY_FILE, key.as_str())]),
        ))
    }

    #[test]
    fn the_identity_key_must_be_there_and_be_a_private_key() {
        let missing = Config::read(EnvReader::from_map([("DEV_AUTH", "on")])).expect_err("no signing key");
        assert!(
            missing.to_string().contains("IDENTITY_SIGNING_KEY_FILE is not set"),
            "{missing}"
        );
        let public = signing_key_file().replace("signing.pem", "verifying.pem");
        let wrong = Config::read(EnvReader::from_map([
            ("DEV_AUTH", "on"),
            (identity::SIGNING_KEY_FILE, public.as_str()),
        ]))
        .expect_err("a public key cannot sign");
        assert!(
            wrong.to_string().contains("not an Ed25519 PKCS#8 PEM private key"),
            "{wrong}"
        );
        assert!(!format!("{:?}", read(&[("DEV_AUTH", "on")]).expect("valid").identity).contains("PRIVATE"));
    }

    #[test]
    fn production_needs_keys_issuer_and_audience_and_reports_all_at_once() {
        let err = read(&[("RATE_LIMIT_USER_BURST", "0"), ("CORS_ALLOWED_ORIGINS", "example.com")])
            .expect_err("missing auth settings must fail");
        let text = err.to_string();
        for key in [
            "JWKS_FILE",
            "JWT_ISSUER",
            "JWT_AUDIENCE",
            "RATE_LIMIT_USER_BURST",
            "CORS_ALLOWED_ORIGINS",
        ] {
            assert!(text.contains(key), "{key} missing from {text}");
        }
    }

    #[test]
    fn dev_auth_alone_is_enough_and_defaults_are_the_documented_ones() {
        let config = read(&[("DEV_AUTH", "on")]).expect("dev auth needs nothing else");
        assert_eq!(config.basics.grpc_addr.port(), 8080);
        assert_eq!(config.basics.admin_addr.port(), 9080);
        assert_eq!(config.auth.issuer, DEV_ISSUER);
        assert_eq!(config.auth.audience, DEV_AUDIENCE);
        assert_eq!(config.request_timeout, Duration::from_secs(10));
        assert_eq!(config.max_message_bytes, 4 * 1024 * 1024);
        assert_eq!(config.cors, CorsOrigins::SameOriginOnly);
        assert_eq!(config.upstreams.of("svc-payment"), Some("http://127.0.0.1:50053"));
        let dev = config.dev_auth.expect("dev auth on");
        assert_eq!(dev.token_ttl, Duration::from_secs(3600));
        assert_eq!(config.rate_limits.order.per_second.get(), 5);
    }

    #[test]
    fn dev_auth_is_off_by_default() {
        let config = read(&[("JWKS_FILE", "/keys.json"), ("JWT_ISSUER", "i"), ("JWT_AUDIENCE", "a")])
            .expect("valid production settings");
        assert!(config.dev_auth.is_none());
        assert_eq!(config.auth.jwks, Some(JwksSource::File("/keys.json".into())));
    }

    #[test]
    fn cors_origins() {
        let any = read(&[("DEV_AUTH", "on"), ("CORS_ALLOWED_ORIGINS", "*")]).expect("wildcard");
        assert_eq!(any.cors, CorsOrigins::Any);
        let list = read(&[
            ("DEV_AUTH", "on"),
            ("CORS_ALLOWED_ORIGINS", "http://localhost:5173, https://shop.example"),
        ])
        .expect("list");
        assert!(matches!(list.cors, CorsOrigins::List(ref o) if o.len() == 2));
        assert!(
            read(&[
                ("DEV_AUTH", "on"),
                ("CORS_ALLOWED_ORIGINS", "https://shop.example/path")
            ])
            .is_err()
        );
    }

    #[test]
    fn keys_are_fetched_over_https_or_from_this_machine_only() {
        let jwks_url = |url: &str| {
            read(&[
                ("JWKS_URL", url),
                ("JWT_ISSUER", "i"),
                ("JWT_AUDIENCE", "a"),
                ("MAX_MESSAGE_BYTES", "0"),
            ])
        };
        let err = jwks_url("http://idp.example/certs").expect_err("plain http to another host");
        let text = err.to_string();
        assert!(
            text.contains("JWKS_URL") && text.contains("https://") && text.contains("loopback"),
            "{text}"
        );
        assert!(
            text.contains("MAX_MESSAGE_BYTES"),
            "reported with the other problems: {text}"
        );
        for refused in [
            "http://10.0.0.1/certs",
            "http://localhost.evil.example/certs",
            "ftp://idp.example/certs",
        ] {
            assert!(jwks_url(refused).is_err(), "{refused}");
        }

        let fine = |url: &str| {
            read(&[("JWKS_URL", url), ("JWT_ISSUER", "i"), ("JWT_AUDIENCE", "a")])
                .map(|config| config.auth.jwks)
                .map_err(|e| e.to_string())
        };
        for accepted in [
            "https://idp.example/realms/shop/protocol/openid-connect/certs",
            "http://127.0.0.1:8081/certs",
            "http://127.5.6.7/certs",
            "http://[::1]:8081/certs",
            "http://localhost:8081/certs",
            "http://LOCALHOST/certs",
        ] {
            assert_eq!(
                fine(accepted),
                Ok(Some(JwksSource::Url(accepted.to_owned()))),
                "{accepted}"
            );
        }
    }

    #[test]
    fn the_storefront_config_names_the_origins_the_page_calls() {
        let site = tempfile::tempdir().expect("tempdir");
        std::fs::write(site.path().join("index.html"), "<h1>Shop</h1>").expect("index.html");
        let dir = site.path().display().to_string();
        let storefront = || read(&[("DEV_AUTH", "on"), ("STOREFRONT_DIR", &dir)]).map(|c| c.storefront);
        let connects_to = || storefront().expect("valid").expect("a storefront").connects_to;
        assert_eq!(
            connects_to(),
            Vec::<String>::new(),
            "no config.json: its own origin only"
        );

        let config_json = site.path().join("config.json");
        std::fs::write(&config_json, r#"{"auth": {"kind": "dev"}}"#).expect("write");
        assert_eq!(connects_to(), Vec::<String>::new());
        std::fs::write(
            &config_json,
            r#"{"gatewayUrl": "https://api.shop.example/", "auth": {"kind": "oidc",
                "issuer": "https://id.shop.example/realms/shop", "clientId": "shop-web"}}"#,
        )
        .expect("write");
        assert_eq!(connects_to(), ["https://api.shop.example", "https://id.shop.example"]);

        std::fs::write(&config_json, r#"{"gatewayUrl": "javascript:alert(1)"}"#).expect("write");
        let err = storefront().expect_err("not an http(s) URL").to_string();
        assert!(err.contains("config.json") && err.contains("javascript:"), "{err}");
        std::fs::write(&config_json, "{").expect("write");
        let err = storefront().expect_err("not JSON").to_string();
        assert!(err.contains("config.json"), "{err}");
    }

    #[test]
    fn both_key_sources_are_refused() {
        let err = read(&[("DEV_AUTH", "on"), ("JWKS_FILE", "/a"), ("JWKS_URL", "https://b")]).expect_err("both");
        assert!(err.to_string().contains("not both"));
    }
}
