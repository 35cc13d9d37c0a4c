//! The IMA list parsers, the PCR 10 replay rule and the allowlist check.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use super::list::{encode_binary, ima_ng_entry, ima_ng_template_data};
use super::*;
use crate::eventlog::extend_sha256;

fn d(b: u8) -> Vec<u8> {
    vec![b; 32]
}

/// boot_aggregate, two allowed files, a third file.
fn host_list() -> Vec<ImaEntry> {
    vec![
        ima_ng_entry("sha256", &d(0xa0), "boot_aggregate"),
        ima_ng_entry("sha256", &d(1), "/bin/busybox"),
        ima_ng_entry("sha256", &d(2), "/usr/local/bin/tvpd"),
        ima_ng_entry("sha256", &d(3), "/usr/bin/tpm2"),
    ]
}

fn replayed(entries: &[ImaEntry]) -> [u8; 32] {
    entries
        .iter()
        .fold([0; 32], |p, e| extend_sha256(&p, &e.extended_sha256()))
}

/// Quoted PCRs: only PCR 10.
fn q(pcr10: [u8; 32]) -> BTreeMap<u32, [u8; 32]> {
    BTreeMap::from([(IMA_PCR, pcr10)])
}

fn ascii(entries: &[ImaEntry]) -> String {
    entries
        .iter()
        .map(|e| {
            let hash = if e.violation {
                "00".repeat(20)
            } else {
                "11".repeat(20)
            };
            format!(
                "{} {hash} {} {} {}\n",
                e.pcr,
                e.template,
                e.digest_string(),
                e.path
            )
        })
        .collect()
}

fn allow(paths_digests: &[(&str, u8)]) -> RuntimeIntegrity {
    RuntimeIntegrity::Ima(Allowlist {
        entries: paths_digests
            .iter()
            .map(|(p, b)| AllowEntry {
                digest: format!("sha256:{}", hex::encode(d(*b))),
                path: p.to_string(),
            })
            .collect(),
        boot_pcrs: Default::default(),
    })
}

#[test]
fn the_template_data_is_the_kernels_ima_ng_layout() {
    let data = ima_ng_template_data("sha256", &[0xab; 32], "/bin/sh");
    let mut want = Vec::new();
    want.extend_from_slice(&40u32.to_le_bytes());
    want.extend_from_slice(b"sha256:\0");
    want.extend_from_slice(&[0xab; 32]);
    want.extend_from_slice(&8u32.to_le_bytes());
    want.extend_from_slice(b"/bin/sh\0");
    assert_eq!(data, want);
    let e = ima_ng_entry("sha256", &[0xab; 32], "/bin/sh");
    assert_eq!(e.template_sha256, <[u8; 32]>::from(Sha256::digest(&want)));
}

#[test]
fn binary_and_ascii_lists_parse_to_the_same_entries() {
    let mut list = host_list();
    list[2].violation = true;
    let bin = parse_binary(&encode_binary(&list)).unwrap();
    let asc = parse_ascii(&ascii(&list)).unwrap();
    assert_eq!(bin, list);
    assert_eq!(asc, list);
    // A path with spaces survives both.
    let spaced = vec![ima_ng_entry("sha256", &d(9), "/opt/my tool/bin x")];
    assert_eq!(parse_ascii(&ascii(&spaced)).unwrap(), spaced);
    assert_eq!(parse_binary(&encode_binary(&spaced)).unwrap(), spaced);
}

#[test]
fn malformed_lists_are_refused_by_entry_without_panicking() {
    let bin = encode_binary(&host_list());
    // Every truncation inside an entry is an error naming it, never a panic.
    let mut boundaries = vec![0];
    for e in host_list() {
        boundaries.push(boundaries.last().unwrap() + encode_binary(&[e]).len());
    }
    for cut in 0..bin.len() {
        let r = parse_binary(&bin[..cut]);
        if boundaries.contains(&cut) {
            assert!(r.is_ok(), "cut at an entry boundary {cut}");
        } else {
            assert!(r.is_err(), "cut at {cut} parsed");
        }
    }
    // Oversized lengths, the legacy template, bad ascii.
    let mut huge = bin.clone();
    huge[24..28].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(parse_binary(&huge).is_err());
    let mut legacy = Vec::new();
    legacy.extend_from_slice(&10u32.to_le_bytes());
    legacy.extend_from_slice(&[1; 20]);
    legacy.extend_from_slice(&3u32.to_le_bytes());
    legacy.extend_from_slice(b"ima");
    legacy.extend_from_slice(&0u32.to_le_bytes());
    let e = parse_binary(&legacy).unwrap_err();
    assert!(e.to_string().contains("ima_template=ima-ng"), "{e}");
    for line in [
        "10 zz ima-ng sha256:00 /x",
        "10 00 ima-sig sha256:00 /x",
        "x 00 ima-ng sha256:00 /x",
        "10 00 ima-ng sha25600 /x",
        "10 00 ima-ng",
    ] {
        let e = parse_ascii(line).unwrap_err();
        assert!(e.to_string().starts_with("entry 0: "), "{e}");
    }
}

