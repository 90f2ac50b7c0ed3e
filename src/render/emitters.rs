//! The two YAML emitters write the same bytes: the built-in objects, written
//! straight to text by `builtin::Doc`, are exactly what the generic emitter
//! (`yaml::to_string`) writes for the same value (tests only).

use std::collections::BTreeMap;

use proptest::prelude::*;
use serde_json::{Value, json};

use super::{Presets, Renderer, Resolved};
use crate::claim::Claim;
use crate::secret::{FingerprintKey, Secrets};

/// Every object the built-ins render for a claim (the `Secret` included),
/// read back and written again by the generic emitter, byte for byte.
fn assert_same_bytes(doc: Value, versions: &BTreeMap<String, Resolved>) -> Result<(), String> {
    let claim = Claim::from_document("f", doc).map_err(|d| format!("not a claim: {d:?}"))?;
    let key = FingerprintKey::new([7; 32]);
    let renderer = Renderer::new(
        Presets::new(&BTreeMap::new()).expect("presets"),
        "r.io/rel".into(),
    )
    .with_dev_registry(Some("r.io/snap".to_owned()))
    .with_fingerprint_key(key.clone());
    let values = BTreeMap::from([(
        "db".to_owned(),
        zeroize::Zeroizing::new(b"hunter2\n\"x\": y".to_vec()),
    )]);
    let secrets = Secrets::new(values, claim.environment_name.as_str(), &key);
    let expires = chrono::DateTime::parse_from_rfc3339("2026-01-02T03:04:05Z")
        .expect("time")
        .to_utc();
    let objects = renderer
        .render(&claim, versions, Some(expires), Some(&secrets))
        .map_err(|e| e.to_string())?;
    for o in &objects {
        let text: &str = &o.yaml;
        let value: Value = serde_saphyr::from_str(text)
            .map_err(|e| format!("invalid YAML from the built-ins ({e}):\n{text}"))?;
        let again = super::yaml::to_string(&value);
        if again != text {
            return Err(format!("builtin:\n{text}\ngeneric:\n{again}"));
        }
    }
    Ok(())
}

fn versions(services: &[&str]) -> BTreeMap<String, Resolved> {
    services
        .iter()
        .map(|s| {
            (
                (*s).to_owned(),
                Resolved {
                    tag: "1.2.3-rc.1+build.5".into(),
                    constraint: "^1.2.0".into(),
                    dependency_of: Vec::new(),
                },
            )
        })
        .collect()
}

#[test]
fn the_builtin_objects_are_the_bytes_the_generic_emitter_writes() {
    for t in ["sue", "dev", "stage", "prod"] {
        for method in ["dynamic", "git"] {
            let mut doc = json!({
                "user": "john.doe@company.com", "environment_pool": "team1",
                "creation_date": "2024-01-15T10:30:00Z", "environment_name": format!("{t}-one"),
                "environment_type": t, "deployment_method": method,
                "services": {"user-service": "1.2.3", "billing": "^1.0", "api": ">=1.2.0"},
                "secrets": {"db": "ENC[...]"},
                "expiration_date": "2026-01-02T03:04:05Z",
            });
            if method == "git" {
                doc["git_repository"] = json!("https://git.example/a b.git");
                doc["branch"] = json!("feature/x: y");
            }
            assert_same_bytes(doc, &versions(&["user-service", "billing", "api"]))
                .unwrap_or_else(|e| panic!("{t} {method}: {e}"));
        }
    }
    let bare = json!({
        "user": "a@b.c", "environment_pool": "p", "creation_date": "2024-01-15T10:30:00Z",
        "environment_name": "e", "environment_type": "dev", "deployment_method": "dynamic",
        "services": {},
    });
    assert_same_bytes(bare, &BTreeMap::new()).unwrap_or_else(|e| panic!("{e}"));
}

/// Text that stresses the scalar rules: indicators, look-alikes of other
/// types, line breaks, spaces at either end, any unicode.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[ a-z0-9:#\n\"'{}\\[\\],&*!|>%@`?.~-]{0,20}",
        prop_oneof![
            Just("true"),
            Just("null"),
            Just("0x1f"),
            Just("- a"),
            Just("a: b"),
            Just(" lead"),
            Just("multi\nline"),
            Just("é\u{2028}\u{85}"),
        ]
        .prop_map(str::to_owned),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn hostile_claim_values_are_the_same_bytes_from_both_emitters(
        user in text(),
        pool in text(),
        service in text(),
        image in text(),
        artifact in text(),
        repository in text(),
        branch in text(),
    ) {
        let doc = json!({
            "user": user, "environment_pool": pool, "creation_date": "2024-01-15T10:30:00Z",
            "environment_name": "dev-x", "environment_type": "dev", "deployment_method": "git",
            "git_repository": repository, "branch": branch,
            "services": {service.clone(): {
                "version": "1.0.0", "docker_image": image, "ansible_artifact": artifact,
            }},
            "secrets": {"db": "ENC[...]"},
        });
        let versions = BTreeMap::from([(
            service,
            Resolved { tag: "1.0.0".into(), constraint: "1.0.0".into(), dependency_of: Vec::new() },
        )]);
        assert_same_bytes(doc, &versions).map_err(TestCaseError::fail)?;
    }
}
