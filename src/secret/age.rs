//! The age key service: X25519 identities (parsed from the text of age
//! identity files) unwrap a SOPS file's data key. Each SOPS age entry names
//! its recipient, so only the matching identity is tried: one X25519
//! operation per file. Unwrapped data keys are cached by the digest of the
//! wrapped keys (files encrypted together, or edited with `sops`, share
//! one), so a warm pass performs none. Pure: the caller reads the files.

use std::collections::HashMap;
use std::str::FromStr as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};

use zeroize::Zeroizing;

use super::sops::AgeStanza;
use super::{DataKey, Decryptor, OpenError};

/// Cached data keys beyond this many are dropped (all at once).
const CACHE_LIMIT: usize = 200_000;

struct Identity {
    recipient: String,
    key: age::x25519::Identity,
}

/// Why an identity file's text cannot be used (never its content).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: line {line} is not an age X25519 identity (AGE-SECRET-KEY-1...)")]
pub struct ParseError {
    pub file: String,
    pub line: usize,
}

/// Parses the identities of one age identity file (`#` comments and blank
/// lines allowed).
pub fn parse_identities(
    file: &str,
    text: &str,
) -> Result<Vec<(String, age::x25519::Identity)>, ParseError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let key = age::x25519::Identity::from_str(line).map_err(|_| ParseError {
            file: file.to_owned(),
            line: i + 1,
        })?;
        out.push((key.to_public().to_string(), key));
    }
    Ok(out)
}

/// Age identities and the data keys they unwrapped.
#[derive(Default)]
pub struct AgeKeys {
    identities: RwLock<Vec<Identity>>,
    /// A problem with the configured key files, reported instead of a
    /// missing identity.
    problem: RwLock<Option<String>>,
    configured: std::sync::atomic::AtomicBool,
    cache: Mutex<HashMap<[u8; 32], Zeroizing<[u8; 32]>>>,
    unwraps: AtomicU64,
    generation: AtomicU64,
}

impl std::fmt::Debug for AgeKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgeKeys")
            .field(
                "identities",
                &self.identities.read().map(|i| i.len()).unwrap_or_default(),
            )
            .finish_non_exhaustive()
    }
}

impl AgeKeys {
    /// Replaces the identities (the key files changed): the data-key cache
    /// is emptied and the generation moves on.
    pub fn replace(
        &self,
        configured: bool,
        identities: Vec<(String, age::x25519::Identity)>,
        problem: Option<String>,
    ) {
        let identities = identities
            .into_iter()
            .map(|(recipient, key)| Identity { recipient, key })
            .collect();
        if let Ok(mut i) = self.identities.write() {
            *i = identities;
        }
        if let Ok(mut p) = self.problem.write() {
            *p = problem;
        }
        self.configured.store(configured, Ordering::SeqCst);
        if let Ok(mut c) = self.cache.lock() {
            c.clear();
        }
        self.generation.fetch_add(1, Ordering::SeqCst);
    }
}

impl Decryptor for AgeKeys {
    fn configured(&self) -> bool {
        self.configured.load(Ordering::SeqCst)
    }

    fn data_key(&self, age: &[AgeStanza]) -> Result<DataKey, OpenError> {
        if !self.configured() {
            return Err(OpenError::NoKeys);
        }
        let digest = super::key_digest(age);
        if let Some(k) = self.cache.lock().ok().and_then(|c| c.get(&digest).cloned()) {
            return Ok(DataKey(k));
        }
        let identities = self.identities.read().map_err(|_| OpenError::KeyFiles {
            message: "the key store is poisoned".to_owned(),
        })?;
        let matching = age.iter().find_map(|stanza| {
            let id = identities
                .iter()
                .find(|i| i.recipient == stanza.recipient)?;
            Some((stanza, id))
        });
        let Some((stanza, id)) = matching else {
            if let Some(problem) = self.problem.read().ok().and_then(|p| p.clone()) {
                return Err(OpenError::KeyFiles { message: problem });
            }
            return Err(OpenError::NoMatchingIdentity {
                recipients: age
                    .iter()
                    .map(|s| s.recipient.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        };
        self.unwraps.fetch_add(1, Ordering::Relaxed);
        let wrong = || OpenError::WrongKey {
            recipient: stanza.recipient.clone(),
        };
        let plain =
            Zeroizing::new(age::decrypt(&id.key, stanza.enc.as_bytes()).map_err(|_| wrong())?);
        let key: [u8; 32] = plain
            .as_slice()
            .try_into()
            .map_err(|_| OpenError::BadDataKey)?;
        let key = Zeroizing::new(key);
        if let Ok(mut c) = self.cache.lock() {
            if c.len() >= CACHE_LIMIT {
                c.clear();
            }
            c.insert(digest, key.clone());
        }
        Ok(DataKey(key))
    }

    fn unwraps(&self) -> u64 {
        self.unwraps.load(Ordering::Relaxed)
    }

    fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }
}