#[test]
fn the_quote_covers_the_prefix_that_replays_to_pcr10() {
    let list = host_list();
    // Quote taken after two entries; the list was read later with two more.
    assert_eq!(replay_to_quote(&list, &replayed(&list[..2])), Ok(2));
    assert_eq!(replay_to_quote(&list, &replayed(&list)), Ok(4));
    assert_eq!(replay_to_quote(&[], &[0; 32]), Ok(0));
    // A value no prefix reaches: PCR 10 extended outside IMA, or the list altered.
    let e = replay_to_quote(&list, &[7; 32]).unwrap_err();
    assert!(
        matches!(e, ImaReplayError::Mismatch { entries: 4, .. }),
        "{e}"
    );
    // An entry for another PCR.
    let mut other = list.clone();
    other[1].pcr = 11;
    assert!(matches!(
        replay_to_quote(&other, &replayed(&list)),
        Err(ImaReplayError::OtherPcr {
            index: 1,
            pcr: 11,
            ..
        })
    ));
}

#[test]
fn a_violation_extends_all_ones_not_its_zero_hash() {
    let mut list = host_list();
    list[1].violation = true;
    let want = [list[0].template_sha256, [0xff; 32]]
        .iter()
        .fold([0; 32], |p, x| extend_sha256(&p, x));
    assert_eq!(replay_to_quote(&list, &want), Ok(2));
    // Replaying the zero template hash (or the data hash) would not match.
    let zero = [list[0].template_sha256, [0; 32]]
        .iter()
        .fold([0; 32], |p, x| extend_sha256(&p, x));
    assert!(replay_to_quote(&list[..2], &zero).is_err());
}

#[test]
fn a_file_outside_the_allowlist_is_named() {
    let list = host_list();
    let bin = encode_binary(&list);
    let policy = allow(&[("/bin/busybox", 1), ("/usr/local/bin/tvpd", 2)]);
    // The clean part of the list (before tpm2 ran) passes.
    let clean = replayed(&list[..3]);
    assert_eq!(
        allowlist::check(&policy, Some(&bin), &q(clean)),
        Ok(RuntimeIntegrityReport::Ima {
            measured: 3,
            after_quote: 1,
            boot_aggregate_checked: false,
            boot_pcrs_pinned: 0
        })
    );
    // Once the quote covers tpm2, the check names it.
    let e = allowlist::check(&policy, Some(&bin), &q(replayed(&list))).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "not-allowed /usr/bin/tpm2 sha256:{} (measurement 3, template ima-ng): the host ran a file its inventory does not allow",
            "03".repeat(32)
        )
    );
    // boot_aggregate is exempt only as the first entry.
    let mut late = list[..2].to_vec();
    late.push(ima_ng_entry("sha256", &d(0xa0), "boot_aggregate"));
    let e =
        allowlist::check(&policy, Some(&encode_binary(&late)), &q(replayed(&late))).unwrap_err();
    assert!(matches!(e, ImaError::NotAllowed { index: 2, .. }), "{e}");
    // A violation the quote covers is refused whatever its digest.
    let mut v = list[..2].to_vec();
    v[1].violation = true;
    let e = allowlist::check(&policy, Some(&encode_binary(&v)), &q(replayed(&v))).unwrap_err();
    assert!(matches!(e, ImaError::Violation { index: 1, .. }), "{e}");
}

