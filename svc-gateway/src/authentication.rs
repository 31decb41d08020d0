//! Bearer-token verification.
//!
//! Only asymmetric signatures are accepted (RS*/PS*, ES256/ES384, EdDSA).
//! Each key's algorithm is pinned from its JWK (`alg`, or inferred from the
//! key type when the JWK has none), and a token whose header names another
//! algorithm is refused before any signature check, so neither `alg: none`
//! nor HMAC-with-the-public-key confusion can get through. `iss`, `aud`,
//! `exp` and `sub` are required; `nbf` is honoured; both with a small leeway.
//!
//! Keys come from a JWKS file or URL, plus pinned keys (the development
//! signer). A token with an unknown `kid` reloads the set, at most once per
//! `JWKS_MIN_REFRESH_INTERVAL`; the set is also reloaded periodically.
//!
//! A verified token is remembered for up to a minute (never past its `exp`,
//! forgotten when the key set is reloaded, and not remembered at all when a
//! reload happened while its signature was checked), so a client's repeated
//! calls do not pay for a signature check each time — that check is most of
//! the gateway's CPU per call otherwise.

use std::{
    collections::HashMap,
    sync::{
        Arc, PoisonError, RwLock,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use jsonwebtoken::{
    Algorithm, AlgorithmFamily, DecodingKey, Validation,
    errors::ErrorKind,
    jwk::{AlgorithmParameters, EllipticCurve, Jwk, PublicKeyUse},
};
use serde::Deserialize;
use shop_runtime::{CancellationToken, identity::UserId, memo::Memo};

use crate::config::{AuthSettings, JwksSource};

/// Tokens longer than this are refused unread.
const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// A JWKS document larger than this is refused.
const MAX_JWKS_BYTES: usize = 1024 * 1024;
const JWKS_FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// How many verified tokens are remembered, and for how long at most.
const VERIFIED_TOKENS_KEPT: usize = 4096;
const VERIFIED_TOKEN_TTL: Duration = Duration::from_secs(60);

/// The verified caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub user_id: UserId,
    /// Role names from the token, restricted to plain characters (they are
    /// passed on in the gateway's identity token).
    pub roles: Vec<String>,
}

impl Identity {
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }
}

/// Why a token was refused. The messages help an honest client fix its
/// request and say nothing about the keys.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("token expired")]
    Expired,
    #[error("token not yet valid")]
    NotYetValid,
    #[error("wrong audience")]
    WrongAudience,
    #[error("wrong issuer")]
    WrongIssuer,
    #[error("invalid token: {0}")]
    Invalid(&'static str),
}

#[derive(Debug, thiserror::Error)]
pub enum KeySetError {
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("cannot fetch {url}: {source}")]
    Fetch { url: String, source: reqwest::Error },
    #[error("{0} is larger than {MAX_JWKS_BYTES} bytes")]
    TooLarge(String),
    #[error("{origin} is not a JWKS document: {source}")]
    NotJwks { origin: String, source: serde_json::Error },
    #[error("{0} holds no usable signing key")]
    NoUsableKey(String),
}

/// A public key and the one algorithm it verifies.
struct VerificationKey {
    algorithm: Algorithm,
    key: DecodingKey,
}

#[derive(Default)]
struct KeyRing {
    by_kid: HashMap<String, Arc<VerificationKey>>,
    without_kid: Vec<Arc<VerificationKey>>,
    /// Counts loads: a verification is remembered only while the set it
    /// was checked against is still the current one.
    generation: u64,
}

impl KeyRing {
    fn len(&self) -> usize {
        self.by_kid.len() + self.without_kid.len()
    }

    fn add(&mut self, jwk: &Jwk) -> Result<(), &'static str> {
        let key = Arc::new(verification_key(jwk)?);
        match &jwk.common.key_id {
            Some(kid) => {
                self.by_kid.insert(kid.clone(), key);
            }
            None => self.without_kid.push(key),
        }
        Ok(())
    }

    fn find(&self, kid: Option<&str>) -> Option<Arc<VerificationKey>> {
        match kid {
            Some(kid) => self.by_kid.get(kid).cloned(),
            // Without a kid the key is unambiguous only when there is one.
            None if self.len() == 1 => self.by_kid.values().chain(self.without_kid.iter()).next().cloned(),
            None => None,
        }
    }
}

