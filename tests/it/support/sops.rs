//! SOPS fixtures made at test time by the real tools from the tools cache
//! (`scripts/tools` builds them): `age-keygen` makes identities and the real
//! `sops` CLI encrypts claims to age recipients. sops gets `--age` and
//! `SOPS_AGE_KEY_FILE` only, so it never reaches for the network (never
//! `sops --version`, which checks for updates).

use std::path::{Path, PathBuf};
use std::process::Command;

use super::kube::tool;

/// An age identity file and its recipient.
pub struct AgeKey {
    pub file: PathBuf,
    pub recipient: String,
}

/// A new identity in `dir/<name>.key` (0600), made by `age-keygen`.
pub fn age_key(dir: &Path, name: &str) -> AgeKey {
    std::fs::create_dir_all(dir).expect("mkdir keys");
    let file = dir.join(format!("{name}.key"));
    let out = Command::new(tool("age-keygen"))
        .arg("-o")
        .arg(&file)
        .output()
        .expect("age-keygen runs");
    assert!(
        out.status.success(),
        "age-keygen: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&file).expect("key file");
    let recipient = text
        .lines()
        .find_map(|l| l.strip_prefix("# public key: "))
        .expect("age-keygen writes the public key")
        .trim()
        .to_owned();
    AgeKey { file, recipient }
}

/// Runs the real `sops` in `dir` with `args`; the plaintext `content` is
/// written to `dir/<file>` first (its extension picks YAML or JSON) and
/// removed after. Returns what sops printed.
pub fn sops(dir: &Path, file: &str, content: &str, key: &AgeKey, args: &[&str]) -> String {
    let path = dir.join(file);
    std::fs::write(&path, content).expect("write plaintext");
    let out = Command::new(tool("sops"))
        .args(args)
        .arg(&path)
        .current_dir(dir)
        .env("SOPS_AGE_KEY_FILE", &key.file)
        .env_remove("SOPS_AGE_KEY")
        .env_remove("SOPS_AGE_RECIPIENTS")
        .output()
        .expect("sops runs");
    std::fs::remove_file(&path).expect("remove plaintext");
    assert!(
        out.status.success(),
        "sops {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

/// `content` encrypted by `sops --encrypt --age <recipients>
/// --encrypted-regex '^secrets$'` as `file` would be (YAML or JSON).
pub fn encrypt(dir: &Path, file: &str, content: &str, recipients: &[&AgeKey]) -> String {
    let list = recipients
        .iter()
        .map(|k| k.recipient.as_str())
        .collect::<Vec<_>>()
        .join(",");
    sops(
        dir,
        file,
        content,
        recipients[0],
        &[
            "--encrypt",
            "--age",
            &list,
            "--encrypted-regex",
            "^secrets$",
        ],
    )
}

/// `content` encrypted with two key groups (one recipient each) and a
/// Shamir threshold of 2, from a `.sops.yaml` creation rule.
pub fn encrypt_shamir(dir: &Path, file: &str, content: &str, a: &AgeKey, b: &AgeKey) -> String {
    let config = dir.join("sops-shamir.yaml");
    std::fs::write(
        &config,
        format!(
            "creation_rules:\n  - shamir_threshold: 2\n    encrypted_regex: '^secrets$'\n    key_groups:\n      - age: [{}]\n      - age: [{}]\n",
            a.recipient, b.recipient
        ),
    )
    .expect("write sops config");
    let config = config.to_str().expect("utf-8").to_owned();
    sops(dir, file, content, a, &["--config", &config, "--encrypt"])
}
