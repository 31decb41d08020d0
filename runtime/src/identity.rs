//! Who is calling, and the gateway's word for it.
//!
//! The gateway checks the client's token, then vouches for the caller to the
//! service it routes the call to with an identity token of its own, in
//! `x-shop-identity` metadata: a JWT signed with the gateway's Ed25519 key
//! (`IDENTITY_SIGNING_KEY_FILE`) naming the user, the roles, the methods it
//! is good for and an expiry seconds away ([`IdentityIssuer`]).
//!
//! Each service checks it with the public half (`IDENTITY_VERIFYING_KEY_FILE`)
//! before a handler runs ([`CallerLayer`]), and a handler asks for the caller
//! with [`Caller::of`]. A call without a token is anonymous, and one with a
//! forged, expired or misdirected token is refused with `UNAUTHENTICATED`,
//! so a process that can reach a service's port but does not hold the
//! gateway's private key cannot act as anyone. Metadata such as `x-user-id`
//! means nothing to a service.
//!
//! A call a service makes on its caller's behalf (svc-cart's Checkout
//! placing the order) carries the token it was given ([`forward`]). The
//! token names that method too, because the contract declares it
//! (`(shop.options.v1.calls_on_behalf)`) and the gateway reads it there.

use std::{
    path::Path,
    sync::Arc,
    task::{Context, Poll},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use ed25519_dalek::{
    SigningKey, VerifyingKey,
    pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey, spki::der::pem::LineEnding},
};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use tonic::{Status, metadata::MetadataMap};

use crate::{config::EnvReader, memo::Memo};

/// The metadata that carries the identity token.
pub const IDENTITY_HEADER: &str = "x-shop-identity";

/// The gateway's private key: an Ed25519 PKCS#8 PEM file.
pub const SIGNING_KEY_FILE: &str = "IDENTITY_SIGNING_KEY_FILE";
/// The services' public key(s): SPKI PEM, one or more (while keys rotate,
/// the old and the new).
pub const VERIFYING_KEY_FILE: &str = "IDENTITY_VERIFYING_KEY_FILE";

/// How long a token is good for. It is made for one call; the slack covers a
/// call's own trip and the clocks of two machines.
const LIFETIME: Duration = Duration::from_secs(30);
const CLOCK_LEEWAY_SECONDS: u64 = 5;
/// For this long the issuer hands out the token it signed for the same
/// caller and methods again, so a session's calls share one signature and
/// every token handed out has at least two thirds of its life left.
const REISSUE_AFTER: Duration = Duration::from_secs(10);
/// Tokens the issuer, and each verifier, keep (see [`Memo`]).
const TOKENS_KEPT: usize = 4096;

const ISSUER: &str = "shop-gateway";
const AUDIENCE: &str = "shop-services";

/// A user id: 1-128 characters, no whitespace or control characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UserId(String);

impl UserId {
    pub fn parse(raw: &str) -> Result<Self, String> {
        if raw.is_empty() || raw.len() > 128 {
            return Err("must be 1-128 characters".into());
        }
        if raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err("must not contain whitespace or control characters".into());
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for UserId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Customer,
    Admin,
}

impl Role {
    fn parse(name: &str) -> Option<Self> {
        match name.trim() {
            "customer" => Some(Self::Customer),
            "admin" => Some(Self::Admin),
            _ => None,
        }
    }
}

/// Who is calling.
#[derive(Debug, Clone)]
pub struct Caller {
    pub user_id: UserId,
    pub roles: Vec<Role>,
}

impl Caller {
    /// The caller the gateway vouched for on this call; `UNAUTHENTICATED`
    /// when it vouched for no one or the token does not hold.
    pub fn of<T>(request: &tonic::Request<T>) -> Result<Self, Status> {
        match request.extensions().get::<Vouched>() {
            Some(Vouched(Ok(caller))) => Ok(caller.clone()),
            Some(Vouched(Err(refused))) => Err(Status::unauthenticated(refused.to_string())),
            None => Err(Status::unauthenticated(
                "no caller identity: sign in and call through the gateway",
            )),
        }
    }

    /// Unknown roles are ignored; no role means `customer`.
    fn new(user_id: UserId, role_names: &[String]) -> Self {
        let mut roles: Vec<Role> = role_names.iter().filter_map(|r| Role::parse(r)).collect();
        if roles.is_empty() {
            roles.push(Role::Customer);
        }
        Self { user_id, roles }
    }