/// The algorithm a JWK verifies, pinned: its `alg` when present and
/// consistent with the key type, else the usual one for the key type.
fn verification_key(jwk: &Jwk) -> Result<VerificationKey, &'static str> {
    if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
        return Err("an encryption key");
    }
    let algorithm = match jwk.common.key_algorithm {
        Some(declared) => Algorithm::try_from(declared).map_err(|_| "an unsupported algorithm")?,
        None => match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => Algorithm::RS256,
            AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => Algorithm::ES256,
            AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P384 => Algorithm::ES384,
            AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => Algorithm::EdDSA,
            _ => return Err("an unsupported key type"),
        },
    };
    let consistent = match (&jwk.algorithm, algorithm) {
        (AlgorithmParameters::RSA(_), alg) => alg.family() == AlgorithmFamily::Rsa,
        (AlgorithmParameters::EllipticCurve(p), Algorithm::ES256) => p.curve == EllipticCurve::P256,
        (AlgorithmParameters::EllipticCurve(p), Algorithm::ES384) => p.curve == EllipticCurve::P384,
        (AlgorithmParameters::OctetKeyPair(p), Algorithm::EdDSA) => p.curve == EllipticCurve::Ed25519,
        // Symmetric keys would let anyone holding the "public" key sign.
        _ => false,
    };
    if !consistent {
        return Err("a key whose type does not match its algorithm, or a symmetric key");
    }
    let key = DecodingKey::from_jwk(jwk).map_err(|_| "a malformed key")?;
    Ok(VerificationKey { algorithm, key })
}

/// Parses a JWKS document, skipping (and naming) keys it cannot use, so one
/// exotic key in an identity provider's set does not block the others.
fn parse_key_set(origin: &str, bytes: &[u8], pinned: &[Jwk]) -> Result<KeyRing, KeySetError> {
    #[derive(Deserialize)]
    struct Document {
        keys: Vec<serde_json::Value>,
    }
    let document: Document = serde_json::from_slice(bytes).map_err(|source| KeySetError::NotJwks {
        origin: origin.to_owned(),
        source,
    })?;
    let mut ring = KeyRing::default();
    for (index, raw) in document.keys.into_iter().enumerate() {
        let kid = raw.get("kid").and_then(|k| k.as_str()).unwrap_or("").to_owned();
        let outcome = serde_json::from_value::<Jwk>(raw)
            .map_err(|_| "not a JWK")
            .and_then(|jwk| ring.add(&jwk));
        if let Err(why) = outcome {
            tracing::info!(origin, index, kid, why, "skipping a key of the JWKS");
        }
    }
    if ring.len() == 0 {
        return Err(KeySetError::NoUsableKey(origin.to_owned()));
    }
    for jwk in pinned {
        // Pinned keys are built by the gateway itself; failing here is a bug.
        ring.add(jwk)
            .map_err(|_| KeySetError::NoUsableKey("the pinned keys".into()))?;
    }
    Ok(ring)
}

#[derive(Deserialize)]
struct Claims {
    /// A NumericDate; some issuers write fractions.
    exp: f64,
    sub: Option<String>,
    #[serde(default)]
    roles: Vec<String>,
    #[serde(default)]
    realm_access: Option<RealmAccess>,
}

/// Keycloak's realm roles claim.
#[derive(Deserialize)]
struct RealmAccess {
    #[serde(default)]
    roles: Vec<String>,
}

fn is_header_safe_role(role: &str) -> bool {
    !role.is_empty()
        && role.len() <= 64
        && role
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'))
}

/// Verifies bearer tokens against the current key set.
pub struct TokenVerifier {
    issuer: String,
    audience: String,
    leeway: Duration,
    source: Option<JwksSource>,
    http: reqwest::Client,
    pinned: Vec<Jwk>,
    ring: RwLock<Arc<KeyRing>>,
    /// When the set was last (re)loaded; also serialises reloads.
    last_load: tokio::sync::Mutex<Option<Instant>>,
    min_reload_interval: Duration,
    /// Tokens verified recently, by their full text, with the generation of
    /// the key set that verified them.
    verified: Memo<String, (Identity, u64)>,
    /// Signatures checked so far: the work a remembered token saves.
    signature_checks: AtomicU64,
}

