//! Signed models: who made a model file, and that its bytes did not change since.
//!
//! A signature is Ed25519 (RFC 8032, checked with `verify_strict`) over the SHA-256 digest of the
//! model file's bytes. It lives beside the model as `MODEL.sig` (the model's file name with `.sig`
//! appended: `model.lpm.sig`), a small TOML file that also records the digest, the signing key's id
//! and the file name, so that a refusal can say what is wrong:
//!
//! ```toml
//! format = "lepton-signature-v1"
//! file = "model.lpm"
//! sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
//! key_id = "3c8f1a2b4d5e6f70"
//! signature = "base64 of the 64 signature bytes"
//! ```
//!
//! Keys are PEM files that OpenSSL reads too: the private key as PKCS#8 (`NAME.key`, created with
//! mode 0600), the public key as SubjectPublicKeyInfo (`NAME.pub`). A key's id is the first 8 bytes
//! of the SHA-256 of its 32 public key bytes, in hex.

use base64::Engine as _;
use ed25519_dalek::pkcs8::spki::der::{pem::LineEnding, zeroize::Zeroizing};
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey, KeypairBytes};
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt::Write as _;
use std::format;
use std::path::{Path, PathBuf};
use std::string::{String, ToString};
use std::vec::Vec;

/// The `format` a `.sig` file declares.
pub const FORMAT: &str = "lepton-signature-v1";

/// Why a key, a signature or a model was refused.
#[derive(Debug, thiserror::Error)]
pub enum SignatureError {
    /// A file could not be read or written.
    /// The OS error is part of the message, so it is not also a `source`: a chain printer
    /// (anyhow's `{:#}`) would print it twice.
    #[error("{}: {error}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        error: std::io::Error,
    },
    /// A key or `.sig` file is not what it should be.
    #[error("{}: {reason}", path.display())]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The model has no `.sig` beside it.
    #[error("{}: not signed (no {} beside it); sign it with `lepton-convert sign {} --key OWNER.key`", model.display(), sig.display(), model.display())]
    Unsigned {
        /// The model.
        model: PathBuf,
        /// Where its signature was looked for.
        sig: PathBuf,
    },
    /// Signed, by a key that is not trusted.
    #[error("{}: signed by key {key_id}, which is not among the trusted keys ({trusted})", model.display())]
    UntrustedKey {
        /// The model.
        model: PathBuf,
        /// The id the signature names.
        key_id: String,
        /// The trusted keys' ids.
        trusted: String,
    },
    /// The bytes are not the ones that were signed.
    #[error("{}: changed after signing (SHA-256 {actual}, signed {signed})", model.display())]
    Modified {
        /// The model.
        model: PathBuf,
        /// The digest of the bytes now.
        actual: String,
        /// The digest the signature names.
        signed: String,
    },
    /// The signature does not verify with the key it names.
    #[error("{}: the signature in {} is not valid for key {key_id} (the .sig was altered or made with another key)", model.display(), sig.display())]
    BadSignature {
        /// The model.
        model: PathBuf,
        /// The `.sig` file.
        sig: PathBuf,
        /// The key it names.
        key_id: String,
    },
}

/// Result with a [`SignatureError`].
pub type Result<T> = core::result::Result<T, SignatureError>;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SignatureError + '_ {
    move |error| SignatureError::Io { path: path.to_path_buf(), error }
}

