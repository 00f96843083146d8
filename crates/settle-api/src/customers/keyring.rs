//! Envelope encryption of customers' personal data.
//!
//! ```text
//! keyring file (0600)  ──  KEK v1, v2, …  (AES-256-GCM keys, newest wraps)
//!                      └─  blind-index key (HMAC-SHA256; never rotates)
//!        │ wraps
//!        ▼
//! customer_data_keys   ──  one random 256-bit data key per customer
//!        │ seals
//!        ▼
//! customers.personal, customer_consents.sealed  (AES-256-GCM)
//! ```
//!
//! Each seal uses a fresh 96-bit nonce and binds its context as associated
//! data (the customer id, and for wrapped keys the KEK version too), so a
//! ciphertext copied to another row does not open. Deleting a customer's
//! wrapped data key makes everything sealed under it unreadable for good
//! (crypto-shredding), while rows that refer to the customer by id remain.
//!
//! Rotation (`settle kms rotate`) appends a KEK to the file and re-wraps
//! every data key; servers re-read the file when they meet a KEK version
//! they do not know, so they keep serving throughout. The blind-index key
//! stays fixed, or every index would have to be recomputed from data that
//! may have been erased.
//!
//! The primitives are those of `signing::vault` (aes-gcm, hmac, sha2).

use aes_gcm::aead::{Aead, KeyInit, OsRng, Payload};
use aes_gcm::{AeadCore, Aes256Gcm, Key, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use settle_core::tenancy::TenantId;
use sha2::Sha256;
use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::RwLock;

/// The keyring's file name in the data directory.
pub const KEYRING_FILE: &str = "customer-keys.json";
/// First byte of every sealed value: the layout `version | nonce | ciphertext`.
const FORMAT_V1: u8 = 1;
const NONCE_BYTES: usize = 12;

#[derive(Debug, thiserror::Error)]
pub enum KeyringError {
    #[error("cannot read or write the keyring {path}: {cause}")]
    Io { path: PathBuf, cause: std::io::Error },
    #[error("the keyring {0} is malformed")]
    Malformed(PathBuf),
    #[error("no key-encryption key of version {0} is in the keyring")]
    UnknownKek(i64),
    #[error("a sealed value does not open with this key (wrong key, or tampered)")]
    Open,
    #[error("encryption failed")]
    Seal,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct KeyringFile {
    format: u32,
    index_key: String,
    keks: Vec<KekEntry>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct KekEntry {
    version: i64,
    key: String,
    created_at: String,
}

struct Keys {
    keks: BTreeMap<i64, Key<Aes256Gcm>>,
    index_key: Vec<u8>,
}

/// The key-encryption keys and the blind-index key. `Debug` shows versions only.
pub struct Keyring {
    path: Option<PathBuf>,
    keys: RwLock<Keys>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Keyring(versions {:?})", self.versions())
    }
}

/// A customer's data key in clear: lives only in memory, for one request.
pub struct DataKey(Key<Aes256Gcm>);

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataKey(<redacted>)")
    }
}

fn seal(key: &Key<Aes256Gcm>, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, KeyringError> {
    let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
    let ciphertext = Aes256Gcm::new(key).encrypt(&nonce, Payload { msg: plaintext, aad }).map_err(|_| KeyringError::Seal)?;
    let mut out = Vec::with_capacity(1 + NONCE_BYTES + ciphertext.len());
    out.push(FORMAT_V1);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ciphertext);
    Ok(out)
}