impl TokenVerifier {
    /// Builds the verifier and loads the key set. An unreadable or empty
    /// `JWKS_FILE` is fatal (a deployment mistake); an unreachable
    /// `JWKS_URL` is not: the identity provider may come up after the
    /// gateway, and the set is fetched again on the first token.
    pub async fn start(settings: &AuthSettings, pinned: Vec<Jwk>) -> Result<Arc<Self>, KeySetError> {
        let mut initial = KeyRing::default();
        for jwk in &pinned {
            initial
                .add(jwk)
                .map_err(|_| KeySetError::NoUsableKey("the pinned keys".into()))?;
        }
        let http = reqwest::Client::builder()
            .timeout(JWKS_FETCH_TIMEOUT)
            .build()
            .map_err(|source| KeySetError::Fetch {
                url: "(client setup)".into(),
                source,
            })?;
        let verifier = Arc::new(Self {
            issuer: settings.issuer.clone(),
            audience: settings.audience.clone(),
            leeway: settings.leeway,
            source: settings.jwks.clone(),
            http,
            pinned,
            ring: RwLock::new(Arc::new(initial)),
            last_load: tokio::sync::Mutex::new(None),
            min_reload_interval: settings.jwks_min_refresh_interval,
            verified: Memo::new(VERIFIED_TOKENS_KEPT),
            signature_checks: AtomicU64::new(0),
        });
        match (&verifier.source, verifier.reload().await) {
            (_, Ok(())) => {}
            (Some(JwksSource::Url(url)), Err(e)) => {
                tracing::warn!(url, error = %e, "JWKS not loaded yet; tokens are refused until it is");
            }
            (_, Err(e)) => return Err(e),
        }
        Ok(verifier)
    }

    /// Whether any key is loaded (readiness).
    pub fn has_keys(&self) -> bool {
        self.current().len() > 0
    }

