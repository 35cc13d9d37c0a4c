//! First-start provisioning, idempotent: the endorsement key (TCG default RSA-2048
//! template) and a restricted signing attestation key (AK) created under it, both
//! persistent at configurable handles; the EK certificate from its NV index when the
//! manufacturer (or `swtpm_setup`) put one there.
//!
//! A new AK is ECC NIST P-256 signing ECDSA-SHA256 by default ([`AkAlgorithm`]), or
//! RSA-2048 signing RSASSA-SHA256. An AK already persistent is used as it is, whatever
//! the configuration says: its public area decides the signature scheme
//! ([`AkScheme`]), so hosts provisioned with an RSA AK keep their identity.

use log::{info, warn};
use sha2::{Digest, Sha256};
use tss_esapi::abstraction::{ak, ek, AsymmetricAlgorithmSelection, DefaultKey};
use tss_esapi::constants::CapabilityType;
use tss_esapi::handles::{KeyHandle, ObjectHandle, PersistentTpmHandle, TpmHandle};
use tss_esapi::interface_types::algorithm::{
    EccSchemeAlgorithm, HashingAlgorithm, RsaSchemeAlgorithm, SignatureSchemeAlgorithm,
};
use tss_esapi::interface_types::dynamic_handles::Persistent;
use tss_esapi::interface_types::ecc::EccCurve;
use tss_esapi::interface_types::key_bits::RsaKeyBits;
use tss_esapi::interface_types::resource_handles::Provision;
use tss_esapi::interface_types::session_handles::AuthSession;
use tss_esapi::structures::{CapabilityData, HashScheme, Public, SignatureScheme};
use tss_esapi::traits::Marshall;
use tss_esapi::Context;

use super::error::{cmd, TpmError};
use super::keys;

/// Default persistent handle of the EK (TCG EK Credential Profile, RSA 2048).
pub const DEFAULT_EK_HANDLE: u32 = 0x8101_0001;
/// Default persistent handle of tvp's AK.
pub const DEFAULT_AK_HANDLE: u32 = 0x8101_0002;

/// The algorithm of an AK created at provisioning (an existing AK is kept as it is).
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    clap::ValueEnum,
)]
pub enum AkAlgorithm {
    /// ECC on NIST P-256, ECDSA with SHA-256 (the default: cheaper to sign with).
    #[default]
    #[serde(rename = "ecc-p256")]
    #[value(name = "ecc-p256")]
    EccP256,
    /// RSA-2048, RSASSA-PKCS1-v1_5 with SHA-256.
    #[serde(rename = "rsa-2048")]
    #[value(name = "rsa-2048")]
    Rsa2048,
}

/// Where the keys live, and what a new AK is.
#[derive(Debug, Clone, Copy)]
pub struct ProvisionConfig {
    /// Persistent handle for the EK.
    pub ek_handle: u32,
    /// Persistent handle for the AK.
    pub ak_handle: u32,
    /// Algorithm of an AK created now; an AK already at `ak_handle` is kept.
    pub ak_algorithm: AkAlgorithm,
}

/// The signature scheme of the host's AK, read from its public area.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AkScheme {
    /// RSA key, RSASSA-PKCS1-v1_5 with SHA-256.
    RsaSsaSha256,
    /// ECC NIST P-256 key, ECDSA with SHA-256.
    EcdsaSha256,
}

impl AkScheme {
    /// The scheme for TPM2_Quote / TPM2_Certify through ESAPI.
    pub fn esapi(self) -> SignatureScheme {
        let hash_scheme = HashScheme::new(HashingAlgorithm::Sha256);
        match self {
            AkScheme::RsaSsaSha256 => SignatureScheme::RsaSsa { hash_scheme },
            AkScheme::EcdsaSha256 => SignatureScheme::EcDsa { hash_scheme },
        }
    }

    /// The TPM_ALG_ID of the signature scheme (TPMT_SIG_SCHEME.scheme) for commands
    /// marshalled by hand.
    pub fn alg_id(self) -> u16 {
        match self {
            AkScheme::RsaSsaSha256 => 0x0014, // TPM_ALG_RSASSA
            AkScheme::EcdsaSha256 => 0x0018,  // TPM_ALG_ECDSA
        }
    }

    /// A short name for logs and messages.
    pub fn describe(self) -> &'static str {
        match self {
            AkScheme::RsaSsaSha256 => "RSA-2048 RSASSA-SHA256",
            AkScheme::EcdsaSha256 => "ECC P-256 ECDSA-SHA256",
        }
    }
}

