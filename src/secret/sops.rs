//! The SOPS file format, as far as converge reads it: `ENC[AES256_GCM,...]`
//! values, the `sops` metadata block, which paths its rules encrypt, and the
//! value decryption (AES-256-GCM with a 32-byte IV and the value's key path
//! as additional data). Pure: no IO, no key material but the data key given.

use aes_gcm::AesGcm;
use aes_gcm::aead::generic_array::GenericArray;
use aes_gcm::aead::generic_array::typenum::U32;
use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::aes::Aes256;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::Value;
use zeroize::Zeroizing;

/// AES-256-GCM with SOPS's 32-byte nonce.
type Cipher = AesGcm<Aes256, U32>;

/// The 32 bytes SOPS feeds the MAC first when `mac_only_encrypted` is set.
pub const MAC_ONLY_ENCRYPTED_INIT: [u8; 32] = [
    0x8a, 0x3f, 0xd2, 0xad, 0x54, 0xce, 0x66, 0x52, 0x7b, 0x10, 0x34, 0xf3, 0xd1, 0x47, 0xbe, 0x0b,
    0x0b, 0x97, 0x5b, 0x3b, 0xf4, 0x4f, 0x72, 0xc6, 0xfd, 0xad, 0xec, 0x81, 0x76, 0xf2, 0x7d, 0x69,
];

/// One encrypted value, `ENC[AES256_GCM,data:<b64>,iv:<b64>,tag:<b64>,type:<t>]`.
#[derive(Clone, PartialEq, Eq)]
pub struct EncValue {
    data: Vec<u8>,
    iv: Vec<u8>,
    tag: Vec<u8>,
    pub kind: ValueType,
}

impl std::fmt::Debug for EncValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EncValue({} bytes, {:?})", self.data.len(), self.kind)
    }
}

/// The type SOPS recorded for a value before it encrypted its text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueType {
    Str,
    Int,
    Float,
    Bool,
    Bytes,
    Time,
    Comment,
}

impl EncValue {
    /// Parses an `ENC[...]` string; `None` when `text` is not one.
    #[must_use]
    pub fn parse(text: &str) -> Option<EncValue> {
        let inner = text.strip_prefix("ENC[AES256_GCM,")?.strip_suffix(']')?;
        let mut fields = inner.split(',');
        let mut take = |name: &str| fields.next()?.strip_prefix(name)?.strip_prefix(':');
        let data = STANDARD.decode(take("data")?).ok()?;
        let iv = STANDARD.decode(take("iv")?).ok()?;
        let tag = STANDARD.decode(take("tag")?).ok()?;
        let kind = match take("type")? {
            "str" => ValueType::Str,
            "int" => ValueType::Int,
            "float" => ValueType::Float,
            "bool" => ValueType::Bool,
            "bytes" => ValueType::Bytes,
            "time" => ValueType::Time,
            "comment" => ValueType::Comment,
            _ => return None,
        };
        if fields.next().is_some() || iv.len() != 32 || tag.len() != 16 {
            return None;
        }
        Some(EncValue {
            data,
            iv,
            tag,
            kind,
        })
    }

    /// The plaintext, or `None` when the tag does not check (a changed
    /// ciphertext, another path, or another data key).
    #[must_use]
    pub fn decrypt(&self, key: &[u8; 32], additional: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
        let cipher = Cipher::new(GenericArray::from_slice(key));
        let mut msg = Vec::with_capacity(self.data.len() + self.tag.len());
        msg.extend_from_slice(&self.data);
        msg.extend_from_slice(&self.tag);
        let nonce = GenericArray::from_slice(&self.iv);
        cipher
            .decrypt(
                nonce,
                Payload {
                    msg: &msg,
                    aad: additional,
                },
            )
            .ok()
            .map(Zeroizing::new)
    }
}

/// One age recipient's copy of the data key (an armored age file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgeStanza {
    pub recipient: String,
    pub enc: String,
}

/// What decides whether SOPS encrypted a value at a path.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    pub unencrypted_suffix: Option<String>,
    pub encrypted_suffix: Option<String>,
    pub unencrypted_regex: Option<regex::Regex>,
    pub encrypted_regex: Option<regex::Regex>,
}

