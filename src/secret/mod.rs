//! Secrets: SOPS-encrypted claim values, decrypted only into the
//! environment's `Secret`.
//!
//! [`seal`] reads what a claim document carries (every value in document
//! order, the `ENC[...]` values under `secrets`, the `sops` block) and
//! refuses a claim whose `secrets` are not SOPS values, without ever showing
//! a value. [`open`] unwraps the data key through a [`Decryptor`] (the key
//! service: age now, others behind the same trait later), decrypts the
//! values and checks the SOPS MAC, which covers the unencrypted fields too.
//! Plaintext lives only in [`SecretValue`]: no `Debug`, `Display` or
//! `Serialize` of the value, zeroed on drop. Pure: key files are read by
//! `crate::key_files`, not here.

pub mod age;
pub mod sops;

use std::collections::BTreeMap;
use std::fmt;

use hmac::{Hmac, Mac as _};
use serde_json::Value;
use sha2::{Digest as _, Sha256, Sha512};
use zeroize::Zeroizing;

use crate::condition::Reason;
use crate::diagnostic::{Diagnostic, pointer_join};

/// One decrypted value. Its bytes are reachable only through
/// [`SecretValue::expose`]; formatting it prints `***`.
pub struct SecretValue(Zeroizing<Vec<u8>>);

impl SecretValue {
    #[must_use]
    pub fn new(bytes: Zeroizing<Vec<u8>>) -> SecretValue {
        SecretValue(bytes)
    }

    /// The plaintext: only for building the `Secret` object.
    #[must_use]
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// An environment's decrypted `secrets`, by key, with each value's keyed
/// fingerprint (what plans show instead of a value).
pub struct Secrets {
    values: BTreeMap<String, SecretValue>,
    fingerprints: BTreeMap<String, String>,
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.values.keys().map(|k| (k, "***")))
            .finish()
    }
}

impl Secrets {
    /// Decrypted values of environment `env`, fingerprinted under `key`
    /// (what a key service's `open` builds; tests).
    #[must_use]
    pub fn new(
        values: BTreeMap<String, Zeroizing<Vec<u8>>>,
        env: &str,
        key: &FingerprintKey,
    ) -> Secrets {
        let fingerprints = values
            .iter()
            .map(|(k, v)| (k.clone(), key.fingerprint(env, k, v)))
            .collect();
        let values = values
            .into_iter()
            .map(|(k, v)| (k, SecretValue::new(v)))
            .collect();
        Secrets {
            values,
            fingerprints,
        }
    }

    /// The values, by key (only for building the `Secret` object).
    #[must_use]
    pub fn values(&self) -> &BTreeMap<String, SecretValue> {
        &self.values
    }

    /// `key -> hmac:<16 hex>` (HMAC-SHA256 under the installation's key).
    #[must_use]
    pub fn fingerprints(&self) -> &BTreeMap<String, String> {
        &self.fingerprints
    }
}

/// The per-installation key that fingerprints secret values and keys the
/// digest of objects holding them, so neither is a plain hash of a value
/// that may be short enough to guess.
#[derive(Clone)]
pub struct FingerprintKey(Zeroizing<[u8; 32]>);

impl fmt::Debug for FingerprintKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FingerprintKey(***)")
    }
}

impl FingerprintKey {
    #[must_use]
    pub fn new(bytes: [u8; 32]) -> FingerprintKey {
        FingerprintKey(Zeroizing::new(bytes))
    }

    /// A random key for this process only (commands without a state dir).
    #[must_use]
    pub fn ephemeral() -> FingerprintKey {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).expect("the OS provides random bytes");
        FingerprintKey::new(bytes)
    }

    /// HMAC-SHA256 of `parts`, each length-prefixed.
    #[must_use]
    pub fn mac(&self, parts: &[&[u8]]) -> [u8; 32] {
        let mut m = <Hmac<Sha256>>::new_from_slice(&*self.0).expect("HMAC takes any key length");
        for p in parts {
            m.update(&(p.len() as u64).to_be_bytes());
            m.update(p);
        }
        m.finalize().into_bytes().into()
    }

    /// A value's fingerprint in environment `env` under `key`.
    #[must_use]
    pub fn fingerprint(&self, env: &str, key: &str, value: &[u8]) -> String {
        let mac = self.mac(&[b"secret-value", env.as_bytes(), key.as_bytes(), value]);
        format!("hmac:{}", crate::hex::encode(&mac[..8]))
    }
}

/// An unwrapped SOPS data key.
pub struct DataKey(pub Zeroizing<[u8; 32]>);

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DataKey(***)")
    }
}

