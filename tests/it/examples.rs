//! Examples are tests: every example claim validates, and the quick start
//! applies every one of them.

use crate::support::{converge, repo, stderr, stdout};

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        let name = entry.file_name();
        if name == "out" || name == ".converge" {
            continue;
        }
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &to.join(&name));
        } else {
            std::fs::copy(entry.path(), to.join(&name)).expect("copy");
        }
    }
}

#[test]
fn every_example_claim_validates() {
    let root = repo();
    let out = converge(
        &root,
        &[
            "validate",
            "--config",
            "examples/quickstart/converge.yaml",
            "examples/quickstart/claims",
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(
        stdout(&out).contains("4 of 4 files valid"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn the_quick_start_applies_every_example_of_every_type() {
    let dir = tempfile::tempdir().expect("tempdir");
    copy_dir(&repo().join("examples/quickstart"), dir.path());
    let out = converge(dir.path(), &["run", "--once"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let mut envs: Vec<String> = std::fs::read_dir(dir.path().join("out"))
        .expect("out exists")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n != converge::store::TARGET_LOCK_FILE) // the writers' lock
        .collect();
    envs.sort();
    assert_eq!(
        envs,
        [
            "dev-team1-feature-x",
            "prod-team1-payments",
            "stage-team2-checkout",
            "sue-team2-eval"
        ]
    );
    let plan = converge(dir.path(), &["plan"]);
    assert_eq!(
        plan.status.code(),
        Some(0),
        "a second look finds nothing to do: {}",
        stdout(&plan)
    );
    for claim in std::fs::read_dir(dir.path().join("claims")).expect("claims") {
        let path = claim.expect("entry").path();
        let out = converge(dir.path(), &["render", path.to_str().expect("utf-8 path")]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}: {}",
            path.display(),
            stderr(&out)
        );
        assert!(stdout(&out).contains("kind: Namespace"));
    }
}

#[test]
fn the_production_example_config_loads_validates_and_renders() {
    let root = repo();
    let config = "examples/production/converge.yaml";
    let out = converge(
        &root,
        &["validate", "--config", config, "examples/quickstart/claims"],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    // Its image registry and tag lists are the ones a render uses.
    let dir = tempfile::tempdir().expect("tempdir");
    let claim = dir.path().join("dev-prod-example.yaml");
    std::fs::write(
        &claim,
        crate::support::claim("dev-prod-example", "dev").replace("v1.2.3", "^1.2.0"),
    )
    .expect("write claim");
    let out = converge(
        &root,
        &[
            "render",
            "--config",
            config,
            claim.to_str().expect("utf-8 path"),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("image: registry.example.com/releases/user-service:v1.3.0"),
        "{}",
        stdout(&out)
    );
}

/// Every YAML block of the README whose top-level keys are all config keys
/// is a converge config (or a part of one) that loads: `sources` and
/// `target` are added where the block leaves them out.
#[test]
fn every_config_block_of_the_readme_loads() {
    const KEYS: &[&str] = &[
        "sources",
        "target",
        "state_dir",
        "policies",
        "identities",
        "schema",
        "templates",
        "images",
        "api",
        "reconcile",
        "safety",
        "limits",
        "presets",
        "tags",
        "secrets",
        "versions",
        "services",
        "claims",
    ];
    let readme = std::fs::read_to_string(repo().join("README.md")).expect("README");
    let mut checked = 0;
    for block in readme.split("```yaml\n").skip(1) {
        let block = block.split("```").next().unwrap_or_default();
        let keys: Vec<&str> = block
            .lines()
            .filter(|l| !l.starts_with([' ', '#', '-']) && !l.trim().is_empty())
            .filter_map(|l| l.split_once(':').map(|(k, _)| k.trim()))
            .collect();
        if keys.is_empty() || !keys.iter().all(|k| KEYS.contains(k)) {
            continue;
        }
        let mut text = block.to_owned();
        if !keys.contains(&"sources") {
            text.push_str("sources: []\n");
        }
        if !keys.contains(&"target") {
            text.push_str("target: {kind: manifests, path: out}\n");
        }
        if let Err(e) = converge::config::Config::parse(&text) {
            panic!("a README config block does not load: {e}\n{block}");
        }
        checked += 1;
    }
    assert!(checked >= 3, "only {checked} config blocks found");
}

/// The quick start's read-only commands (`cargo run -- validate …`,
/// `cargo run -- plan …`) run as the README writes them, from the
/// repository's root: validate finds the four claims valid with every
/// version constraint checked against the quick start's tags.
#[test]
fn the_readmes_quick_start_commands_work_as_written() {
    let root = repo();
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README");
    let mut ran = Vec::new();
    for line in readme.lines() {
        let Some(rest) = line.strip_prefix("cargo run -- ") else {
            continue;
        };
        let command = rest.split('#').next().unwrap_or_default();
        let args: Vec<&str> = command.split_whitespace().collect();
        match args.first() {
            Some(&"validate") => {
                let out = converge(&root, &args);
                let (text, err) = (stdout(&out), stderr(&out));
                assert_eq!(out.status.code(), Some(0), "{line}\n{text}{err}");
                assert!(text.contains("4 of 4 files valid"), "{line}\n{text}");
                assert!(
                    !text.contains("not checked") && !err.contains("no --config"),
                    "{line}: versions checked, the config named\n{text}{err}"
                );
            }
            Some(&"plan") => {
                let out = converge(&root, &args);
                assert!(
                    matches!(out.status.code(), Some(0 | 1)),
                    "{line}\n{}",
                    stderr(&out)
                );
            }
            _ => continue,
        }
        ran.push(args[0]);
    }
    assert!(
        ran.contains(&"validate") && ran.contains(&"plan"),
        "{ran:?}"
    );
}

/// Without `--config` and without `./converge.yaml`, validate says what it
/// uses instead.
#[test]
fn validate_without_a_config_says_it_uses_the_built_in_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let claims = repo().join("examples/quickstart/claims");
    let out = converge(
        dir.path(),
        &["validate", claims.to_str().expect("utf-8 path")],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(
            "no --config and no ./converge.yaml: the built-in schema, policies and presets, and no tag source (give --config FILE)"
        ),
        "{}",
        stderr(&out)
    );
}