fn malformed(path: &Path, reason: impl ToString) -> SignatureError {
    SignatureError::Malformed { path: path.to_path_buf(), reason: reason.to_string() }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// SHA-256 of some bytes, in hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// The id of a public key: the first 8 bytes of the SHA-256 of its 32 bytes, in hex.
fn key_id(key: &VerifyingKey) -> String {
    hex(&Sha256::digest(key.as_bytes())[..8])
}

/// Where a model's signature lives: its file name with `.sig` appended.
pub fn sig_path(model: &Path) -> PathBuf {
    let mut name = model.as_os_str().to_owned();
    name.push(".sig");
    PathBuf::from(name)
}

/// A public key that may be trusted, read from a `.pub` file.
#[derive(Debug, Clone)]
pub struct PublicKey {
    key: VerifyingKey,
    id: String,
    path: PathBuf,
}

impl PublicKey {
    /// Reads a public key (SubjectPublicKeyInfo PEM, as `lepton-convert keygen` and `openssl pkey
    /// -pubout` write it).
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(io(path))?;
        if text.contains("PRIVATE KEY") {
            return Err(malformed(
                path,
                "this is a private key: give the .pub file (keep the .key on the machine that signs)",
            ));
        }
        let key = VerifyingKey::from_public_key_pem(&text)
            .map_err(|e| malformed(path, format!("not an Ed25519 public key in PEM ({e})")))?;
        Ok(PublicKey { id: key_id(&key), key, path: path.to_path_buf() })
    }

    /// The key's id, as `.sig` files name it.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The file it was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// A private signing key.
pub struct SecretKey {
    key: SigningKey,
}

impl SecretKey {
    /// A new key from the operating system's random source.
    pub fn generate() -> core::result::Result<Self, getrandom::Error> {
        let mut seed = [0u8; 32];
        getrandom::getrandom(&mut seed)?;
        Ok(SecretKey { key: SigningKey::from_bytes(&seed) })
    }

    /// Reads a private key (PKCS#8 PEM, v1 as `keygen` and OpenSSL write it, or v2 with the
    /// public key, as older versions of `keygen` wrote it).
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(io(path))?;
        let key = SigningKey::from_pkcs8_pem(&text)
            .map_err(|e| malformed(path, format!("not an Ed25519 private key in PKCS#8 PEM ({e})")))?;
        Ok(SecretKey { key })
    }

    /// The id of its public key.
    pub fn id(&self) -> String {
        key_id(&self.key.verifying_key())
    }

    /// The key as PKCS#8 v1 PEM (RFC 8410, without the optional public key): what OpenSSL 3.0
    /// reads (it refuses the v2 form with the embedded public key, which ed25519-dalek writes).
    fn to_pem(&self) -> ed25519_dalek::pkcs8::Result<Zeroizing<String>> {
        let bytes = KeypairBytes { secret_key: self.key.to_bytes(), public_key: None };
        bytes.to_pkcs8_pem(LineEnding::LF)
    }

    /// Writes `NAME.key` (mode 0600, refusing to replace an existing file) and `NAME.pub`;
    /// returns both paths.
    pub fn write(&self, name: &Path) -> Result<(PathBuf, PathBuf)> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let with = |ext: &str| {
            let mut s = name.as_os_str().to_owned();
            s.push(ext);
            PathBuf::from(s)
        };
        let (key_path, pub_path) = (with(".key"), with(".pub"));
        let pem = self.to_pem().map_err(|e| malformed(&key_path, e))?;
        let public =
            self.key.verifying_key().to_public_key_pem(Default::default()).map_err(|e| malformed(&pub_path, e))?;
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&key_path).map_err(
            |e| match e.kind() {
                std::io::ErrorKind::AlreadyExists => malformed(
                    &key_path,
                    "already exists: a key is never replaced (pick another name, or delete it first)",
                ),
                _ => SignatureError::Io { path: key_path.clone(), error: e },
            },
        )?;
        f.write_all(pem.as_bytes()).map_err(io(&key_path))?;
        std::fs::write(&pub_path, public).map_err(io(&pub_path))?;
        Ok((key_path, pub_path))
    }
}

/// A `.sig` file's contents.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignatureFile {
    /// Always [`FORMAT`].
    pub format: String,
    /// The model's file name when it was signed (informational: the digest is what counts).
    pub file: String,
    /// SHA-256 of the model's bytes, hex.
    pub sha256: String,
    /// The signing key's id.
    pub key_id: String,
    /// The Ed25519 signature over the 32 digest bytes, base64.
    pub signature: String,
}

impl SignatureFile {
    /// Reads and parses a `.sig` file.
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(io(path))?;
        let s: SignatureFile = toml::from_str(&text).map_err(|e| malformed(path, e.message()))?;
        if s.format != FORMAT {
            return Err(malformed(path, format!("format `{}`: this version reads `{FORMAT}`", s.format)));
        }
        Ok(s)
    }
}

/// Signs a model file: writes `MODEL.sig` beside it and returns its path.
pub fn sign(model: &Path, key: &SecretKey) -> Result<PathBuf> {
    let bytes = std::fs::read(model).map_err(io(model))?;
    let digest = Sha256::digest(&bytes);
    let signature = key.key.sign(&digest);
    let file = SignatureFile {
        format: FORMAT.into(),
        file: model.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
        sha256: hex(&digest),
        key_id: key.id(),
        signature: base64::engine::general_purpose::STANDARD.encode(signature.to_bytes()),
    };
    let path = sig_path(model);
    let text = format!(
        "# Signature of {} (lepton-convert sign); check with `lepton-convert verify`.\n{}",
        file.file,
        toml::to_string(&file).map_err(|e| malformed(&path, e))?
    );
    std::fs::write(&path, text).map_err(io(&path))?;
    Ok(path)
}