/// A key service: unwraps a SOPS file's data key. Age is the one
/// implemented; Vault transit, AWS KMS or Cosmian would be others.
pub trait Decryptor: Send + Sync {
    /// Whether any key is configured at all.
    fn configured(&self) -> bool;
    /// The data key of a file whose age recipients are `age`.
    fn data_key(&self, age: &[sops::AgeStanza]) -> Result<DataKey, OpenError>;
    /// Key unwraps (X25519 operations) performed so far.
    fn unwraps(&self) -> u64;
    /// Changes whenever the configured keys change.
    fn generation(&self) -> u64;
}

/// No key configured.
#[derive(Debug, Default)]
pub struct NoKeys;

impl Decryptor for NoKeys {
    fn configured(&self) -> bool {
        false
    }
    fn data_key(&self, _: &[sops::AgeStanza]) -> Result<DataKey, OpenError> {
        Err(OpenError::NoKeys)
    }
    fn unwraps(&self) -> u64 {
        0
    }
    fn generation(&self) -> u64 {
        0
    }
}

/// Why a claim's secrets cannot be opened. Messages never carry a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    #[error("the claim carries SOPS secrets and no age key is configured (secrets.age_key_files)")]
    NoKeys,
    #[error(
        "none of the configured age identities is a recipient of the claim (recipients: {recipients})"
    )]
    NoMatchingIdentity { recipients: String },
    #[error(
        "the age identity for recipient {recipient} cannot unwrap the data key (a wrong key, or a changed key block)"
    )]
    WrongKey { recipient: String },
    #[error("the SOPS data key is not 32 bytes")]
    BadDataKey,
    #[error(
        "the value at {pointer} does not decrypt: its ciphertext changed, or it belongs to another file"
    )]
    Ciphertext { pointer: String },
    #[error(
        "the SOPS MAC does not match: a value (encrypted or not) changed after the file was encrypted"
    )]
    MacMismatch,
    #[error("the SOPS MAC itself does not decrypt (changed, or another file's)")]
    MacUnreadable,
    #[error(
        "the claim uses SOPS features converge does not implement: {features} (only age recipients are)"
    )]
    Unsupported { features: String },
    #[error("the claim has no age recipients (only age is implemented)")]
    NoAgeRecipients,
    #[error("the age key files cannot be used: {message}")]
    KeyFiles { message: String },
}

impl OpenError {
    #[must_use]
    pub fn reason(&self) -> Reason {
        match self {
            Self::NoKeys
            | Self::NoMatchingIdentity { .. }
            | Self::WrongKey { .. }
            | Self::KeyFiles { .. } => Reason::SecretsUnavailable,
            Self::BadDataKey
            | Self::Ciphertext { .. }
            | Self::MacMismatch
            | Self::MacUnreadable => Reason::SecretsTampered,
            Self::Unsupported { .. } | Self::NoAgeRecipients => Reason::SecretsUnsupported,
        }
    }
}

/// One value of the document, in document order, as the MAC reads it.
enum Leaf {
    /// An unencrypted scalar: the bytes SOPS hashes.
    Plain(Vec<u8>),
    /// An encrypted value: its key path (additional data) and, under
    /// `secrets`, the secret's key.
    Encrypted {
        additional: String,
        pointer: String,
        value: sops::EncValue,
        secret: Option<String>,
    },
}

/// What a SOPS-encrypted claim carries, read but not decrypted.
pub struct Sealed {
    leaves: Vec<Leaf>,
    metadata: sops::Metadata,
    names: Vec<String>,
}

impl fmt::Debug for Sealed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sealed")
            .field("secrets", &self.names)
            .finish_non_exhaustive()
    }
}

impl Sealed {
    /// The keys under `secrets`, in document order.
    #[must_use]
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// A digest of the wrapped data keys: files sharing it share a data key.
    #[must_use]
    pub fn key_digest(&self) -> [u8; 32] {
        key_digest(&self.metadata.age)
    }
}

/// A digest of wrapped data keys (the data-key cache's key).
#[must_use]
pub fn key_digest(age: &[sops::AgeStanza]) -> [u8; 32] {
    let mut h = Sha256::new();
    for s in age {
        h.update((s.enc.len() as u64).to_be_bytes());
        h.update(s.enc.as_bytes());
    }
    h.finalize().into()
}

const RULE: &str = "sops-encrypted";

