//! `lepton-convert keygen`, `sign` and `verify`: who made a model, and that it is unchanged.

use anyhow::{Context, Result};
use clap::Args;
use lepton_runtime::signature::{self, PublicKey, SecretKey};
use std::path::PathBuf;

/// Make a signing key pair: NAME.key (private, mode 0600) and NAME.pub (public).
///
/// Keep NAME.key on the machine that prepares models; copy NAME.pub to each device and list it in
/// the daemon's config, `[security] trusted_keys = ["/etc/lepton/keys/NAME.pub"]`. Both are PEM
/// files that OpenSSL reads too (PKCS#8 and SubjectPublicKeyInfo, Ed25519). An existing NAME.key
/// is never replaced.
///
/// Example: lepton-convert keygen -o keys/owner
#[derive(Args, Debug)]
pub struct KeygenArgs {
    /// Path and name of the pair, without extension.
    #[arg(short, long, value_name = "NAME")]
    output: PathBuf,
}

/// Sign a model file: writes MODEL.sig beside it (for model.lpm, model.lpm.sig).
///
/// The signature is Ed25519 over the SHA-256 of the file's bytes; the .sig records the digest,
/// the key's id and the file name. Sign the final file, after compile or pack: any later change to
/// its bytes makes devices that require signed models refuse it.
///
/// Example: lepton-convert sign models/keywords/model.lpm --key keys/owner.key
#[derive(Args, Debug)]
pub struct SignArgs {
    /// The model file (.onnx or .lpm).
    model: PathBuf,
    /// The private key (NAME.key from keygen).
    #[arg(long, value_name = "NAME.key")]
    key: PathBuf,
}

/// Check a model's signature (MODEL.sig) against one or more public keys, as a device does.
///
/// Exit code 0 when the file is unchanged and signed by one of the keys; 1 when it is not (the
/// message says why: unsigned, signed by another key, changed after signing, or a bad signature);
/// 2 when a file cannot be read.
///
/// Example: lepton-convert verify models/keywords/model.lpm --key keys/owner.pub
#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// The model file.
    model: PathBuf,
    /// A trusted public key (NAME.pub); repeat for several.
    #[arg(long, value_name = "NAME.pub", required = true)]
    key: Vec<PathBuf>,
}

/// Runs `keygen`.
pub fn keygen(args: KeygenArgs) -> Result<u8> {
    if let Some(dir) = args.output.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("{}", dir.display()))?;
    }
    let key = SecretKey::generate().context("reading the operating system's random source")?;
    let (private, public) = key.write(&args.output)?;
    println!(
        "key {}: private {} (mode 0600, keep it secret), public {}",
        key.id(),
        private.display(),
        public.display()
    );
    Ok(0)
}

/// Runs `sign`.
pub fn sign(args: SignArgs) -> Result<u8> {
    let key = SecretKey::read(&args.key)?;
    let sig = signature::sign(&args.model, &key)?;
    println!("{}: signed with key {} -> {}", args.model.display(), key.id(), sig.display());
    Ok(0)
}

/// Runs `verify`.
pub fn verify(args: VerifyArgs) -> Result<u8> {
    let keys = args.key.iter().map(|k| PublicKey::read(k)).collect::<Result<Vec<_>, _>>()?;
    let bytes = std::fs::read(&args.model).with_context(|| format!("{}", args.model.display()))?;
    match signature::verify(&bytes, &args.model, &keys) {
        Ok(key) => {
            println!(
                "{}: good signature by key {} ({}), SHA-256 {}",
                args.model.display(),
                key.id(),
                key.path().display(),
                signature::sha256_hex(&bytes)
            );
            Ok(0)
        }
        Err(e @ signature::SignatureError::Io { .. }) | Err(e @ signature::SignatureError::Malformed { .. }) => {
            Err(e.into())
        }
        Err(e) => {
            eprintln!("error: {e}");
            Ok(1)
        }
    }
}
