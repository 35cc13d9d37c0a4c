//! Structured mutations of a valid evidence document (the real swtpm quote, or the
//! P-256 one with a longer log; see the crate's `Which`): the fuzzer chooses edits to any field (bytes of the signed attest, the
//! signature, the AK encodings, PCR values and banks, log records, recnums, digests,
//! nonce, version). If `verify` still accepts, every edit must have been in a field no
//! signature covers ([`tvp_verifier_fuzz::assert_justified`]).
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use tvp_verifier::eventlog::{CelDigest, CelRecord, EventKind};
use tvp_verifier::tpm::Attest;
use tvp_verifier::{verify, HexDigest};
use tvp_verifier_fuzz::{assert_justified, base_of, other_ak_pem, Which};

#[derive(Arbitrary, Debug)]
enum Blob {
    Attest,
    Signature,
    AkPublic,
    Nonce,
}

#[derive(Arbitrary, Debug)]
enum Edit {
    Version(u32),
    HostId(String),
    Flip {
        blob: Blob,
        at: u16,
        xor: u8,
    },
    Truncate {
        blob: Blob,
        len: u16,
    },
    Append {
        blob: Blob,
        bytes: Vec<u8>,
    },
    /// Re-marshal the parsed attest with one field changed (signature no longer fits).
    Reattest {
        field: u8,
        value: u64,
    },
    PemText {
        at: u16,
        ch: char,
    },
    PemFromOtherKey,
    SetPcr {
        bank: String,
        pcr: u8,
        value: Vec<u8>,
    },
    DropPcr {
        pcr: u8,
    },
    FlipPcr {
        pcr: u8,
        at: u8,
        xor: u8,
    },
    InsertRecord {
        at: u8,
        pcr: u8,
        alg: String,
        digest: Vec<u8>,
    },
    DropRecord {
        at: u8,
    },
    SwapRecords {
        a: u8,
        b: u8,
    },
    Recnum {
        at: u8,
        recnum: u64,
    },
    FlipDigest {
        at: u8,
        byte: u8,
        xor: u8,
    },
    AddDigest {
        at: u8,
        alg: String,
        digest: Vec<u8>,
    },
    Alg {
        at: u8,
        alg: String,
    },
    Describe {
        at: u8,
        text: String,
    },
    Renumber,
}

fn blob<'a>(ev: &'a mut tvp_verifier::Evidence, b: &Blob) -> &'a mut Vec<u8> {
    match b {
        Blob::Attest => &mut ev.quote.attest,
        Blob::Signature => &mut ev.quote.signature,
        Blob::AkPublic => &mut ev.ak_public,
        Blob::Nonce => &mut ev.nonce,
    }
}

fn at<T>(v: &[T], i: u8) -> Option<usize> {
    (!v.is_empty()).then(|| usize::from(i) % v.len())
}

