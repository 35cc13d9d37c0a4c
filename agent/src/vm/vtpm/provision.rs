//! Making a VM's TPM, once, before the VM first runs: tvpd starts the VM's swtpm on a
//! socket of its own (with the VM's sealed state key, so the state is encrypted from
//! its first byte), has it derive its endorsement key (the TCG default ECC P-256 EK)
//! and tvp's attestation key (a restricted ECDSA P-256 primary of the endorsement
//! hierarchy, [`ak_template`]), certifies both with the host's vTPM CA
//! (`tpm/vtpm_ca.rs`), stores the EK certificate in the TPM's standard NV index
//! (platform-created, write-locked) and shuts the TPM down cleanly.
//!
//! Both keys are primaries: the guest re-creates exactly these keys from their
//! templates (the endorsement seed never changes: TPM2_ChangeEPS needs the platform
//! authorization, which the firmware disables), so they need no storage.
//!
//! What comes out is kept in the VM's directory (`vtpm-identity.json`) and the digests
//! of both public areas go into the VM's configuration page, which the host measures
//! into PCR 23: the host's attestation of the VM names its TPM.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tss_esapi::attributes::ObjectAttributesBuilder;
use tss_esapi::interface_types::algorithm::{HashingAlgorithm, PublicAlgorithm};
use tss_esapi::interface_types::ecc::EccCurve;
use tss_esapi::structures::{
    EccPoint, EccScheme, HashScheme, KeyDerivationFunctionScheme, PublicBuilder,
    PublicEccParametersBuilder, SymmetricDefinitionObject,
};
use tss_esapi::traits::Marshall;

use super::wire::{self, VmTpm};
use crate::tpm::service::TpmClient;
use crate::vm::VmError;
use tvp_verifier::vtpm::cert::to_pem as pem;

/// The TCG's NV index for an ECC P-256 EK certificate (EK Credential Profile 2.0).
pub const EK_CERT_NV_INDEX: u32 = 0x01c0_000a;
/// The identity file in the VM's directory.
pub const IDENTITY_FILE: &str = "vtpm-identity.json";
/// How long the VM's swtpm may take to answer one command while it is provisioned.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// How long it may take to end once tvpd closed its socket.
const EXIT_TIMEOUT: Duration = Duration::from_secs(10);

/// What tvpd keeps about a VM's TPM (`vms/<id>/vtpm-identity.json`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Identity {
    /// Format version: 1.
    pub version: u32,
    /// The EK's TPMT_PUBLIC, as the VM's TPM made it.
    #[serde(
        serialize_with = "tvp_verifier::hexbytes::ser_b64",
        deserialize_with = "tvp_verifier::hexbytes::de_b64"
    )]
    pub ek_public: Vec<u8>,
    /// The AK's TPMT_PUBLIC.
    #[serde(
        serialize_with = "tvp_verifier::hexbytes::ser_b64",
        deserialize_with = "tvp_verifier::hexbytes::de_b64"
    )]
    pub ak_public: Vec<u8>,
    /// The vTPM CA's self-signed certificate at the VM's creation (PEM).
    pub ca_certificate_pem: String,
    /// The EK certificate (PEM); its DER is also in the TPM's NV index 0x01c0000a.
    pub ek_certificate_pem: String,
    /// The AK certificate (PEM).
    pub ak_certificate_pem: String,
}

impl Identity {
    /// The page's TPM descriptor: both public areas by digest.
    pub fn page_ref(&self) -> tvp_abi::config::TpmRef {
        tvp_abi::config::TpmRef {
            ek_public_digest: Sha256::digest(&self.ek_public).into(),
            ak_public_digest: Sha256::digest(&self.ak_public).into(),
        }
    }

