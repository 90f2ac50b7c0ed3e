//! The fuzz targets' properties (`fuzz/checks/`, shared with `cargo fuzz`)
//! replayed on every committed seed (`fuzz/seeds/<target>`) and every
//! finding (`fuzz/regressions/<target>`: each crash the fuzzers found,
//! kept as a regression test once fixed).

#[path = "../../fuzz/checks/api.rs"]
mod api;
#[path = "../../fuzz/checks/claim.rs"]
mod claim;
#[path = "../../fuzz/checks/config.rs"]
mod config;
#[path = "../../fuzz/checks/registry.rs"]
mod registry;
#[path = "../../fuzz/checks/version.rs"]
mod version;

use crate::support::repo;

/// Runs `check` on every input of `target`; returns how many there were.
fn replay(target: &str, check: fn(&[u8])) -> usize {
    let mut n = 0;
    for dir in ["seeds", "regressions"] {
        let dir = repo().join("fuzz").join(dir).join(target);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let path = entry.expect("entry").path();
            if path.file_name().is_some_and(|n| n == ".keep") {
                continue;
            }
            let data = std::fs::read(&path).expect("read");
            assert!(
                std::panic::catch_unwind(|| check(&data)).is_ok(),
                "{} fails its target's properties",
                path.display()
            );
            n += 1;
        }
    }
    n
}

#[test]
fn every_claim_seed_and_finding_holds() {
    assert!(replay("claim", claim::check) > 0);
}

#[test]
fn every_version_seed_and_finding_holds() {
    assert!(replay("version", version::check) > 0);
}

#[test]
fn every_config_seed_and_finding_holds() {
    assert!(replay("config", config::check) > 0);
}

#[test]
fn every_api_seed_and_finding_holds() {
    assert!(replay("api", api::check) > 0);
}

#[test]
fn every_registry_seed_and_finding_holds() {
    assert!(replay("registry", registry::check) > 0);
}
