//! Commit signature verification: SSH signatures against an allowed-signers
//! file (the format `git` uses with `gpg.ssh.allowedSignersFile`) and `OpenPGP`
//! signatures against trusted public keys. Pure: keys are read once at start.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use pgp::composed::{Deserializable, DetachedSignature, SignedPublicKey};

use super::Signature;
use crate::config::SignaturesConfig;

/// Why the trusted keys cannot be loaded.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {}: {error}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        error: std::io::Error,
    },
    #[error("{}:{line}: not an allowed-signers line", path.display())]
    AllowedSigner { path: PathBuf, line: usize },
    #[error("{}: not an OpenPGP public key: {error}", path.display())]
    OpenPgp {
        path: PathBuf,
        #[source]
        error: pgp::errors::Error,
    },
}

/// The keys a source trusts.
#[derive(Debug, Clone, Default)]
pub struct Trust {
    ssh: Arc<Vec<(String, ssh_key::PublicKey)>>,
    pgp: Arc<Vec<SignedPublicKey>>,
}

impl Trust {
    /// The keys a git source's `signatures` block names; none without one.
    pub fn from_config(signatures: Option<&SignaturesConfig>) -> Result<Trust, Error> {
        match signatures {
            Some(sig) => Trust::load(sig.allowed_signers.as_deref(), &sig.openpgp_keys),
            None => Ok(Trust::default()),
        }
    }

    /// Reads an allowed-signers file and armored `OpenPGP` public keys.
    pub fn load(
        allowed_signers: Option<&Path>,
        openpgp_keys: &[impl AsRef<Path>],
    ) -> Result<Trust, Error> {
        let read = |path: &Path| {
            std::fs::read_to_string(path).map_err(|error| Error::Read {
                path: path.to_owned(),
                error,
            })
        };
        let mut ssh = Vec::new();
        if let Some(path) = allowed_signers {
            let text = read(path)?;
            for (i, line) in text.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                let parsed = parse_allowed_signer(line).ok_or_else(|| Error::AllowedSigner {
                    path: path.to_owned(),
                    line: i + 1,
                })?;
                ssh.push(parsed);
            }
        }
        let mut pgp = Vec::new();
        for path in openpgp_keys {
            let path = path.as_ref();
            let text = read(path)?;
            let (key, _) = SignedPublicKey::from_string(&text).map_err(|error| Error::OpenPgp {
                path: path.to_owned(),
                error,
            })?;
            pgp.push(key);
        }
        Ok(Trust {
            ssh: Arc::new(ssh),
            pgp: Arc::new(pgp),
        })
    }

    /// Checks a commit's signature over its signed bytes.
    #[must_use]
    pub fn verify(&self, signature: &[u8], signed: &[u8]) -> Signature {
        let text = String::from_utf8_lossy(signature);
        if text.contains("BEGIN SSH SIGNATURE") {
            self.verify_ssh(signature, signed)
        } else if text.contains("BEGIN PGP SIGNATURE") {
            self.verify_pgp(&text, signed)
        } else {
            unverified("unknown", "the signature is neither SSH nor OpenPGP")
        }
    }

    fn verify_ssh(&self, signature: &[u8], signed: &[u8]) -> Signature {
        let sig = match ssh_key::SshSig::from_pem(signature) {
            Ok(s) => s,
            Err(e) => return unverified("ssh", &format!("malformed SSH signature: {e}")),
        };
        if sig.namespace() != "git" {
            return unverified(
                "ssh",
                &format!("signature namespace is {:?}, not \"git\"", sig.namespace()),
            );
        }
        let Some((principal, key)) = self
            .ssh
            .iter()
            .find(|(_, k)| k.key_data() == sig.public_key())
        else {
            return unverified("ssh", "signed by a key that is not in the allowed signers");
        };
        match key.verify("git", signed, &sig) {
            Ok(()) => Signature {
                kind: "ssh".into(),
                verified: true,
                signer: Some(principal.clone()),
                problem: None,
            },
            Err(e) => unverified("ssh", &format!("bad signature by {principal}: {e}")),
        }
    }

    fn verify_pgp(&self, armored: &str, signed: &[u8]) -> Signature {
        let sig = match DetachedSignature::from_string(armored) {
            Ok((s, _)) => s,
            Err(e) => return unverified("gpg", &format!("malformed OpenPGP signature: {e}")),
        };
        for key in self.pgp.iter() {
            let user = key.details.users.first().map_or_else(
                || "OpenPGP key".to_owned(),
                |u| String::from_utf8_lossy(u.id.id()).into_owned(),
            );
            let ok = sig.verify(&key.primary_key, signed).is_ok()
                || key
                    .public_subkeys
                    .iter()
                    .any(|sub| sig.verify(&sub.key, signed).is_ok());
            if ok {
                return Signature {
                    kind: "gpg".into(),
                    verified: true,
                    signer: Some(user),
                    problem: None,
                };
            }
        }
        unverified(
            "gpg",
            "not signed by a trusted OpenPGP key, or the signature is bad",
        )
    }
}

fn unverified(kind: &str, problem: &str) -> Signature {
    Signature {
        kind: kind.to_owned(),
        verified: false,
        signer: None,
        problem: Some(problem.to_owned()),
    }
}

/// `principals [options] keytype base64 [comment]`.
fn parse_allowed_signer(line: &str) -> Option<(String, ssh_key::PublicKey)> {
    let tokens: Vec<&str> = line.split_whitespace().collect();
    let principal = (*tokens.first()?).to_owned();
    let at =
        tokens.iter().skip(1).position(|t| {
            t.starts_with("ssh-") || t.starts_with("ecdsa-") || t.starts_with("sk-")
        })? + 1;
    let key = ssh_key::PublicKey::from_openssh(&format!("{} {}", tokens[at], tokens.get(at + 1)?))
        .ok()?;
    Some((principal, key))
}
