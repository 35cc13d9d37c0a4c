//! A reservation's expectations against what the VM presents: its configuration page
//! (memory, vCPUs, image and disk descriptors) before attestation, and its management binding
//! (the management event of the verified evidence) after. A mismatch names the field,
//! so the report and the firmware's console say what differs.

use crate::attest::ManagementEvent;
use crate::reservations::{Expect, Expectations, ManagementExpect};
use tvp_abi::config::Config;

/// A field of the VM that differs from the reservation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: the reservation expects {expected}, the VM has {found}")]
pub struct Mismatch {
    /// `memory`, `vcpus`, `image`, `disk`, `tpm`, `management-key` or `policy`.
    pub field: &'static str,
    /// What the reservation states.
    pub expected: String,
    /// What the VM has.
    pub found: String,
}

impl Mismatch {
    /// The refusal code: `config-mismatch:<field>`.
    pub fn code(&self) -> String {
        format!("config-mismatch:{}", self.field)
    }
}

fn differs<T: PartialEq>(
    field: &'static str,
    expect: &Expect<T>,
    found: T,
    show: impl Fn(&T) -> String,
) -> Result<(), Mismatch> {
    match expect {
        Expect::Is(want) if *want != found => Err(Mismatch {
            field,
            expected: show(want),
            found: show(&found),
        }),
        _ => Ok(()),
    }
}

fn show_image(i: &Option<[u8; 32]>) -> String {
    i.map_or("no image".into(), |d| {
        format!("image sha256 {}", hex::encode(d))
    })
}

fn show_disk(d: &Option<[u8; 32]>) -> String {
    d.map_or("no disk".into(), |d| {
        format!("disk header sha256 {}", hex::encode(d))
    })
}

/// The page's memory size, vCPUs, image and disk against the reservation. The page
/// itself is bound to the quote through PCR 23, so these checks hold once attestation
/// passes.
pub fn check_page(expect: &Expectations, page: &Config<'_>) -> Result<(), Mismatch> {
    differs("memory", &expect.memory_mib, page.mem_size_mib, |m| {
        format!("{m} MiB")
    })?;
    differs("vcpus", &expect.vcpus, page.vcpus, |n| format!("{n} vCPUs"))?;
    differs(
        "image",
        &expect.image,
        page.image.map(|i| i.digest),
        show_image,
    )?;
    differs(
        "disk",
        &expect.disk,
        page.disk.map(|d| d.header_digest),
        show_disk,
    )?;
    differs("tpm", &expect.tpm, page.tpm.is_some(), |t| {
        if *t { "a TPM of its own" } else { "no TPM" }.into()
    })
}

/// The tenant's management binding: the digest measured into PCR 23 and the key id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantManagement {
    /// `tvp_audit::policy::management_digest` of the tenant's key and policy.
    pub digest: [u8; 32],
    /// The tenant key's id (SHA-256 of its DER SubjectPublicKeyInfo, hex).
    pub key_id: String,
}

/// Why the VM's management binding is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManagementError {
    /// Another key or policy than the reservation's.
    #[error(transparent)]
    Mismatch(Mismatch),
    /// `management=any`, but the evidence has no PCR 23 records to take it from.
    #[error("the evidence's event log has no management event (PCR 23 records)")]
    NoEvent,
}