/// Reads the secrets of a schema-valid claim document. `Ok(None)` when the
/// claim carries neither `secrets` nor a `sops` block. Every problem is a
/// diagnostic naming file, pointer and rule, never a value.
pub fn seal(file: &str, doc: &Value) -> Result<Option<Sealed>, Vec<Diagnostic>> {
    let secrets = doc.get("secrets").filter(|v| !v.is_null());
    let Some(block) = doc.get("sops").filter(|v| !v.is_null()) else {
        return match secrets {
            None => Ok(None),
            Some(_) => Err(vec![Diagnostic::new(
                file,
                "/secrets",
                RULE,
                "secrets must be encrypted with sops (sops --encrypt --age <recipient> --encrypted-regex '^secrets$'); the file has no sops metadata; values are not shown",
            )]),
        };
    };
    let metadata = sops::metadata(block)
        .map_err(|p| vec![Diagnostic::new(file, p.pointer, "sops-metadata", p.message)])?;
    let mut diagnostics = Vec::new();
    let mut leaves = Vec::new();
    let mut names = Vec::new();
    let mut path: Vec<&str> = Vec::new();
    if let Some(top) = doc.as_object() {
        for (k, v) in top {
            if k == "sops" {
                continue;
            }
            path.push(k);
            walk(
                file,
                v,
                &mut path,
                &metadata.rules,
                &mut leaves,
                &mut names,
                &mut diagnostics,
            );
            path.pop();
        }
    }
    if let Some(obj) = secrets.and_then(Value::as_object) {
        for (k, v) in obj {
            if !v.is_string() || !metadata.rules.encrypts(&["secrets", k]) {
                diagnostics.push(not_encrypted(file, k));
            }
        }
    } else if secrets.is_some() {
        diagnostics.push(Diagnostic::new(
            file,
            "/secrets",
            RULE,
            "secrets must be a mapping of SOPS-encrypted values; values are not shown",
        ));
    }
    if !diagnostics.is_empty() {
        diagnostics.sort_by(|a, b| a.pointer.cmp(&b.pointer));
        diagnostics.dedup();
        return Err(diagnostics);
    }
    Ok(Some(Sealed {
        leaves,
        metadata,
        names,
    }))
}

fn not_encrypted(file: &str, key: &str) -> Diagnostic {
    Diagnostic::new(
        file,
        pointer_join("/secrets", key),
        RULE,
        "not a SOPS-encrypted value (ENC[AES256_GCM,...]): encrypt the claim with sops --encrypted-regex '^secrets$'; the value is not shown",
    )
}

fn walk<'a>(
    file: &str,
    value: &'a Value,
    path: &mut Vec<&'a str>,
    rules: &sops::Rules,
    leaves: &mut Vec<Leaf>,
    names: &mut Vec<String>,
    diagnostics: &mut Vec<Diagnostic>,
) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                path.push(k);
                walk(file, v, path, rules, leaves, names, diagnostics);
                path.pop();
            }
        }
        Value::Array(items) => {
            for v in items {
                walk(file, v, path, rules, leaves, names, diagnostics);
            }
        }
        Value::Null => {}
        scalar => {
            let under_secrets = path.first() == Some(&"secrets");
            let pointer = path.iter().fold(String::new(), |p, k| pointer_join(&p, k));
            if !rules.encrypts(path) {
                // A plaintext value under `secrets` is reported by the caller.
                if let Some(bytes) = sops::mac_bytes(scalar)
                    && !under_secrets
                {
                    leaves.push(Leaf::Plain(bytes));
                }
                return;
            }
            if !under_secrets {
                diagnostics.push(Diagnostic::new(
                    file,
                    pointer,
                    RULE,
                    "only the values under secrets may be encrypted (sops --encrypted-regex '^secrets$'), so the rest of the claim stays readable for review",
                ));
                return;
            }
            let parsed = scalar.as_str().and_then(sops::EncValue::parse);
            match (parsed, path.get(1)) {
                (Some(enc), Some(key)) if path.len() == 2 => {
                    names.push((*key).to_owned());
                    leaves.push(Leaf::Encrypted {
                        additional: format!("{}:", path.join(":")),
                        pointer,
                        value: enc,
                        secret: Some((*key).to_owned()),
                    });
                }
                (_, Some(key)) => diagnostics.push(not_encrypted(file, key)),
                (_, None) => diagnostics.push(Diagnostic::new(
                    file,
                    "/secrets",
                    RULE,
                    "secrets must be a mapping of SOPS-encrypted values; values are not shown",
                )),
            }
        }
    }
}

