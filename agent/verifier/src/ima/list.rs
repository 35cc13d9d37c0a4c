//! Parsers for the kernel's IMA measurement list. Both yield [`ImaEntry`] values with the
//! SHA-256 template hash recomputed from the template data, which is what the kernel
//! extends into PCR 10's SHA-256 bank (the list itself only shows the SHA-1 one).
//!
//! Binary (`binary_runtime_measurements`, little-endian as on x86 and as
//! `ima_canonical_fmt` writes), per entry:
//! `u32 pcr | [u8; 20] sha1 template hash | u32 n | name[n] | u32 m | template data[m]`,
//! template data = for each field `u32 len | data[len]`; the SHA-256 template hash is
//! SHA-256 of those `m` bytes. Fields of `ima-ng` (and of `ima-sig`, `ima-buf`, which
//! start the same way): `d-ng` = `"<alg>:\0" ‖ digest`, `n-ng` = path ‖ `\0`.
//!
//! ASCII (`ascii_runtime_measurements`), one entry a line, `ima-ng` only:
//! `<pcr> <sha1 template hash hex> ima-ng <alg>:<hex> <path>`. The template data is
//! rebuilt from the fields; a path containing a newline cannot be told apart, which is
//! why tvpd ships the binary list.
//!
//! A violation has an all-zero template hash in the list; the kernel extended all-ones.

use sha2::{Digest, Sha256};

/// At most this many entries are parsed (a host's list with a measure-executables
/// policy has hundreds to a few thousand).
pub const MAX_ENTRIES: usize = 100_000;
/// Longest template name accepted (the kernel's limit is 15).
pub const MAX_TEMPLATE_NAME: usize = 15;
/// Longest template data accepted (a path of PATH_MAX, a digest, a signature).
pub const MAX_TEMPLATE_DATA: usize = 16 * 1024;

/// One measurement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImaEntry {
    /// The PCR the kernel extended.
    pub pcr: u32,
    /// The template's name (`ima-ng`, `ima-sig`, ...).
    pub template: String,
    /// The file content's hash algorithm (`sha256`, ...).
    pub digest_alg: String,
    /// The file content's digest.
    pub digest: Vec<u8>,
    /// The path the kernel recorded (`boot_aggregate` for the first entry).
    pub path: String,
    /// SHA-256 of the template data: what was extended into the SHA-256 bank, unless
    /// this is a violation.
    pub template_sha256: [u8; 32],
    /// The list shows an all-zero template hash: a violation, extended as all-ones.
    pub violation: bool,
}

impl ImaEntry {
    /// The file digest as `alg:hex`, the allowlist's form (both lowercase, as
    /// [`crate::ima::Allowlist::digests`] normalizes).
    pub fn digest_string(&self) -> String {
        format!(
            "{}:{}",
            self.digest_alg.to_ascii_lowercase(),
            hex::encode(&self.digest)
        )
    }

    /// The value extended into PCR 10's SHA-256 bank.
    pub fn extended_sha256(&self) -> [u8; 32] {
        if self.violation {
            [0xff; 32]
        } else {
            self.template_sha256
        }
    }
}

/// Why a list does not parse; names the entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImaParseError {
    /// The list ends inside an entry.
    #[error("entry {index}: the list ends inside the entry")]
    Truncated {
        /// The entry.
        index: usize,
    },
    /// More than [`MAX_ENTRIES`] entries.
    #[error("more than {MAX_ENTRIES} entries")]
    TooManyEntries,
    /// An entry is malformed.
    #[error("entry {index}: {reason}")]
    Entry {
        /// The entry.
        index: usize,
        /// What is wrong.
        reason: String,
    },
}

fn bad(index: usize, reason: impl Into<String>) -> ImaParseError {
    ImaParseError::Entry {
        index,
        reason: reason.into(),
    }
}

