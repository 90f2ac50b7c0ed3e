//! Golden renders: one claim of each environment type through `converge
//! render`, compared byte for byte with `tests/golden/<type>.yaml`. Set
//! `UPDATE_GOLDEN=1` to rewrite the files after an intended change.

use crate::support::{converge, repo, stderr, stdout};

fn check(env_type: &str) {
    let dir = repo().join("tests/golden");
    let out = converge(
        &dir,
        &[
            "render",
            "--config",
            "converge.yaml",
            &format!("{env_type}.claim.yaml"),
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "render {env_type}: {}",
        stderr(&out)
    );
    let got = stdout(&out);
    let golden = dir.join(format!("{env_type}.yaml"));
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&golden, &got).expect("write golden");
        return;
    }
    let want =
        std::fs::read_to_string(&golden).expect("golden file exists (UPDATE_GOLDEN=1 creates it)");
    assert!(
        got == want,
        "{env_type}: render differs from {}; rerun with UPDATE_GOLDEN=1 if intended\n{got}",
        golden.display()
    );
}

#[test]
fn dev_renders_as_its_golden_file() {
    check("dev");
}

#[test]
fn stage_renders_as_its_golden_file() {
    check("stage");
}

#[test]
fn prod_renders_as_its_golden_file() {
    check("prod");
}

#[test]
fn sue_renders_as_its_golden_file() {
    check("sue");
}

#[test]
fn every_rendered_object_carries_the_ownership_labels() {
    for env_type in ["dev", "stage", "prod", "sue"] {
        let text = std::fs::read_to_string(repo().join(format!("tests/golden/{env_type}.yaml")))
            .expect("golden");
        let docs: Vec<serde_json::Value> =
            serde_saphyr::from_multiple(&text).expect("golden is YAML");
        assert!(docs.len() >= 6, "{env_type}: {} objects", docs.len());
        for doc in docs {
            let labels = &doc["metadata"]["labels"];
            assert_eq!(
                labels["app.kubernetes.io/managed-by"], "converge",
                "{env_type}: {doc}"
            );
            assert_eq!(
                labels["converge.dev/environment"],
                format!("{env_type}-golden"),
                "{env_type}: {doc}"
            );
        }
    }
}

#[test]
fn rendering_twice_gives_the_same_bytes() {
    let dir = repo().join("tests/golden");
    let a = converge(
        &dir,
        &["render", "--config", "converge.yaml", "prod.claim.yaml"],
    );
    let b = converge(
        &dir,
        &["render", "--config", "converge.yaml", "prod.claim.yaml"],
    );
    assert_eq!(a.stdout, b.stdout);
}
