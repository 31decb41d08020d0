//! The gateway under test: started with `run()` on free ports, verifying
//! tokens from a JWKS file written here, signed by a real Ed25519 key made
//! here (independent of the gateway's own development signer).

#![allow(dead_code)]

use std::{collections::HashMap, future::Future, net::SocketAddr, time::Duration};

use base64::Engine;
use bytes::{Buf, Bytes, BytesMut};
use ed25519_dalek::{SigningKey, pkcs8::EncodePrivateKey};
use http_body_util::{BodyExt, Full};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rand::RngCore;
use serde_json::{Value, json};
use shop_runtime::{CancellationToken, Listeners, config::EnvReader};
use tonic::{
    Request, Status,
    metadata::{AsciiMetadataValue, MetadataValue},
    service::{Interceptor, interceptor::InterceptedService},
    transport::Channel,
};

pub(crate) const ISSUER: &str = "https://idp.test/realms/shop";
pub(crate) const AUDIENCE: &str = "shop-web";

/// Fails a test that would otherwise hang.
pub(crate) async fn within<T>(what: &str, seconds: u64, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(seconds), future)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {seconds}s"))
}

pub(crate) fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

pub(crate) fn now() -> i64 {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970");
    i64::try_from(since_epoch.as_secs()).expect("seconds fit")
}

/// An identity provider in miniature: one Ed25519 key under a key id.
pub(crate) struct TestIdp {
    pub kid: String,
    key: EncodingKey,
    public: [u8; 32],
}

impl TestIdp {
    pub(crate) fn new(kid: &str) -> Self {
        let mut seed = [0u8; 32];
        rand::rng().fill_bytes(&mut seed);
        let signing = SigningKey::from_bytes(&seed);
        let der = signing.to_pkcs8_der().expect("pkcs8 encoding of a fresh key");
        Self {
            kid: kid.to_owned(),
            key: EncodingKey::from_ed_der(der.as_bytes()),
            public: signing.verifying_key().to_bytes(),
        }
    }

    pub(crate) fn public_jwk(&self) -> Value {
        json!({"kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "use": "sig", "kid": self.kid, "x": b64(&self.public)})
    }

    /// Raw public key bytes (what an attacker would use as an HMAC secret).
    pub(crate) fn public_key_bytes(&self) -> &[u8] {
        &self.public
    }

    pub(crate) fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.key).expect("sign test token")
    }

    /// A valid token for `user` with `roles`.
    pub(crate) fn token(&self, user: &str, roles: &[&str]) -> String {
        self.sign(&claims(user, roles, json!({})))
    }
}

/// Standard claims, with `extra` merged over them.
pub(crate) fn claims(user: &str, roles: &[&str], extra: Value) -> Value {
    let mut claims = json!({
        "sub": user,
        "iss": ISSUER,
        "aud": AUDIENCE,
        "iat": now(),
        "exp": now() + 600,
        "roles": roles,
    });
    if let (Some(claims), Some(extra)) = (claims.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            claims.insert(k.clone(), v.clone());
        }
    }
    claims
}

/// Every upstream dead: for what the gateway answers by itself.
pub(crate) fn no_upstreams() -> Vec<(String, String)> {
    shop_runtime::registry::ALL
        .iter()
        .flat_map(|spec| spec.url_vars)
        .map(|var| ((*var).to_owned(), shop_harness::dead_url()))
        .collect()
}

pub(crate) struct Gateway {
    pub addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub idp: TestIdp,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    _keys_dir: tempfile::TempDir,
}

impl Gateway {
    /// Starts the gateway with `settings` over generous defaults (tests make
    /// many anonymous calls from one address).
    pub(crate) async fn start(settings: Vec<(String, String)>) -> Self {
        let idp = TestIdp::new("test-key-1");
        let keys_dir = tempfile::tempdir().expect("tempdir");
        let jwks = keys_dir.path().join("jwks.json");
        std::fs::write(&jwks, json!({"keys": [idp.public_jwk()]}).to_string()).expect("write jwks");

        let mut all: Vec<(String, String)> = vec![
            ("JWKS_FILE".into(), jwks.display().to_string()),
            ("JWT_ISSUER".into(), ISSUER.into()),
            ("JWT_AUDIENCE".into(), AUDIENCE.into()),
            ("RATE_LIMIT_ANONYMOUS_PER_SECOND".into(), "1000".into()),
            ("RATE_LIMIT_ANONYMOUS_BURST".into(), "10000".into()),
            ("RATE_LIMIT_USER_PER_SECOND".into(), "1000".into()),
            ("RATE_LIMIT_USER_BURST".into(), "10000".into()),
            ("UPSTREAM_HEALTH_INTERVAL".into(), "200ms".into()),
            (
                shop_runtime::identity::SIGNING_KEY_FILE.into(),
                shop_harness::identity_keys().signing.display().to_string(),
            ),
        ];
        for (key, value) in settings {
            all.retain(|(k, _)| *k != key);
            all.push((key, value));
        }
        let listeners = Listeners::ephemeral().await.expect("listeners");
        let addr = listeners.grpc.local_addr().expect("addr");
        let admin_addr = listeners.admin.local_addr().expect("admin addr");
        let shutdown = CancellationToken::new();
        let task = shop_harness::Service::Gateway
            .launch(EnvReader::from_map(all), listeners, shutdown.clone())
            .expect("gateway config");
        Self {
            addr,
            admin_addr,
            idp,
            shutdown,
            task,
            _keys_dir: keys_dir,
        }
    }

