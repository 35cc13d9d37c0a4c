//! The management authorization token a tenant signs and the cloud manager passes
//! with a restricted operation (`X-Tvp-Authorization` header or `authorization`
//! field). Signed bytes (format 2):
//!
//! ```text
//! "tvp-authz-v2\0" || alg str || key_id [32] || host bytes || op str || vm str
//!   || incarnation [32] || params_digest [32] || counter u64 || expires u64
//! ```
//!
//! (strings and bytes u32-length-prefixed, integers big-endian). `key_id` is SHA-256
//! of the signing key's DER SubjectPublicKeyInfo. `host` is the TPM name of the host's
//! attestation key (`ak_name` of `GET /v1/host`, as pinned in the tenant's inventory),
//! so a token is void on every other host. `incarnation` is SHA-256 of the VM's
//! 4096-byte configuration page, the `config-page` event of PCR 23 that the tenant
//! verified in the VM's evidence: a new boot of the VM (reboot, or another VM created
//! under the same id) has another page, so a token is void for it. Format 1 tokens
//! (bound to the VM id alone) are refused. Ed25519 signs those bytes directly; ECDSA
//! P-256 signs their SHA-256 and carries the fixed 64-byte `r || s`. The token's text
//! form is base64url (no padding) of its compact JSON.

use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::encode::Encoder;
pub use crate::keys::{SigAlg, TenantKey, TenantSigner};
use crate::policy::TenantPolicy;
use crate::Digest32;

/// Token format version.
pub const TOKEN_VERSION: u32 = 2;
/// Longest host AK name accepted (a TPM name: 2-byte algorithm and a digest of at
/// most 64 bytes).
pub const MAX_HOST_NAME: usize = 66;
/// Largest accepted token text.
pub const MAX_TOKEN_TEXT: usize = 4096;

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
    /// The host's AK name (hex TPM name, `ak_name` of `GET /v1/host`).
    pub host: String,
    /// The VM id.
    pub vm: String,
    /// SHA-256 (hex) of the VM's configuration page, as attested (PCR 23's
    /// `config-page` event).
    pub incarnation: String,
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
    /// A token format this tvpd does not accept (format 1 is bound to the VM id only).
    #[error("authorization token format {v} is not accepted: tokens must be format {TOKEN_VERSION}, bound to this host and the VM's attested incarnation (tvpctl authorize --host ... --evidence ...)")]
    UnsupportedVersion { v: u64 },
    /// Signed for another host.
    #[error("authorization is for the host with AK name {token_host}, not this host ({host}): a token is valid only on the host the tenant named")]
    HostMismatch { token_host: String, host: String },
    /// Signed for another incarnation of the VM (another configuration page: a decoy
    /// created under the same id, or an earlier boot).
    #[error("authorization is for VM incarnation {token} (the configuration page the tenant attested), but this VM runs incarnation {current}: attest the VM again and sign for what it runs")]
    IncarnationMismatch { token: String, current: String },
    /// tvpd does not know which configuration page the VM runs.
    #[error("the VM's incarnation (configuration page digest) is unknown to tvpd; no token can be checked against it")]
    IncarnationUnknown,
    /// The expiry lies further ahead than the policy allows.
    #[error("authorization expires at {expires}, {} s from now ({now}); the tenant policy allows at most {max} s (max_token_lifetime_secs)", expires.saturating_sub(*now))]
    LifetimeExceedsPolicy { expires: u64, now: u64, max: u64 },
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
            AuthzError::UnsupportedVersion { .. } => "unsupported_token_version",
            AuthzError::HostMismatch { .. } => "host_mismatch",
            AuthzError::IncarnationMismatch { .. } => "incarnation_mismatch",
            AuthzError::IncarnationUnknown => "incarnation_unknown",
            AuthzError::LifetimeExceedsPolicy { .. } => "lifetime_exceeds_policy",
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

