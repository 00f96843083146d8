//! Signing secrets at rest. The server must compute HMACs with a key's
//! signing secret, so it cannot keep only a hash: each secret is encrypted
//! with AES-256-GCM under the master key (a local key-encryption key), with
//! a fresh 96-bit nonce and the API key id as associated data (a ciphertext
//! copied onto another key's row does not decrypt).
//!
//! The master key is `SETTLE_MASTER_KEY` (base64 of 32 bytes) when set, else
//! the file `<data-dir>/master.key`, which operator commands create (mode
//! 0600) the first time they need it. Servers only read it. Neither the
//! master key nor a secret is ever logged: both types redact `Debug`.

use aes_gcm::aead::{Aead, KeyInit, OsRng, Payload};
use aes_gcm::{AeadCore, Aes256Gcm, Key, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use rand::Rng;
use rand::distr::Alphanumeric;
use settle_core::ids::ApiKeyId;
use std::io::Write as _;
use std::path::{Path, PathBuf};

/// The environment variable that holds the master key.
pub const MASTER_KEY_VAR: &str = "SETTLE_MASTER_KEY";
/// The file that holds the master key when the variable is not set.
pub const MASTER_KEY_FILE: &str = "master.key";
/// Prefix of signing secrets, so a leaked one is recognizable.
pub const SIGNING_SECRET_PREFIX: &str = "ssk_";
/// Random characters in a signing secret: 40 alphanumerics, about 238 bits.
const SIGNING_SECRET_CHARS: usize = 40;
/// First byte of a stored ciphertext: the layout below.
const FORMAT_V1: u8 = 1;
const NONCE_BYTES: usize = 12;

#[derive(Debug, thiserror::Error)]
pub enum MasterKeyError {
    #[error("{MASTER_KEY_VAR} must be the base64 encoding of exactly 32 bytes")]
    InvalidVariable,
    #[error("{0} must hold the base64 encoding of exactly 32 bytes")]
    InvalidFile(PathBuf),
    #[error("cannot read or create {path}: {cause}")]
    Io { path: PathBuf, cause: std::io::Error },
}

#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error("the stored signing secret has an unknown format")]
    UnknownFormat,
    #[error("the master key does not decrypt this signing secret (is it the key the secret was created with?)")]
    WrongKey,
    #[error("encryption failed")]
    Encrypt,
}

/// The key-encryption key.
#[derive(Clone)]
pub struct MasterKey(Key<Aes256Gcm>);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(<redacted>)")
    }
}

/// A key's signing secret, in clear: shown once to the operator, then only
/// held in memory by the server to compute HMACs.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningSecret(String);

impl std::fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningSecret(<redacted>)")
    }
}

impl SigningSecret {
    /// A new random secret: `ssk_` and 40 alphanumerics.
    pub fn generate() -> SigningSecret {
        let random: String = rand::rng().sample_iter(&Alphanumeric).take(SIGNING_SECRET_CHARS).map(char::from).collect();
        SigningSecret(format!("{SIGNING_SECRET_PREFIX}{random}"))
    }

    /// The secret as the operator copies it; its UTF-8 bytes are the HMAC key.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Wraps a known secret (tests, documentation examples).
    pub fn from_text(text: &str) -> SigningSecret {
        SigningSecret(text.to_owned())
    }
}

impl MasterKey {
    /// A new random master key.
    pub fn generate() -> MasterKey {
        MasterKey(Aes256Gcm::generate_key(OsRng))
    }