    pub fn is_admin(&self) -> bool {
        self.roles.contains(&Role::Admin)
    }

    /// Whether the caller may see or change a resource owned by `owner`.
    pub fn may_access(&self, owner: &str) -> bool {
        self.is_admin() || self.user_id.as_str() == owner
    }
}

/// What the token says. `mth` holds the HTTP/2 paths
/// (`/package.Service/Method`) it may be presented to.
#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    iss: String,
    aud: String,
    sub: String,
    roles: Vec<String>,
    mth: Vec<String>,
    iat: u64,
    exp: u64,
}

/// Why a key file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum IdentityKeyError {
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("cannot write {path}: {source}")]
    Write { path: String, source: std::io::Error },
    #[error("{0} is not an Ed25519 PKCS#8 PEM private key")]
    NotPrivateKey(String),
    #[error("{0} holds no Ed25519 public key in SPKI PEM (-----BEGIN PUBLIC KEY-----)")]
    NoPublicKey(String),
}

/// Why a token was refused. The messages say what to fix and nothing about
/// the keys.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("the identity token is malformed")]
    Malformed,
    #[error("the identity token was not issued by this platform's gateway")]
    NotVouched,
    #[error("the identity token has expired; call through the gateway")]
    Expired,
    #[error("the identity token was issued for other methods than {0}")]
    OtherMethod(String),
    #[error("the identity token names no valid user: {0}")]
    BadUser(String),
}

/// The key id of a public key: its first 8 bytes in hex, so the verifier
/// picks the key without trying each.
fn kid(key: &VerifyingKey) -> String {
    key.as_bytes()[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// The path as shown in messages, and the file's text.
fn read_key_file(path: &Path) -> Result<(String, String), IdentityKeyError> {
    let shown = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(pem) => Ok((shown, pem)),
        Err(source) => Err(IdentityKeyError::Read { path: shown, source }),
    }
}

/// Signs identity tokens: the gateway's half.
pub struct IdentityIssuer {
    header: Header,
    key: EncodingKey,
    /// Tokens signed lately, by user, roles and methods.
    issued: Memo<String, String>,
}

impl std::fmt::Debug for IdentityIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdentityIssuer")
            .field("kid", &self.header.kid)
            .field("key", &"***")
            .finish()
    }
}

impl IdentityIssuer {
    pub fn new(key: &SigningKey) -> Self {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(kid(&key.verifying_key()));
        // Our own key, just made into DER: encoding cannot fail.
        let der = key.to_pkcs8_der().expect("an Ed25519 key encodes as PKCS#8");
        Self {
            header,
            key: EncodingKey::from_ed_der(der.as_bytes()),
            issued: Memo::new(TOKENS_KEPT),
        }
    }

    /// The key in a PKCS#8 PEM file.
    pub fn from_file(path: &Path) -> Result<Self, IdentityKeyError> {
        let (shown, pem) = read_key_file(path)?;
        let key = SigningKey::from_pkcs8_pem(&pem).map_err(|_| IdentityKeyError::NotPrivateKey(shown))?;
        Ok(Self::new(&key))
    }

    /// `IDENTITY_SIGNING_KEY_FILE`, loaded; a missing or bad file is a
    /// problem of the configuration.
    pub fn from_env(env: &mut EnvReader) -> Option<Arc<Self>> {
        let path: String = env.required(SIGNING_KEY_FILE, "a path to an Ed25519 PKCS#8 PEM private key")?;
        match Self::from_file(Path::new(&path)) {
            Ok(issuer) => Some(Arc::new(issuer)),
            Err(e) => {
                env.problem(format!("{SIGNING_KEY_FILE}: {e}"));
                None
            }
        }
    }

