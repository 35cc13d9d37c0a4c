//! The management authorization token a tenant signs and the cloud manager passes
//! with a restricted operation (`X-Tvp-Authorization` header or `authorization`
//! field). Signed bytes:
//!
//! ```text
//! "tvp-authz-v1\0" || alg str || key_id [32] || op str || vm str
//!   || params_digest [32] || counter u64 || expires u64
//! ```
//!
//! (strings u32-length-prefixed, integers big-endian). `key_id` is SHA-256 of the
//! signing key's DER SubjectPublicKeyInfo. Ed25519 signs those bytes directly; ECDSA
//! P-256 signs their SHA-256 and carries the fixed 64-byte `r || s`. The token's text
//! form is base64url (no padding) of its compact JSON.

use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::encode::Encoder;
use crate::policy::TenantPolicy;
use crate::Digest32;

/// Token format version.
pub const TOKEN_VERSION: u32 = 1;
/// Largest accepted token text.
pub const MAX_TOKEN_TEXT: usize = 4096;

/// Signature algorithm of a tenant management key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SigAlg {
    /// Ed25519 (RFC 8032).
    Ed25519,
    /// ECDSA over NIST P-256 with SHA-256.
    EcdsaP256,
}

impl SigAlg {
    fn as_str(self) -> &'static str {
        match self {
            SigAlg::Ed25519 => "ed25519",
            SigAlg::EcdsaP256 => "ecdsa-p256",
        }
    }
}

/// A signed authorization.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthToken {
    /// Format version.
    pub v: u32,
    /// Signature algorithm.
    pub alg: SigAlg,
    /// SHA-256 (hex) of the signer's DER SubjectPublicKeyInfo.
    pub key_id: String,
    /// The operation (`pause`, ...).
    pub op: String,
    /// The VM id.
    pub vm: String,
    /// `params::digest` of the operation's parameters (hex).
    pub params_digest: String,
    /// Per-VM counter; must exceed every counter tvpd accepted for this VM.
    pub counter: u64,
    /// Unix seconds after which the token is void.
    pub expires: u64,
    /// Signature (base64).
    pub signature: String,
}

/// Why a token is refused. Every variant is a distinct, stable reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthzError {
    /// No token given for a restricted operation.
    #[error("operation '{op}' is restricted: pass the tenant's authorization (tvpctl authorize) in the X-Tvp-Authorization header")]
    Missing { op: String },
    /// Not a token.
    #[error("authorization token is malformed: {0}")]
    Malformed(String),
    /// Signed by a key other than the VM's management key.
    #[error(
        "authorization is signed by key {token_key}, not by this VM's management key {vm_key}"
    )]
    WrongKey { token_key: String, vm_key: String },
    /// The signature does not verify.
    #[error("authorization signature does not verify (forged or altered token)")]
    BadSignature,
    /// For another VM.
    #[error("authorization is for VM '{token_vm}', not '{vm}'")]
    OtherVm { token_vm: String, vm: String },
    /// For another operation.
    #[error("authorization is for operation '{token_op}', not '{op}'")]
    OtherOperation { token_op: String, op: String },
    /// Parameters differ from those signed.
    #[error(
        "the request's parameters differ from the authorized ones (digest {request} vs {token})"
    )]
    ParamsMismatch { request: String, token: String },
    /// Replay or stale counter.
    #[error("authorization counter {counter} is not greater than the last accepted {last} (replayed or stale token); sign with a higher --counter")]
    CounterNotIncreasing { counter: u64, last: u64 },
    /// Past its expiry.
    #[error("authorization expired at {expires} (now {now}); sign a new one")]
    Expired { expires: u64, now: u64 },
    /// The policy does not permit the operation.
    #[error("the tenant policy does not allow operation '{op}'")]
    NotAllowedByPolicy { op: String },
    /// The key's lease is over.
    #[error("the tenant management key's lease ended at {lease_end} (now {now}); the tenant must renew it")]
    KeyLeaseExpired { lease_end: u64, now: u64 },
}