fn open(key: &Key<Aes256Gcm>, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, KeyringError> {
    if sealed.len() < 1 + NONCE_BYTES || sealed[0] != FORMAT_V1 {
        return Err(KeyringError::Open);
    }
    let nonce = Nonce::from_slice(&sealed[1..1 + NONCE_BYTES]);
    Aes256Gcm::new(key).decrypt(nonce, Payload { msg: &sealed[1 + NONCE_BYTES..], aad }).map_err(|_| KeyringError::Open)
}

impl DataKey {
    pub fn generate() -> DataKey {
        DataKey(Aes256Gcm::generate_key(OsRng))
    }

    /// Seals `plaintext` bound to `context` (for example the customer id).
    pub fn seal(&self, context: &str, plaintext: &[u8]) -> Result<Vec<u8>, KeyringError> {
        seal(&self.0, context.as_bytes(), plaintext)
    }

    pub fn open(&self, context: &str, sealed: &[u8]) -> Result<Vec<u8>, KeyringError> {
        open(&self.0, context.as_bytes(), sealed)
    }
}

fn wrap_context(tenant: TenantId, customer_id: &str, version: i64) -> Vec<u8> {
    format!("settle-dek|{}|{customer_id}|{version}", tenant.0).into_bytes()
}

fn random_key_b64() -> String {
    STANDARD.encode(Aes256Gcm::generate_key(OsRng).as_slice())
}

fn now_text() -> String {
    time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

impl Keyring {
    /// A keyring that lives only in memory (tests; data sealed under it is lost with the process).
    pub fn ephemeral() -> Keyring {
        let file = KeyringFile { format: 1, index_key: random_key_b64(), keks: vec![KekEntry { version: 1, key: random_key_b64(), created_at: now_text() }] };
        let keys = Keyring::keys_of(&file, Path::new("<memory>")).unwrap_or_else(|_| Keys { keks: BTreeMap::new(), index_key: Vec::new() });
        Keyring { path: None, keys: RwLock::new(keys) }
    }

    /// The keyring at `path`, created (mode 0600, one KEK) when missing.
    pub fn load_or_create(path: &Path) -> Result<Keyring, KeyringError> {
        let io = |cause| KeyringError::Io { path: path.to_owned(), cause };
        if !path.exists() {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(io)?;
            }
            let file =
                KeyringFile { format: 1, index_key: random_key_b64(), keks: vec![KekEntry { version: 1, key: random_key_b64(), created_at: now_text() }] };
            match write_new(path, &file) {
                Ok(()) => {}
                // Another process created it first: use theirs.
                Err(KeyringError::Io { cause, .. }) if cause.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
        }
        let keys = Keyring::read(path)?;
        Ok(Keyring { path: Some(path.to_owned()), keys: RwLock::new(keys) })
    }

    fn read_file(path: &Path) -> Result<KeyringFile, KeyringError> {
        let text = std::fs::read_to_string(path).map_err(|cause| KeyringError::Io { path: path.to_owned(), cause })?;
        serde_json::from_str(&text).map_err(|_| KeyringError::Malformed(path.to_owned()))
    }

    fn read(path: &Path) -> Result<Keys, KeyringError> {
        Keyring::keys_of(&Keyring::read_file(path)?, path)
    }

    fn keys_of(file: &KeyringFile, path: &Path) -> Result<Keys, KeyringError> {
        let bad = || KeyringError::Malformed(path.to_owned());
        let decode = |text: &str| STANDARD.decode(text).ok().filter(|b| b.len() == 32);
        let mut keks = BTreeMap::new();
        for k in &file.keks {
            let bytes = decode(&k.key).ok_or_else(bad)?;
            keks.insert(k.version, *Key::<Aes256Gcm>::from_slice(&bytes));
        }
        if keks.is_empty() {
            return Err(bad());
        }
        Ok(Keys { keks, index_key: decode(&file.index_key).ok_or_else(bad)? })
    }

    /// Re-reads the file (after a rotation by another process).
    pub fn reload(&self) -> Result<(), KeyringError> {
        let Some(path) = &self.path else { return Ok(()) };
        let keys = Keyring::read(path)?;
        if let Ok(mut current) = self.keys.write() {
            *current = keys;
        }
        Ok(())
    }

    pub fn versions(&self) -> Vec<i64> {
        self.keys.read().map(|k| k.keks.keys().copied().collect()).unwrap_or_default()
    }

    /// The newest KEK version: the one new data keys are wrapped with.
    pub fn current_version(&self) -> i64 {
        self.versions().last().copied().unwrap_or(0)
    }

    fn kek(&self, version: i64) -> Option<Key<Aes256Gcm>> {
        self.keys.read().ok()?.keks.get(&version).copied()
    }

    /// Wraps `key` with the newest KEK: `(version, wrapped)`.
    pub fn wrap(&self, tenant: TenantId, customer_id: &str, key: &DataKey) -> Result<(i64, Vec<u8>), KeyringError> {
        let version = self.current_version();
        let kek = self.kek(version).ok_or(KeyringError::UnknownKek(version))?;
        Ok((version, seal(&kek, &wrap_context(tenant, customer_id, version), key.0.as_slice())?))
    }

    /// Unwraps a data key, re-reading the keyring once if `version` is newer than what is loaded.
    pub fn unwrap(&self, tenant: TenantId, customer_id: &str, version: i64, wrapped: &[u8]) -> Result<DataKey, KeyringError> {
        let kek = match self.kek(version) {
            Some(k) => k,
            None => {
                self.reload()?;
                self.kek(version).ok_or(KeyringError::UnknownKek(version))?
            }
        };
        let bytes = open(&kek, &wrap_context(tenant, customer_id, version), wrapped)?;
        if bytes.len() != 32 {
            return Err(KeyringError::Open);
        }
        Ok(DataKey(*Key::<Aes256Gcm>::from_slice(&bytes)))
    }

    /// The blind index of a value: HMAC-SHA256 under the index key, over
    /// the tenant, the field and the normalized value. Equal inputs give
    /// equal indexes (so lookups work); the value cannot be read back, and
    /// without the key no index can be computed to test a guess.
    pub fn blind_index(&self, tenant: TenantId, field: &str, value: &str) -> String {
        let key = self.keys.read().map(|k| k.index_key.clone()).unwrap_or_default();
        let Ok(mut mac) = <Hmac<Sha256> as Mac>::new_from_slice(&key) else { return String::new() };
        for part in [tenant.0.to_string().as_str(), field, value] {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part.as_bytes());
        }
        hex::encode(mac.finalize().into_bytes())
    }
}

fn write_new(path: &Path, file: &KeyringFile) -> Result<(), KeyringError> {
    let io = |cause| KeyringError::Io { path: path.to_owned(), cause };
    let text = serde_json::to_string_pretty(file).map_err(|_| KeyringError::Malformed(path.to_owned()))?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut f = options.open(path).map_err(io)?;
    f.write_all(text.as_bytes()).map_err(io)?;
    f.sync_all().map_err(io)
}

/// Appends a new KEK to the keyring file (written to a temporary file,
/// then renamed over the old one, so a reader sees the old or the new file,
/// never half of one). Returns the new version.
pub fn add_kek(path: &Path) -> Result<i64, KeyringError> {
    let mut file = Keyring::read_file(path)?;
    let version = file.keks.iter().map(|k| k.version).max().unwrap_or(0) + 1;
    file.keks.push(KekEntry { version, key: random_key_b64(), created_at: now_text() });
    let tmp = path.with_extension(format!("tmp{version}"));
    let _ = std::fs::remove_file(&tmp);
    write_new(&tmp, &file)?;
    std::fs::rename(&tmp, path).map_err(|cause| KeyringError::Io { path: path.to_owned(), cause })?;
    Ok(version)
}

#[cfg(test)]
mod tests {
    #![expect(clippy::unwrap_used, reason = "test code")]
    use super::*;

    #[test]
    fn data_keys_wrap_unwrap_and_rotate() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(KEYRING_FILE);
        let ring = Keyring::load_or_create(&path).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        let key = DataKey::generate();
        let sealed = key.seal("cus_1", b"Jane").unwrap();
        assert!(key.open("cus_2", &sealed).is_err(), "bound to its context");
        let (v1, wrapped) = ring.wrap(TenantId(1), "cus_1", &key).unwrap();
        assert_eq!(v1, 1);
        assert!(ring.unwrap(TenantId(2), "cus_1", v1, &wrapped).is_err(), "bound to the tenant");
        // Another process rotates; this ring learns v2 when it first meets it.
        let other = Keyring::load_or_create(&path).unwrap();
        assert_eq!(add_kek(&path).unwrap(), 2);
        other.reload().unwrap();
        let unwrapped = other.unwrap(TenantId(1), "cus_1", v1, &wrapped).unwrap();
        let (v2, rewrapped) = other.wrap(TenantId(1), "cus_1", &unwrapped).unwrap();
        assert_eq!(v2, 2);
        let again = ring.unwrap(TenantId(1), "cus_1", v2, &rewrapped).unwrap();
        assert_eq!(again.open("cus_1", &sealed).unwrap(), b"Jane");
        assert_eq!(ring.blind_index(TenantId(1), "email", "a@b.co"), other.blind_index(TenantId(1), "email", "a@b.co"));
        assert_ne!(ring.blind_index(TenantId(1), "email", "a@b.co"), ring.blind_index(TenantId(2), "email", "a@b.co"));
    }
}