    /// A token for `user` with `roles`, good for the calls at `paths` for
    /// 20 to 30 s.
    pub fn issue(&self, user: &UserId, roles: &[impl AsRef<str>], paths: &[impl AsRef<str>]) -> String {
        // None of the parts holds a newline (user ids and roles hold no
        // whitespace, paths are HTTP/2 paths), so the key names one token.
        let names = std::iter::once(user.as_str())
            .chain(roles.iter().map(AsRef::as_ref))
            .chain(std::iter::once(""))
            .chain(paths.iter().map(AsRef::as_ref));
        let memo_key = names.collect::<Vec<_>>().join("\n");
        if let Some(token) = self.issued.get(&memo_key) {
            return token;
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let claims = Claims {
            iss: ISSUER.to_owned(),
            aud: AUDIENCE.to_owned(),
            sub: user.as_str().to_owned(),
            roles: roles.iter().map(|r| r.as_ref().to_owned()).collect(),
            mth: paths.iter().map(|p| p.as_ref().to_owned()).collect(),
            iat: now,
            exp: now + LIFETIME.as_secs(),
        };
        // Serialising these claims and signing with a valid key cannot fail.
        let token = jsonwebtoken::encode(&self.header, &claims, &self.key).expect("an identity token encodes");
        self.issued
            .remember(memo_key, token.clone(), Instant::now() + REISSUE_AFTER);
        token
    }
}

/// Checks identity tokens: every service's half.
pub struct IdentityVerifier {
    keys: Vec<(String, DecodingKey)>,
    validation: Validation,
    /// Tokens verified lately, by their full text, until they expire.
    verified: Memo<String, Arc<Vouch>>,
}

/// What a verified token vouches for.
struct Vouch {
    caller: Caller,
    /// The paths it may be presented to.
    paths: Vec<String>,
}

impl std::fmt::Debug for IdentityVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kids: Vec<&str> = self.keys.iter().map(|(kid, _)| kid.as_str()).collect();
        f.debug_struct("IdentityVerifier").field("kids", &kids).finish()
    }
}

impl IdentityVerifier {
    pub fn new(keys: &[VerifyingKey]) -> Self {
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = CLOCK_LEEWAY_SECONDS;
        Self {
            keys: keys
                .iter()
                .map(|key| (kid(key), DecodingKey::from_ed_der(key.as_bytes())))
                .collect(),
            validation,
            verified: Memo::new(TOKENS_KEPT),
        }
    }

    /// Every public key in an SPKI PEM file (at least one).
    pub fn from_file(path: &Path) -> Result<Self, IdentityKeyError> {
        let (shown, pem) = read_key_file(path)?;
        const END: &str = "-----END PUBLIC KEY-----";
        let keys: Vec<VerifyingKey> = pem
            .split_inclusive(END)
            .filter(|block| block.contains(END))
            .map(|block| VerifyingKey::from_public_key_pem(block.trim()))
            .collect::<Result<_, _>>()
            .map_err(|_| IdentityKeyError::NoPublicKey(shown.clone()))?;
        if keys.is_empty() {
            return Err(IdentityKeyError::NoPublicKey(shown));
        }
        Ok(Self::new(&keys))
    }

    /// `IDENTITY_VERIFYING_KEY_FILE`, loaded. A missing or bad file is a
    /// problem of the configuration (so [`EnvReader::finish`] fails), and
    /// what is returned then trusts no one.
    pub fn from_env(env: &mut EnvReader) -> Arc<Self> {
        let Some(path) = env.required::<String>(
            VERIFYING_KEY_FILE,
            "a path to the gateway's Ed25519 public key (SPKI PEM)",
        ) else {
            return Arc::new(Self::new(&[]));
        };
        match Self::from_file(Path::new(&path)) {
            Ok(verifier) => Arc::new(verifier),
            Err(e) => {
                env.problem(format!("{VERIFYING_KEY_FILE}: {e}"));
                Arc::new(Self::new(&[]))
            }
        }
    }

    /// The caller `token` vouches for on a call to `path`.
    pub fn verify(&self, token: &str, path: &str) -> Result<Caller, Refused> {
        let vouch = match self.verified.get(token) {
            Some(vouch) => vouch,
            None => self.check(token)?,
        };
        if !vouch.paths.iter().any(|m| m == path) {
            return Err(Refused::OtherMethod(path.to_owned()));
        }
        Ok(vouch.caller.clone())
    }

