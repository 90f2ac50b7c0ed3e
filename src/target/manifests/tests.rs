//! The manifests target on a temporary directory.

use std::collections::BTreeMap;

use super::*;
use crate::condition::Reason;
use crate::object::{self, shared};
use crate::render::{Digest, Object, Rendered, digest};
use crate::target::EnvironmentRecord;

/// `kind`/`name` of environment `e` (the Namespace is cluster-scoped).
fn id(kind: &str, name: &str) -> ObjectRef {
    ObjectRef {
        api_version: shared(if kind == "Deployment" {
            "apps/v1"
        } else {
            "v1"
        }),
        kind: object::kind(kind),
        namespace: (kind != "Namespace").then(|| Arc::from("e")),
        name: name.into(),
    }
}

fn object(kind: &str, name: &str, body: &str) -> Rendered {
    let object = Object {
        id: id(kind, name),
        digest: digest(body.as_bytes()),
    };
    Rendered {
        object,
        yaml: crate::render::Yaml::new(body.into(), kind == "Secret"),
    }
}

fn record() -> EnvironmentRecord {
    EnvironmentRecord {
        origin: None,
        env_type: "dev".into(),
        pool: "p".into(),
        owner: "o".into(),
        versions: BTreeMap::new(),
        expires_at: None,
        secrets: BTreeMap::new(),
        manifests: BTreeMap::new(),
    }
}

#[test]
fn apply_writes_lists_and_prunes_only_its_own_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let target = Manifests::new(dir.path().to_owned());
    let (ns, cm) = (
        object("Namespace", "e", "a: 1\n"),
        object("ConfigMap", "c", "b: 2\n"),
    );
    let rec = record();
    target
        .apply(&EnvironmentChange {
            name: "e",
            record: Some(&rec),
            upserts: vec![&ns, &cm],
            deletes: vec![],
        })
        .expect("applies");
    std::fs::write(dir.path().join("e/notes.txt"), "mine").expect("write");
    let inv = target.inventory().expect("inventory");
    assert_eq!(inv.environments["e"].objects.len(), 2);
    assert_eq!(
        std::fs::read_to_string(dir.path().join("e/namespace-e.yaml")).expect("read"),
        "a: 1\n"
    );

    target
        .apply(&EnvironmentChange {
            name: "e",
            record: None,
            upserts: vec![],
            deletes: vec![
                id("ConfigMap", "c"),
                id("Namespace", "e"),
                id("ConfigMap", "notes"),
            ],
        })
        .expect("removes");
    assert!(
        target
            .inventory()
            .expect("inventory")
            .environments
            .is_empty()
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("e/notes.txt")).expect("kept"),
        "mine"
    );
    assert!(!dir.path().join("e/namespace-e.yaml").exists());
}

#[test]
fn a_foreign_file_is_never_overwritten() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("e")).expect("mkdir");
    std::fs::write(dir.path().join("e/namespace-e.yaml"), "hand written").expect("write");
    let target = Manifests::new(dir.path().to_owned());
    let ns = object("Namespace", "e", "a: 1\n");
    let rec = record();
    let err = target
        .apply(&EnvironmentChange {
            name: "e",
            record: Some(&rec),
            upserts: vec![&ns],
            deletes: vec![],
        })
        .expect_err("refused");
    assert_eq!(err.reason(), Reason::ForeignObject);
    assert_eq!(
        std::fs::read_to_string(dir.path().join("e/namespace-e.yaml")).expect("read"),
        "hand written"
    );
}

#[test]
fn a_corrupt_inventory_is_an_error_not_an_empty_target() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("e")).expect("mkdir");
    std::fs::write(dir.path().join("e").join(INVENTORY_FILE), "{not json").expect("write");
    let err = Manifests::new(dir.path().to_owned())
        .inventory()
        .expect_err("corrupt");
    assert_eq!(err.reason(), Reason::InventoryCorrupt);
}
fn change<'a>(
    name: &'a str,
    record: Option<&'a EnvironmentRecord>,
    upserts: Vec<&'a Rendered>,
    deletes: &[&str],
) -> EnvironmentChange<'a> {
    let by_file = |file: &str| {
        let (kind, name) = match file.trim_end_matches(".yaml").split_once('-') {
            Some(("namespace", n)) => ("Namespace", n),
            Some(("configmap", n)) => ("ConfigMap", n),
            Some(("service", n)) => ("Service", n),
            _ => panic!("no kind for {file}"),
        };
        id(kind, name)
    };
    EnvironmentChange {
        name,
        record,
        upserts,
        deletes: deletes.iter().map(|d| by_file(d)).collect(),
    }
}