    /// Read the VM's identity; `None` if it has none yet.
    pub fn load(vm_dir: &Path) -> Result<Option<Self>, VmError> {
        let path = vm_dir.join(IDENTITY_FILE);
        match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| VmError::Spawn(format!("vTPM: {}: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(VmError::Spawn(format!("vTPM: {}: {e}", path.display()))),
        }
    }

    fn store(&self, vm_dir: &Path) -> Result<(), VmError> {
        let path = vm_dir.join(IDENTITY_FILE);
        let tmp = vm_dir.join(format!("{IDENTITY_FILE}.tmp"));
        let err = |e: std::io::Error| VmError::Spawn(format!("vTPM: {}: {e}", path.display()));
        let body = serde_json::to_vec_pretty(self)
            .map_err(|e| VmError::Spawn(format!("vTPM: identity: {e}")))?;
        let _ = std::fs::remove_file(&tmp);
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .and_then(|mut f| f.write_all(&body).and_then(|()| f.sync_all()))
            .map_err(err)?;
        std::fs::rename(&tmp, &path).map_err(err)
    }
}

/// The template of tvp's AK in a VM's TPM: ECC NIST P-256, ECDSA-SHA256, restricted
/// signing, fixedTPM|fixedParent|sensitiveDataOrigin|userWithAuth, nameAlg SHA-256,
/// empty unique. The guest re-creates it with
/// `tpm2_createprimary -C e -g sha256 -G ecc256:ecdsa-sha256:null -a 'fixedtpm|fixedparent|sensitivedataorigin|userwithauth|restricted|sign'`.
pub fn ak_template() -> Result<Vec<u8>, VmError> {
    let e = |e: tss_esapi::Error| VmError::Spawn(format!("vTPM: AK template: {e}"));
    let attributes = ObjectAttributesBuilder::new()
        .with_fixed_tpm(true)
        .with_fixed_parent(true)
        .with_sensitive_data_origin(true)
        .with_user_with_auth(true)
        .with_restricted(true)
        .with_sign_encrypt(true)
        .build()
        .map_err(e)?;
    let parameters = PublicEccParametersBuilder::new()
        .with_symmetric(SymmetricDefinitionObject::Null)
        .with_ecc_scheme(EccScheme::EcDsa(HashScheme::new(HashingAlgorithm::Sha256)))
        .with_curve(EccCurve::NistP256)
        .with_is_signing_key(true)
        .with_is_decryption_key(false)
        .with_restricted(true)
        .with_key_derivation_function_scheme(KeyDerivationFunctionScheme::Null)
        .build()
        .map_err(e)?;
    PublicBuilder::new()
        .with_public_algorithm(PublicAlgorithm::Ecc)
        .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
        .with_object_attributes(attributes)
        .with_ecc_parameters(parameters)
        .with_ecc_unique_identifier(EccPoint::default())
        .build()
        .and_then(|p| p.marshall())
        .map_err(e)
}

/// The TCG default EK template (ECC P-256, "L-2" of the EK Credential Profile).
pub fn ek_template() -> Result<Vec<u8>, VmError> {
    tss_esapi::abstraction::ek::create_ek_public_from_default_template_2(
        tss_esapi::abstraction::AsymmetricAlgorithmSelection::Ecc(EccCurve::NistP256),
        None,
    )
    .and_then(|p| p.marshall())
    .map_err(|e| VmError::Spawn(format!("vTPM: EK template: {e}")))
}

/// Signs certificates with the host TPM's vTPM CA key.
struct HostCa<'a>(&'a TpmClient);

impl tvp_verifier::vtpm::CaSigner for HostCa<'_> {
    fn sign_digest(&mut self, digest: &[u8; 32]) -> Result<([u8; 32], [u8; 32]), String> {
        let d = *digest;
        self.0
            .call(move |t| t.vtpm_ca_sign(&d))
            .map_err(|e| e.to_string())
    }
}

