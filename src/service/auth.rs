//! Admin token and agent JWTs (HS256 with `sub`, `name`, `email`, `exp`). Missing
//! secrets are generated on first start and kept in the store (insert-or-get, so nodes
//! sharing a store agree); the admin token is kept only as a SHA-256 hash.

use crate::config::Settings;
use crate::domain::ids::UserId;
use crate::domain::time::Timestamp;
use crate::domain::user::User;
use crate::store::DynStore;
use anyhow::Context as _;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore as _;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Claims of an agent token.
#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    /// The user id.
    pub sub: String,
    /// The user's name.
    pub name: String,
    /// The user's email.
    pub email: String,
    /// Expiry (Unix seconds).
    pub exp: i64,
    /// Issued at (Unix seconds).
    pub iat: i64,
}

/// Token keys of a node. No `Debug`: it holds secrets.
pub struct Keys {
    admin_hash: [u8; 32],
    enc: EncodingKey,
    dec: DecodingKey,
    ttl_secs: u64,
}

/// A random URL-safe secret of `bytes` random bytes.
pub fn random_secret(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buf);
    URL_SAFE_NO_PAD.encode(buf)
}

fn sha256(s: &str) -> [u8; 32] {
    Sha256::digest(s.as_bytes()).into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The SHA-256 of `s` in lowercase hex (how one-time keys are stored).
pub fn sha256_hex(s: &str) -> String {
    hex(&sha256(s))
}

/// Compares two secrets in constant time.
pub fn secrets_equal(a: &str, b: &str) -> bool {
    sha256(a).ct_eq(&sha256(b)).into()
}

impl Keys {
    /// Loads (or generates and stores) the admin token and JWT secret. Returns the
    /// keys and, when this call generated the admin token, the token to print once.
    ///
    /// # Errors
    /// The store fails.
    pub async fn load(
        settings: &Settings,
        store: &DynStore,
    ) -> anyhow::Result<(Self, Option<SecretString>)> {
        let mut generated = None;
        let admin_hash = match &settings.auth.admin_token {
            Some(t) => sha256(t.expose_secret()),
            None => {
                let candidate = random_secret(24);
                let (hash, inserted) = store
                    .secret_insert_or_get("admin_token_sha256", &hex(&sha256(&candidate)))
                    .await
                    .context("loading the admin token")?;
                if inserted {
                    generated = Some(SecretString::from(candidate));
                }
                let mut out = [0u8; 32];
                for (i, b) in out.iter_mut().enumerate() {
                    *b = u8::from_str_radix(hash.get(i * 2..i * 2 + 2).unwrap_or("00"), 16)
                        .unwrap_or(0);
                }
                out
            }
        };
        let jwt_secret = match &settings.auth.jwt_secret {
            Some(s) => s.expose_secret().to_owned(),
            None => {
                store
                    .secret_insert_or_get("jwt_secret", &random_secret(32))
                    .await
                    .context("loading the JWT secret")?
                    .0
            }
        };
        Ok((
            Self {
                admin_hash,
                enc: EncodingKey::from_secret(jwt_secret.as_bytes()),
                dec: DecodingKey::from_secret(jwt_secret.as_bytes()),
                ttl_secs: settings.auth.token_ttl_secs,
            },
            generated,
        ))
    }

    /// Whether `presented` is the admin token (constant time).
    pub fn is_admin(&self, presented: &str) -> bool {
        sha256(presented).ct_eq(&self.admin_hash).into()
    }

    /// Issues a token for `user`; returns it and its expiry.
    ///
    /// # Errors
    /// Signing fails (a broken crypto backend).
    pub fn issue(&self, user: &User) -> anyhow::Result<(String, Timestamp)> {
        let now = Timestamp::now();
        let exp = now.plus_secs(i64::try_from(self.ttl_secs).unwrap_or(i64::MAX / 2000));
        let claims = Claims {
            sub: user.id.to_string(),
            name: user.name.clone(),
            email: user.email.clone(),
            exp: exp.millis() / 1000,
            iat: now.millis() / 1000,
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.enc)
            .context("signing a token")?;
        Ok((token, exp))
    }

    /// Verifies a token and returns its user id.
    pub fn verify(&self, token: &str) -> Option<UserId> {
        let mut v = Validation::new(Algorithm::HS256);
        v.leeway = 5;
        let data = jsonwebtoken::decode::<Claims>(token, &self.dec, &v).ok()?;
        UserId::parse(&data.claims.sub).ok()
    }
}