/// What a fresh process would read from `root`.
fn on_disk(root: &Path) -> Arc<Inventory> {
    Manifests::new(root.to_owned())
        .inventory()
        .expect("inventory")
}

fn entries(root: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(root)
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn the_inventory_in_memory_follows_every_apply_and_matches_the_disk() {
    let dir = tempfile::tempdir().expect("tempdir");
    let target = Manifests::new(dir.path().to_owned());
    assert!(target.inventory().expect("empty").environments.is_empty());
    let rec = record();
    let (ns, cm, cm2, svc) = (
        object("Namespace", "e", "a: 1\n"),
        object("ConfigMap", "c", "b: 2\n"),
        object("ConfigMap", "c", "b: 3\n"),
        object("Service", "s", "c: 4\n"),
    );
    let before = target.inventory().expect("inventory");
    let results = target.apply_all(&[
        change("e", Some(&rec), vec![&ns, &cm], &[]),
        change("f", Some(&rec), vec![&ns], &[]),
    ]);
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert!(
        before.environments.is_empty(),
        "a pass's inventory does not change under it"
    );
    assert_eq!(target.inventory().expect("memory"), on_disk(dir.path()));
    assert_eq!(entries(dir.path()), ["e", "f"], "no directory left aside");
    assert_eq!(
        entries(&dir.path().join("e")),
        [INVENTORY_FILE, "configmap-c.yaml", "namespace-e.yaml"]
    );

    target
        .apply(&change(
            "e",
            Some(&rec),
            vec![&cm2, &svc],
            &["namespace-e.yaml"],
        ))
        .expect("updates");
    let memory = target.inventory().expect("memory");
    assert_eq!(memory, on_disk(dir.path()));
    assert_eq!(
        memory.environments["e"].objects[&id("ConfigMap", "c")],
        cm2.object.digest
    );
    assert_eq!(
        entries(&dir.path().join("e")),
        [INVENTORY_FILE, "configmap-c.yaml", "service-s.yaml"]
    );

    target
        .apply(&change("f", None, vec![], &["namespace-e.yaml"]))
        .expect("removes");
    assert_eq!(target.inventory().expect("memory"), on_disk(dir.path()));
    assert_eq!(entries(dir.path()), ["e"]);
}

#[test]
fn reload_reads_the_disk_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let target = Manifests::new(dir.path().to_owned());
    let rec = record();
    let ns = object("Namespace", "e", "a: 1\n");
    target
        .apply(&change("e", Some(&rec), vec![&ns], &[]))
        .expect("applies");
    assert_eq!(target.inventory().expect("read").environments.len(), 1);
    std::fs::remove_dir_all(dir.path().join("e")).expect("rm");
    assert_eq!(target.inventory().expect("memory").environments.len(), 1);
    target.reload();
    assert!(target.inventory().expect("disk").environments.is_empty());
}