impl AuthzError {
    /// Stable machine-readable reason.
    pub fn code(&self) -> &'static str {
        match self {
            AuthzError::Missing { .. } => "authorization_missing",
            AuthzError::Malformed(_) => "authorization_malformed",
            AuthzError::WrongKey { .. } => "wrong_key",
            AuthzError::BadSignature => "bad_signature",
            AuthzError::OtherVm { .. } => "other_vm",
            AuthzError::OtherOperation { .. } => "other_operation",
            AuthzError::ParamsMismatch { .. } => "params_mismatch",
            AuthzError::CounterNotIncreasing { .. } => "counter_not_increasing",
            AuthzError::Expired { .. } => "expired",
            AuthzError::NotAllowedByPolicy { .. } => "not_allowed_by_policy",
            AuthzError::KeyLeaseExpired { .. } => "key_lease_expired",
        }
    }
}

/// A tenant management public key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TenantKey {
    /// Ed25519.
    Ed25519(ed25519_dalek::VerifyingKey),
    /// ECDSA P-256.
    EcdsaP256(p256::ecdsa::VerifyingKey),
}

/// A tenant signing key (the tenant's side: `tvpctl authorize`, tests).
pub enum TenantSigner {
    /// Ed25519.
    Ed25519(ed25519_dalek::SigningKey),
    /// ECDSA P-256.
    EcdsaP256(p256::ecdsa::SigningKey),
}

impl TenantKey {
    /// From a PEM SubjectPublicKeyInfo (`-----BEGIN PUBLIC KEY-----`).
    pub fn from_pem(pem: &str) -> Result<Self, AuthzError> {
        use ed25519_dalek::pkcs8::DecodePublicKey as _;
        if let Ok(k) = ed25519_dalek::VerifyingKey::from_public_key_pem(pem) {
            return Ok(TenantKey::Ed25519(k));
        }
        p256::ecdsa::VerifyingKey::from_public_key_pem(pem)
            .map(TenantKey::EcdsaP256)
            .map_err(|_| {
                AuthzError::Malformed(
                    "management key is neither an Ed25519 nor a P-256 PEM public key".into(),
                )
            })
    }

    /// PEM SubjectPublicKeyInfo (what [`TenantKey::from_pem`] reads).
    pub fn to_pem(&self) -> String {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD.encode(self.spki_der());
        let mut s = String::from("-----BEGIN PUBLIC KEY-----\n");
        for chunk in b64.as_bytes().chunks(64) {
            s.push_str(&String::from_utf8_lossy(chunk));
            s.push('\n');
        }
        s.push_str("-----END PUBLIC KEY-----\n");
        s
    }

    /// DER SubjectPublicKeyInfo.
    pub fn spki_der(&self) -> Vec<u8> {
        match self {
            TenantKey::Ed25519(k) => {
                use ed25519_dalek::pkcs8::EncodePublicKey as _;
                k.to_public_key_der()
                    .map(|d| d.as_bytes().to_vec())
                    .unwrap_or_default()
            }
            TenantKey::EcdsaP256(k) => {
                use p256::pkcs8::EncodePublicKey as _;
                k.to_public_key_der()
                    .map(|d| d.as_bytes().to_vec())
                    .unwrap_or_default()
            }
        }
    }

    /// SHA-256 of the DER SubjectPublicKeyInfo (hex).
    pub fn key_id(&self) -> String {
        hex::encode(Sha256::digest(self.spki_der()))
    }

    fn alg(&self) -> SigAlg {
        match self {
            TenantKey::Ed25519(_) => SigAlg::Ed25519,
            TenantKey::EcdsaP256(_) => SigAlg::EcdsaP256,
        }
    }

    fn verify_sig(&self, msg: &[u8], sig: &[u8]) -> bool {
        match self {
            TenantKey::Ed25519(k) => ed25519_dalek::Signature::from_slice(sig)
                .map(|s| k.verify_strict(msg, &s).is_ok())
                .unwrap_or(false),
            TenantKey::EcdsaP256(k) => {
                use p256::ecdsa::signature::Verifier as _;
                p256::ecdsa::Signature::from_slice(sig)
                    .map(|s| k.verify(msg, &s).is_ok())
                    .unwrap_or(false)
            }
        }
    }
}