/// Make VM `id`'s TPM in `vm_dir` (state key `key`, swtpm as `run_as`): see the
/// module doc. Any state a failed earlier attempt left is discarded first.
pub fn provision(
    id: &str,
    vm_dir: &Path,
    key: &tvp_image::ImageKey,
    run_as: Option<(u32, u32)>,
    tpm: &TpmClient,
) -> Result<Identity, VmError> {
    let fail = |what: &str, e: &dyn std::fmt::Display| {
        VmError::Spawn(format!("vTPM: making the VM's TPM: {what}: {e}"))
    };
    let state = vm_dir.join(super::STATE_DIR);
    if state.exists() {
        std::fs::remove_dir_all(&state).map_err(|e| fail("clearing an unfinished state", &e))?;
    }
    let identity = with_tpm(vm_dir, key, run_as, "making the VM's TPM", |t| {
        let w = |e: wire::WireError| fail("the VM's TPM", &e);
        t.startup().map_err(w)?;
        let (h, ek_public) = t
            .create_primary(wire::RH_ENDORSEMENT, &ek_template()?)
            .map_err(w)?;
        t.flush(h).map_err(w)?;
        let (h, ak_public) = t
            .create_primary(wire::RH_ENDORSEMENT, &ak_template()?)
            .map_err(w)?;
        t.flush(h).map_err(w)?;
        let host_id = tpm.identity().host_id.clone();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let ca_public = tpm
            .call(|t| t.vtpm_ca_public())
            .map_err(|e| fail("the host's vTPM CA key", &e))?;
        let mut signer = HostCa(tpm);
        let cert = |e: tvp_verifier::vtpm::CertError| fail("certificate", &e);
        let ca = tvp_verifier::vtpm::ca_certificate(&ca_public, &host_id, now, &mut signer)
            .map_err(cert)?;
        let subject = |role, public| tvp_verifier::vtpm::VtpmSubject {
            host_id: &host_id,
            vm_id: id,
            role,
            public,
        };
        let ek_cert = tvp_verifier::vtpm::key_certificate(
            &ca_public,
            &subject(tvp_verifier::vtpm::KeyRole::Ek, &ek_public),
            now,
            &mut signer,
        )
        .map_err(cert)?;
        let ak_cert = tvp_verifier::vtpm::key_certificate(
            &ca_public,
            &subject(tvp_verifier::vtpm::KeyRole::Ak, &ak_public),
            now,
            &mut signer,
        )
        .map_err(cert)?;
        let size = u16::try_from(ek_cert.len())
            .map_err(|_| fail("EK certificate", &"longer than an NV index holds"))?;
        t.nv_define_platform(EK_CERT_NV_INDEX, wire::NV_EK_CERT_ATTRIBUTES, size)
            .map_err(w)?;
        t.nv_write_platform(EK_CERT_NV_INDEX, &ek_cert).map_err(w)?;
        t.nv_write_lock_platform(EK_CERT_NV_INDEX).map_err(w)?;
        t.shutdown().map_err(w)?;
        Ok(Identity {
            version: 1,
            ek_public,
            ak_public,
            ca_certificate_pem: pem(&ca),
            ek_certificate_pem: pem(&ek_cert),
            ak_certificate_pem: pem(&ak_cert),
        })
    })?;
    identity.store(vm_dir)?;
    log::info!(vm = id, ek = hex::encode(identity.page_ref().ek_public_digest), ak = hex::encode(identity.page_ref().ak_public_digest); "vTPM: made the VM's TPM: EK and AK certified by the host's vTPM CA");
    Ok(identity)
}

/// TPM2_Clear of VM `id`'s TPM by the platform (the owner hierarchy's seed, its keys
/// and NV indices, the owner and lockout authorizations; the endorsement hierarchy,
/// so the EK, the AK and their certificates, stay), between two of the VM's boots.
pub fn clear(
    id: &str,
    vm_dir: &Path,
    key: &tvp_image::ImageKey,
    run_as: Option<(u32, u32)>,
) -> Result<(), VmError> {
    with_tpm(vm_dir, key, run_as, "clearing the VM's TPM", |t| {
        let w = |e: wire::WireError| VmError::Spawn(format!("vTPM: clearing the VM's TPM: {e}"));
        t.startup().map_err(w)?;
        t.clear_platform().map_err(w)?;
        t.shutdown().map_err(w)
    })?;
    log::info!(vm = id; "vTPM: cleared the VM's TPM (owner hierarchy); its EK and AK stay");
    Ok(())
}

/// Run `f` on the VM's TPM, started for tvpd alone on the state in `vm_dir` (with
/// its key), then let swtpm save and end: the VM's own swtpm may not open the state
/// before this one let go of it. `doing` names the work in errors.
fn with_tpm<T>(
    vm_dir: &Path,
    key: &tvp_image::ImageKey,
    run_as: Option<(u32, u32)>,
    doing: &str,
    f: impl FnOnce(&mut VmTpm) -> Result<T, VmError>,
) -> Result<T, VmError> {
    let fail = |what: &str, e: &dyn std::fmt::Display| {
        VmError::Spawn(format!("vTPM: {doing}: {what}: {e}"))
    };
    let (ours, theirs) = UnixStream::pair().map_err(|e| fail("socket", &e))?;
    let mut child = super::spawn(vm_dir, theirs, key, run_as)?;
    // `t` drops at the end of this: swtpm sees its socket close, saves and ends.
    let done = VmTpm::new(ours, COMMAND_TIMEOUT)
        .map_err(|e| fail("socket", &e))
        .and_then(|mut t| f(&mut t));
    let t0 = Instant::now();
    let ended = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) if t0.elapsed() < EXIT_TIMEOUT => {
                std::thread::sleep(Duration::from_millis(10))
            }
            _ => break None,
        }
    };
    if ended.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let out = done?;
    if ended.is_none() {
        return Err(fail("swtpm", &"did not end when tvpd let go of it; killed"));
    }
    Ok(out)
}
