//! Development tokens: `shop.auth.v1.DevAuthService/IssueToken`, served by
//! the gateway only with `DEV_AUTH=on`. Anyone who can reach the port can
//! mint any identity, admin included, so it is for a laptop, never for
//! production. Tokens are EdDSA-signed with a key generated at start (or
//! read from `DEV_AUTH_KEY_FILE`), whose public half joins the verifier's
//! key set; they pass through exactly the same verification as real ones.

use std::{
    path::Path,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use base64::Engine;
use ed25519_dalek::{
    SigningKey,
    pkcs8::{DecodePrivateKey, EncodePrivateKey},
};
use jsonwebtoken::{
    Algorithm, EncodingKey, Header,
    jwk::{
        AlgorithmParameters, CommonParameters, EllipticCurve, Jwk, KeyAlgorithm, OctetKeyPairParameters,
        OctetKeyPairType, PublicKeyUse,
    },
};
use rand::RngCore;
use serde::Serialize;
use shop_proto::auth::v1::{IssueTokenRequest, IssueTokenResponse, dev_auth_service_server::DevAuthService};
use shop_runtime::identity::UserId;
use tonic::{Request, Response, Status};

use crate::config::DevAuthSettings;

#[derive(Debug, thiserror::Error)]
pub enum DevKeyError {
    #[error("cannot read DEV_AUTH_KEY_FILE {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("DEV_AUTH_KEY_FILE {0} is not an Ed25519 PKCS#8 PEM private key")]
    NotEd25519(String),
    #[error("cannot encode the development key: {0}")]
    Encode(String),
}

/// An Ed25519 key that signs JWTs under a key id.
pub struct Ed25519Signer {
    kid: String,
    encoding: EncodingKey,
    public: [u8; 32],
}

impl Ed25519Signer {
    fn from_signing_key(key: &SigningKey, kid: String) -> Result<Self, DevKeyError> {
        let der = key.to_pkcs8_der().map_err(|e| DevKeyError::Encode(e.to_string()))?;
        Ok(Self {
            kid,
            encoding: EncodingKey::from_ed_der(der.as_bytes()),
            public: key.verifying_key().to_bytes(),
        })
    }

    /// A fresh random key.
    pub fn generate(kid: &str) -> Result<Self, DevKeyError> {
        let mut seed = [0u8; 32];
        rand::rng().fill_bytes(&mut seed);
        Self::from_signing_key(&SigningKey::from_bytes(&seed), kid.to_owned())
    }

    /// The key in a PKCS#8 PEM file, made and written there (readable by
    /// this user only) when the file does not exist yet: one setting gives a
    /// key that outlives restarts without anyone making it by hand.
    pub fn from_pem_file_or_new(path: &Path) -> Result<Self, DevKeyError> {
        if !path.exists() {
            let mut seed = [0u8; 32];
            rand::rng().fill_bytes(&mut seed);
            let pem = SigningKey::from_bytes(&seed)
                .to_pkcs8_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
                .map_err(|e| DevKeyError::Encode(e.to_string()))?;
            let write = || -> std::io::Result<()> {
                use std::io::Write as _;
                use std::os::unix::fs::OpenOptionsExt as _;
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir)?;
                }
                // create_new: of two gateways starting at once, one writes
                // and the other reads what it wrote.
                let mut file = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(path)?;
                file.write_all(pem.as_bytes())?;
                file.sync_all()
            };
            match write() {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(source) => {
                    return Err(DevKeyError::Read {
                        path: path.display().to_string(),
                        source,
                    });
                }
            }
        }
        Self::from_pem_file(path)
    }

    /// A key from a PKCS#8 PEM file; its key id derives from the public key,
    /// so restarts with the same file keep issued tokens valid.
    pub fn from_pem_file(path: &Path) -> Result<Self, DevKeyError> {
        let shown = path.display().to_string();
        let pem = std::fs::read_to_string(path).map_err(|source| DevKeyError::Read {
            path: shown.clone(),
            source,
        })?;
        let key = SigningKey::from_pkcs8_pem(&pem).map_err(|_| DevKeyError::NotEd25519(shown))?;
        let kid = format!("dev-{}", hex_prefix(&key.verifying_key().to_bytes()));
        Self::from_signing_key(&key, kid)
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public key as a JWK with its algorithm pinned.
    pub fn public_jwk(&self) -> Jwk {
        Jwk {
            common: CommonParameters {
                public_key_use: Some(PublicKeyUse::Signature),
                key_algorithm: Some(KeyAlgorithm::EdDSA),
                key_id: Some(self.kid.clone()),
                ..Default::default()
            },
            algorithm: AlgorithmParameters::OctetKeyPair(OctetKeyPairParameters {
                key_type: OctetKeyPairType::OctetKeyPair,
                curve: EllipticCurve::Ed25519,
                x: base64_url(&self.public),
            }),
        }
    }

    pub fn sign<T: Serialize>(&self, claims: &T) -> Result<String, jsonwebtoken::errors::Error> {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding)
    }
}

fn hex_prefix(bytes: &[u8]) -> String {
    bytes.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// Unpadded base64url (RFC 7515), as JWK coordinates are written.
fn base64_url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[derive(Serialize)]
struct DevClaims<'a> {
    sub: &'a str,
    roles: &'a [String],
    iss: &'a str,
    aud: &'a str,
    iat: u64,
    nbf: u64,
    exp: u64,
}