impl TenantSigner {
    /// A fresh random Ed25519 key.
    pub fn generate_ed25519() -> Self {
        TenantSigner::Ed25519(ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng))
    }

    /// A fresh random ECDSA P-256 key.
    pub fn generate_p256() -> Self {
        TenantSigner::EcdsaP256(p256::ecdsa::SigningKey::random(&mut rand::rngs::OsRng))
    }

    /// From a PKCS#8 PEM private key (`openssl genpkey -algorithm ed25519` or
    /// `-algorithm EC -pkeyopt ec_paramgen_curve:P-256`).
    pub fn from_pkcs8_pem(pem: &str) -> Result<Self, AuthzError> {
        use ed25519_dalek::pkcs8::DecodePrivateKey as _;
        if let Ok(k) = ed25519_dalek::SigningKey::from_pkcs8_pem(pem) {
            return Ok(TenantSigner::Ed25519(k));
        }
        p256::ecdsa::SigningKey::from_pkcs8_pem(pem)
            .map(TenantSigner::EcdsaP256)
            .map_err(|_| {
                AuthzError::Malformed(
                    "signing key is neither an Ed25519 nor a P-256 PKCS#8 PEM private key".into(),
                )
            })
    }

    /// PKCS#8 PEM (what [`TenantSigner::from_pkcs8_pem`] and `tvpctl authorize --key`
    /// read).
    pub fn to_pkcs8_pem(&self) -> String {
        match self {
            TenantSigner::Ed25519(k) => {
                use ed25519_dalek::pkcs8::EncodePrivateKey as _;
                k.to_pkcs8_pem(Default::default())
                    .map(|p| p.to_string())
                    .unwrap_or_default()
            }
            TenantSigner::EcdsaP256(k) => {
                use p256::pkcs8::EncodePrivateKey as _;
                k.to_pkcs8_pem(Default::default())
                    .map(|p| p.to_string())
                    .unwrap_or_default()
            }
        }
    }

    /// The matching public key.
    pub fn public(&self) -> TenantKey {
        match self {
            TenantSigner::Ed25519(k) => TenantKey::Ed25519(k.verifying_key()),
            TenantSigner::EcdsaP256(k) => TenantKey::EcdsaP256(*k.verifying_key()),
        }
    }

    /// Sign an authorization.
    pub fn authorize(
        &self,
        op: &str,
        vm: &str,
        params_digest: &Digest32,
        counter: u64,
        expires: u64,
    ) -> AuthToken {
        let public = self.public();
        let mut t = AuthToken {
            v: TOKEN_VERSION,
            alg: public.alg(),
            key_id: public.key_id(),
            op: op.to_string(),
            vm: vm.to_string(),
            params_digest: hex::encode(params_digest),
            counter,
            expires,
            signature: String::new(),
        };
        let msg = t.signed_bytes().unwrap_or_default();
        let sig: Vec<u8> = match self {
            TenantSigner::Ed25519(k) => {
                use ed25519_dalek::Signer as _;
                k.sign(&msg).to_bytes().to_vec()
            }
            TenantSigner::EcdsaP256(k) => {
                use p256::ecdsa::signature::Signer as _;
                let s: p256::ecdsa::Signature = k.sign(&msg);
                s.to_bytes().to_vec()
            }
        };
        t.signature = base64::engine::general_purpose::STANDARD.encode(sig);
        t
    }
}

/// What the operation at hand must match; filled in by tvpd's gate.
#[derive(Debug, Clone)]
pub struct Expectation<'a> {
    /// The VM's registered management key.
    pub key: &'a TenantKey,
    /// The VM's policy.
    pub policy: &'a TenantPolicy,
    /// When the key was registered (Unix seconds), for the lease.
    pub key_since: u64,
    /// The VM the operation targets.
    pub vm: &'a str,
    /// The operation.
    pub op: &'a str,
    /// Digest of the request's canonical parameters.
    pub params_digest: Digest32,
    /// Highest counter accepted so far for this VM.
    pub last_counter: Option<u64>,
    /// Now, Unix seconds.
    pub now: u64,
}

impl AuthToken {
    /// The bytes the signature covers; `None` if `key_id`/`params_digest` are not hex
    /// digests.
    pub fn signed_bytes(&self) -> Option<Vec<u8>> {
        let key_id = crate::digest_from_hex(&self.key_id)?;
        let params = crate::digest_from_hex(&self.params_digest)?;
        let mut e = Encoder::new("tvp-authz-v1");
        e.str(self.alg.as_str())
            .fixed(&key_id)
            .str(&self.op)
            .str(&self.vm)
            .fixed(&params)
            .u64(self.counter)
            .u64(self.expires);
        Some(e.finish().to_vec())
    }

