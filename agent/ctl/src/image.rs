//! `tvpctl image`: the tenant's side of encrypted VM images (docs/image-format.md):
//! a key-management key pair, encryption, inspection, and a local decryption check.
//! Encryption and decryption stream (a few chunk-sized buffers, whatever the image's
//! size), show progress on stderr on a terminal or with `--progress`, and print their
//! result as JSON on stdout with `--json`.

use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::Path;

use clap::Subcommand;
use rsa::pkcs8::{
    DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey, LineEnding,
};
use rsa::{RsaPrivateKey, RsaPublicKey};
use tvp_image::stream::read_header;
use tvp_image::{decrypt, encrypt, ImageKey};

use super::exit;
use crate::progress::{self, Meter, Metered};

/// `tvpctl image` subcommands.
#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Create the tenant's key-management key pair (RSA-3072): PREFIX.key (private,
    /// mode 0600) and PREFIX.pub.
    Keygen {
        /// Output path prefix.
        prefix: std::path::PathBuf,
    },
    /// Encrypt an image with a fresh key wrapped to the key-management public key.
    Encrypt {
        /// Plaintext image.
        input: std::path::PathBuf,
        /// Encrypted image to write.
        output: std::path::PathBuf,
        /// Key-management public key (PEM).
        #[arg(long, value_name = "PUB.pem")]
        kms_pub: std::path::PathBuf,
        /// Plaintext bytes per authenticated chunk (4096..=16777216).
        #[arg(long, default_value_t = 1 << 20)]
        chunk_size: u32,
        /// Show progress on stderr (bytes, MB/s, time left) even when stderr is not a
        /// terminal or with --json; on a terminal it is shown unless --json is given.
        #[arg(long)]
        progress: bool,
    },
    /// Show an encrypted image's header.
    Inspect {
        /// Encrypted image.
        input: std::path::PathBuf,
    },
    /// Decrypt with the key-management private key (a tenant-side check; hosts never
    /// hold this key).
    Decrypt {
        /// Encrypted image.
        input: std::path::PathBuf,
        /// Plaintext to write.
        output: std::path::PathBuf,
        /// Key-management private key (PEM).
        #[arg(long, value_name = "KEY.pem")]
        kms_key: std::path::PathBuf,
        /// Show progress on stderr (bytes, MB/s, time left) even when stderr is not a
        /// terminal or with --json; on a terminal it is shown unless --json is given.
        #[arg(long)]
        progress: bool,
    },
}

fn fail(msg: String, code: i32) -> i32 {
    eprintln!("tvpctl: {msg}");
    code
}

fn read_to_string(p: &Path) -> Result<String, i32> {
    std::fs::read_to_string(p)
        .map_err(|e| fail(format!("cannot read {}: {e}", p.display()), exit::IO))
}

/// How a long operation reports: progress on stderr or not, result as JSON or text.
#[derive(Debug, Clone, Copy)]
struct Out {
    progress: bool,
    json: bool,
}

impl Out {
    fn new(flag: bool, json: bool) -> Self {
        Out {
            progress: progress::wanted(flag, json),
            json,
        }
    }

    fn meter(&self, passes: Vec<&'static str>, total: u64) -> Option<Meter> {
        self.progress.then(|| Meter::new(passes, total))
    }
}

fn file_len(f: &File, p: &Path) -> Result<u64, i32> {
    f.metadata()
        .map(|m| m.len())
        .map_err(|e| fail(format!("cannot stat {}: {e}", p.display()), exit::IO))
}

/// Run an image subcommand.
pub fn run(cmd: &ImageCommand, json: bool) -> i32 {
    let r = match cmd {
        ImageCommand::Keygen { prefix } => keygen(prefix),
        ImageCommand::Encrypt {
            input,
            output,
            kms_pub,
            chunk_size,
            progress,
        } => encrypt_cmd(
            input,
            output,
            kms_pub,
            *chunk_size,
            Out::new(*progress, json),
        ),
        ImageCommand::Inspect { input } => inspect(input, json),
        ImageCommand::Decrypt {
            input,
            output,
            kms_key,
            progress,
        } => decrypt_cmd(input, output, kms_key, Out::new(*progress, json)),
    };
    match r {
        Ok(()) => exit::OK,
        Err(c) => c,
    }
}

fn keygen(prefix: &Path) -> Result<(), i32> {
    let key = RsaPrivateKey::new(&mut rand::rngs::OsRng, 3072)
        .map_err(|e| fail(format!("key generation failed: {e}"), exit::IO))?;
    let private = key
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|e| fail(format!("cannot encode key: {e}"), exit::IO))?;
    let public = key
        .to_public_key()
        .to_public_key_pem(LineEnding::LF)
        .map_err(|e| fail(format!("cannot encode key: {e}"), exit::IO))?;
    let priv_path = prefix.with_extension("key");
    let pub_path = prefix.with_extension("pub");
    {
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&priv_path)
            .map_err(|e| {
                fail(
                    format!("cannot create {}: {e}", priv_path.display()),
                    exit::IO,
                )
            })?;
        f.write_all(private.as_bytes()).map_err(|e| {
            fail(
                format!("cannot write {}: {e}", priv_path.display()),
                exit::IO,
            )
        })?;
    }
    std::fs::write(&pub_path, public).map_err(|e| {
        fail(
            format!("cannot write {}: {e}", pub_path.display()),
            exit::IO,
        )
    })?;
    println!("{} {}", priv_path.display(), pub_path.display());
    Ok(())
}