#[test]
fn ima_required_needs_the_list_and_pcr10_and_none_checks_nothing() {
    let list = host_list();
    let bin = encode_binary(&list);
    let pcr = replayed(&list);
    let policy = allow(&[]);
    assert_eq!(
        allowlist::check(&policy, None, &q(pcr)),
        Err(ImaError::NoList)
    );
    assert_eq!(
        allowlist::check(&policy, Some(&bin), &BTreeMap::new()),
        Err(ImaError::PcrNotQuoted)
    );
    assert!(matches!(
        allowlist::check(&policy, Some(&bin), &q([9; 32])),
        Err(ImaError::Replay(_))
    ));
    assert!(matches!(
        allowlist::check(&policy, Some(b"\x0a"), &q(pcr)),
        Err(ImaError::Parse(_))
    ));
    let bad = RuntimeIntegrity::Ima(Allowlist {
        entries: vec![AllowEntry {
            digest: "sha256".into(),
            path: String::new(),
        }],
        boot_pcrs: Default::default(),
    });
    assert!(matches!(
        allowlist::check(&bad, Some(&bin), &q(pcr)),
        Err(ImaError::BadAllowlist(_))
    ));
    // "none": nothing is checked, whatever the evidence holds, and the report says so.
    let r = allowlist::check(&RuntimeIntegrity::None, Some(b"garbage"), &BTreeMap::new()).unwrap();
    assert_eq!(r, RuntimeIntegrityReport::NotChecked);
    assert_eq!(r.name(), "not-checked");
    assert!(r.summary().starts_with("NOT CHECKED"));
}