impl Rules {
    /// SOPS's rule: encrypted unless an unencrypted suffix or regex matches a
    /// path component; with an encrypted suffix or regex, only when one matches.
    #[must_use]
    pub fn encrypts(&self, path: &[&str]) -> bool {
        let mut encrypted = true;
        if let Some(s) = &self.unencrypted_suffix
            && path.iter().any(|p| p.ends_with(s.as_str()))
        {
            encrypted = false;
        }
        if let Some(s) = &self.encrypted_suffix {
            encrypted = path.iter().any(|p| p.ends_with(s.as_str()));
        }
        if let Some(r) = &self.unencrypted_regex
            && path.iter().any(|p| r.is_match(p))
        {
            encrypted = false;
        }
        if let Some(r) = &self.encrypted_regex {
            encrypted = path.iter().any(|p| r.is_match(p));
        }
        encrypted
    }
}

/// The `sops` block of a file.
#[derive(Debug, Clone)]
pub struct Metadata {
    pub age: Vec<AgeStanza>,
    pub lastmodified: String,
    pub mac: EncValue,
    pub mac_only_encrypted: bool,
    pub rules: Rules,
    /// Key services or features present that converge does not implement.
    pub unsupported: Vec<&'static str>,
}

/// Why the `sops` block cannot be read (a diagnostic, at `pointer`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetadataProblem {
    pub pointer: String,
    pub message: String,
}

fn problem(pointer: &str, message: impl Into<String>) -> MetadataProblem {
    MetadataProblem {
        pointer: pointer.to_owned(),
        message: message.into(),
    }
}

/// Compiled regexes are shared: most files carry the same one.
fn regex(text: &str) -> Result<regex::Regex, regex::Error> {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    static CACHE: OnceLock<Mutex<HashMap<String, regex::Regex>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Mutex::default);
    if let Some(r) = cache.lock().ok().and_then(|c| c.get(text).cloned()) {
        return Ok(r);
    }
    let r = regex::RegexBuilder::new(text).size_limit(1 << 20).build()?;
    if let Ok(mut c) = cache.lock() {
        if c.len() > 64 {
            c.clear();
        }
        c.insert(text.to_owned(), r.clone());
    }
    Ok(r)
}

/// Reads the `sops` block.
pub fn metadata(block: &Value) -> Result<Metadata, MetadataProblem> {
    let obj = block
        .as_object()
        .ok_or_else(|| problem("/sops", "the sops metadata is not a mapping"))?;
    let string = |key: &str| -> Result<Option<String>, MetadataProblem> {
        match obj.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.is_empty() => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(problem(&format!("/sops/{key}"), "not a string")),
        }
    };
    let present = |key: &str| match obj.get(key) {
        None | Some(Value::Null) => false,
        Some(Value::Array(a)) => !a.is_empty(),
        Some(Value::String(s)) => !s.is_empty(),
        Some(Value::Object(o)) => !o.is_empty(),
        Some(_) => true,
    };
    let mut unsupported = Vec::new();
    for (key, name) in [
        ("pgp", "PGP keys"),
        ("kms", "AWS KMS keys"),
        ("gcp_kms", "GCP KMS keys"),
        ("azure_kv", "Azure Key Vault keys"),
        ("hc_vault", "HashiCorp Vault transit keys"),
        ("key_groups", "key groups"),
        ("shamir_threshold", "a Shamir threshold"),
        ("encrypted_comment_regex", "encrypted_comment_regex"),
        ("unencrypted_comment_regex", "unencrypted_comment_regex"),
    ] {
        if present(key) {
            unsupported.push(name);
        }
    }
    let mut age = Vec::new();
    if let Some(list) = obj.get("age").filter(|v| !v.is_null()) {
        let list = list
            .as_array()
            .ok_or_else(|| problem("/sops/age", "not a list"))?;
        for (i, entry) in list.iter().enumerate() {
            let field = |k: &str| entry.get(k).and_then(Value::as_str).map(str::to_owned);
            match (field("recipient"), field("enc")) {
                (Some(recipient), Some(enc)) => age.push(AgeStanza { recipient, enc }),
                _ => {
                    return Err(problem(
                        &format!("/sops/age/{i}"),
                        "an age entry needs a recipient and an enc",
                    ));
                }
            }
        }
    }
    let lastmodified = string("lastmodified")?
        .ok_or_else(|| problem("/sops", "the sops metadata has no lastmodified"))?;
    let mac = string("mac")?.ok_or_else(|| problem("/sops", "the sops metadata has no mac"))?;
    let mac = EncValue::parse(&mac)
        .ok_or_else(|| problem("/sops/mac", "the mac is not an ENC[AES256_GCM,...] value"))?;
    let compile = |key: &str| -> Result<Option<regex::Regex>, MetadataProblem> {
        string(key)?
            .map(|r| {
                regex(&r)
                    .map_err(|_| problem(&format!("/sops/{key}"), "not a regex converge can read"))
            })
            .transpose()
    };
    let rules = Rules {
        unencrypted_suffix: string("unencrypted_suffix")?,
        encrypted_suffix: string("encrypted_suffix")?,
        unencrypted_regex: compile("unencrypted_regex")?,
        encrypted_regex: compile("encrypted_regex")?,
    };
    let mac_only_encrypted = obj
        .get("mac_only_encrypted")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    Ok(Metadata {
        age,
        lastmodified,
        mac,
        mac_only_encrypted,
        rules,
        unsupported,
    })
}

