//! The release decision.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;
use rand::RngCore;
use rsa::RsaPrivateKey;
use tvp_image::header::FIXED_LEN;
use tvp_image::stream::read_header;
use tvp_image::ImageKey;
use tvp_verifier::verify::binding::{pcr_policy_digest, verify_binding_key};
use tvp_verifier::verify::VerifyError;
use tvp_verifier::{
    verify, AkKey, Check, ExpectedPcrs, HexDigest, RuntimeIntegrityReport, VerifyOptions,
};

use crate::inventory::Inventory;
use crate::key_use::{KeyUse, ParsedUse};
use crate::protocol::{Request, Response};
use crate::release_policy::ReleasePolicy;

/// How long an issued nonce stays valid.
pub const NONCE_LIFETIME: Duration = Duration::from_secs(120);
/// Most outstanding nonces (older ones are dropped first).
pub const MAX_NONCES: usize = 4096;

/// A refusal: the check that failed and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{check}: {reason}")]
pub struct Refusal {
    /// `nonce`, `inventory`, `vm-description`, `vm-binding`, `evidence:<check>`,
    /// `ima:<kind>` (the host's runtime integrity, [`tvp_verifier::ima::ImaError::kind`]),
    /// `binding-key`, `image`, `vm-policy:<check>`.
    pub check: String,
    /// Why.
    pub reason: String,
}

fn refuse(check: impl Into<String>, reason: impl Into<String>) -> Refusal {
    Refusal {
        check: check.into(),
        reason: reason.into(),
    }
}

/// The service state.
pub struct Kms {
    key: RsaPrivateKey,
    key_id: [u8; 32],
    inventory: Inventory,
    policy: ReleasePolicy,
    nonces: Mutex<HashMap<Vec<u8>, Instant>>,
}

impl Kms {
    /// A service with this private key, inventory and release policy.
    pub fn new(key: RsaPrivateKey, inventory: Inventory, policy: ReleasePolicy) -> Self {
        let key_id = tvp_image::key::key_id(&key.to_public_key());
        Kms {
            key,
            key_id,
            inventory,
            policy,
            nonces: Mutex::new(HashMap::new()),
        }
    }

    /// Answer one request.
    pub fn handle(&self, req: Request) -> Response {
        self.handle_reporting(req).0
    }

    /// Answer one request; for a release, also what it established about the host's
    /// runtime integrity (for the decision log: `"not-checked"` must be visible to
    /// the tenant's operator, though the wire answer does not carry it).
    pub fn handle_reporting(&self, req: Request) -> (Response, Option<RuntimeIntegrityReport>) {
        match req {
            Request::Nonce => (
                Response::Nonce {
                    nonce: hex::encode(self.issue_nonce()),
                },
                None,
            ),
            Request::Release {
                nonce,
                host_id,
                key_use,
                evidence,
                binding_public,
                binding_certify_attest,
                binding_certify_signature,
                image_header,
            } => match self.release(
                &nonce,
                &host_id,
                &key_use,
                &evidence,
                [
                    &binding_public,
                    &binding_certify_attest,
                    &binding_certify_signature,
                ],
                &image_header,
            ) {
                Ok((w, ri)) => (
                    Response::Released {
                        wrapped_key: base64::engine::general_purpose::STANDARD.encode(w),
                    },
                    Some(ri),
                ),
                Err(r) => (
                    Response::Refused {
                        check: r.check,
                        reason: r.reason,
                    },
                    None,
                ),
            },
        }
    }