#[test]
fn the_inventory_form_is_none_or_an_ima_allowlist() {
    let none: RuntimeIntegrity = serde_json::from_str(r#""none""#).unwrap();
    assert_eq!(none, RuntimeIntegrity::None);
    let ima: RuntimeIntegrity = serde_json::from_str(
        r#"{"ima": {"entries": [{"digest": "sha256:AB", "path": "/bin/x"}]}}"#,
    )
    .unwrap();
    let RuntimeIntegrity::Ima(a) = &ima else {
        panic!("{ima:?}")
    };
    assert_eq!(
        a.digests().unwrap().into_iter().collect::<Vec<_>>(),
        ["sha256:ab"]
    );
    // An entry's algorithm name is compared in the same case (found by fuzzing).
    let mut upper = ima_ng_entry("SHA256", &[0xab], "/bin/x");
    assert_eq!(upper.digest_string(), "sha256:ab");
    upper.digest_alg = "sBa256".into();
    assert_eq!(upper.digest_string(), "sba256:ab");
    assert_eq!(
        serde_json::to_string(&RuntimeIntegrity::None).unwrap(),
        r#""none""#
    );
    assert!(serde_json::from_str::<RuntimeIntegrity>(r#""ima""#).is_err());
    assert!(
        serde_json::from_str::<RuntimeIntegrity>(r#"{"ima": {"entries": [], "extra": 1}}"#)
            .is_err()
    );
}

#[test]
fn the_list_starts_with_boot_aggregate_the_digest_of_pcrs_0_to_9() {
    let policy = allow(&[("/bin/busybox", 1), ("/usr/local/bin/tvpd", 2)]);
    // PCRs 0-9 as quoted; boot_aggregate = SHA-256 of their concatenation.
    let mut pcrs: BTreeMap<u32, [u8; 32]> = (0..10).map(|i| (i, [i as u8 + 1; 32])).collect();
    let mut cat = Vec::new();
    for v in pcrs.values() {
        cat.extend_from_slice(v);
    }
    let aggregate: [u8; 32] = Sha256::digest(&cat).into();
    assert_eq!(allowlist::boot_aggregate(&pcrs), Some(aggregate));
    let mut list = host_list();
    list[0] = ima_ng_entry("sha256", &aggregate, "boot_aggregate");
    let list = &list[..3];
    pcrs.insert(IMA_PCR, replayed(list));
    let r = allowlist::check(&policy, Some(&encode_binary(list)), &pcrs).unwrap();
    assert_eq!(
        r,
        RuntimeIntegrityReport::Ima {
            measured: 3,
            after_quote: 0,
            boot_aggregate_checked: true,
            boot_pcrs_pinned: 0
        }
    );
    assert!(r.summary().contains("boot_aggregate = the quoted PCRs 0-9"));
    // Another boot chain (PCR 4, the kernel, differs): the listed aggregate is not theirs.
    let mut other = pcrs.clone();
    other.insert(4, [0xee; 32]);
    let e = allowlist::check(&policy, Some(&encode_binary(list)), &other).unwrap_err();
    assert_eq!(e.kind(), "boot-aggregate", "{e}");
    // PCR 10 extended by someone other than an IMA kernel: no boot_aggregate first.
    let forged = &host_list()[1..3];
    let e =
        allowlist::check(&policy, Some(&encode_binary(forged)), &q(replayed(forged))).unwrap_err();
    assert_eq!(e, ImaError::NoBootAggregate);
    // A zero PCR 10 covers nothing: no boot_aggregate either, whatever list comes along.
    let e = allowlist::check(&policy, Some(&encode_binary(list)), &q([0; 32])).unwrap_err();
    assert_eq!(e, ImaError::NoBootAggregate);
}

#[test]
fn pinned_boot_pcrs_refuse_another_boot_chain_naming_the_pcr() {
    // A genuine IMA kernel's list over PCRs 0-9 as quoted.
    let pcrs09: BTreeMap<u32, [u8; 32]> = (0..10).map(|i| (i, [i as u8 + 1; 32])).collect();
    let aggregate = allowlist::boot_aggregate(&pcrs09).unwrap();
    let mut list = host_list();
    list[0] = ima_ng_entry("sha256", &aggregate, "boot_aggregate");
    let list = &list[..3];
    let mut pcrs = pcrs09.clone();
    pcrs.insert(IMA_PCR, replayed(list));
    let bin = encode_binary(list);
    let pinned = |values: &BTreeMap<u32, [u8; 32]>| {
        let RuntimeIntegrity::Ima(mut a) =
            allow(&[("/bin/busybox", 1), ("/usr/local/bin/tvpd", 2)])
        else {
            unreachable!()
        };
        a.boot_pcrs = values.iter().map(|(i, v)| (*i, hex::encode(v))).collect();
        RuntimeIntegrity::Ima(a)
    };
    // Pinned to exactly this boot chain: passes, and the report counts the pins.
    let r = allowlist::check(&pinned(&pcrs09), Some(&bin), &pcrs).unwrap();
    assert_eq!(
        r,
        RuntimeIntegrityReport::Ima {
            measured: 3,
            after_quote: 0,
            boot_aggregate_checked: true,
            boot_pcrs_pinned: 10
        }
    );
    assert!(
        r.summary().contains("10 of PCRs 0-9 pinned"),
        "{}",
        r.summary()
    );
    // The attack: a kernel without IMA (other PCR 4) extends PCR 10 itself to match a
    // forged list whose boot_aggregate is the digest of its own PCRs 0-9. The
    // boot_aggregate rule holds; the pin does not, and names the PCR.
    let mut evil09 = pcrs09.clone();
    evil09.insert(4, [0xee; 32]);
    let mut forged = host_list();
    forged[0] = ima_ng_entry(
        "sha256",
        &allowlist::boot_aggregate(&evil09).unwrap(),
        "boot_aggregate",
    );
    let forged = &forged[..3];
    let mut evil = evil09.clone();
    evil.insert(IMA_PCR, replayed(forged));
    let fbin = encode_binary(forged);
    let unpinned = allow(&[("/bin/busybox", 1), ("/usr/local/bin/tvpd", 2)]);
    assert!(allowlist::check(&unpinned, Some(&fbin), &evil).is_ok());
    let e = allowlist::check(&pinned(&pcrs09), Some(&fbin), &evil).unwrap_err();
    assert_eq!(e.kind(), "boot-pcr", "{e}");
    assert!(
        e.to_string().starts_with(&format!(
            "boot-pcr: PCR 4 is {}, not {}",
            hex::encode([0xee; 32]),
            hex::encode([5u8; 32])
        )),
        "{e}"
    );
    // A pinned PCR the quote does not cover is refused, not skipped.
    let mut only10 = pcrs.clone();
    only10.retain(|i, _| *i == IMA_PCR);
    let e = allowlist::check(&pinned(&pcrs09), Some(&bin), &only10).unwrap_err();
    assert_eq!(e, ImaError::BootPcrNotQuoted { pcr: 0 });
    // Pins outside 0-9 or not 32 bytes of hex make the inventory entry unusable.
    for bad in [r#"{"10": "00"}"#, r#"{"3": "abcd"}"#] {
        let RuntimeIntegrity::Ima(mut a) = unpinned.clone() else {
            unreachable!()
        };
        a.boot_pcrs = serde_json::from_str(bad).unwrap();
        let e = allowlist::check(&RuntimeIntegrity::Ima(a), Some(&bin), &pcrs).unwrap_err();
        assert_eq!(e.kind(), "bad-allowlist", "{bad}: {e}");
    }
    // The inventory form: "boot_pcrs" is optional and round-trips.
    let json = serde_json::to_string(&pinned(&pcrs09)).unwrap();
    assert!(json.contains(r#""boot_pcrs":{"0":""#), "{json}");
    assert_eq!(
        serde_json::from_str::<RuntimeIntegrity>(&json).unwrap(),
        pinned(&pcrs09)
    );
    assert!(!serde_json::to_string(&unpinned)
        .unwrap()
        .contains("boot_pcrs"));
}
