//! A VM's tenant key changes as its audit trail records them: the VM events of
//! `rotate-key` and `renew-key-lease` (`docs/audit.md` §5.5). The VM's record file
//! keeps the key in force, but root could put an older record back (or edit it) while
//! tvpd is stopped; at start the record is checked against the last change in the
//! TPM-anchored trail ([`check_record`]).

use tvp_audit::record::{AuditRecord, Stage};

/// The start of a creation event's reason (`created; management <digest>`): key
/// changes before it belong to an earlier VM under the same id.
const CREATED: &str = "created; management ";
const ROTATED: &str = "management key rotated from ";
const LEASE_FROM: &str = "; lease from ";
const RENEWED: &str = " lease renewed";

/// The event reason of a rotation from key `old` to `new` (key ids), lease from `since`.
pub fn rotation_reason(old: &str, new: &str, since: u64) -> String {
    format!("{ROTATED}{old} to {new}{LEASE_FROM}{since}")
}

/// The event reason of a lease renewal of key `key`, lease from `since`.
pub fn renewal_reason(key: &str, since: u64) -> String {
    format!("management key {key}{RENEWED}{LEASE_FROM}{since}")
}

/// A key change the trail records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyChange {
    /// The key in force after it.
    pub key_id: String,
    /// Its lease start (Unix seconds).
    pub since: u64,
    /// The event record's sequence number.
    pub seq: u64,
}

fn parse(reason: &str) -> Option<(String, u64)> {
    let (head, since) = reason.rsplit_once(LEASE_FROM)?;
    let since = since.parse().ok()?;
    let key = match head.strip_prefix(ROTATED) {
        Some(rest) => rest.split_once(" to ")?.1,
        None => head
            .strip_prefix("management key ")?
            .strip_suffix(RENEWED)?,
    };
    Some((key.to_string(), since))
}

/// The last key change of the current VM `vm` (after its last creation event).
pub fn last_change(records: &[AuditRecord], vm: &str) -> Option<KeyChange> {
    let mut last = None;
    for r in records
        .iter()
        .filter(|r| r.stage == Stage::Event && r.vm.as_deref() == Some(vm))
    {
        if r.reason.starts_with(CREATED) && r.state_before.as_deref() == Some("none") {
            last = None;
        } else if let Some((key_id, since)) =
            // A key change leaves the VM's state as it was.
            parse(&r.reason).filter(|_| r.state_before == r.state_after)
        {
            last = Some(KeyChange {
                key_id,
                since,
                seq: r.seq,
            });
        }
    }
    last
}

/// Check a VM record's key in force (`current`: key id and lease start, `None` if it
/// names none since creation) against the trail's last change for `vm`: they must
/// agree, or the record was rolled back or edited. The error names both.
pub fn check_record(
    records: &[AuditRecord],
    vm: &str,
    current: Option<(&str, u64)>,
) -> Result<(), String> {
    let chain = last_change(records, vm);
    let agrees = match (&chain, current) {
        (None, None) => true,
        (Some(c), Some((key, since))) => c.key_id == key && c.since == since,
        _ => false,
    };
    if agrees {
        return Ok(());
    }
    let record = current.map_or("the key it was created with".to_string(), |(k, s)| {
        format!("key {k} with a lease from {s}")
    });
    let trail = chain.map_or("no key change since its creation".to_string(), |c| {
        format!(
            "key {} with a lease from {} (record {})",
            c.key_id, c.since, c.seq
        )
    });
    Err(format!(
        "VM '{vm}': its record names {record}, but the TPM-anchored audit trail shows {trail}; the record was rolled back or edited while tvpd was stopped. Restore its newest copy"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tvp_audit::record::Decision;

    fn event(seq: u64, vm: &str, reason: &str) -> AuditRecord {
        let before = reason.starts_with(CREATED).then(|| "none".to_string());
        AuditRecord {
            v: 1,
            seq,
            time_ms: 0,
            uid: 0,
            pid: None,
            vm: Some(vm.into()),
            op: "vm-state-change".into(),
            params_digest: String::new(),
            stage: Stage::Event,
            decision: Decision::Allow,
            reason: reason.into(),
            status: None,
            result: None,
            state_before: before.clone(),
            state_after: before.map(|_| "queued".to_string()),
            request: 0,
            prev: String::new(),
            hash: String::new(),
        }
    }

    #[test]
    fn the_last_change_of_the_current_vm_decides() {
        let trail = [
            event(1, "a", "created; management d1"),
            event(2, "a", &rotation_reason("k1", "k2", 10)),
            event(3, "b", &rotation_reason("x", "y", 11)),
            event(4, "a", &renewal_reason("k2", 20)),
        ];
        assert_eq!(
            last_change(&trail, "a"),
            Some(KeyChange {
                key_id: "k2".into(),
                since: 20,
                seq: 4
            })
        );
        check_record(&trail, "a", Some(("k2", 20))).unwrap();
        let e = check_record(&trail, "a", Some(("k2", 10))).unwrap_err();
        assert!(e.contains("rolled back") && e.contains("record 4"), "{e}");
        assert!(check_record(&trail, "a", None).is_err());
        // A VM created again under the id starts afresh.
        let mut again = trail.to_vec();
        again.push(event(5, "a", "created; management d2"));
        check_record(&again, "a", None).unwrap();
        assert!(check_record(&again, "a", Some(("k2", 20))).is_err());
    }
}