    fn current(&self) -> Arc<KeyRing> {
        self.ring.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    async fn fetch(&self, source: &JwksSource) -> Result<(String, Vec<u8>), KeySetError> {
        match source {
            JwksSource::File(path) => {
                let origin = path.display().to_string();
                let bytes = tokio::fs::read(path).await.map_err(|source| KeySetError::Read {
                    path: origin.clone(),
                    source,
                })?;
                if bytes.len() > MAX_JWKS_BYTES {
                    return Err(KeySetError::TooLarge(origin));
                }
                Ok((origin, bytes))
            }
            JwksSource::Url(url) => {
                let fetch_error = |source| KeySetError::Fetch {
                    url: url.clone(),
                    source,
                };
                let response = self
                    .http
                    .get(url)
                    .send()
                    .await
                    .and_then(reqwest::Response::error_for_status)
                    .map_err(fetch_error)?;
                if response.content_length().is_some_and(|n| n > MAX_JWKS_BYTES as u64) {
                    return Err(KeySetError::TooLarge(url.clone()));
                }
                let bytes = response.bytes().await.map_err(fetch_error)?;
                if bytes.len() > MAX_JWKS_BYTES {
                    return Err(KeySetError::TooLarge(url.clone()));
                }
                Ok((url.clone(), bytes.to_vec()))
            }
        }
    }

    /// Loads the key set from its source now.
    pub async fn reload(&self) -> Result<(), KeySetError> {
        let mut last_load = self.last_load.lock().await;
        self.reload_locked(&mut last_load).await
    }

    async fn reload_locked(&self, last_load: &mut Option<Instant>) -> Result<(), KeySetError> {
        let Some(source) = &self.source else {
            return Ok(());
        };
        *last_load = Some(Instant::now());
        let (origin, bytes) = self.fetch(source).await?;
        let mut ring = parse_key_set(&origin, &bytes, &self.pinned)?;
        tracing::info!(origin, keys = ring.len(), "token signing keys loaded");
        // Loads are serialised (`last_load`), so generations never repeat.
        let mut current = self.ring.write().unwrap_or_else(PoisonError::into_inner);
        ring.generation = current.generation + 1;
        *current = Arc::new(ring);
        drop(current);
        // A key may have been withdrawn: tokens it signed must not linger.
        self.verified.forget_all();
        Ok(())
    }

    /// Reloads for a token naming an unknown key, unless a load happened
    /// recently (then the key is really unknown).
    async fn reload_for_unknown_key(&self) {
        if self.source.is_none() {
            return;
        }
        let mut last_load = self.last_load.lock().await;
        if last_load.is_some_and(|at| at.elapsed() < self.min_reload_interval) {
            return;
        }
        if let Err(e) = self.reload_locked(&mut last_load).await {
            tracing::warn!(error = %e, "reloading token signing keys failed");
        }
    }

    /// Reloads the key set every `interval` until `shutdown`.
    pub async fn reload_periodically(self: Arc<Self>, interval: Duration, shutdown: CancellationToken) {
        if self.source.is_none() {
            return;
        }
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
            }
            if let Err(e) = self.reload().await {
                tracing::warn!(error = %e, "periodic reload of token signing keys failed; keeping the previous set");
            }
        }
    }

    /// Who `token` speaks for, if it was verified recently by the current
    /// key set: no signature check, so a caller may ask before paying for one.
    pub fn remembered(&self, token: &str) -> Option<Identity> {
        let (identity, generation) = self.verified.get(token)?;
        (generation == self.current().generation).then_some(identity)
    }

    /// How many signatures have been checked.
    pub fn signature_checks(&self) -> u64 {
        self.signature_checks.load(Ordering::Relaxed)
    }

    /// Verifies `token` and returns who it speaks for.
    pub async fn verify(&self, token: &str) -> Result<Identity, Rejection> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(Rejection::Invalid("too long"));
        }
        if let Some(identity) = self.remembered(token) {
            return Ok(identity);
        }
        let verified = self.check(token).await?;
        self.remember(token, &verified);
        Ok(verified.identity)
    }

    /// Remembers a verification, unless the key set it was checked against
    /// has been replaced meanwhile: the key may have been withdrawn, and the
    /// reload's forgetting is already done.
    fn remember(&self, token: &str, verified: &Verified) {
        if verified.generation == self.current().generation {
            self.verified.remember(
                token.to_owned(),
                (verified.identity.clone(), verified.generation),
                verified.until,
            );
        }
    }

    /// Checks `token` against the current key set, remembering nothing.
    async fn check(&self, token: &str) -> Result<Verified, Rejection> {
        // `alg: none` and unknown algorithms fail to parse here.
        let header = jsonwebtoken::decode_header(token).map_err(|_| Rejection::Invalid("malformed"))?;
        if header.alg.family() == AlgorithmFamily::Hmac {
            return Err(Rejection::Invalid("symmetric signatures are not accepted"));
        }
        let kid = header.kid.as_deref();
        let mut ring = self.current();
        let key = match ring.find(kid) {
            Some(key) => key,
            None => {
                self.reload_for_unknown_key().await;
                ring = self.current();
                ring.find(kid).ok_or(Rejection::Invalid("unknown signing key"))?
            }
        };
        if header.alg != key.algorithm {
            return Err(Rejection::Invalid("signing algorithm does not match the key"));
        }

        let mut validation = Validation::new(key.algorithm);
        validation.leeway = self.leeway.as_secs();
        validation.validate_nbf = true;
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        self.signature_checks.fetch_add(1, Ordering::Relaxed);
        let data = jsonwebtoken::decode::<Claims>(token, &key.key, &validation).map_err(|e| match e.kind() {
            ErrorKind::ExpiredSignature => Rejection::Expired,
            ErrorKind::ImmatureSignature => Rejection::NotYetValid,
            ErrorKind::InvalidAudience => Rejection::WrongAudience,
            ErrorKind::InvalidIssuer => Rejection::WrongIssuer,
            ErrorKind::MissingRequiredClaim(_) => {
                Rejection::Invalid("a required claim (exp, iss, aud, sub) is missing")
            }
            ErrorKind::InvalidSignature => Rejection::Invalid("bad signature"),
            ErrorKind::Json(_) | ErrorKind::InvalidClaimFormat(_) => Rejection::Invalid("malformed claims"),
            _ => Rejection::Invalid("rejected"),
        })?;

        let sub = data.claims.sub.unwrap_or_default();
        let user_id = UserId::parse(&sub).map_err(|_| Rejection::Invalid("sub is not a usable user id"))?;
        let mut roles: Vec<String> = Vec::new();
        let realm_roles = data.claims.realm_access.map(|r| r.roles).unwrap_or_default();
        for role in data.claims.roles.into_iter().chain(realm_roles) {
            if is_header_safe_role(&role) && !roles.contains(&role) {
                roles.push(role);
            }
        }
        let identity = Identity { user_id, roles };
        let unix_now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(u64::MAX);
        let expires_in = Duration::from_secs((data.claims.exp.max(0.0) as u64).saturating_sub(unix_now));
        let until = Instant::now() + expires_in.min(VERIFIED_TOKEN_TTL);
        Ok(Verified {
            identity,
            until,
            generation: ring.generation,
        })
    }
}