#[test]
fn a_failed_apply_leaves_the_inventory_in_memory_as_the_disk_has_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let target = Manifests::new(dir.path().to_owned());
    let rec = record();
    let (ns, cm) = (
        object("Namespace", "e", "a: 1\n"),
        object("ConfigMap", "c", "b: 2\n"),
    );
    target
        .apply(&change("e", Some(&rec), vec![&ns], &[]))
        .expect("applies");
    let _ = target.inventory().expect("loaded");
    // A foreign file in an existing environment; a file where a new
    // environment's directory would be staged.
    std::fs::write(dir.path().join("e/configmap-c.yaml"), "mine").expect("write");
    std::fs::write(dir.path().join(".converge-tmp-g"), "in the way").expect("write");
    let results = target.apply_all(&[
        change("e", Some(&rec), vec![&ns, &cm], &[]),
        change("f", Some(&rec), vec![&ns], &[]),
        change("g", Some(&rec), vec![&ns], &[]),
    ]);
    assert_eq!(
        results[0].as_ref().expect_err("foreign").reason(),
        Reason::ForeignObject
    );
    assert!(results[1].is_ok());
    assert_eq!(
        results[2].as_ref().expect_err("in the way").reason(),
        Reason::TargetIo
    );
    let memory = target.inventory().expect("memory");
    assert_eq!(memory, on_disk(dir.path()));
    assert_eq!(memory.environments.keys().collect::<Vec<_>>(), ["e", "f"]);
    assert_eq!(
        std::fs::read_to_string(dir.path().join("e/configmap-c.yaml")).expect("kept"),
        "mine"
    );
}

#[test]
fn directories_left_aside_by_a_crash_are_removed_and_nothing_else() {
    let dir = tempfile::tempdir().expect("tempdir");
    let aside = dir.path().join(".converge-tmp-e");
    std::fs::create_dir_all(&aside).expect("mkdir");
    std::fs::write(aside.join("namespace-e.yaml"), "half").expect("write");
    std::fs::create_dir_all(dir.path().join(".git")).expect("mkdir");
    std::fs::create_dir_all(dir.path().join(".converge-tmp-Not_Ours")).expect("mkdir");
    let target = Manifests::new(dir.path().to_owned());
    assert!(target.inventory().expect("read").environments.is_empty());
    let rec = record();
    let ns = object("Namespace", "f", "a: 1\n");
    target
        .apply(&change("f", Some(&rec), vec![&ns], &[]))
        .expect("applies");
    assert_eq!(entries(dir.path()), [".converge-tmp-Not_Ours", ".git", "f"]);
}

#[test]
fn the_inventory_file_lists_each_object_by_file_with_its_identity() {
    let dir = tempfile::tempdir().expect("tempdir");
    let target = Manifests::new(dir.path().to_owned());
    let rec = record();
    let (ns, deploy) = (
        object("Namespace", "e", "a: 1\n"),
        object("Deployment", "d", "b: 1\n"),
    );
    target
        .apply(&change("e", Some(&rec), vec![&ns, &deploy], &[]))
        .expect("applies");
    let written: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.path().join("e").join(INVENTORY_FILE)).expect("read"),
    )
    .expect("json");
    let expected = serde_json::json!({
        "format": 2,
        "environment": "e",
        "record": {
            "origin": null, "type": "dev", "pool": "p", "owner": "o",
            "versions": {}, "expires_at": null
        },
        "objects": {
            "namespace-e.yaml": {
                "apiVersion": "v1", "kind": "Namespace", "name": "e",
                "digest": ns.object.digest.to_string()
            },
            "deployment-d.yaml": {
                "apiVersion": "apps/v1", "kind": "Deployment", "namespace": "e", "name": "d",
                "digest": deploy.object.digest.to_string()
            }
        }
    });
    assert_eq!(written, expected);
    // A pending digest (an interrupted write) reads back as pending.
    let mut pending = expected.clone();
    pending["objects"]["namespace-e.yaml"]["digest"] = "".into();
    std::fs::write(
        dir.path().join("e").join(INVENTORY_FILE),
        serde_json::to_vec(&pending).expect("json"),
    )
    .expect("write");
    let live = on_disk(dir.path());
    assert!(live.environments["e"].objects[&id("Namespace", "e")].is_pending());
}