    fn issue_nonce(&self) -> Vec<u8> {
        let mut n = vec![0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut n);
        let mut map = self.nonces.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, t| t.elapsed() < NONCE_LIFETIME);
        if map.len() >= MAX_NONCES {
            if let Some(oldest) = map.iter().min_by_key(|(_, t)| **t).map(|(k, _)| k.clone()) {
                map.remove(&oldest);
            }
        }
        map.insert(n.clone(), Instant::now());
        n
    }

    /// Consume a nonce: valid only once and only within its lifetime.
    fn take_nonce(&self, n: &[u8]) -> Result<(), Refusal> {
        let mut map = self.nonces.lock().unwrap_or_else(|p| p.into_inner());
        match map.remove(n) {
            Some(t) if t.elapsed() < NONCE_LIFETIME => Ok(()),
            Some(_) => Err(refuse("nonce", "nonce expired")),
            None => Err(refuse(
                "nonce",
                "nonce was not issued by this service or was already used",
            )),
        }
    }

    fn release(
        &self,
        nonce_hex: &str,
        host_id: &str,
        key_use: &KeyUse,
        evidence: &serde_json::Value,
        binding: [&str; 3],
        image_header: &str,
    ) -> Result<(Vec<u8>, RuntimeIntegrityReport), Refusal> {
        let b64 = base64::engine::general_purpose::STANDARD;
        let nonce = hex::decode(nonce_hex).map_err(|e| refuse("nonce", format!("not hex: {e}")))?;
        self.take_nonce(&nonce)?;
        let host = self.inventory.host(host_id).ok_or_else(|| {
            refuse(
                "inventory",
                format!("host {host_id} is not in the inventory"),
            )
        })?;
        let ak = AkKey::from_pem(&host.ak_public_pem)
            .map_err(|e| refuse("inventory", format!("inventory AK of {host_id}: {e}")))?;
        let mut values = BTreeMap::new();
        for (i, v) in &host.platform_pcrs {
            let d: [u8; 32] = hex::decode(v)
                .ok()
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| {
                    refuse(
                        "inventory",
                        format!("PCR {i} of {host_id} is not 32 bytes of hex"),
                    )
                })?;
            values.insert(*i, d);
        }
        let expected = ExpectedPcrs {
            pcrs: BTreeMap::from([(
                "sha256".to_string(),
                values
                    .iter()
                    .map(|(i, v)| (*i, HexDigest(v.to_vec())))
                    .collect(),
            )]),
        };
        let key_use = key_use.parse().map_err(|e| refuse("vm-description", e))?;
        // The quote commits to the nonce AND to the VM that will receive the key.
        let use_digest = key_use.digest();
        let mut opts =
            VerifyOptions::bound(&nonce, &use_digest, ak.clone()).with_expected(expected);
        if let Some(ek) = &host.ek_name {
            let ek = hex::decode(ek).map_err(|e| refuse("inventory", format!("ek_name: {e}")))?;
            opts = opts
                .with_ek_name(&ek)
                .ok_or_else(|| refuse("inventory", "ek_name has an unsupported algorithm"))?;
        }
        // What ran on the host: its IMA list against the inventory's allowlist (and pinned
        // PCRs 0-9), exactly as the boot server and `tvpctl verify` judge it.
        opts = opts.with_runtime_integrity(host.runtime_integrity.clone());
        let evidence: tvp_verifier::Evidence = serde_json::from_value(evidence.clone())
            .map_err(|e| refuse("evidence:format", format!("evidence JSON: {e}")))?;
        let verified = verify(&evidence, &opts).map_err(|e| match (&e, e.check()) {
            (VerifyError::Ima(ima), _) => refuse(
                format!("ima:{}", ima.kind()),
                format!("host {host_id}'s runtime integrity: {ima}"),
            ),
            (_, Check::Nonce) => refuse(
                "vm-binding",
                format!(
                    "the quote's qualifying data is not SHA-256(nonce || {}), the digest of the described key use: it was made for another nonce or another VM ({e})",
                    hex::encode(use_digest)
                ),
            ),
            (_, c) => refuse(format!("evidence:{}", c.name()), e.to_string()),
        })?;
        let dec = |what: &str, s: &str| {
            b64.decode(s)
                .map_err(|e| refuse("binding-key", format!("{what}: not base64: {e}")))
        };
        let host_key = verify_binding_key(
            &dec("public", binding[0])?,
            &dec("certification", binding[1])?,
            &dec("signature", binding[2])?,
            &ak,
            &nonce,
            &pcr_policy_digest(&values),
        )
        .map_err(|e| refuse("binding-key", e.to_string()))?;
        let header_bytes = b64
            .decode(image_header)
            .map_err(|e| refuse("image", format!("header: not base64: {e}")))?;
        if header_bytes.len() < FIXED_LEN {
            return Err(refuse("image", "header truncated"));
        }
        let header = read_header(&mut header_bytes.as_slice())
            .map_err(|e| refuse("image", e.to_string()))?;
        if header.key_id != self.key_id {
            return Err(refuse(
                "image",
                "the image key is wrapped to another key-management key",
            ));
        }
        if let ParsedUse::Vm(vm) = &key_use {
            // The page names this image as the one it loads, or as its disk: the key
            // goes only to a VM whose measured page says which image it receives.
            let loads = vm
                .image()
                .is_some_and(|i| i.digest == header.image_digest && i.len == header.plaintext_len);
            let serves = vm.disk().is_some_and(|d| {
                d.header_digest == header.digest() && d.len == header.plaintext_len
            });
            if !loads && !serves {
                return Err(refuse(
                    "vm-description",
                    "the VM's configuration page neither loads this image (its image descriptor differs from the header's digest and length) nor serves it as its disk (its disk descriptor differs from the header's SHA-256 and length)",
                ));
            }
        }
        self.policy.check(&header.image_digest, &key_use)?;
        let image_key = ImageKey::unwrap(&header.wrapped_key, &self.key)
            .map_err(|e| refuse("image", e.to_string()))?;
        let wrapped = image_key
            .wrap(&host_key)
            .map_err(|e| refuse("binding-key", e.to_string()))?;
        Ok((wrapped, verified.runtime_integrity))
    }
}