/// A token's signature checked: who it speaks for, until when that may be
/// remembered, and by which generation of the key set.
struct Verified {
    identity: Identity,
    until: Instant,
    generation: u64,
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;

    use super::*;
    use crate::dev_tokens::Ed25519Signer;

    fn key(kid: &str) -> Ed25519Signer {
        Ed25519Signer::generate(kid).expect("key")
    }

    fn sign(signer: &Ed25519Signer, claims: &serde_json::Value) -> String {
        signer.sign(claims).expect("sign")
    }

    fn now() -> u64 {
        SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs()
    }

    fn settings(file: Option<&std::path::Path>) -> AuthSettings {
        AuthSettings {
            jwks: file.map(|p| JwksSource::File(p.to_path_buf())),
            issuer: "https://idp.test/realms/shop".into(),
            audience: "shop-web".into(),
            leeway: Duration::from_secs(30),
            jwks_refresh_interval: Duration::from_secs(600),
            jwks_min_refresh_interval: Duration::from_millis(0),
        }
    }

    fn claims(extra: serde_json::Value) -> serde_json::Value {
        let mut base = json!({
            "sub": "alice",
            "iss": "https://idp.test/realms/shop",
            "aud": "shop-web",
            "exp": now() + 600,
            "iat": now(),
        });
        if let (Some(base), Some(extra)) = (base.as_object_mut(), extra.as_object()) {
            for (k, v) in extra {
                base.insert(k.clone(), v.clone());
            }
        }
        base
    }

    async fn verifier_for(signer: &Ed25519Signer) -> Arc<TokenVerifier> {
        TokenVerifier::start(&settings(None), vec![signer.public_jwk()])
            .await
            .expect("verifier")
    }

    #[tokio::test]
    async fn accepts_a_good_token_with_keycloak_roles() {
        let signer = key("k1");
        let verifier = verifier_for(&signer).await;
        let token = sign(
            &signer,
            &claims(json!({"realm_access": {"roles": ["customer", "offline_access", "bad,role"]}})),
        );
        let identity = verifier.verify(&token).await.expect("valid");
        assert_eq!(identity.user_id.as_str(), "alice");
        assert_eq!(identity.roles, ["customer", "offline_access"]);
    }

    #[tokio::test]
    async fn time_issuer_and_audience_are_checked_with_helpful_messages() {
        let signer = key("k1");
        let verifier = verifier_for(&signer).await;
        let cases = [
            (json!({"exp": now() - 120}), Rejection::Expired),
            (json!({"nbf": now() + 120}), Rejection::NotYetValid),
            (json!({"aud": "someone-else"}), Rejection::WrongAudience),
            (json!({"iss": "https://evil.test"}), Rejection::WrongIssuer),
        ];
        for (extra, expected) in cases {
            let token = sign(&signer, &claims(extra.clone()));
            assert_eq!(verifier.verify(&token).await, Err(expected), "{extra}");
        }
        // Within the leeway is fine.
        let token = sign(&signer, &claims(json!({"exp": now() - 5, "nbf": now() + 5})));
        assert!(verifier.verify(&token).await.is_ok());
    }

    #[tokio::test]
    async fn missing_claims_are_refused() {
        let signer = key("k1");
        let verifier = verifier_for(&signer).await;
        for claim in ["exp", "iss", "aud", "sub"] {
            let mut body = claims(json!({}));
            body.as_object_mut().map(|o| o.remove(claim));
            let token = sign(&signer, &body);
            assert!(
                matches!(verifier.verify(&token).await, Err(Rejection::Invalid(_))),
                "{claim}"
            );
        }
    }

    #[tokio::test]
    async fn algorithm_confusion_and_foreign_keys_are_refused() {
        let signer = key("k1");
        let verifier = verifier_for(&signer).await;
        let body = claims(json!({}));

        // Same kid, another key.
        let impostor = key("k1");
        assert_eq!(
            verifier.verify(&sign(&impostor, &body)).await,
            Err(Rejection::Invalid("bad signature"))
        );

        // HS256 keyed with the public key.
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("k1".into());
        let public = serde_json::to_vec(&signer.public_jwk()).expect("jwk json");
        let hs = jsonwebtoken::encode(&header, &body, &EncodingKey::from_secret(&public)).expect("hs256");
        assert!(matches!(verifier.verify(&hs).await, Err(Rejection::Invalid(_))));

        // alg: none, and a header naming another algorithm than the key's.
        for alg in ["none", "RS256", "ES256"] {
            let token = crate::dev_tokens::tests::unsigned_token(alg, "k1", &body);
            assert!(
                matches!(verifier.verify(&token).await, Err(Rejection::Invalid(_))),
                "{alg}"
            );
        }

        assert!(verifier.verify("not.a.token").await.is_err());
        assert!(verifier.verify("").await.is_err());
    }