    pub fn from_base64(text: &str) -> Option<MasterKey> {
        let bytes = STANDARD.decode(text.trim()).ok()?;
        (bytes.len() == 32).then(|| MasterKey(*Key::<Aes256Gcm>::from_slice(&bytes)))
    }

    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0.as_slice())
    }

    /// The master key from `SETTLE_MASTER_KEY` (`variable`) or, when it is
    /// not set, from `<data_dir>/master.key`; `None` when neither exists.
    pub fn load(variable: Option<&str>, data_dir: &Path) -> Result<Option<MasterKey>, MasterKeyError> {
        if let Some(text) = variable {
            return MasterKey::from_base64(text).map(Some).ok_or(MasterKeyError::InvalidVariable);
        }
        MasterKey::read_file(&data_dir.join(MASTER_KEY_FILE))
    }

    /// Like [`MasterKey::load`], but creates `<data_dir>/master.key` (mode
    /// 0600) when neither exists: for operator commands that store a secret.
    pub fn load_or_create(variable: Option<&str>, data_dir: &Path) -> Result<MasterKey, MasterKeyError> {
        if let Some(key) = MasterKey::load(variable, data_dir)? {
            return Ok(key);
        }
        let path = data_dir.join(MASTER_KEY_FILE);
        let io = |cause| MasterKeyError::Io { path: path.clone(), cause };
        std::fs::create_dir_all(data_dir).map_err(io)?;
        let key = MasterKey::generate();
        let mut options = std::fs::OpenOptions::new();
        // create_new: two commands racing never overwrite each other's key.
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        match options.open(&path) {
            Ok(mut file) => {
                writeln!(file, "{}", key.to_base64()).map_err(io)?;
                file.sync_all().map_err(io)?;
                Ok(key)
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => MasterKey::read_file(&path)?.ok_or_else(|| MasterKeyError::InvalidFile(path.clone())),
            Err(e) => Err(io(e)),
        }
    }

    /// The key in `path`, or `None` when the file does not exist.
    pub fn read_file(path: &Path) -> Result<Option<MasterKey>, MasterKeyError> {
        match std::fs::read_to_string(path) {
            Ok(text) => MasterKey::from_base64(&text).map(Some).ok_or_else(|| MasterKeyError::InvalidFile(path.to_owned())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(cause) => Err(MasterKeyError::Io { path: path.to_owned(), cause }),
        }
    }

    /// `1 ‖ nonce ‖ AES-256-GCM(secret)`, bound to `key_id`.
    pub fn encrypt(&self, key_id: &ApiKeyId, secret: &SigningSecret) -> Result<Vec<u8>, VaultError> {
        self.seal(key_id.as_str(), secret.0.as_bytes())
    }

    pub fn decrypt(&self, key_id: &ApiKeyId, stored: &[u8]) -> Result<SigningSecret, VaultError> {
        String::from_utf8(self.open(key_id.as_str(), stored)?).map(SigningSecret).map_err(|_| VaultError::UnknownFormat)
    }

    /// `1 ‖ nonce ‖ AES-256-GCM(plain)`, bound to `owner` (the id of the
    /// row it is stored on): any secret at rest (API keys' signing secrets,
    /// webhook endpoints' secrets) is sealed this one way.
    pub fn seal(&self, owner: &str, plain: &[u8]) -> Result<Vec<u8>, VaultError> {
        let cipher = Aes256Gcm::new(&self.0);
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let sealed = cipher.encrypt(&nonce, Payload { msg: plain, aad: owner.as_bytes() }).map_err(|_| VaultError::Encrypt)?;
        let mut out = Vec::with_capacity(1 + NONCE_BYTES + sealed.len());
        out.push(FORMAT_V1);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// What [`MasterKey::seal`] sealed for `owner`.
    pub fn open(&self, owner: &str, stored: &[u8]) -> Result<Vec<u8>, VaultError> {
        let (format, rest) = stored.split_first().ok_or(VaultError::UnknownFormat)?;
        if *format != FORMAT_V1 || rest.len() <= NONCE_BYTES {
            return Err(VaultError::UnknownFormat);
        }
        let (nonce, sealed) = rest.split_at(NONCE_BYTES);
        let cipher = Aes256Gcm::new(&self.0);
        cipher.decrypt(Nonce::from_slice(nonce), Payload { msg: sealed, aad: owner.as_bytes() }).map_err(|_| VaultError::WrongKey)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use settle_core::ids::IdGenerator;

    #[test]
    fn a_secret_decrypts_only_with_its_master_key_and_its_key_id() {
        let ids = IdGenerator::default();
        let (key_id, other_id) = (ids.api_key(), ids.api_key());
        let master = MasterKey::generate();
        let secret = SigningSecret::generate();
        let stored = master.encrypt(&key_id, &secret).unwrap_or_default();
        assert!(!stored.windows(secret.expose().len()).any(|w| w == secret.expose().as_bytes()), "never stored in clear");
        assert_eq!(master.decrypt(&key_id, &stored).ok(), Some(secret.clone()));
        assert!(matches!(master.decrypt(&other_id, &stored), Err(VaultError::WrongKey)));
        assert!(matches!(MasterKey::generate().decrypt(&key_id, &stored), Err(VaultError::WrongKey)));
        assert!(matches!(master.decrypt(&key_id, &stored[..5]), Err(VaultError::UnknownFormat)));
    }

    #[test]
    fn debug_never_shows_secrets() {
        let secret = SigningSecret::generate();
        assert!(!format!("{secret:?}").contains(secret.expose()));
        let master = MasterKey::generate();
        assert!(!format!("{master:?}").contains(&master.to_base64()));
    }

    #[test]
    fn the_master_key_file_is_created_once_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(MasterKey::load(None, dir.path()), Ok(None)));
        let created = MasterKey::load_or_create(None, dir.path()).map(|k| k.to_base64()).unwrap_or_default();
        let again = MasterKey::load_or_create(None, dir.path()).map(|k| k.to_base64()).unwrap_or_default();
        assert_eq!(created, again);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(MASTER_KEY_FILE)).map(|m| m.permissions().mode() & 0o777).unwrap_or(0);
            assert_eq!(mode, 0o600);
        }
        let from_var = MasterKey::generate();
        let loaded = MasterKey::load(Some(&from_var.to_base64()), dir.path()).ok().flatten().map(|k| k.to_base64());
        assert_eq!(loaded, Some(from_var.to_base64()), "the variable wins over the file");
        assert!(matches!(MasterKey::load(Some("c2hvcnQ="), dir.path()), Err(MasterKeyError::InvalidVariable)));
    }
}