    /// Begins its shutdown, as SIGTERM does, and returns once it has
    /// stopped.
    pub(crate) async fn shut_down(mut self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        (&mut self.task).await?
    }

    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub(crate) async fn channel(&self) -> Channel {
        for _ in 0..100 {
            if let Ok(channel) = Channel::from_shared(self.url()).expect("url").connect().await {
                return channel;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("gateway at {} never accepted a connection", self.addr);
    }

    /// A channel whose calls carry `token` (and any `extra` metadata).
    pub(crate) async fn as_bearer(
        &self,
        token: Option<&str>,
        extra: &[(&'static str, &str)],
    ) -> InterceptedService<Channel, Metadata> {
        let mut metadata = Metadata::default();
        if let Some(token) = token {
            metadata
                .0
                .push(("authorization", format!("Bearer {token}").parse().expect("ascii token")));
        }
        for (key, value) in extra {
            metadata.0.push((key, value.parse().expect("ascii metadata")));
        }
        InterceptedService::new(self.channel().await, metadata)
    }

    /// A channel acting as `user` with a valid token for `roles`.
    pub(crate) async fn as_user(&self, user: &str, roles: &[&str]) -> InterceptedService<Channel, Metadata> {
        let token = self.idp.token(user, roles);
        self.as_bearer(Some(&token), &[]).await
    }

    /// Stops the gateway and waits until it has shut down.
    pub(crate) async fn stop(&mut self) {
        self.shutdown.cancel();
        let _ = (&mut self.task).await;
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Metadata added to every call.
#[derive(Clone, Default)]
pub(crate) struct Metadata(pub Vec<(&'static str, AsciiMetadataValue)>);

impl Interceptor for Metadata {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        for (key, value) in &self.0 {
            request.metadata_mut().append(*key, value.clone());
        }
        Ok(request)
    }
}

pub(crate) fn metadata_value(s: &str) -> AsciiMetadataValue {
    MetadataValue::try_from(s).expect("ascii")
}

/// A gRPC-web exchange as a browser would see it.
#[derive(Debug)]
pub(crate) struct GrpcWebReply {
    pub http_status: http::StatusCode,
    pub version: http::Version,
    pub headers: http::HeaderMap,
    pub messages: Vec<Bytes>,
    /// From the trailers frame (flag 0x80), lower-cased names.
    pub trailers: Option<HashMap<String, String>>,
}

impl GrpcWebReply {
    pub(crate) fn grpc_status(&self) -> Option<&str> {
        self.trailers.as_ref()?.get("grpc-status").map(String::as_str)
    }
}

/// One length-prefixed gRPC message.
pub(crate) fn frame(message: &impl prost::Message) -> Bytes {
    let payload = message.encode_to_vec();
    let mut framed = Vec::with_capacity(payload.len() + 5);
    framed.push(0);
    framed.extend_from_slice(&u32::try_from(payload.len()).expect("small message").to_be_bytes());
    framed.extend_from_slice(&payload);
    Bytes::from(framed)
}

/// The payload of a gRPC-web trailers frame: `name: value` lines, names
/// lower-cased.
pub(crate) fn parse_trailers(payload: &[u8]) -> HashMap<String, String> {
    let text = std::str::from_utf8(payload).expect("trailers are text");
    text.split("\r\n")
        .filter_map(|line| line.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect()
}

/// Splits a gRPC-web response body into messages and the trailers frame,
/// which must be the last frame.
pub(crate) fn parse_grpc_web(mut body: Bytes) -> (Vec<Bytes>, Option<HashMap<String, String>>) {
    let mut messages = Vec::new();
    let mut trailers = None;
    while body.remaining() >= 5 {
        assert!(trailers.is_none(), "a frame after the trailers frame");
        let flag = body.get_u8();
        let len = body.get_u32() as usize;
        assert!(body.remaining() >= len, "truncated gRPC-web frame");
        let payload = body.split_to(len);
        if flag & 0x80 != 0 {
            trailers = Some(parse_trailers(&payload));
        } else {
            messages.push(payload);
        }
    }
    assert_eq!(body.remaining(), 0, "trailing bytes after the last frame");
    (messages, trailers)
}

type Http1Client = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

/// Sends a gRPC-web POST over HTTP/1.1, as a browser does, and returns once
/// the response headers are in (with the client, which the body needs).
async fn send_grpc_web(
    addr: SocketAddr,
    path: &str,
    request: &impl prost::Message,
    token: Option<&str>,
) -> (Http1Client, http::response::Parts, hyper::body::Incoming) {
    let mut builder = http::Request::post(format!("http://{addr}{path}"))
        .version(http::Version::HTTP_11)
        .header("content-type", "application/grpc-web+proto")
        .header("accept", "application/grpc-web+proto")
        .header("x-grpc-web", "1");
    if let Some(token) = token {
        builder = builder.header("authorization", format!("Bearer {token}"));
    }
    let request = builder.body(Full::new(frame(request))).expect("request");
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let response = client.request(request).await.expect("gRPC-web call");
    let (parts, body) = response.into_parts();
    (client, parts, body)
}

/// Asserts what every gRPC-web answer over HTTP/1.1 starts with, unary or
/// streaming.
#[track_caller]
pub(crate) fn assert_grpc_web_head(http_status: http::StatusCode, version: http::Version, headers: &http::HeaderMap) {
    assert_eq!(http_status, http::StatusCode::OK);
    assert_eq!(version, http::Version::HTTP_11);
    assert_eq!(headers["content-type"], "application/grpc-web+proto");
}

/// POSTs one gRPC-web call over HTTP/1.1 and reads the whole answer.
pub(crate) async fn grpc_web_call(
    addr: SocketAddr,
    path: &str,
    request: &impl prost::Message,
    token: Option<&str>,
) -> GrpcWebReply {
    let (_client, parts, body) = send_grpc_web(addr, path, request, token).await;
    let body = body.collect().await.expect("gRPC-web body").to_bytes();
    let (messages, trailers) = parse_grpc_web(body);
    GrpcWebReply {
        http_status: parts.status,
        version: parts.version,
        headers: parts.headers,
        messages,
        trailers,
    }
}

/// One frame of a gRPC-web response body.
#[derive(Debug)]
pub(crate) enum WebFrame {
    Message(Bytes),
    /// The trailers frame (flag 0x80), lower-cased names.
    Trailers(HashMap<String, String>),
}

/// A gRPC-web server stream over HTTP/1.1, read frame by frame as the
/// bytes arrive (so a test sees each message before the stream ends).
pub(crate) struct GrpcWebStream {
    pub http_status: http::StatusCode,
    pub version: http::Version,
    pub headers: http::HeaderMap,
    body: hyper::body::Incoming,
    buffered: BytesMut,
    trailers_seen: bool,
    _client: Http1Client,
}

impl GrpcWebStream {
    /// POSTs the call and returns once the response headers are in.
    pub(crate) async fn open(addr: SocketAddr, path: &str, request: &impl prost::Message, token: Option<&str>) -> Self {
        let (client, parts, body) = send_grpc_web(addr, path, request, token).await;
        Self {
            http_status: parts.status,
            version: parts.version,
            headers: parts.headers,
            body,
            buffered: BytesMut::new(),
            trailers_seen: false,
            _client: client,
        }
    }

    /// The next complete frame, or `None` once the body has ended (with no
    /// partial frame left over). Nothing may follow the trailers frame.
    pub(crate) async fn next_frame(&mut self) -> Option<WebFrame> {
        loop {
            if self.buffered.len() >= 5 {
                let mut prefix = &self.buffered[..5];
                let flag = prefix.get_u8();
                let len = prefix.get_u32() as usize;
                if self.buffered.len() >= 5 + len {
                    assert!(!self.trailers_seen, "a frame after the trailers frame");
                    self.buffered.advance(5);
                    let payload = self.buffered.split_to(len).freeze();
                    if flag & 0x80 != 0 {
                        self.trailers_seen = true;
                        return Some(WebFrame::Trailers(parse_trailers(&payload)));
                    }
                    return Some(WebFrame::Message(payload));
                }
            }
            match self.body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.buffered.extend_from_slice(&data);
                    }
                }
                Some(Err(e)) => panic!("gRPC-web body failed: {e}"),
                None => {
                    assert!(self.buffered.is_empty(), "the body ended inside a frame");
                    return None;
                }
            }
        }
    }
}
