//! Layers point one way (docs/architecture.md): a lower layer of tvpd never imports a
//! higher one. The rule is checked on the source, so a `use crate::api::...` added to
//! the audit trail, the TPM core or the VM manager fails here, naming file and line.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

/// Each module (a file or a directory under `agent/src`) and the modules above it,
/// which it must not import.
const RULES: &[(&str, &[&str])] = &[
    // The TPM core, the host event log and the formats below everything.
    (
        "tpm",
        &[
            "api",
            "audit",
            "vm",
            "daemon",
            "config",
            "platform",
            "platform_watch",
            "image_release",
            "evidence",
            "unmanaged_vms",
        ],
    ),
    (
        "host_log",
        &[
            "api",
            "audit",
            "vm",
            "daemon",
            "config",
            "platform",
            "platform_watch",
        ],
    ),
    (
        "logging",
        &["api", "audit", "vm", "daemon", "config", "tpm"],
    ),
    ("evidence", &["api", "audit", "vm", "daemon", "config"]),
    (
        "platform",
        &["api", "audit", "vm", "daemon", "config", "platform_watch"],
    ),
    (
        "platform_watch",
        &["api", "audit", "vm", "daemon", "config"],
    ),
    ("unmanaged_vms", &["api", "audit", "vm", "daemon", "config"]),
    ("image_release", &["api", "audit", "vm", "daemon", "config"]),
    // The audit trail knows nothing of HTTP, of VMs' processes or of the daemon.
    ("audit", &["api", "vm", "daemon", "config"]),
    // The VM manager is driven by the API and the daemon, never the reverse.
    ("vm", &["api", "daemon", "config"]),
    // The API serves; it does not start the daemon.
    ("api", &["daemon"]),
];

fn sources(at: &Path) -> Vec<PathBuf> {
    if at.is_file() {
        return vec![at.to_path_buf()];
    }
    let mut out = Vec::new();
    for entry in std::fs::read_dir(at).unwrap().flatten() {
        out.extend(sources(&entry.path()));
    }
    out
}

#[test]
fn no_lower_layer_imports_a_higher_one() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut violations = Vec::new();
    for (module, above) in RULES {
        let dir = src.join(module);
        let at = if dir.is_dir() {
            dir
        } else {
            src.join(format!("{module}.rs"))
        };
        let files = sources(&at);
        assert!(
            !files.is_empty(),
            "module {module} not found at {}",
            at.display()
        );
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            for (n, line) in text.lines().enumerate() {
                for higher in *above {
                    let path = format!("crate::{higher}");
                    let hit = line.match_indices(&path).any(|(i, _)| {
                        !line[i + path.len()..]
                            .starts_with(|c: char| c.is_alphanumeric() || c == '_')
                    });
                    if hit {
                        violations.push(format!(
                            "{}:{}: {module} imports {higher}: {}",
                            file.strip_prefix(&src).unwrap_or(&file).display(),
                            n + 1,
                            line.trim()
                        ));
                    }
                }
            }
        }
    }
    assert!(
        violations.is_empty(),
        "layer violations:\n{}",
        violations.join("\n")
    );
}
