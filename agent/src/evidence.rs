//! Assembling a quote into the documented evidence format (`tvp_verifier::Evidence`).

use std::collections::BTreeMap;

use tvp_verifier::{CelRecord, Evidence, HexDigest, QuoteBlobs, EVIDENCE_VERSION};

use crate::tpm::{HostIdentity, QuoteResult};

/// Build evidence from a quote, the host identity and the event-log records of the
/// quoted PCRs. The IMA list, if any, is the caller's to add ([`crate::host_ima`]).
pub fn build(
    identity: &HostIdentity,
    nonce: &[u8],
    quote: QuoteResult,
    event_log: Vec<CelRecord>,
) -> Evidence {
    let bank: BTreeMap<u32, HexDigest> = quote
        .pcrs
        .into_iter()
        .map(|(i, v)| (i, HexDigest(v.to_vec())))
        .collect();
    Evidence {
        version: EVIDENCE_VERSION,
        host_id: identity.host_id.clone(),
        nonce: nonce.to_vec(),
        quote: QuoteBlobs {
            attest: quote.attest,
            signature: quote.signature,
        },
        pcrs: BTreeMap::from([("sha256".to_string(), bank)]),
        ak_public_pem: identity.ak_public_pem.clone(),
        ak_public: identity.ak_public_tpm2b.clone(),
        event_log,
        ima_log: None,
    }
}