/// Decrypts a sealed claim and checks its MAC. `env` and `fingerprints`
/// make the values' keyed fingerprints.
pub fn open(
    sealed: &Sealed,
    decryptor: &dyn Decryptor,
    env: &str,
    fingerprints: &FingerprintKey,
) -> Result<Secrets, OpenError> {
    let m = &sealed.metadata;
    if !m.unsupported.is_empty() {
        return Err(OpenError::Unsupported {
            features: m.unsupported.join(", "),
        });
    }
    if m.age.is_empty() {
        return Err(OpenError::NoAgeRecipients);
    }
    let key = decryptor.data_key(&m.age)?;
    let mut mac = Sha512::new();
    if m.mac_only_encrypted {
        mac.update(sops::MAC_ONLY_ENCRYPTED_INIT);
    }
    let mut values = BTreeMap::new();
    let mut prints = BTreeMap::new();
    for leaf in &sealed.leaves {
        match leaf {
            Leaf::Plain(bytes) => {
                if !m.mac_only_encrypted {
                    mac.update(bytes);
                }
            }
            Leaf::Encrypted {
                additional,
                pointer,
                value,
                secret,
            } => {
                let plain = value
                    .decrypt(&key.0, additional.as_bytes())
                    .ok_or_else(|| OpenError::Ciphertext {
                        pointer: pointer.clone(),
                    })?;
                // SOPS hashes a bool as `True`/`False` whatever its text;
                // the Secret holds it as YAML and JSON write it.
                let plain = match (value.kind, plain.as_slice()) {
                    (sops::ValueType::Bool, b"true" | b"True" | b"TRUE" | b"1" | b"t" | b"T") => {
                        mac.update(b"True");
                        Zeroizing::new(b"true".to_vec())
                    }
                    (sops::ValueType::Bool, _) => {
                        mac.update(b"False");
                        Zeroizing::new(b"false".to_vec())
                    }
                    _ => {
                        mac.update(plain.as_slice());
                        plain
                    }
                };
                if let Some(k) = secret {
                    prints.insert(k.clone(), fingerprints.fingerprint(env, k, &plain));
                    values.insert(k.clone(), SecretValue::new(plain));
                }
            }
        }
    }
    let want = m
        .mac
        .decrypt(&key.0, m.lastmodified.as_bytes())
        .ok_or(OpenError::MacUnreadable)?;
    let got = crate::hex::encode(&mac.finalize()).to_ascii_uppercase();
    if !bool::from(subtle::ConstantTimeEq::ct_eq(
        got.as_bytes(),
        want.as_slice(),
    )) {
        return Err(OpenError::MacMismatch);
    }
    Ok(Secrets {
        values,
        fingerprints: prints,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn enc() -> &'static str {
        "ENC[AES256_GCM,data:K8K1OTQ6T0RJj5NuL3o=,iv:9IlCngco01f+uv98lyDZAYTNF1/lrtOnh3WRhdyNLJ4=,tag:Ticj4GHW4T/IuAixc/07jw==,type:str]"
    }

    fn doc(secret: &Value) -> Value {
        json!({
            "user": "u",
            "secrets": {"db": secret},
            "sops": {
                "age": [{"recipient": "age1x", "enc": "x"}],
                "encrypted_regex": "^secrets$",
                "lastmodified": "2024-01-01T00:00:00Z",
                "mac": enc(),
            }
        })
    }

    #[test]
    fn a_plaintext_secret_is_refused_without_its_value() {
        let errs = seal("f.yaml", &doc(&json!("hunter2-plain"))).expect_err("refused");
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].pointer, "/secrets/db");
        assert_eq!(errs[0].rule, "sops-encrypted");
        assert!(!errs[0].to_string().contains("hunter2"), "{}", errs[0]);
        let errs = seal("f.yaml", &doc(&json!(12_345_678))).expect_err("refused");
        assert!(!errs[0].to_string().contains("12345678"));
    }

    #[test]
    fn secrets_without_sops_metadata_are_refused() {
        let mut d = doc(&json!(enc()));
        d.as_object_mut().unwrap().remove("sops");
        let errs = seal("f.yaml", &d).expect_err("refused");
        assert_eq!(errs[0].pointer, "/secrets");
    }

    #[test]
    fn an_encrypted_value_outside_secrets_is_refused() {
        let mut d = doc(&json!(enc()));
        d["sops"]["encrypted_regex"] = json!("^(secrets|user)$");
        d["user"] = json!(enc());
        let errs = seal("f.yaml", &d).expect_err("refused");
        assert_eq!(errs[0].pointer, "/user");
    }

    #[test]
    fn a_sealed_claim_names_its_secrets_and_nothing_else() {
        let s = seal("f.yaml", &doc(&json!(enc())))
            .expect("ok")
            .expect("some");
        assert_eq!(s.names(), ["db"]);
        assert!(!format!("{s:?}").contains("K8K1"));
    }

    #[test]
    fn secret_values_never_format() {
        let v = SecretValue::new(Zeroizing::new(b"hunter2".to_vec()));
        assert_eq!(format!("{v:?}"), "***");
        let key = FingerprintKey::new([7; 32]);
        let a = key.fingerprint("env", "db", b"hunter2");
        assert!(a.starts_with("hmac:") && a.len() == 21);
        assert_ne!(
            a,
            FingerprintKey::new([8; 32]).fingerprint("env", "db", b"hunter2")
        );
    }
}