    /// Checks `token`'s signature and claims, and keeps what it vouches for
    /// until it expires.
    fn check(&self, token: &str) -> Result<Arc<Vouch>, Refused> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| Refused::Malformed)?;
        let key = self
            .keys
            .iter()
            .find(|(kid, _)| header.kid.as_deref() == Some(kid.as_str()))
            .map(|(_, key)| key)
            .ok_or(Refused::NotVouched)?;
        let claims = jsonwebtoken::decode::<Claims>(token, key, &self.validation)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => Refused::Expired,
                jsonwebtoken::errors::ErrorKind::InvalidToken
                | jsonwebtoken::errors::ErrorKind::Base64(_)
                | jsonwebtoken::errors::ErrorKind::Json(_)
                | jsonwebtoken::errors::ErrorKind::Utf8(_)
                | jsonwebtoken::errors::ErrorKind::MissingRequiredClaim(_) => Refused::Malformed,
                _ => Refused::NotVouched,
            })?
            .claims;
        let user_id = UserId::parse(&claims.sub).map_err(Refused::BadUser)?;
        let vouch = Arc::new(Vouch {
            caller: Caller::new(user_id, &claims.roles),
            paths: claims.mth,
        });
        // Kept until its expiry (the leeway is for clocks that differ, not
        // for a copy on this machine).
        let unix_now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let left = Duration::from_secs(claims.exp.saturating_sub(unix_now));
        self.verified
            .remember(token.to_owned(), vouch.clone(), Instant::now() + left);
        Ok(vouch)
    }
}

/// Writes a new key pair: the private key (PKCS#8 PEM, readable by this user
/// only) to `signing` and its public half (SPKI PEM) to `verifying`. For a
/// development stack or a test; a deployment brings its own.
pub fn write_key_pair(signing: &Path, verifying: &Path) -> Result<(), IdentityKeyError> {
    use rand::RngCore as _;
    let mut seed = [0u8; 32];
    rand::rng().fill_bytes(&mut seed);
    let key = SigningKey::from_bytes(&seed);
    // PKCS#8 v1 (the secret alone), as `openssl genpkey` writes it: OpenSSL
    // reads no other form of an Ed25519 key.
    let v1 = ed25519_dalek::pkcs8::KeypairBytes {
        secret_key: key.to_bytes(),
        public_key: None,
    };
    let private = v1
        .to_pkcs8_pem(LineEnding::LF)
        .expect("an Ed25519 key encodes as PKCS#8");
    let public = key
        .verifying_key()
        .to_public_key_pem(LineEnding::LF)
        .expect("an Ed25519 public key encodes as SPKI");
    write_new(signing, private.as_bytes(), 0o600)?;
    write_new(verifying, public.as_bytes(), 0o644)
}

/// A key pair written once per process into a fresh directory under the
/// system's temporary directory: for tests, whose services in this process
/// or in child processes read it for as long as this process lives.
pub struct ThrowawayKeys {
    pub signing: std::path::PathBuf,
    pub verifying: std::path::PathBuf,
}

pub fn throwaway_keys() -> &'static ThrowawayKeys {
    static KEYS: std::sync::OnceLock<ThrowawayKeys> = std::sync::OnceLock::new();
    KEYS.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("shop-identity-{}-{}", std::process::id(), uuid::Uuid::now_v7()));
        let keys = ThrowawayKeys {
            signing: dir.join("signing.pem"),
            verifying: dir.join("verifying.pem"),
        };
        write_key_pair(&keys.signing, &keys.verifying).expect("writing a throwaway identity key pair");
        keys
    })
}

fn write_new(path: &Path, content: &[u8], mode: u32) -> Result<(), IdentityKeyError> {
    use std::{io::Write as _, os::unix::fs::OpenOptionsExt as _};
    let write = || -> std::io::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(path)?;
        file.write_all(content)?;
        file.sync_all()
    };
    write().map_err(|source| IdentityKeyError::Write {
        path: path.display().to_string(),
        source,
    })
}

/// Puts the caller's identity token on a call made on their behalf.
pub fn forward(caller: &MetadataMap, call: &mut MetadataMap) {
    if let Some(token) = caller.get(IDENTITY_HEADER) {
        call.insert(IDENTITY_HEADER, token.clone());
    }
}

/// The outcome of checking a call's identity token, left in the request's
/// extensions for [`Caller::of`].
#[derive(Debug, Clone)]
struct Vouched(Result<Caller, Refused>);

/// Checks the identity token of every call before its handler runs.
#[derive(Clone, Debug)]
pub struct CallerLayer {
    verifier: Arc<IdentityVerifier>,
}

impl CallerLayer {
    pub fn new(verifier: Arc<IdentityVerifier>) -> Self {
        Self { verifier }
    }
}