#[test]
fn a_format_1_inventory_is_read_from_its_object_files_and_upgraded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let env = dir.path().join("e");
    std::fs::create_dir_all(&env).expect("mkdir");
    std::fs::write(
        env.join("namespace-e.yaml"),
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: e\n",
    )
    .expect("write");
    std::fs::write(
        env.join("database-x.yaml"),
        "apiVersion: example.org/v1\nkind: Database\nmetadata:\n  name: x\n  namespace: e\n",
    )
    .expect("write");
    let v1 = serde_json::json!({
        "format": 1,
        "environment": "e",
        "record": {
            "origin": null, "type": "dev", "pool": "p", "owner": "o",
            "versions": {}, "expires_at": null
        },
        "objects": {
            "namespace-e.yaml": {"kind": "Namespace", "name": "e", "digest": ""},
            "database-x.yaml": {"kind": "Database", "name": "x", "digest": ""},
            "deployment-gone.yaml": {"kind": "Deployment", "name": "gone", "digest": ""}
        }
    });
    std::fs::write(
        env.join(INVENTORY_FILE),
        serde_json::to_vec(&v1).expect("json"),
    )
    .expect("write");
    let live = on_disk(dir.path());
    let ids: Vec<(String, Option<String>)> = live.environments["e"]
        .objects
        .keys()
        .map(|id| {
            (
                id.api_version.to_string(),
                id.namespace.as_deref().map(str::to_owned),
            )
        })
        .collect();
    assert_eq!(
        ids,
        [
            ("v1".to_owned(), None),
            ("apps/v1".to_owned(), Some("e".to_owned())),
            ("example.org/v1".to_owned(), Some("e".to_owned())),
        ],
        "from the files, and the built-in version of a kind whose file is gone"
    );
    let upgraded: serde_json::Value =
        serde_json::from_slice(&std::fs::read(env.join(INVENTORY_FILE)).expect("read"))
            .expect("json");
    assert_eq!(upgraded["format"], 2);
    assert_eq!(
        upgraded["objects"]["database-x.yaml"]["apiVersion"],
        "example.org/v1"
    );
    assert_eq!(
        on_disk(dir.path()),
        live,
        "the upgraded file reads the same"
    );
}

#[test]
fn an_inventory_under_its_legacy_name_is_renamed_and_applies_go_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rec = record();
    let (ns, cm) = (
        object("Namespace", "e", "a: 1\n"),
        object("ConfigMap", "c", "b: 2\n"),
    );
    Manifests::new(dir.path().to_owned())
        .apply(&change("e", Some(&rec), vec![&ns], &[]))
        .expect("applies");
    // As an earlier converge left it, with an interrupted write's temp file.
    let env = dir.path().join("e");
    std::fs::rename(env.join(INVENTORY_FILE), env.join(LEGACY_INVENTORY_FILE)).expect("rename");
    std::fs::write(env.join("..converge-inventory.json.converge-tmp"), "{").expect("write");
    let target = Manifests::new(dir.path().to_owned());
    let live = target.inventory().expect("read");
    assert_eq!(live.environments["e"].objects.len(), 1);
    assert_eq!(
        entries(&env),
        [
            "..converge-inventory.json.converge-tmp",
            INVENTORY_FILE,
            "namespace-e.yaml"
        ]
    );
    target
        .apply(&change("e", Some(&rec), vec![&ns, &cm], &[]))
        .expect("applies");
    assert_eq!(
        entries(&env),
        [INVENTORY_FILE, "configmap-c.yaml", "namespace-e.yaml"],
        "the stale temp file is gone, no file has a manifest extension but objects"
    );
    assert_eq!(target.inventory().expect("memory"), on_disk(dir.path()));
    // Both names (an older converge ran after this one): the current one
    // is the truth and the legacy one goes.
    std::fs::write(env.join(LEGACY_INVENTORY_FILE), "{\"stale\": true}").expect("write");
    let live = on_disk(dir.path());
    assert_eq!(live.environments["e"].objects.len(), 2);
    assert!(!env.join(LEGACY_INVENTORY_FILE).exists());
}

#[test]
fn an_inventory_entry_is_compact_and_well_known_strings_are_shared() {
    assert_eq!(
        std::mem::size_of::<(ObjectRef, Digest)>(),
        96,
        "four shared strings and a 32-byte digest"
    );
    let (a, b) = (object::kind("Deployment"), object::kind("Deployment"));
    assert!(Arc::ptr_eq(&a, &b));
}