/// Checks that `bytes`, read from `model`, carry a valid signature (in `MODEL.sig`) by one of
/// the `trusted` keys; returns the key that signed them.
pub fn verify<'k>(bytes: &[u8], model: &Path, trusted: &'k [PublicKey]) -> Result<&'k PublicKey> {
    let sig = sig_path(model);
    if !sig.exists() {
        return Err(SignatureError::Unsigned { model: model.to_path_buf(), sig });
    }
    let file = SignatureFile::read(&sig)?;
    let Some(key) = trusted.iter().find(|k| k.id == file.key_id) else {
        let ids: Vec<&str> = trusted.iter().map(|k| k.id.as_str()).collect();
        return Err(SignatureError::UntrustedKey {
            model: model.to_path_buf(),
            key_id: file.key_id,
            trusted: if ids.is_empty() { "none".into() } else { ids.join(", ") },
        });
    };
    let digest = Sha256::digest(bytes);
    let actual = hex(&digest);
    if actual != file.sha256.to_ascii_lowercase() {
        return Err(SignatureError::Modified { model: model.to_path_buf(), actual, signed: file.sha256 });
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(file.signature.trim())
        .map_err(|e| malformed(&sig, format!("signature: not base64 ({e})")))?;
    let raw: [u8; 64] = raw
        .try_into()
        .map_err(|v: Vec<u8>| malformed(&sig, format!("signature: {} bytes, Ed25519 has 64", v.len())))?;
    let signature = ed25519_dalek::Signature::from_bytes(&raw);
    key.key.verify_strict(&digest, &signature).map_err(|_| SignatureError::BadSignature {
        model: model.to_path_buf(),
        sig,
        key_id: key.id.clone(),
    })?;
    Ok(key)
}

/// Reads every trusted key.
pub fn read_keys(paths: &[PathBuf]) -> Result<Vec<PublicKey>> {
    paths.iter().map(|p| PublicKey::read(p)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("lepton-sig-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn a_signed_model_verifies_and_any_change_is_refused_with_its_reason() {
        let d = dir("roundtrip");
        let owner = SecretKey::generate().unwrap();
        let (key_path, pub_path) = owner.write(&d.join("owner")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&key_path).unwrap().permissions().mode() & 0o777, 0o600);
        assert!(owner.write(&d.join("owner")).is_err(), "an existing key is never replaced");
        let owner = SecretKey::read(&key_path).unwrap();
        let public = PublicKey::read(&pub_path).unwrap();
        assert_eq!(public.id(), owner.id());

        let model = d.join("m.lpm");
        std::fs::write(&model, b"LPM1 model bytes").unwrap();
        let sig = sign(&model, &owner).unwrap();
        assert_eq!(sig, d.join("m.lpm.sig"));
        let trusted = vec![public.clone()];
        let bytes = std::fs::read(&model).unwrap();
        assert_eq!(verify(&bytes, &model, &trusted).unwrap().id(), owner.id());

        // One byte changed.
        let mut changed = bytes.clone();
        changed[5] ^= 1;
        assert!(matches!(verify(&changed, &model, &trusted), Err(SignatureError::Modified { .. })));
        // Another key.
        let stranger = SecretKey::generate().unwrap();
        let (_, stranger_pub) = stranger.write(&d.join("stranger")).unwrap();
        let other = vec![PublicKey::read(&stranger_pub).unwrap()];
        let e = verify(&bytes, &model, &other).unwrap_err();
        assert!(matches!(e, SignatureError::UntrustedKey { .. }), "{e}");
        assert!(e.to_string().contains(&owner.id()), "{e}");
        // A .sig whose digest was edited to match other bytes: the signature no longer verifies.
        let text = std::fs::read_to_string(&sig).unwrap();
        let file: SignatureFile = toml::from_str(&text).unwrap();
        std::fs::write(&sig, text.replace(&file.sha256, &sha256_hex(&changed))).unwrap();
        assert!(matches!(verify(&changed, &model, &trusted), Err(SignatureError::BadSignature { .. })));
        // No signature.
        std::fs::remove_file(&sig).unwrap();
        let e = verify(&bytes, &model, &trusted).unwrap_err();
        assert!(matches!(e, SignatureError::Unsigned { .. }) && e.to_string().contains("m.lpm"), "{e}");
        // A private key given where a public one belongs.
        assert!(PublicKey::read(&key_path).unwrap_err().to_string().contains("private key"));
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn keys_are_written_as_pkcs8_v1_and_v2_keys_of_older_versions_still_read() {
        use ed25519_dalek::pkcs8::{spki::der::pem, PrivateKeyInfo};
        let d = dir("v1");
        let owner = SecretKey::generate().unwrap();
        let (key_path, _) = owner.write(&d.join("owner")).unwrap();
        let text = std::fs::read_to_string(&key_path).unwrap();
        let (label, der) = pem::decode_vec(text.as_bytes()).unwrap();
        assert_eq!(label, "PRIVATE KEY");
        let info = PrivateKeyInfo::try_from(der.as_slice()).unwrap();
        assert_eq!(format!("{:?}", info.version()), "V1", "OpenSSL 3.0 reads v1 only");
        assert!(info.public_key.is_none());
        // A v2 key (with its public key), as keygen wrote before: still read, same key.
        let v2 = owner.key.to_pkcs8_pem(LineEnding::LF).unwrap();
        let (_, der) = pem::decode_vec(v2.as_bytes()).unwrap();
        assert_eq!(format!("{:?}", PrivateKeyInfo::try_from(der.as_slice()).unwrap().version()), "V2");
        let old = d.join("old.key");
        std::fs::write(&old, v2.as_bytes()).unwrap();
        assert_eq!(SecretKey::read(&old).unwrap().id(), owner.id());
        std::fs::remove_dir_all(&d).unwrap();
    }
}