    #[tokio::test]
    async fn unknown_kid_reloads_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("jwks.json");
        let first = key("first");
        let second = key("second");
        std::fs::write(&path, json!({"keys": [first.public_jwk()]}).to_string()).expect("write");
        let verifier = TokenVerifier::start(&settings(Some(&path)), vec![])
            .await
            .expect("verifier");
        let body = claims(json!({}));
        assert!(verifier.verify(&sign(&first, &body)).await.is_ok());
        assert_eq!(
            verifier.verify(&sign(&second, &body)).await,
            Err(Rejection::Invalid("unknown signing key"))
        );
        // Rotation: the new key appears in the file.
        std::fs::write(
            &path,
            json!({"keys": [first.public_jwk(), second.public_jwk(), {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"}]})
                .to_string(),
        )
        .expect("write");
        assert!(verifier.verify(&sign(&second, &body)).await.is_ok());
    }

    /// A verifier reading a JWKS file that holds one key, `k1`: the file's
    /// directory (kept while the test runs), its path, the key, the verifier.
    async fn trusting_one_key() -> (tempfile::TempDir, std::path::PathBuf, Ed25519Signer, Arc<TokenVerifier>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("jwks.json");
        let signer = key("k1");
        std::fs::write(&path, json!({"keys": [signer.public_jwk()]}).to_string()).expect("write");
        let verifier = TokenVerifier::start(&settings(Some(&path)), vec![])
            .await
            .expect("verifier");
        (dir, path, signer, verifier)
    }

    #[tokio::test]
    async fn verified_tokens_are_remembered_until_the_keys_change() {
        let (_dir, path, signer, verifier) = trusting_one_key().await;
        let token = sign(&signer, &claims(json!({})));
        assert!(verifier.verify(&token).await.is_ok());
        assert!(verifier.verified.get(&token).is_some(), "remembered");
        // The key is withdrawn: the remembered token goes with it.
        std::fs::write(&path, json!({"keys": [key("k2").public_jwk()]}).to_string()).expect("write");
        verifier.reload().await.expect("reload");
        assert!(verifier.verified.get(&token).is_none());
        assert!(verifier.verify(&token).await.is_err());
    }

    #[tokio::test]
    async fn a_verification_that_began_before_a_key_was_withdrawn_is_not_remembered() {
        let (_dir, path, signer, verifier) = trusting_one_key().await;
        let token = sign(&signer, &claims(json!({})));
        // The signature checks out against the set of the time…
        let verified = verifier.check(&token).await.expect("valid against the first set");
        // …which a reload replaces, withdrawing the key, before the answer is
        // stored.
        std::fs::write(&path, json!({"keys": [key("k2").public_jwk()]}).to_string()).expect("write");
        verifier.reload().await.expect("reload");
        verifier.remember(&token, &verified);
        assert_eq!(verifier.remembered(&token), None, "remembered past the reload");
        assert_eq!(
            verifier.verify(&token).await,
            Err(Rejection::Invalid("unknown signing key"))
        );
    }

    #[tokio::test]
    async fn a_file_without_usable_keys_is_fatal() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("jwks.json");
        std::fs::write(
            &path,
            r#"{"keys":[{"kty":"oct","k":"c2VjcmV0","kid":"h","alg":"HS256"}]}"#,
        )
        .expect("write");
        assert!(TokenVerifier::start(&settings(Some(&path)), vec![]).await.is_err());
    }

    #[test]
    fn key_algorithm_is_pinned_from_the_jwk() {
        let signer = key("k1");
        let mut jwk = signer.public_jwk();
        assert_eq!(verification_key(&jwk).map(|k| k.algorithm).ok(), Some(Algorithm::EdDSA));
        jwk.common.key_algorithm = Some(jsonwebtoken::jwk::KeyAlgorithm::RS256);
        assert!(verification_key(&jwk).is_err(), "an Ed25519 key cannot claim RS256");
        jwk.common.key_algorithm = None;
        assert_eq!(verification_key(&jwk).map(|k| k.algorithm).ok(), Some(Algorithm::EdDSA));
    }
}