impl<S> tower::Layer<S> for CallerLayer {
    type Service = CallerService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CallerService {
            inner,
            verifier: self.verifier.clone(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct CallerService<S> {
    inner: S,
    verifier: Arc<IdentityVerifier>,
}

impl<S, B> tower::Service<http::Request<B>> for CallerService<S>
where
    S: tower::Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        if let Some(token) = request.headers().get(IDENTITY_HEADER) {
            let token = token.to_str().map_err(|_| Refused::Malformed);
            let vouched = Vouched(token.and_then(|token| self.verifier.verify(token, request.uri().path())));
            request.extensions_mut().insert(vouched);
        }
        self.inner.call(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLACE: &str = "/shop.order.v1.OrderService/PlaceOrder";
    const CHECKOUT: &str = "/shop.cart.v1.CartService/Checkout";

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    fn pair(seed: u8) -> (IdentityIssuer, IdentityVerifier) {
        let key = key(seed);
        (IdentityIssuer::new(&key), IdentityVerifier::new(&[key.verifying_key()]))
    }

    fn alice() -> UserId {
        UserId::parse("alice").expect("valid")
    }

    #[test]
    fn a_token_vouches_for_its_user_and_roles_on_the_methods_it_names() {
        let (issuer, verifier) = pair(1);
        let token = issuer.issue(&alice(), &["customer", "admin", "offline_access"], &[CHECKOUT, PLACE]);
        for path in [CHECKOUT, PLACE] {
            let caller = verifier.verify(&token, path).expect("vouched");
            assert_eq!(caller.user_id, alice());
            assert!(caller.is_admin());
            assert!(caller.may_access("bob"));
        }
        assert_eq!(
            verifier
                .verify(&token, "/shop.cart.v1.CartService/ClearCart")
                .expect_err("refused"),
            Refused::OtherMethod("/shop.cart.v1.CartService/ClearCart".into())
        );
        let plain = issuer.issue(&alice(), &[] as &[&str], &[PLACE]);
        let caller = verifier.verify(&plain, PLACE).expect("vouched");
        assert_eq!(caller.roles, [Role::Customer], "no role means customer");
        assert!(!caller.may_access("bob"));
    }

    #[test]
    fn a_signature_serves_the_same_caller_and_methods_a_while_and_no_one_else() {
        let (issuer, verifier) = pair(1);
        let token = issuer.issue(&alice(), &["customer"], &[PLACE]);
        assert_eq!(issuer.issue(&alice(), &["customer"], &[PLACE]), token, "signed once");
        let bob = UserId::parse("bob").expect("valid");
        for other in [
            issuer.issue(&bob, &["customer"], &[PLACE]),
            issuer.issue(&alice(), &["admin"], &[PLACE]),
            issuer.issue(&alice(), &["customer"], &[CHECKOUT]),
            issuer.issue(&alice(), &[] as &[&str], &["customer", PLACE]),
        ] {
            assert_ne!(other, token);
        }
        // Verified once, kept: the answer and the refusals stay the same.
        for _ in 0..2 {
            assert_eq!(verifier.verify(&token, PLACE).expect("vouched").user_id, alice());
            assert_eq!(
                verifier.verify(&token, CHECKOUT).expect_err("refused"),
                Refused::OtherMethod(CHECKOUT.into())
            );
        }
        assert_eq!(verifier.verified.len(), 1);
    }

    #[test]
    fn tokens_not_signed_by_the_gateway_are_refused() {
        let (_, verifier) = pair(1);
        let (stranger, _) = pair(2);
        let forged = stranger.issue(&alice(), &["admin"], &[PLACE]);
        assert_eq!(
            verifier.verify(&forged, PLACE).expect_err("refused"),
            Refused::NotVouched
        );

        // The gateway's key id on another key's signature.
        let (gateway, _) = pair(1);
        let genuine = gateway.issue(&alice(), &["customer"], &[PLACE]);
        let (head, _) = genuine.rsplit_once('.').expect("three parts");
        let (_, signature) = forged.rsplit_once('.').expect("three parts");
        assert_eq!(
            verifier
                .verify(&format!("{head}.{signature}"), PLACE)
                .expect_err("refused"),
            Refused::NotVouched
        );

        // The gateway's signature over claims someone changed.
        let part = |token: &str, n: usize| token.split('.').nth(n).expect("three parts").to_owned();
        let tampered = format!("{}.{}.{}", part(&genuine, 0), part(&forged, 1), part(&genuine, 2));
        assert_eq!(
            verifier.verify(&tampered, PLACE).expect_err("refused"),
            Refused::NotVouched
        );
        for garbage in ["", "x", "a.b.c", "alice"] {
            assert_eq!(
                verifier.verify(garbage, PLACE).expect_err("refused"),
                Refused::Malformed,
                "{garbage:?}"
            );
        }
    }

    #[test]
    fn an_expired_token_is_refused_and_says_so() {
        let key = key(1);
        let verifier = IdentityVerifier::new(&[key.verifying_key()]);
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(kid(&key.verifying_key()));
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("after 1970")
            .as_secs();
        let claims = Claims {
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
            sub: "alice".into(),
            roles: vec![],
            mth: vec![PLACE.into()],
            iat: now - 120,
            exp: now - 60,
        };
        let der = key.to_pkcs8_der().expect("encodes");
        let token = jsonwebtoken::encode(&header, &claims, &EncodingKey::from_ed_der(der.as_bytes())).expect("signs");
        assert_eq!(verifier.verify(&token, PLACE).expect_err("refused"), Refused::Expired);
    }

    #[test]
    fn key_files_round_trip_and_a_verifier_takes_every_key_in_its_file() {
        let dir = std::env::temp_dir().join(format!("shop-identity-{}", uuid::Uuid::now_v7()));
        let (signing, verifying) = (dir.join("signing.pem"), dir.join("verifying.pem"));
        write_key_pair(&signing, &verifying).expect("writes");
        let issuer = IdentityIssuer::from_file(&signing).expect("reads the private key");
        let (old, _) = pair(7);
        let mut both = std::fs::read_to_string(&verifying).expect("reads");
        both.push_str(
            &key(7)
                .verifying_key()
                .to_public_key_pem(LineEnding::LF)
                .expect("encodes"),
        );
        std::fs::write(&verifying, both).expect("writes");
        let verifier = IdentityVerifier::from_file(&verifying).expect("reads both keys");
        for issuer in [issuer, old] {
            let token = issuer.issue(&alice(), &["customer"], &[PLACE]);
            verifier.verify(&token, PLACE).expect("either key vouches");
        }
        assert!(matches!(
            IdentityVerifier::from_file(&signing),
            Err(IdentityKeyError::NoPublicKey(_))
        ));
        assert!(matches!(
            IdentityIssuer::from_file(&verifying),
            Err(IdentityKeyError::NotPrivateKey(_))
        ));
        let _ = std::fs::remove_dir_all(dir);
    }

    /// Keys made with `openssl genpkey -algorithm ed25519` (and `openssl
    /// pkey -pubout`) work, as the deployment guide says.
    #[test]
    fn keys_made_by_openssl_work() {
        let dir = std::env::temp_dir().join(format!("shop-identity-openssl-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let (signing, verifying) = (dir.join("signing.pem"), dir.join("verifying.pem"));
        std::fs::write(
            &signing,
            "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIMSej83nINZWBWXWLOCYBr2KzhoI+wKv60U+mcNBykIj\n-----END PRIVATE KEY-----\n",
        )
        .expect("writes");
        std::fs::write(
            &verifying,
            "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAsJUfm3T4TnOW6y3+SYQ0baxAq/XtVhUj116mZVMfYSU=\n-----END PUBLIC KEY-----\n",
        )
        .expect("writes");
        let issuer = IdentityIssuer::from_file(&signing).expect("reads openssl's private key");
        let verifier = IdentityVerifier::from_file(&verifying).expect("reads openssl's public key");
        let token = issuer.issue(&alice(), &["customer"], &[PLACE]);
        verifier.verify(&token, PLACE).expect("the pair works");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_handler_sees_the_vouched_caller_or_unauthenticated() {
        let mut request = tonic::Request::new(());
        let e = Caller::of(&request).expect_err("no token");
        assert_eq!(e.code(), tonic::Code::Unauthenticated);
        assert!(e.message().contains("call through the gateway"), "{}", e.message());
        request.extensions_mut().insert(Vouched(Err(Refused::Expired)));
        let e = Caller::of(&request).expect_err("expired");
        assert_eq!(e.code(), tonic::Code::Unauthenticated);
        assert!(e.message().contains("expired"), "{}", e.message());
        request.extensions_mut().insert(Vouched(Ok(Caller::new(alice(), &[]))));
        assert_eq!(Caller::of(&request).expect("vouched").user_id, alice());
    }
}