/// The bytes SOPS hashes into the MAC for an unencrypted scalar; `None` for
/// `null` (SOPS skips it) and containers.
#[must_use]
pub fn mac_bytes(value: &Value) -> Option<Vec<u8>> {
    match value {
        Value::String(s) => Some(s.as_bytes().to_vec()),
        Value::Bool(true) => Some(b"True".to_vec()),
        Value::Bool(false) => Some(b"False".to_vec()),
        Value::Number(n) => Some(
            n.as_i64()
                .map(|i| i.to_string())
                .or_else(|| n.as_u64().map(|u| u.to_string()))
                .or_else(|| n.as_f64().map(|f| f.to_string()))
                .unwrap_or_default()
                .into_bytes(),
        ),
        Value::Null | Value::Array(_) | Value::Object(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn enc_values_parse_only_in_sops_shape() {
        let good = "ENC[AES256_GCM,data:K8K1OTQ6T0RJj5NuL3o=,iv:9IlCngco01f+uv98lyDZAYTNF1/lrtOnh3WRhdyNLJ4=,tag:Ticj4GHW4T/IuAixc/07jw==,type:str]";
        let v = EncValue::parse(good).expect("parses");
        assert_eq!(v.kind, ValueType::Str);
        for bad in [
            "hunter2",
            "ENC[AES256_GCM,data:K8K1,iv:9Il,tag:Tic,type:str]",
            &good.replace("type:str", "type:x"),
            &good.replace("AES256_GCM", "AES128_GCM"),
            &good[..good.len() - 1],
        ] {
            assert!(EncValue::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn the_encryption_rules_follow_sops() {
        let rules = Rules {
            encrypted_regex: Some(regex("^secrets$").unwrap()),
            ..Rules::default()
        };
        assert!(rules.encrypts(&["secrets", "db"]));
        assert!(!rules.encrypts(&["user"]));
        let rules = Rules {
            unencrypted_suffix: Some("_unencrypted".into()),
            ..Rules::default()
        };
        assert!(rules.encrypts(&["user"]));
        assert!(!rules.encrypts(&["a_unencrypted", "b"]));
    }

    #[test]
    fn unsupported_key_services_are_named() {
        let m = metadata(&json!({
            "pgp": [{"fp": "x"}],
            "hc_vault": [],
            "lastmodified": "2024-01-01T00:00:00Z",
            "mac": "ENC[AES256_GCM,data:K8K1OTQ6T0RJj5NuL3o=,iv:9IlCngco01f+uv98lyDZAYTNF1/lrtOnh3WRhdyNLJ4=,tag:Ticj4GHW4T/IuAixc/07jw==,type:str]",
        }))
        .expect("reads");
        assert_eq!(m.unsupported, ["PGP keys"]);
    }

    #[test]
    fn mac_bytes_match_sops_to_bytes() {
        assert_eq!(mac_bytes(&json!(true)).unwrap(), b"True");
        assert_eq!(mac_bytes(&json!(5)).unwrap(), b"5");
        assert_eq!(mac_bytes(&json!(1.5)).unwrap(), b"1.5");
        assert_eq!(mac_bytes(&json!(5.0)).unwrap(), b"5");
        assert_eq!(mac_bytes(&json!(null)), None);
    }
}
