//! Anchor certifications (seed: a TPM2_NV_Certify-shaped certification of the seed
//! log's anchor, signed by the test AK) through `AnchorCertification::verify`; with a
//! leading 0 byte, raw bytes through `parse_nv_attest`. Invariant beyond no panic: with
//! the trusted AK and nonce, the only value ever accepted is the certified one.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tvp_audit::anchor::{parse_nv_attest, AnchorCertification};
use tvp_audit_fuzz::{ak_pem, log_anchor, NONCE};

fuzz_target!(|data: &[u8]| {
    if let Some((0, raw)) = data.split_first() {
        if let Ok(info) = parse_nv_attest(raw) {
            assert!(
                info.extra_data.len() + info.index_name.len() + info.contents.len() <= raw.len()
            );
        }
        return;
    }
    let Ok(c) = serde_json::from_slice::<AnchorCertification>(data) else {
        return;
    };
    if let Ok(v) = c.verify(Some(&ak_pem()), Some(NONCE)) {
        assert_eq!(
            v,
            log_anchor(),
            "accepted an anchor value the AK did not certify"
        );
    }
    // Trusting the key the certification carries: any outcome, but no panic.
    let _ = c.verify(None, None);
});