struct Reader<'a> {
    buf: &'a [u8],
    index: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ImaParseError> {
        if self.buf.len() < n {
            return Err(ImaParseError::Truncated { index: self.index });
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    fn u32(&mut self) -> Result<u32, ImaParseError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
}

/// The `d-ng` and `n-ng` fields at the start of `data` (a sequence of `u32 len ‖ bytes`).
fn file_fields(index: usize, data: &[u8]) -> Result<(String, Vec<u8>, String), ImaParseError> {
    let mut r = Reader { buf: data, index };
    let mut field = |what: &str| -> Result<&[u8], ImaParseError> {
        let len = r
            .u32()
            .map_err(|_| bad(index, format!("no {what} field")))? as usize;
        r.take(len).map_err(|_| {
            bad(
                index,
                format!("the {what} field overruns the template data"),
            )
        })
    };
    let d = field("digest")?;
    let n = field("name")?;
    let colon = d
        .iter()
        .position(|&b| b == b':')
        .ok_or_else(|| bad(index, "the digest field has no `alg:` prefix"))?;
    let alg = std::str::from_utf8(&d[..colon])
        .ok()
        .filter(|a| {
            !a.is_empty()
                && a.len() <= 16
                && a.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
        .ok_or_else(|| bad(index, "the digest field's algorithm is not a name"))?;
    if d.get(colon + 1) != Some(&0) {
        return Err(bad(
            index,
            "the digest field's `alg:` is not NUL-terminated",
        ));
    }
    let digest = d[colon + 2..].to_vec();
    if digest.is_empty() || digest.len() > 64 {
        return Err(bad(index, format!("a {}-byte file digest", digest.len())));
    }
    let name = n.strip_suffix(&[0]).unwrap_or(n);
    if name.contains(&0) {
        return Err(bad(index, "the name field has a NUL inside"));
    }
    Ok((
        alg.to_string(),
        digest,
        String::from_utf8_lossy(name).into_owned(),
    ))
}

/// Parse `binary_runtime_measurements`.
pub fn parse_binary(bytes: &[u8]) -> Result<Vec<ImaEntry>, ImaParseError> {
    let mut r = Reader {
        buf: bytes,
        index: 0,
    };
    let mut out = Vec::new();
    while !r.buf.is_empty() {
        if out.len() == MAX_ENTRIES {
            return Err(ImaParseError::TooManyEntries);
        }
        let index = out.len();
        r.index = index;
        let pcr = r.u32()?;
        let sha1 = r.take(20)?;
        let name_len = r.u32()? as usize;
        if name_len == 0 || name_len > MAX_TEMPLATE_NAME {
            return Err(bad(index, format!("template name of {name_len} bytes")));
        }
        let name = std::str::from_utf8(r.take(name_len)?)
            .map_err(|_| bad(index, "the template name is not UTF-8"))?
            .to_string();
        if name == "ima" {
            return Err(bad(
                index,
                "template `ima` (SHA-1 only) is not supported: boot with ima_template=ima-ng",
            ));
        }
        let data_len = r.u32()? as usize;
        if data_len > MAX_TEMPLATE_DATA {
            return Err(bad(index, format!("template data of {data_len} bytes")));
        }
        let data = r.take(data_len)?;
        let (digest_alg, digest, path) = file_fields(index, data)?;
        out.push(ImaEntry {
            pcr,
            template: name,
            digest_alg,
            digest,
            path,
            template_sha256: Sha256::digest(data).into(),
            violation: sha1.iter().all(|&b| b == 0),
        });
    }
    Ok(out)
}

/// The `ima-ng` template data for a file digest and a path (what the kernel hashes).
pub fn ima_ng_template_data(alg: &str, digest: &[u8], path: &str) -> Vec<u8> {
    let mut d = Vec::with_capacity(alg.len() + 2 + digest.len());
    d.extend_from_slice(alg.as_bytes());
    d.extend_from_slice(b":\0");
    d.extend_from_slice(digest);
    let mut out = Vec::with_capacity(d.len() + path.len() + 9);
    out.extend_from_slice(&(d.len() as u32).to_le_bytes());
    out.extend_from_slice(&d);
    out.extend_from_slice(&(path.len() as u32 + 1).to_le_bytes());
    out.extend_from_slice(path.as_bytes());
    out.push(0);
    out
}

/// Parse `ascii_runtime_measurements` (`ima-ng` entries only).
pub fn parse_ascii(text: &str) -> Result<Vec<ImaEntry>, ImaParseError> {
    let mut out = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if index == MAX_ENTRIES {
            return Err(ImaParseError::TooManyEntries);
        }
        let mut f = line.splitn(5, ' ');
        let (Some(pcr), Some(hash), Some(template), Some(d), Some(path)) =
            (f.next(), f.next(), f.next(), f.next(), f.next())
        else {
            return Err(bad(index, "fewer than 5 fields"));
        };
        let pcr: u32 = pcr
            .parse()
            .map_err(|_| bad(index, format!("PCR {pcr:?} is not a number")))?;
        let hash = hex::decode(hash).map_err(|_| bad(index, "the template hash is not hex"))?;
        if template != "ima-ng" {
            return Err(bad(
                index,
                format!("template {template:?}: the ASCII list is read for ima-ng only; ship the binary list"),
            ));
        }
        let (alg, hexd) = d
            .split_once(':')
            .ok_or_else(|| bad(index, "the file digest has no `alg:` prefix"))?;
        let digest = hex::decode(hexd).map_err(|_| bad(index, "the file digest is not hex"))?;
        if path.len() > MAX_TEMPLATE_DATA || digest.is_empty() || digest.len() > 64 {
            return Err(bad(index, "field sizes out of bounds"));
        }
        let data = ima_ng_template_data(alg, &digest, path);
        out.push(ImaEntry {
            pcr,
            template: template.to_string(),
            digest_alg: alg.to_string(),
            digest,
            path: path.to_string(),
            template_sha256: Sha256::digest(&data).into(),
            violation: hash.iter().all(|&b| b == 0),
        });
    }
    Ok(out)
}

/// Encode entries as `binary_runtime_measurements` (`ima-ng`): for tests and fixtures.
/// The SHA-1 template hash is computed (all zeros for a violation).
pub fn encode_binary(entries: &[ImaEntry]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        let data = ima_ng_template_data(&e.digest_alg, &e.digest, &e.path);
        out.extend_from_slice(&e.pcr.to_le_bytes());
        if e.violation {
            out.extend_from_slice(&[0; 20]);
        } else {
            out.extend_from_slice(&placeholder_sha1(&data));
        }
        out.extend_from_slice(&(e.template.len() as u32).to_le_bytes());
        out.extend_from_slice(e.template.as_bytes());
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        out.extend_from_slice(&data);
    }
    out
}

/// Readers compare the SHA-1 template hash column only with zero (violation), so a
/// fixture's column needs only to be non-zero: the first 20 bytes of SHA-256 with the
/// low bit set. Not the kernel's SHA-1, and the crate needs no SHA-1 implementation.
fn placeholder_sha1(data: &[u8]) -> [u8; 20] {
    let h = Sha256::digest(data);
    let mut out = [0u8; 20];
    out.copy_from_slice(&h[..20]);
    out[0] |= 1;
    out
}

/// A non-violation `ima-ng` entry for PCR 10 with its template hash computed.
pub fn ima_ng_entry(alg: &str, digest: &[u8], path: &str) -> ImaEntry {
    ImaEntry {
        pcr: super::IMA_PCR,
        template: "ima-ng".into(),
        digest_alg: alg.into(),
        digest: digest.to_vec(),
        path: path.into(),
        template_sha256: Sha256::digest(ima_ng_template_data(alg, digest, path)).into(),
        violation: false,
    }
}