impl TenantSigner {
    /// Sign an authorization for `op` on the VM `target` names.
    pub fn authorize(
        &self,
        op: &str,
        target: &Target,
        params_digest: &Digest32,
        counter: u64,
        expires: u64,
    ) -> AuthToken {
        let public = self.public();
        let mut t = AuthToken {
            v: TOKEN_VERSION,
            alg: public.alg(),
            key_id: public.key_id(),
            host: hex::encode(&target.host),
            op: op.to_string(),
            vm: target.vm.clone(),
            incarnation: hex::encode(target.incarnation),
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

/// Which VM a token is for: the host's AK name, the VM id and the VM's incarnation
/// (SHA-256 of its configuration page), as the tenant learned them from its inventory
/// and the VM's evidence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The host's AK name (TPM name bytes).
    pub host: Vec<u8>,
    /// The VM id.
    pub vm: String,
    /// SHA-256 of the VM's configuration page.
    pub incarnation: Digest32,
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
    /// This host's AK name (TPM name bytes).
    pub host: &'a [u8],
    /// The VM the operation targets.
    pub vm: &'a str,
    /// The VM's current incarnation (SHA-256 of its configuration page), if known.
    pub incarnation: Option<Digest32>,
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
    /// The bytes the signature covers; `None` if `key_id`, `incarnation` or
    /// `params_digest` are not hex digests or `host` is not a hex TPM name.
    pub fn signed_bytes(&self) -> Option<Vec<u8>> {
        let key_id = crate::digest_from_hex(&self.key_id)?;
        let params = crate::digest_from_hex(&self.params_digest)?;
        let incarnation = crate::digest_from_hex(&self.incarnation)?;
        let host = self.host_bytes()?;
        let mut e = Encoder::new("tvp-authz-v2");
        e.str(self.alg.as_str())
            .fixed(&key_id)
            .bytes(&host)
            .str(&self.op)
            .str(&self.vm)
            .fixed(&incarnation)
            .fixed(&params)
            .u64(self.counter)
            .u64(self.expires);
        Some(e.finish().to_vec())
    }

    /// The host AK name's bytes: lowercase hex, 1 to [`MAX_HOST_NAME`] bytes.
    fn host_bytes(&self) -> Option<Vec<u8>> {
        let ok = !self.host.is_empty()
            && self.host.len() <= 2 * MAX_HOST_NAME
            && self
                .host
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        ok.then(|| hex::decode(&self.host).ok()).flatten()
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
        // The version first, so an old token is named as such rather than as a
        // document with missing fields.
        #[derive(Deserialize)]
        struct Version {
            v: u64,
        }
        let v: Version = serde_json::from_slice(&json)
            .map_err(|e| AuthzError::Malformed(format!("not a token: {e}")))?;
        if v.v != u64::from(TOKEN_VERSION) {
            return Err(AuthzError::UnsupportedVersion { v: v.v });
        }
        let t: AuthToken = serde_json::from_slice(&json)
            .map_err(|e| AuthzError::Malformed(format!("not a token: {e}")))?;
        Ok(t)
    }

    /// Check the token against `x`. Order: key, signature (so unsigned content is
    /// never interpreted), host, VM, incarnation, operation, parameters, policy, key
    /// lease, expiry, the policy's lifetime cap, counter. Does not record the counter:
    /// the caller persists it on success.
    pub fn verify(&self, x: &Expectation<'_>) -> Result<(), AuthzError> {
        let vm_key = x.key.key_id();
        if self.key_id != vm_key || self.alg != x.key.alg() {
            return Err(AuthzError::WrongKey {
                token_key: self.key_id.clone(),
                vm_key,
            });
        }
        let msg = self.signed_bytes().ok_or_else(|| {
            AuthzError::Malformed(
                "key_id, incarnation or params_digest is not a lowercase hex SHA-256, or host is not a hex TPM name".into(),
            )
        })?;
        let sig = base64::engine::general_purpose::STANDARD
            .decode(&self.signature)
            .map_err(|_| AuthzError::BadSignature)?;
        if !x.key.verify_sig(&msg, &sig) {
            return Err(AuthzError::BadSignature);
        }
        let host = hex::encode(x.host);
        if self.host != host {
            return Err(AuthzError::HostMismatch {
                token_host: self.host.clone(),
                host,
            });
        }
        if self.vm != x.vm {
            return Err(AuthzError::OtherVm {
                token_vm: self.vm.clone(),
                vm: x.vm.to_string(),
            });
        }
        let current = x.incarnation.ok_or(AuthzError::IncarnationUnknown)?;
        if self.incarnation != hex::encode(current) {
            return Err(AuthzError::IncarnationMismatch {
                token: self.incarnation.clone(),
                current: hex::encode(current),
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
        if !x.policy.allows(x.op) && !crate::policy::is_key_operation(x.op) {
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
        let max = x.policy.max_token_lifetime();
        if self.expires.saturating_sub(x.now) > max {
            return Err(AuthzError::LifetimeExceedsPolicy {
                expires: self.expires,
                now: x.now,
                max,
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
            max_token_lifetime_secs: Some(600),
            key_lease_secs: None,
            allow_plaintext_images: false,
            on_platform_change: None,
            on_tampering: Remediation::Alert,
        }
    }
    const HOST: &[u8] = b"\x00\x0bhost-a-ak-name-of-32-bytes....!";
    const PAGE: Digest32 = [0x23; 32];
    fn tgt(vm: &str) -> Target {
        Target {
            host: HOST.to_vec(),
            vm: vm.into(),
            incarnation: PAGE,
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
            host: HOST,
            vm: "vm-a",
            incarnation: Some(PAGE),
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
            let t = s.authorize("pause", &tgt("vm-a"), &pd("reason=maintenance"), 5, 500);
            check(&t, &s.public(), "pause", Some(4), 200).unwrap();
            check(&t, &s.public(), "pause", None, 200).unwrap();
        }
    }

    #[test]
    fn attacks_are_refused_with_their_reason() {
        for s in [ed(), ec()] {
            let key = s.public();
            let good = s.authorize("pause", &tgt("vm-a"), &pd("reason=maintenance"), 5, 500);
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
            let mut other =
                ed().authorize("pause", &tgt("vm-a"), &pd("reason=maintenance"), 5, 500);
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
            let t = s.authorize("pause", &tgt("vm-b"), &pd("reason=maintenance"), 5, 500);
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
            let t = s.authorize("pause", &tgt("vm-a"), &pd("reason=other"), 5, 500);
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
            let t = s.authorize("delete", &tgt("vm-a"), &pd("reason=maintenance"), 5, 500);
            assert_eq!(
                check(&t, &key, "delete", None, 200),
                Err(AuthzError::NotAllowedByPolicy {
                    op: "delete".into()
                })
            );
            // Key lease over (key registered at 100, lease 1000).
            let t = s.authorize("pause", &tgt("vm-a"), &pd("reason=maintenance"), 5, 1500);
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
    fn tokens_are_bound_to_host_incarnation_and_a_capped_lifetime() {
        let s = ed();
        let key = s.public();
        let p = pd("reason=maintenance");
        // Another host (same VM id, same page digest even).
        let other_host = Target {
            host: b"\x00\x0bhost-b".to_vec(),
            ..tgt("vm-a")
        };
        let t = s.authorize("pause", &other_host, &p, 5, 500);
        assert!(matches!(
            check(&t, &key, "pause", None, 200),
            Err(AuthzError::HostMismatch { .. })
        ));
        // Another incarnation (a decoy VM under the same id, or another boot).
        let decoy = Target {
            incarnation: [0x24; 32],
            ..tgt("vm-a")
        };
        let t = s.authorize("pause", &decoy, &p, 5, 500);
        assert!(matches!(
            check(&t, &key, "pause", None, 200),
            Err(AuthzError::IncarnationMismatch { .. })
        ));
        // The host and incarnation are signed: editing them breaks the signature.
        let mut t = s.authorize("pause", &other_host, &p, 5, 500);
        t.host = hex::encode(HOST);
        assert_eq!(
            check(&t, &key, "pause", None, 200),
            Err(AuthzError::BadSignature)
        );
        // Expiry beyond the policy's cap (600 s): refused even though not expired.
        let t = s.authorize("pause", &tgt("vm-a"), &p, 5, 200 + 601);
        assert_eq!(
            check(&t, &key, "pause", None, 200),
            Err(AuthzError::LifetimeExceedsPolicy {
                expires: 801,
                now: 200,
                max: 600
            })
        );
        let t = s.authorize("pause", &tgt("vm-a"), &p, 5, 200 + 600);
        check(&t, &key, "pause", None, 200).unwrap();
        // Key operations need no policy entry.
        let t = s.authorize("renew-key-lease", &tgt("vm-a"), &p, 5, 500);
        check(&t, &key, "renew-key-lease", None, 200).unwrap();
        // Unknown incarnation on tvpd's side.
        let pol = policy();
        let t = s.authorize("pause", &tgt("vm-a"), &p, 5, 500);
        let x = Expectation {
            key: &key,
            policy: &pol,
            key_since: 100,
            host: HOST,
            vm: "vm-a",
            incarnation: None,
            op: "pause",
            params_digest: p,
            last_counter: None,
            now: 200,
        };
        assert_eq!(t.verify(&x), Err(AuthzError::IncarnationUnknown));
        // A format 1 token is named as such.
        let v1 = serde_json::json!({"v": 1, "alg": "ed25519", "key_id": key.key_id(),
            "op": "pause", "vm": "vm-a", "params_digest": hex::encode(p), "counter": 5,
            "expires": 500, "signature": ""});
        let text = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v1.to_string());
        let e = AuthToken::decode(&text).unwrap_err();
        assert_eq!(e, AuthzError::UnsupportedVersion { v: 1 });
        assert_eq!(e.code(), "unsupported_token_version");
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