/// The management digest PCR 23 must contain for this reservation. With
/// `management=tenant`, an event whose (quote-bound) digest is not the tenant's is
/// refused as `management-key` when tvpd's description names another key id, else as
/// `policy` (same key, so the policy differs); the description only chooses the name,
/// the digest decides. With `management=any`, the event's digest is taken as is.
pub fn management_digest(
    expect: ManagementExpect,
    tenant: &TenantManagement,
    event: Option<&ManagementEvent>,
) -> Result<[u8; 32], ManagementError> {
    match (expect, event) {
        (ManagementExpect::Any, Some(e)) => Ok(e.digest),
        (ManagementExpect::Any, None) => Err(ManagementError::NoEvent),
        // No event to name a field from: the PCR 23 check decides.
        (ManagementExpect::Tenant, None) => Ok(tenant.digest),
        (ManagementExpect::Tenant, Some(e)) if e.digest == tenant.digest => Ok(tenant.digest),
        (ManagementExpect::Tenant, Some(e)) => {
            let m = match e.described_key_id() {
                Some(id) if id != tenant.key_id => Mismatch {
                    field: "management-key",
                    expected: format!("key {}", tenant.key_id),
                    found: format!("key {id} (management digest {})", hex::encode(e.digest)),
                },
                _ => Mismatch {
                    field: "policy",
                    expected: format!(
                        "the tenant's policy (management digest {})",
                        hex::encode(tenant.digest)
                    ),
                    found: format!(
                        "another policy (management digest {}: {})",
                        hex::encode(e.digest),
                        e.description
                    ),
                },
            };
            Err(ManagementError::Mismatch(m))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expect(line: &str) -> Expectations {
        let mut r =
            crate::reservations::Reservations::parse(&format!("10.0.0.2 U {line}")).unwrap();
        r.claim(b"U", "10.0.0.2".parse().unwrap()).unwrap().expect
    }

    fn page(mem: u32, image: Option<[u8; 32]>) -> ([u8; 4096], Vec<u8>) {
        page_disk(mem, image, None)
    }

    fn page_disk(
        mem: u32,
        image: Option<[u8; 32]>,
        disk: Option<[u8; 32]>,
    ) -> ([u8; 4096], Vec<u8>) {
        let ca = vec![0x30, 0x03, 0x02, 0x01, 0x01];
        let cfg = Config {
            vip: [10, 0, 0, 2],
            prefix_len: 24,
            gateway: [10, 0, 0, 1],
            mac: [2, 0, 0, 0, 0, 1],
            boot_server_ip: [10, 0, 0, 1],
            boot_server_port: 8443,
            vcpus: 1,
            mem_size_mib: mem,
            time_unix_secs: 0,
            entropy_seed: [0; 32],
            auth_code: b"U",
            server_name: "boot.tenant.example",
            ca_cert_der: &ca,
            image: image.map(|digest| tvp_abi::config::ImageRef {
                gpa: 48 << 20,
                len: 4096,
                digest,
            }),
            disk: disk.map(|header_digest| tvp_abi::config::DiskRef {
                len: 1 << 20,
                header_digest,
            }),
            tpm: None,
        };
        (cfg.encode().unwrap(), ca)
    }

    fn check(line: &str, mem: u32, image: Option<[u8; 32]>) -> Result<(), Mismatch> {
        let (p, _ca) = page(mem, image);
        check_page(&expect(line), &tvp_abi::config::decode(&p).unwrap())
    }

    #[test]
    fn each_page_field_is_named_when_it_differs() {
        let e = check(
            "memory=128 vcpus=any image=any disk=any management=any",
            64,
            None,
        )
        .unwrap_err();
        assert_eq!(
            (e.field, e.code().as_str()),
            ("memory", "config-mismatch:memory")
        );
        assert_eq!(
            e.to_string(),
            "memory: the reservation expects 128 MiB, the VM has 64 MiB"
        );
        let e = check(
            "memory=any vcpus=2 image=any disk=any management=any",
            64,
            None,
        )
        .unwrap_err();
        assert_eq!(e.field, "vcpus");
        // An image where the tenant expects none, another image, none where one is expected.
        let d = "11".repeat(32);
        let e = check(
            "memory=64 vcpus=1 image=none disk=any management=any",
            64,
            Some([2; 32]),
        );
        assert_eq!(e.unwrap_err().field, "image");
        let e = check(
            &format!("memory=64 vcpus=1 image={d} disk=any management=any"),
            64,
            Some([2; 32]),
        );
        assert_eq!(e.unwrap_err().field, "image");
        let e = check(
            &format!("memory=64 vcpus=1 image={d} disk=any management=any"),
            64,
            None,
        );
        assert_eq!(e.unwrap_err().found, "no image");
        // What the reservation states, and `any`.
        check(
            &format!("memory=64 vcpus=1 image={d} disk=any management=any"),
            64,
            Some([0x11; 32]),
        )
        .unwrap();
        check(
            "memory=64 vcpus=1 image=none disk=any management=any",
            64,
            None,
        )
        .unwrap();
        check(
            "memory=any vcpus=any image=any disk=any management=any",
            3000,
            Some([9; 32]),
        )
        .unwrap();
    }

    #[test]
    fn a_tpm_the_reservation_does_not_state_is_refused_and_a_stated_one_required() {
        let check_tpm = |extra: &str, tpm: bool| {
            let (p, _ca) = page(64, None);
            let mut c = tvp_abi::config::decode(&p).unwrap();
            c.tpm = tpm.then_some(tvp_abi::config::TpmRef {
                ek_public_digest: [1; 32],
                ak_public_digest: [2; 32],
            });
            let p = c.encode().unwrap();
            let line = format!("memory=64 vcpus=1 image=none disk=none management=any{extra}");
            check_page(&expect(&line), &tvp_abi::config::decode(&p).unwrap())
        };
        // No tpm= in the reservation means no TPM: a host that gives the VM one (a
        // TPM the host controls, which the tenant's OS might trust) is refused.
        let e = check_tpm("", true).unwrap_err();
        assert_eq!(
            (e.code(), e.expected.as_str(), e.found.as_str()),
            (
                "config-mismatch:tpm".to_string(),
                "no TPM",
                "a TPM of its own"
            )
        );
        check_tpm("", false).unwrap();
        check_tpm(" tpm=no", false).unwrap();
        check_tpm(" tpm=yes", true).unwrap();
        assert_eq!(check_tpm(" tpm=yes", false).unwrap_err().field, "tpm");
        check_tpm(" tpm=any", true).unwrap();
        check_tpm(" tpm=any", false).unwrap();
    }

    #[test]
    fn a_disk_other_than_the_reservations_is_named() {
        let check_disk = |line: &str, disk: Option<[u8; 32]>| {
            let (p, _ca) = page_disk(64, None, disk);
            check_page(&expect(line), &tvp_abi::config::decode(&p).unwrap())
        };
        let d = "22".repeat(32);
        let line = |disk: &str| format!("memory=64 vcpus=1 image=none disk={disk} management=any");
        // Another disk, a disk where none is expected, none where one is expected.
        let e = check_disk(&line(&d), Some([3; 32])).unwrap_err();
        assert_eq!(
            (e.field, e.code().as_str()),
            ("disk", "config-mismatch:disk")
        );
        assert_eq!(
            e.to_string(),
            format!(
                "disk: the reservation expects disk header sha256 {d}, the VM has disk header sha256 {}",
                "03".repeat(32)
            )
        );
        assert_eq!(
            check_disk(&line("none"), Some([3; 32]))
                .unwrap_err()
                .expected,
            "no disk"
        );
        assert_eq!(check_disk(&line(&d), None).unwrap_err().found, "no disk");
        check_disk(&line(&d), Some([0x22; 32])).unwrap();
        check_disk(&line("none"), None).unwrap();
        check_disk(&line("any"), Some([9; 32])).unwrap();
        check_disk(&line("any"), None).unwrap();
    }

    #[test]
    fn the_management_binding_is_the_tenants_or_named() {
        let tenant = TenantManagement {
            digest: [1; 32],
            key_id: "aa".repeat(32),
        };
        let ev = |digest, key: &str| ManagementEvent {
            digest,
            description: format!("vm: key {key} policy allows [] on_tampering power-off"),
        };
        let t = ManagementExpect::Tenant;
        assert_eq!(
            management_digest(t, &tenant, Some(&ev([1; 32], &"aa".repeat(32)))),
            Ok([1; 32])
        );
        assert_eq!(management_digest(t, &tenant, None), Ok([1; 32]));
        let named = |e: Result<[u8; 32], ManagementError>| match e {
            Err(ManagementError::Mismatch(m)) => m.field,
            other => panic!("{other:?}"),
        };
        // Another key.
        assert_eq!(
            named(management_digest(
                t,
                &tenant,
                Some(&ev([2; 32], &"bb".repeat(32)))
            )),
            "management-key"
        );
        // The tenant's key, another digest: the policy differs.
        assert_eq!(
            named(management_digest(
                t,
                &tenant,
                Some(&ev([2; 32], &"aa".repeat(32)))
            )),
            "policy"
        );
        // `any`: the event's digest, and it must be there.
        let a = ManagementExpect::Any;
        assert_eq!(
            management_digest(a, &tenant, Some(&ev([3; 32], "x"))),
            Ok([3; 32])
        );
        assert_eq!(
            management_digest(a, &tenant, None),
            Err(ManagementError::NoEvent)
        );
    }
}
