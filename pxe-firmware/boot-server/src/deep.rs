//! Deep evidence: the host's attestation of the VM (PCR 23 and PCR 16 in the host's
//! quote, [`crate::attest`]) and the quote of the VM's own TPM (the VtpmQuote frame)
//! checked as one document (`docs/vtpm-identity.md`, "Deep evidence").
//!
//! The host's evidence proves which configuration page the VM booted with; the page
//! names the VM's TPM's AK by the SHA-256 of its TPMT_PUBLIC. The vTPM quote must be
//! signed by exactly that AK (a restricted ECDSA P-256 key, so the TPM signed only a
//! TPMS_ATTEST it made itself), carry this session's nonce and tunnel
//! ([`tvp_boot_protocol::vtpm::qualifying_data`]), and quote the PCRs 0 and 1 the
//! reference firmware leaves after measuring this page
//! ([`tvp_abi::tcg_log::expected_start_pcrs`]).

use crate::attest::{reject, Attested, Rejection};
use tvp_abi::tcg_log::TPM_ALG_SHA256;
use tvp_boot_protocol::vtpm::{qualifying_data, VtpmQuote, QUOTED_PCRS};
use tvp_verifier::tpm::Public;
use tvp_verifier::vtpm::{check_ak, verify_quote_by, VtpmError};
use tvp_verifier::AkKey;

/// What this session expects of the deep evidence.
pub struct DeepExpectation<'a> {
    /// The reference firmware image (ELF file).
    pub firmware: &'a [u8],
    /// The configuration page the host's evidence attested (PCR 23).
    pub config_page: &'a [u8],
    /// This session's nonce N.
    pub nonce: &'a [u8; 32],
    /// This session's tunnel measurement (TLS exporter).
    pub tunnel_measurement: &'a [u8; 32],
}

/// What the vTPM's quote showed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VtpmAttested {
    /// The AK's TPM name (`000b` ‖ SHA-256 of its TPMT_PUBLIC).
    pub ak_name: Vec<u8>,
    /// PCR 0 of the VM's TPM (quoted through the composite digest).
    pub pcr0: [u8; 32],
    /// PCR 1 of the VM's TPM.
    pub pcr1: [u8; 32],
}

/// The verified deep evidence: the host's, and the VM's TPM's when the page names one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeepEvidence {
    /// The host's evidence (PCRs 23 and 16 checked).
    pub host: Attested,
    /// The vTPM's quote, for a VM with a TPM of its own.
    pub vtpm: Option<VtpmAttested>,
}