/// The host's TPM identity as the API reports it.
#[derive(Debug, Clone)]
pub struct HostIdentity {
    /// Lowercase hex SHA-256 of the EK public key's DER SubjectPublicKeyInfo.
    pub host_id: String,
    /// EK public key, PEM.
    pub ek_public_pem: String,
    /// EK certificate (DER) from NV, if present.
    pub ek_certificate_der: Option<Vec<u8>>,
    /// AK public key, PEM.
    pub ak_public_pem: String,
    /// AK marshalled TPM2B_PUBLIC.
    pub ak_public_tpm2b: Vec<u8>,
    /// AK TPM name (nameAlg || digest).
    pub ak_name: Vec<u8>,
    /// EK TPM name.
    pub ek_name: Vec<u8>,
    /// Whether this start created any key (first start).
    pub created: bool,
    /// The AK's signature scheme (from its public area).
    pub ak_scheme: AkScheme,
}

/// Find or create the EK and AK; returns their handles and the host identity.
pub fn provision(
    ctx: &mut Context,
    cfg: &ProvisionConfig,
) -> Result<(KeyHandle, KeyHandle, HostIdentity), TpmError> {
    if cfg.ek_handle == cfg.ak_handle {
        return Err(TpmError::InvalidArgument(
            "ek_handle and ak_handle must differ".into(),
        ));
    }
    for h in [cfg.ek_handle, cfg.ak_handle] {
        if !(0x8100_0000..=0x81ff_ffff).contains(&h) {
            return Err(TpmError::InvalidArgument(format!(
                "{h:#010x} is not a persistent handle (0x81000000..0x81ffffff)"
            )));
        }
    }
    let mut created = false;
    let ek = match load_persistent(ctx, cfg.ek_handle)? {
        Some(h) => h,
        None => {
            let transient = ek::create_ek_object_2(
                ctx,
                AsymmetricAlgorithmSelection::Rsa(RsaKeyBits::Rsa2048),
                DefaultKey,
            )
            .map_err(cmd("CreatePrimary(EK)"))?;
            let h = persist(ctx, transient.into(), cfg.ek_handle)?;
            info!(handle = format!("{:#010x}", cfg.ek_handle); "created endorsement key");
            created = true;
            h
        }
    };
    let (ek_public, ek_name, _) = ctx
        .execute_without_session(|c| c.read_public(ek))
        .map_err(cmd("ReadPublic(EK)"))?;
    check_ek(&ek_public, cfg.ek_handle)?;

    let ak = match load_persistent(ctx, cfg.ak_handle)? {
        Some(h) => h,
        None => {
            let (key, scheme) = match cfg.ak_algorithm {
                AkAlgorithm::EccP256 => (
                    AsymmetricAlgorithmSelection::Ecc(EccCurve::NistP256),
                    SignatureSchemeAlgorithm::EcDsa,
                ),
                AkAlgorithm::Rsa2048 => (
                    AsymmetricAlgorithmSelection::Rsa(RsaKeyBits::Rsa2048),
                    SignatureSchemeAlgorithm::RsaSsa,
                ),
            };
            let created_ak = ak::create_ak_2(
                ctx,
                ek,
                HashingAlgorithm::Sha256,
                key,
                scheme,
                None,
                DefaultKey,
            )
            .map_err(cmd("Create(AK)"))?;
            let loaded = ak::load_ak(ctx, ek, None, created_ak.out_private, created_ak.out_public)
                .map_err(cmd("Load(AK)"))?;
            let h = persist(ctx, loaded.into(), cfg.ak_handle)?;
            info!(handle = format!("{:#010x}", cfg.ak_handle), algorithm = format!("{:?}", cfg.ak_algorithm); "created attestation key under the EK");
            created = true;
            h
        }
    };
    let (ak_public, ak_name, _) = ctx
        .execute_without_session(|c| c.read_public(ak))
        .map_err(cmd("ReadPublic(AK)"))?;
    let ak_scheme = check_ak(&ak_public, cfg.ak_handle)?;
    let configured = match cfg.ak_algorithm {
        AkAlgorithm::EccP256 => AkScheme::EcdsaSha256,
        AkAlgorithm::Rsa2048 => AkScheme::RsaSsaSha256,
    };
    if ak_scheme != configured {
        info!(handle = format!("{:#010x}", cfg.ak_handle), ak = ak_scheme.describe(); "keeping the persistent attestation key; ak_algorithm applies to new AKs only");
    }

    let ek_der = keys::public_to_spki_der(&ek_public)?;
    let ek_certificate_der = match ek::retrieve_ek_pubcert(
        ctx,
        AsymmetricAlgorithmSelection::Rsa(RsaKeyBits::Rsa2048),
    ) {
        Ok(c) if !c.is_empty() => Some(c),
        Ok(_) => None,
        Err(e) => {
            warn!(error = e.to_string(); "no EK certificate in NV (fine for development TPMs)");
            None
        }
    };
    let ak_tpm2b = tss_esapi::structures::PublicBuffer::try_from(ak_public.clone())
        .and_then(|b| b.marshall())
        .map_err(|e| TpmError::Encoding {
            what: "AK TPM2B_PUBLIC",
            reason: e.to_string(),
        })?;
    let identity = HostIdentity {
        host_id: hex::encode(Sha256::digest(&ek_der)),
        ek_public_pem: keys::public_to_pem(&ek_public)?,
        ek_certificate_der,
        ak_public_pem: keys::public_to_pem(&ak_public)?,
        ak_public_tpm2b: ak_tpm2b,
        ak_name: ak_name.value().to_vec(),
        ek_name: ek_name.value().to_vec(),
        created,
        ak_scheme,
    };
    Ok((ek, ak, identity))
}