fuzz_target!(|input: (bool, Vec<Edit>)| {
    let (p256, edits) = input;
    let which = if p256 { Which::P256 } else { Which::Swtpm };
    let b = base_of(which);
    let mut ev = b.evidence.clone();
    for e in edits.iter().take(16) {
        match e {
            Edit::Version(v) => ev.version = *v,
            Edit::HostId(h) => ev.host_id = h.clone(),
            Edit::Flip {
                blob: which,
                at: i,
                xor,
            } => {
                let v = blob(&mut ev, which);
                if !v.is_empty() {
                    let i = usize::from(*i) % v.len();
                    v[i] ^= xor;
                }
            }
            Edit::Truncate { blob: which, len } => blob(&mut ev, which).truncate(usize::from(*len)),
            Edit::Append { blob: which, bytes } => blob(&mut ev, which).extend_from_slice(bytes),
            Edit::Reattest { field, value } => {
                if let Ok(mut a) = Attest::parse(&ev.quote.attest) {
                    match field % 6 {
                        0 => a.clock_info.clock = *value,
                        1 => a.clock_info.reset_count = *value as u32,
                        2 => a.firmware_version = *value,
                        3 => a.extra_data = value.to_be_bytes().to_vec(),
                        4 => {
                            if let Some(s) = a.quote.selections.first_mut() {
                                s.bitmap = value.to_le_bytes()[..3].to_vec();
                            }
                        }
                        _ => a.quote.pcr_digest = value.to_be_bytes().repeat(4),
                    }
                    ev.quote.attest = a.marshal();
                }
            }
            Edit::PemText { at: i, ch } => {
                let mut s: Vec<char> = ev.ak_public_pem.chars().collect();
                if !s.is_empty() {
                    let i = usize::from(*i) % s.len();
                    s[i] = *ch;
                }
                ev.ak_public_pem = s.into_iter().collect();
            }
            Edit::PemFromOtherKey => ev.ak_public_pem = other_ak_pem(),
            Edit::SetPcr { bank, pcr, value } => {
                ev.pcrs
                    .entry(bank.clone())
                    .or_default()
                    .insert(u32::from(*pcr), HexDigest(value.clone()));
            }
            Edit::DropPcr { pcr } => {
                for bank in ev.pcrs.values_mut() {
                    bank.remove(&u32::from(*pcr));
                }
            }
            Edit::FlipPcr { pcr, at: i, xor } => {
                if let Some(v) = ev
                    .pcrs
                    .get_mut("sha256")
                    .and_then(|b| b.get_mut(&u32::from(*pcr)))
                {
                    if !v.0.is_empty() {
                        let n = v.0.len();
                        v.0[usize::from(*i) % n] ^= xor;
                    }
                }
            }
            Edit::InsertRecord {
                at: i,
                pcr,
                alg,
                digest,
            } => {
                let pos = usize::from(*i) % (ev.event_log.len() + 1);
                let mut r = CelRecord::tvp(
                    pos as u64,
                    u32::from(*pcr),
                    [0; 32],
                    EventKind::PlatformArtefact,
                    "x".into(),
                );
                r.digests = vec![CelDigest {
                    hash_alg: alg.clone(),
                    digest: digest.clone(),
                }];
                ev.event_log.insert(pos, r);
            }
            Edit::DropRecord { at: i } => {
                if let Some(i) = at(&ev.event_log, *i) {
                    ev.event_log.remove(i);
                }
            }
            Edit::SwapRecords { a, b: bb } => {
                if let (Some(x), Some(y)) = (at(&ev.event_log, *a), at(&ev.event_log, *bb)) {
                    ev.event_log.swap(x, y);
                }
            }
            Edit::Recnum { at: i, recnum } => {
                if let Some(i) = at(&ev.event_log, *i) {
                    ev.event_log[i].recnum = *recnum;
                }
            }
            Edit::FlipDigest { at: i, byte, xor } => {
                if let Some(i) = at(&ev.event_log, *i) {
                    if let Some(d) = ev.event_log[i].digests.first_mut() {
                        if !d.digest.is_empty() {
                            let n = d.digest.len();
                            d.digest[usize::from(*byte) % n] ^= xor;
                        }
                    }
                }
            }
            Edit::AddDigest { at: i, alg, digest } => {
                if let Some(i) = at(&ev.event_log, *i) {
                    ev.event_log[i].digests.push(CelDigest {
                        hash_alg: alg.clone(),
                        digest: digest.clone(),
                    });
                }
            }
            Edit::Alg { at: i, alg } => {
                if let Some(i) = at(&ev.event_log, *i) {
                    if let Some(d) = ev.event_log[i].digests.first_mut() {
                        d.hash_alg = alg.clone();
                    }
                }
            }
            Edit::Describe { at: i, text } => {
                if let Some(i) = at(&ev.event_log, *i) {
                    ev.event_log[i].content.description = text.clone();
                }
            }
            Edit::Renumber => {
                for (i, r) in ev.event_log.iter_mut().enumerate() {
                    r.recnum = i as u64;
                }
            }
        }
    }
    if let Ok(v) = verify(&ev, &b.opts) {
        assert_justified(which, &ev, &v);
    }
});