/// Checks the host's verified evidence `host` and the VtpmQuote payload `vtpm_quote`
/// (what the firmware sent after the Evidence, `None` if it sent none) together. A
/// page without a TPM takes no quote; a page with one requires it. Refusals name
/// their check: `vtpm-quote-missing`, `vtpm-unexpected`, `vtpm-format`, `vtpm-ak` (not
/// the page's AK), `vtpm-ak-key` (not a restricted ECDSA P-256 signing key),
/// `vtpm-quote-signature`, `vtpm-quote-nonce`, `vtpm-quote-signer`, `vtpm-pcrs`.
pub fn verify_deep(
    host: Attested,
    exp: &DeepExpectation<'_>,
    vtpm_quote: Option<&[u8]>,
) -> Result<DeepEvidence, Rejection> {
    let page = tvp_abi::config::decode(exp.config_page)
        .map_err(|e| reject("vtpm-format", format!("configuration page: {e}")))?;
    let Some(tpm) = page.tpm else {
        return match vtpm_quote {
            None => Ok(DeepEvidence { host, vtpm: None }),
            Some(_) => Err(reject(
                "vtpm-unexpected",
                "a vTPM quote for a VM whose page names no TPM",
            )),
        };
    };
    let payload = vtpm_quote.ok_or_else(|| {
        reject(
            "vtpm-quote-missing",
            "the page names a TPM of the VM's own, and the firmware sent no vTPM quote \
             (a firmware without deep evidence, or it stopped): the VM's TPM is not attested",
        )
    })?;
    let q = VtpmQuote::parse(payload)
        .map_err(|e| reject("vtpm-format", format!("VtpmQuote payload: {e}")))?;
    let ak_digest = tvp_abi::measure::sha256(q.ak_public);
    if ak_digest != tpm.ak_public_digest {
        return Err(reject(
            "vtpm-ak",
            format!(
                "the quote's AK has TPMT_PUBLIC digest {}, the attested page names AK {}: \
                 not this VM's TPM",
                hex::encode(ak_digest),
                hex::encode(tpm.ak_public_digest)
            ),
        ));
    }
    let public = Public::parse_tpmt(q.ak_public)
        .map_err(|e| reject("vtpm-ak-key", format!("the AK's TPMT_PUBLIC: {e}")))?;
    let key = check_ak(&public).map_err(|e| reject("vtpm-ak-key", e.to_string()))?;
    let ak_name = public
        .name()
        .ok_or_else(|| reject("vtpm-ak-key", "the AK's name algorithm is not SHA-256"))?;
    let qualifying = qualifying_data(exp.nonce, exp.tunnel_measurement);
    let attest = verify_quote_by(
        &AkKey::P256(key),
        &ak_name,
        q.attest,
        q.signature,
        &qualifying,
    )
    .map_err(|e| {
        let check = match &e {
            VtpmError::QuoteSignature(_) => "vtpm-quote-signature",
            VtpmError::QuoteNonce { .. } => "vtpm-quote-nonce",
            VtpmError::QuoteSigner(_) => "vtpm-quote-signer",
            _ => "vtpm-format",
        };
        reject(check, e.to_string())
    })?;
    let selected: Vec<(u16, Vec<u32>)> = attest
        .quote
        .selections
        .iter()
        .map(|s| (s.hash, s.pcrs().into_iter().collect()))
        .collect();
    if selected != [(TPM_ALG_SHA256, QUOTED_PCRS.to_vec())] {
        return Err(reject(
            "vtpm-pcrs",
            format!("the quote selects {selected:?}, expected SHA-256 PCRs {QUOTED_PCRS:?}"),
        ));
    }
    let [pcr0, pcr1] = tvp_abi::tcg_log::expected_start_pcrs(exp.firmware, exp.config_page)
        .map_err(|e| reject("vtpm-format", e.to_string()))?;
    let mut both = [0u8; 64];
    both[..32].copy_from_slice(&pcr0);
    both[32..].copy_from_slice(&pcr1);
    let want = tvp_abi::measure::sha256(&both);
    if attest.quote.pcr_digest != want {
        return Err(reject(
            "vtpm-pcrs",
            format!(
                "the vTPM's PCR 0 and 1 digest is {}, expected {} (PCR 0 {}, PCR 1 {}: the \
                 reference firmware's measurements of this page)",
                hex::encode(&attest.quote.pcr_digest),
                hex::encode(want),
                hex::encode(pcr0),
                hex::encode(pcr1)
            ),
        ));
    }
    Ok(DeepEvidence {
        host,
        vtpm: Some(VtpmAttested {
            ak_name,
            pcr0,
            pcr1,
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::ecdsa::signature::Signer;
    use p256::ecdsa::SigningKey;
    use std::collections::BTreeSet;
    use tvp_abi::config::{Config, TpmRef};
    use tvp_verifier::tpm::alg::{ALG_ECDSA, ALG_NULL, ALG_SHA256, ECC_NIST_P256};
    use tvp_verifier::tpm::public::marshal_tpmt;
    use tvp_verifier::tpm::{Attest, ClockInfo, PcrSelection, PublicKey, QuoteInfo, Scheme};

    /// tvp's AK attributes: fixedTPM, fixedParent, sensitiveDataOrigin, userWithAuth,
    /// restricted, sign (`provision.rs::ak_template`).
    const AK_ATTRS: u32 = 0x0005_0072;
    const FIRMWARE: &[u8] = b"reference firmware";
    const NONCE: [u8; 32] = [0x11; 32];
    const TUNNEL: [u8; 32] = [0x22; 32];

    /// A software P-256 key standing in for the vTPM's AK.
    fn key(seed: u8) -> SigningKey {
        SigningKey::from_slice(&[seed; 32]).unwrap()
    }

    fn tpmt(k: &SigningKey, attrs: u32) -> Vec<u8> {
        let point = k.verifying_key().to_encoded_point(false);
        marshal_tpmt(
            ALG_SHA256,
            attrs,
            &[],
            None,
            Scheme {
                alg: ALG_ECDSA,
                hash: Some(ALG_SHA256),
            },
            &PublicKey::Ecc {
                curve: ECC_NIST_P256,
                kdf: Scheme {
                    alg: ALG_NULL,
                    hash: None,
                },
                x: point.x().unwrap().to_vec(),
                y: point.y().unwrap().to_vec(),
            },
        )
    }

    /// A page with a TPM whose AK has this TPMT_PUBLIC (`None`: no TPM).
    fn page(ak: Option<&[u8]>) -> [u8; 4096] {
        let ca = [0x30, 0x03, 0x02, 0x01, 0x01];
        Config {
            vip: [10, 0, 0, 2],
            prefix_len: 24,
            gateway: [10, 0, 0, 1],
            mac: [2, 0, 0, 0, 0, 1],
            boot_server_ip: [10, 0, 0, 1],
            boot_server_port: 8443,
            vcpus: 2,
            mem_size_mib: 128,
            time_unix_secs: 0,
            entropy_seed: [0; 32],
            auth_code: b"U",
            server_name: "boot.tenant.example",
            ca_cert_der: &ca,
            image: None,
            disk: None,
            tpm: ak.map(|ak| TpmRef {
                ek_public_digest: [9; 32],
                ak_public_digest: tvp_abi::measure::sha256(ak),
            }),
        }
        .encode()
        .unwrap()
    }

    /// What the quote says.
    struct Quote {
        extra: [u8; 32],
        selection: Vec<PcrSelection>,
        digest: [u8; 32],
    }

    /// The genuine quote's content for `page`.
    fn genuine(page: &[u8]) -> Quote {
        let [p0, p1] = tvp_abi::tcg_log::expected_start_pcrs(FIRMWARE, page).unwrap();
        Quote {
            extra: qualifying_data(&NONCE, &TUNNEL),
            selection: vec![PcrSelection::new(ALG_SHA256, &BTreeSet::from([0, 1]))],
            digest: tvp_abi::measure::sha256(&[p0, p1].concat()),
        }
    }

    /// The VtpmQuote payload: `ak` presented, the quote signed by `signer`.
    fn payload(ak: &[u8], signer: &SigningKey, q: &Quote) -> Vec<u8> {
        let mut name = vec![0x00, 0x0b];
        name.extend_from_slice(&tvp_abi::measure::sha256(ak));
        let attest = Attest {
            qualified_signer: name,
            extra_data: q.extra.to_vec(),
            clock_info: ClockInfo {
                clock: 1,
                reset_count: 0,
                restart_count: 0,
                safe: true,
            },
            firmware_version: 0,
            quote: QuoteInfo {
                selections: q.selection.clone(),
                pcr_digest: q.digest.to_vec(),
            },
        }
        .marshal();
        let sig: p256::ecdsa::Signature = signer.sign(&attest);
        let (r, s) = sig.split_bytes();
        let sig = tvp_verifier::tpm::Signature::Ecdsa {
            hash: ALG_SHA256,
            r: r.to_vec(),
            s: s.to_vec(),
        }
        .marshal();
        let v = VtpmQuote {
            ak_public: ak,
            attest: &attest,
            signature: &sig,
        };
        let mut out = vec![0u8; v.encoded_len()];
        v.encode(&mut out).unwrap();
        out
    }

    fn host() -> Attested {
        Attested {
            host_id: "h".into(),
            pcr16: [1; 32],
            pcr23: [2; 32],
        }
    }

    fn deep(page: &[u8], quote: Option<&[u8]>) -> Result<DeepEvidence, Rejection> {
        verify_deep(
            host(),
            &DeepExpectation {
                firmware: FIRMWARE,
                config_page: page,
                nonce: &NONCE,
                tunnel_measurement: &TUNNEL,
            },
            quote,
        )
    }

    fn check(page: &[u8], quote: Option<&[u8]>) -> String {
        deep(page, quote).unwrap_err().check
    }

    #[test]
    fn the_vms_ak_quoting_this_session_and_the_measured_pcrs_passes() {
        let k = key(1);
        let ak = tpmt(&k, AK_ATTRS);
        let p = page(Some(&ak));
        let d = deep(&p, Some(&payload(&ak, &k, &genuine(&p)))).unwrap();
        let [p0, p1] = tvp_abi::tcg_log::expected_start_pcrs(FIRMWARE, &p).unwrap();
        let v = d.vtpm.unwrap();
        assert_eq!((v.pcr0, v.pcr1), (p0, p1));
        assert_eq!(v.ak_name[2..], tvp_abi::measure::sha256(&ak));
        assert_eq!(d.host, host());
    }

    #[test]
    fn a_quote_by_a_key_the_page_does_not_name_is_refused_vtpm_ak() {
        // The attack: a host (or anyone) answers with a TPM of its own making, its
        // quote perfect in every other respect.
        let (k, other) = (key(1), key(2));
        let p = page(Some(&tpmt(&k, AK_ATTRS)));
        let forged = tpmt(&other, AK_ATTRS);
        assert_eq!(
            check(&p, Some(&payload(&forged, &other, &genuine(&p)))),
            "vtpm-ak"
        );
    }

    #[test]
    fn an_ak_that_is_not_a_restricted_signing_key_is_refused() {
        // Unrestricted: it would sign any digest, e.g. a forged TPMS_ATTEST.
        let k = key(1);
        let ak = tpmt(&k, AK_ATTRS & !(1 << 16));
        let p = page(Some(&ak));
        assert_eq!(
            check(&p, Some(&payload(&ak, &k, &genuine(&p)))),
            "vtpm-ak-key"
        );
    }

    #[test]
    fn a_signature_not_by_the_ak_is_refused() {
        let (k, other) = (key(1), key(2));
        let ak = tpmt(&k, AK_ATTRS);
        let p = page(Some(&ak));
        assert_eq!(
            check(&p, Some(&payload(&ak, &other, &genuine(&p)))),
            "vtpm-quote-signature"
        );
        // A flipped bit in the signed quote.
        let mut good = payload(&ak, &k, &genuine(&p));
        let at = 2 + ak.len() + 2 + 10;
        good[at] ^= 1;
        assert_eq!(check(&p, Some(&good)), "vtpm-quote-signature");
    }

    #[test]
    fn a_quote_for_another_nonce_or_tunnel_is_refused() {
        let k = key(1);
        let ak = tpmt(&k, AK_ATTRS);
        let p = page(Some(&ak));
        for extra in [
            qualifying_data(&[0x33; 32], &TUNNEL),
            qualifying_data(&NONCE, &[0x44; 32]),
            NONCE,
        ] {
            let q = Quote {
                extra,
                ..genuine(&p)
            };
            assert_eq!(check(&p, Some(&payload(&ak, &k, &q))), "vtpm-quote-nonce");
        }
    }

    #[test]
    fn other_pcr_values_or_another_selection_are_refused_vtpm_pcrs() {
        let k = key(1);
        let ak = tpmt(&k, AK_ATTRS);
        let p = page(Some(&ak));
        // Another firmware's (or page's) measurements.
        let [p0, p1] = tvp_abi::tcg_log::expected_start_pcrs(b"other firmware", &p).unwrap();
        let q = Quote {
            digest: tvp_abi::measure::sha256(&[p0, p1].concat()),
            ..genuine(&p)
        };
        let r = deep(&p, Some(&payload(&ak, &k, &q))).unwrap_err();
        assert_eq!(r.check, "vtpm-pcrs");
        assert!(r.reason.contains(&hex::encode(
            tvp_abi::tcg_log::expected_start_pcrs(FIRMWARE, &p).unwrap()[0]
        )));
        for selection in [
            vec![PcrSelection::new(ALG_SHA256, &BTreeSet::from([0, 1, 4]))],
            vec![PcrSelection::new(ALG_SHA256, &BTreeSet::from([0]))],
            vec![PcrSelection::new(0x0004, &BTreeSet::from([0, 1]))],
            vec![
                PcrSelection::new(ALG_SHA256, &BTreeSet::from([0, 1])),
                PcrSelection::new(0x0004, &BTreeSet::new()),
            ],
        ] {
            let q = Quote {
                selection,
                ..genuine(&p)
            };
            assert_eq!(check(&p, Some(&payload(&ak, &k, &q))), "vtpm-pcrs");
        }
    }

    #[test]
    fn a_page_with_a_tpm_requires_the_quote_and_one_without_takes_none() {
        let k = key(1);
        let ak = tpmt(&k, AK_ATTRS);
        let p = page(Some(&ak));
        assert_eq!(check(&p, None), "vtpm-quote-missing");
        let plain = page(None);
        assert_eq!(deep(&plain, None).unwrap().vtpm, None);
        let q = payload(&ak, &k, &genuine(&p));
        assert_eq!(check(&plain, Some(&q)), "vtpm-unexpected");
        // Malformed payloads.
        assert_eq!(check(&p, Some(&q[..q.len() - 1])), "vtpm-format");
        assert_eq!(check(&p, Some(&[])), "vtpm-format");
    }
}