    /// Text form: base64url(JSON).
    pub fn encode(&self) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(serde_json::to_vec(self).unwrap_or_default())
    }

    /// Parse the text form.
    pub fn decode(text: &str) -> Result<Self, AuthzError> {
        let text = text.trim();
        if text.len() > MAX_TOKEN_TEXT {
            return Err(AuthzError::Malformed(format!(
                "{} bytes; at most {MAX_TOKEN_TEXT}",
                text.len()
            )));
        }
        let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(text)
            .map_err(|e| AuthzError::Malformed(format!("not base64url: {e}")))?;
        let t: AuthToken = serde_json::from_slice(&json)
            .map_err(|e| AuthzError::Malformed(format!("not a token: {e}")))?;
        if t.v != TOKEN_VERSION {
            return Err(AuthzError::Malformed(format!(
                "token version {} is not supported",
                t.v
            )));
        }
        Ok(t)
    }

    /// Check the token against `x`. Order: key, signature (so unsigned content is
    /// never interpreted), VM, operation, parameters, policy, key lease, expiry,
    /// counter. Does not record the counter: the caller persists it on success.
    pub fn verify(&self, x: &Expectation<'_>) -> Result<(), AuthzError> {
        let vm_key = x.key.key_id();
        if self.key_id != vm_key || self.alg != x.key.alg() {
            return Err(AuthzError::WrongKey {
                token_key: self.key_id.clone(),
                vm_key,
            });
        }
        let msg = self
            .signed_bytes()
            .ok_or_else(|| AuthzError::Malformed("key_id or params_digest is not hex".into()))?;
        let sig = base64::engine::general_purpose::STANDARD
            .decode(&self.signature)
            .map_err(|_| AuthzError::BadSignature)?;
        if !x.key.verify_sig(&msg, &sig) {
            return Err(AuthzError::BadSignature);
        }
        if self.vm != x.vm {
            return Err(AuthzError::OtherVm {
                token_vm: self.vm.clone(),
                vm: x.vm.to_string(),
            });
        }
        if self.op != x.op {
            return Err(AuthzError::OtherOperation {
                token_op: self.op.clone(),
                op: x.op.to_string(),
            });
        }
        let request = hex::encode(x.params_digest);
        if self.params_digest != request {
            return Err(AuthzError::ParamsMismatch {
                request,
                token: self.params_digest.clone(),
            });
        }
        if !x.policy.allows(x.op) {
            return Err(AuthzError::NotAllowedByPolicy {
                op: x.op.to_string(),
            });
        }
        if let Some(lease_end) = x.policy.lease_end(x.key_since) {
            if x.now > lease_end {
                return Err(AuthzError::KeyLeaseExpired {
                    lease_end,
                    now: x.now,
                });
            }
        }
        if x.now > self.expires {
            return Err(AuthzError::Expired {
                expires: self.expires,
                now: x.now,
            });
        }
        if let Some(last) = x.last_counter {
            if self.counter <= last {
                return Err(AuthzError::CounterNotIncreasing {
                    counter: self.counter,
                    last,
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params;
    use crate::policy::Remediation;

    fn ed() -> TenantSigner {
        TenantSigner::Ed25519(ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng))
    }
    fn ec() -> TenantSigner {
        TenantSigner::EcdsaP256(p256::ecdsa::SigningKey::random(&mut rand::rngs::OsRng))
    }
    fn policy() -> TenantPolicy {
        TenantPolicy {
            v: 1,
            allowed_operations: vec!["pause".into(), "resume".into()],
            reported_operations: vec!["*".into()],
            management_key_lease_secs: Some(1000),
            key_lease_secs: None,
            allow_plaintext_images: false,
            on_platform_change: None,
            on_tampering: Remediation::Alert,
        }
    }
    fn pd(s: &str) -> Digest32 {
        params::digest(&params::parse_kv(&[s.to_string()]).unwrap())
    }
    fn check(
        t: &AuthToken,
        key: &TenantKey,
        op: &str,
        last: Option<u64>,
        now: u64,
    ) -> Result<(), AuthzError> {
        let pol = policy();
        let x = Expectation {
            key,
            policy: &pol,
            key_since: 100,
            vm: "vm-a",
            op,
            params_digest: pd("reason=maintenance"),
            last_counter: last,
            now,
        };
        // Every check goes through the text form, as over the API.
        AuthToken::decode(&t.encode())?.verify(&x)
    }

    #[test]
    fn valid_tokens_of_both_algorithms_pass() {
        for s in [ed(), ec()] {
            let t = s.authorize("pause", "vm-a", &pd("reason=maintenance"), 5, 500);
            check(&t, &s.public(), "pause", Some(4), 200).unwrap();
            check(&t, &s.public(), "pause", None, 200).unwrap();
        }
    }

    #[test]
    fn attacks_are_refused_with_their_reason() {
        for s in [ed(), ec()] {
            let key = s.public();
            let good = s.authorize("pause", "vm-a", &pd("reason=maintenance"), 5, 500);
            // Forged signature: content changed after signing.
            let mut forged = good.clone();
            forged.counter = 6;
            assert_eq!(
                check(&forged, &key, "pause", None, 200),
                Err(AuthzError::BadSignature)
            );
            let mut forged = good.clone();
            forged.signature = base64::engine::general_purpose::STANDARD.encode([0u8; 64]);
            assert_eq!(
                check(&forged, &key, "pause", None, 200),
                Err(AuthzError::BadSignature)
            );
            // Signed by another key, claiming the VM's key id.
            let mut other = ed().authorize("pause", "vm-a", &pd("reason=maintenance"), 5, 500);
            assert!(matches!(
                check(&other, &key, "pause", None, 200),
                Err(AuthzError::WrongKey { .. })
            ));
            other.key_id = key.key_id();
            other.alg = good.alg;
            assert_eq!(
                check(&other, &key, "pause", None, 200),
                Err(AuthzError::BadSignature)
            );
            // Another VM's token.
            let t = s.authorize("pause", "vm-b", &pd("reason=maintenance"), 5, 500);
            assert!(matches!(
                check(&t, &key, "pause", None, 200),
                Err(AuthzError::OtherVm { .. })
            ));
            // Used for another operation.
            assert!(matches!(
                check(&good, &key, "resume", None, 200),
                Err(AuthzError::OtherOperation { .. })
            ));
            // Changed parameters.
            let t = s.authorize("pause", "vm-a", &pd("reason=other"), 5, 500);
            assert!(matches!(
                check(&t, &key, "pause", None, 200),
                Err(AuthzError::ParamsMismatch { .. })
            ));
            // Replay and stale counters.
            assert_eq!(
                check(&good, &key, "pause", Some(5), 200),
                Err(AuthzError::CounterNotIncreasing {
                    counter: 5,
                    last: 5
                })
            );
            // Expired.
            assert_eq!(
                check(&good, &key, "pause", None, 501),
                Err(AuthzError::Expired {
                    expires: 500,
                    now: 501
                })
            );
            // Not in policy (correctly signed).
            let t = s.authorize("delete", "vm-a", &pd("reason=maintenance"), 5, 500);
            assert_eq!(
                check(&t, &key, "delete", None, 200),
                Err(AuthzError::NotAllowedByPolicy {
                    op: "delete".into()
                })
            );
            // Key lease over (key registered at 100, lease 1000).
            let t = s.authorize("pause", "vm-a", &pd("reason=maintenance"), 5, 5000);
            assert_eq!(
                check(&t, &key, "pause", None, 1101),
                Err(AuthzError::KeyLeaseExpired {
                    lease_end: 1100,
                    now: 1101
                })
            );
        }
        assert!(matches!(
            AuthToken::decode("!!"),
            Err(AuthzError::Malformed(_))
        ));
        assert!(matches!(
            AuthToken::decode(&"A".repeat(5000)),
            Err(AuthzError::Malformed(_))
        ));
    }

    #[test]
    fn keys_round_trip_through_pem() {
        use ed25519_dalek::pkcs8::{EncodePrivateKey as _, EncodePublicKey as _};
        let k = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
        let pem = k.to_pkcs8_pem(Default::default()).unwrap();
        let s = TenantSigner::from_pkcs8_pem(&pem).unwrap();
        let pubpem = k
            .verifying_key()
            .to_public_key_pem(Default::default())
            .unwrap();
        assert_eq!(TenantKey::from_pem(&pubpem).unwrap(), s.public());
    }
}