fn encrypt_cmd(
    input: &Path,
    output: &Path,
    kms_pub: &Path,
    chunk: u32,
    how: Out,
) -> Result<(), i32> {
    let kms = RsaPublicKey::from_public_key_pem(&read_to_string(kms_pub)?).map_err(|e| {
        fail(
            format!("{}: not an RSA public key: {e}", kms_pub.display()),
            exit::IO,
        )
    })?;
    let file = File::open(input)
        .map_err(|e| fail(format!("cannot open {}: {e}", input.display()), exit::IO))?;
    let total = file_len(&file, input)?;
    let mut out = BufWriter::new(
        File::create(output)
            .map_err(|e| fail(format!("cannot create {}: {e}", output.display()), exit::IO))?,
    );
    // Two passes over the input: the plaintext digest goes into the header, which every
    // chunk's associated data binds.
    let meter = how.meter(vec!["hashing", "encrypting"], total);
    let mut inp = Metered::new(BufReader::with_capacity(1 << 16, file), meter);
    let r = encrypt(&mut inp, &mut out, &kms, chunk)
        .and_then(|h| out.flush().map(|()| h).map_err(tvp_image::ImageError::Io));
    let h = match r {
        Ok(h) => h,
        Err(e) => {
            inp.abandon();
            drop(out);
            let _ = std::fs::remove_file(output);
            return Err(fail(format!("{}: {e}", input.display()), exit::IO));
        }
    };
    inp.finish();
    if how.json {
        let v = serde_json::json!({
            "output": output.display().to_string(), "plaintext_len": h.plaintext_len,
            "chunk_size": h.chunk_size, "chunk_count": h.chunk_count,
            "image_digest": hex::encode(h.image_digest), "key_id": hex::encode(h.key_id),
            "header_digest": hex::encode(h.digest()),
        });
        println!("{v:#}");
    } else {
        eprintln!(
            "encrypted {} bytes in {} chunks; image digest {}; header digest {} (a disk's, for disk=)",
            h.plaintext_len,
            h.chunk_count,
            hex::encode(h.image_digest),
            hex::encode(h.digest())
        );
    }
    Ok(())
}

fn inspect(input: &Path, json: bool) -> Result<(), i32> {
    let mut inp = File::open(input)
        .map_err(|e| fail(format!("cannot open {}: {e}", input.display()), exit::IO))?;
    let h = read_header(&mut inp)
        .map_err(|e| fail(format!("{}: {e}", input.display()), exit::VERIFY_FAILED))?;
    let v = serde_json::json!({
        "format": "TVPENC01", "algorithm": "AES-256-GCM", "chunk_size": h.chunk_size,
        "plaintext_len": h.plaintext_len, "chunk_count": h.chunk_count,
        "image_digest": hex::encode(h.image_digest), "key_id": hex::encode(h.key_id),
        "wrapped_key_len": h.wrapped_key.len(), "header_digest": hex::encode(h.digest()),
    });
    if json {
        println!("{v:#}");
    } else {
        println!("encrypted tvp image (AES-256-GCM, format 1)");
        println!(
            "  plaintext:     {} bytes in {} chunks of {}",
            h.plaintext_len, h.chunk_count, h.chunk_size
        );
        println!("  image digest:  {}", hex::encode(h.image_digest));
        println!(
            "  header digest: {} (as a disk: the page's disk descriptor, reservation disk=)",
            hex::encode(h.digest())
        );
        println!("  wrapped to:    key {}", hex::encode(h.key_id));
    }
    Ok(())
}

fn decrypt_cmd(input: &Path, output: &Path, kms_key: &Path, how: Out) -> Result<(), i32> {
    let key = RsaPrivateKey::from_pkcs8_pem(&read_to_string(kms_key)?).map_err(|e| {
        fail(
            format!("{}: not an RSA private key: {e}", kms_key.display()),
            exit::IO,
        )
    })?;
    let file = File::open(input)
        .map_err(|e| fail(format!("cannot open {}: {e}", input.display()), exit::IO))?;
    let total = file_len(&file, input)?;
    let meter = how.meter(vec!["decrypting"], total);
    let mut inp = Metered::new(BufReader::with_capacity(1 << 16, file), meter);
    let h = read_header(&mut inp).map_err(|e| {
        inp.abandon();
        fail(format!("{}: {e}", input.display()), exit::VERIFY_FAILED)
    })?;
    let image_key = ImageKey::unwrap(&h.wrapped_key, &key).map_err(|e| {
        inp.abandon();
        fail(e.to_string(), exit::VERIFY_FAILED)
    })?;
    // Write to a temporary file and rename only when every chunk authenticated, so a
    // tampered image never leaves partial plaintext behind under the output name.
    let tmp = output.with_extension("partial");
    let mut out = BufWriter::new(File::create(&tmp).map_err(|e| {
        inp.abandon();
        fail(format!("cannot create {}: {e}", tmp.display()), exit::IO)
    })?);
    let r = decrypt(&mut inp, &h, &image_key, |c| {
        out.write_all(c).map_err(tvp_image::ImageError::Io)
    })
    .and_then(|()| out.flush().map_err(tvp_image::ImageError::Io));
    drop(out);
    match r {
        Ok(()) => {
            std::fs::rename(&tmp, output)
                .map_err(|e| fail(format!("cannot write {}: {e}", output.display()), exit::IO))?;
            inp.finish();
            if how.json {
                let v = serde_json::json!({
                    "output": output.display().to_string(), "plaintext_len": h.plaintext_len,
                    "chunk_count": h.chunk_count, "image_digest": hex::encode(h.image_digest),
                    "header_digest": hex::encode(h.digest()),
                    "verified": true,
                });
                println!("{v:#}");
            }
            Ok(())
        }
        Err(e) => {
            inp.abandon();
            let _ = std::fs::remove_file(&tmp);
            Err(fail(
                format!("{}: {e}", input.display()),
                exit::VERIFY_FAILED,
            ))
        }
    }
}