/// Mints development tokens.
pub struct DevTokenIssuer {
    signer: Ed25519Signer,
    issuer: String,
    audience: String,
    ttl: Duration,
}

impl DevTokenIssuer {
    pub fn new(settings: &DevAuthSettings, issuer: &str, audience: &str) -> Result<Self, DevKeyError> {
        let signer = match &settings.key_file {
            Some(path) => Ed25519Signer::from_pem_file_or_new(path)?,
            None => {
                let mut id = [0u8; 8];
                rand::rng().fill_bytes(&mut id);
                Ed25519Signer::generate(&format!("dev-{}", hex_prefix(&id)))?
            }
        };
        Ok(Self {
            signer,
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            ttl: settings.token_ttl,
        })
    }

    pub fn public_jwk(&self) -> Jwk {
        self.signer.public_jwk()
    }

    /// A token for `user` with `roles`, and when it expires.
    pub fn issue(&self, user: &UserId, roles: &[String]) -> Result<(String, SystemTime), jsonwebtoken::errors::Error> {
        let now = SystemTime::now();
        let expires = now + self.ttl;
        let seconds = |t: SystemTime| t.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default();
        let claims = DevClaims {
            sub: user.as_str(),
            roles,
            iss: &self.issuer,
            aud: &self.audience,
            iat: seconds(now),
            nbf: seconds(now),
            exp: seconds(expires),
        };
        Ok((self.signer.sign(&claims)?, expires))
    }
}

fn timestamp(at: SystemTime) -> pbjson_types::Timestamp {
    let since_epoch = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    pbjson_types::Timestamp {
        seconds: i64::try_from(since_epoch.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(since_epoch.subsec_nanos()).unwrap_or(0),
    }
}

/// The gRPC face of [`DevTokenIssuer`].
pub struct DevAuthApi {
    pub issuer: Arc<DevTokenIssuer>,
}

#[tonic::async_trait]
impl DevAuthService for DevAuthApi {
    async fn issue_token(&self, request: Request<IssueTokenRequest>) -> Result<Response<IssueTokenResponse>, Status> {
        let request = request.into_inner();
        let user =
            UserId::parse(&request.user_id).map_err(|why| Status::invalid_argument(format!("user_id: {why}")))?;
        let mut roles: Vec<String> = Vec::new();
        for (index, role) in request.roles.iter().enumerate() {
            if role != "customer" && role != "admin" {
                return Err(Status::invalid_argument(format!(
                    "roles[{index}]: must be \"customer\" or \"admin\", got {role:?}"
                )));
            }
            if !roles.contains(role) {
                roles.push(role.clone());
            }
        }
        if roles.is_empty() {
            roles.push("customer".into());
        }
        let (access_token, expires) = self.issuer.issue(&user, &roles).map_err(|e| {
            tracing::error!(error = %e, "signing a development token failed");
            Status::internal("internal error")
        })?;
        Ok(Response::new(IssueTokenResponse {
            access_token,
            expires_at: Some(timestamp(expires)),
        }))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A token with the given header `alg` and no valid signature.
    pub(crate) fn unsigned_token(alg: &str, kid: &str, claims: &serde_json::Value) -> String {
        let header = serde_json::json!({"alg": alg, "typ": "JWT", "kid": kid});
        format!(
            "{}.{}.{}",
            base64_url(header.to_string().as_bytes()),
            base64_url(claims.to_string().as_bytes()),
            base64_url(b"not a signature")
        )
    }

    #[tokio::test]
    async fn issues_tokens_with_default_role_and_refuses_unknown_roles() {
        let settings = DevAuthSettings {
            key_file: None,
            token_ttl: Duration::from_secs(3600),
        };
        let api = DevAuthApi {
            issuer: Arc::new(DevTokenIssuer::new(&settings, "shop-dev", "shop").expect("issuer")),
        };
        let issued = api
            .issue_token(Request::new(IssueTokenRequest {
                user_id: "alice".into(),
                roles: vec![],
            }))
            .await
            .expect("token")
            .into_inner();
        assert_eq!(issued.access_token.split('.').count(), 3);
        assert!(issued.expires_at.is_some());
        let refused = api
            .issue_token(Request::new(IssueTokenRequest {
                user_id: "alice".into(),
                roles: vec!["root".into()],
            }))
            .await
            .expect_err("unknown role");
        assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    }

    #[test]
    fn a_pem_key_file_gives_a_stable_key_id() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("dev.pem");
        let key = SigningKey::from_bytes(&[7u8; 32]);
        let pem = key
            .to_pkcs8_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
            .expect("pem");
        std::fs::write(&path, pem.as_bytes()).expect("write");
        let a = Ed25519Signer::from_pem_file(&path).expect("pem key");
        let b = Ed25519Signer::from_pem_file(&path).expect("pem key");
        assert_eq!(a.kid(), b.kid());
        std::fs::write(&path, "not a key").expect("write");
        assert!(Ed25519Signer::from_pem_file(&path).is_err());
    }

    #[test]
    fn a_missing_key_file_is_made_once_and_kept_across_restarts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("keys").join("dev.pem");
        let first = Ed25519Signer::from_pem_file_or_new(&path).expect("made");
        let restarted = Ed25519Signer::from_pem_file_or_new(&path).expect("read");
        assert_eq!(first.kid(), restarted.kid(), "tokens survive a restart");
        let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&path).expect("written").permissions());
        assert_eq!(mode & 0o777, 0o600, "a private key is private");
    }
}