/// The handles currently persistent in the TPM's owner range.
fn persistent_handles(ctx: &mut Context) -> Result<Vec<u32>, TpmError> {
    let mut out = Vec::new();
    let mut next = 0x8100_0000u32;
    loop {
        let (data, more) = ctx
            .execute_without_session(|c| c.get_capability(CapabilityType::Handles, next, 64))
            .map_err(cmd("GetCapability(persistent handles)"))?;
        let CapabilityData::Handles(list) = data else {
            break;
        };
        let handles: Vec<u32> = list.into_inner().into_iter().map(u32::from).collect();
        let last = handles.last().copied();
        out.extend(handles.into_iter().filter(|h| h >> 24 == 0x81));
        match (more, last) {
            (true, Some(l)) if l < 0x81ff_ffff => next = l + 1,
            _ => break,
        }
    }
    Ok(out)
}

pub(super) fn load_persistent(
    ctx: &mut Context,
    handle: u32,
) -> Result<Option<KeyHandle>, TpmError> {
    if !persistent_handles(ctx)?.contains(&handle) {
        return Ok(None);
    }
    let tpm_handle = PersistentTpmHandle::new(handle)
        .map(TpmHandle::Persistent)
        .map_err(|e| TpmError::InvalidArgument(format!("handle {handle:#010x}: {e}")))?;
    let obj = ctx
        .execute_without_session(|c| c.tr_from_tpm_public(tpm_handle))
        .map_err(cmd("TR_FromTPMPublic"))?;
    Ok(Some(obj.into()))
}

fn persist(ctx: &mut Context, transient: ObjectHandle, handle: u32) -> Result<KeyHandle, TpmError> {
    let persistent = PersistentTpmHandle::new(handle)
        .map(Persistent::Persistent)
        .map_err(|e| TpmError::InvalidArgument(format!("handle {handle:#010x}: {e}")))?;
    let result = ctx.execute_with_session(Some(AuthSession::Password), |c| {
        c.evict_control(Provision::Owner, transient, persistent)
    });
    // The transient copy is no longer needed either way.
    let _ = ctx.flush_context(transient);
    let obj = result.map_err(cmd("EvictControl"))?;
    Ok(obj.into())
}

fn check_ek(public: &Public, handle: u32) -> Result<(), TpmError> {
    let attrs = public.object_attributes();
    if !(attrs.restricted() && attrs.decrypt() && !attrs.sign_encrypt()) {
        return Err(TpmError::WrongObject {
            handle,
            found: describe(public),
            expected: "a restricted decryption key (an EK)",
        });
    }
    Ok(())
}

/// Check that `public` is a restricted, TPM-bound signing key tvp can use as its AK
/// (RSA, or ECC on NIST P-256), and return its signature scheme.
fn check_ak(public: &Public, handle: u32) -> Result<AkScheme, TpmError> {
    let attrs = public.object_attributes();
    if !(attrs.restricted() && attrs.sign_encrypt() && !attrs.decrypt() && attrs.fixed_tpm()) {
        return Err(TpmError::WrongObject {
            handle,
            found: describe(public),
            expected: "a restricted, TPM-bound signing key (an AK)",
        });
    }
    // A restricted key signs only with the scheme in its public area.
    match public {
        Public::Rsa { parameters, .. }
            if parameters.rsa_scheme().algorithm() == RsaSchemeAlgorithm::RsaSsa =>
        {
            Ok(AkScheme::RsaSsaSha256)
        }
        Public::Ecc { parameters, .. }
            if parameters.ecc_curve() == EccCurve::NistP256
                && parameters.ecc_scheme().algorithm() == EccSchemeAlgorithm::EcDsa =>
        {
            Ok(AkScheme::EcdsaSha256)
        }
        _ => Err(TpmError::WrongObject {
            handle,
            found: describe(public),
            expected: "an RSA (RSASSA) or ECC NIST P-256 (ECDSA) attestation key",
        }),
    }
}

fn describe(public: &Public) -> String {
    let a = public.object_attributes();
    format!(
        "a{} key with restricted={} sign={} decrypt={} fixedTPM={}",
        match public {
            Public::Rsa { .. } => "n RSA",
            Public::Ecc { .. } => "n ECC",
            _ => "",
        },
        a.restricted(),
        a.sign_encrypt(),
        a.decrypt(),
        a.fixed_tpm()
    )
}
