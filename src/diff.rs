//! Stage 6, diff: desired objects x live inventory -> per-object changes.
//!
//! Pure: compares the digests of rendered objects with the digests the target
//! recorded when it applied them. An object whose recorded digest is empty (a
//! write that was interrupted) always differs, so the next pass rewrites it.
//!
//! [`fields`] goes one level deeper for a target that can show it: it
//! compares a live object with the API server's dry-run result of applying
//! the desired one and lists the fields that would change, with compact,
//! abbreviated values, skipping what the server manages itself and never
//! showing a Secret's values.

use std::collections::BTreeSet;
use std::fmt;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::inventory::{DesiredObjects, LiveEnvironment};
use crate::object::ObjectRef;

/// How one environment's objects differ from what is live.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ObjectDiff<'a> {
    pub creates: Vec<&'a ObjectRef>,
    pub updates: Vec<&'a ObjectRef>,
    /// Live objects no longer desired.
    pub deletes: Vec<&'a ObjectRef>,
    pub unchanged: usize,
}

impl ObjectDiff<'_> {
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.creates.is_empty() && self.updates.is_empty() && self.deletes.is_empty()
    }
}

/// Diffs one environment: `desired` objects against its live record (if
/// any), by object identity.
#[must_use]
pub fn diff<'a>(desired: &'a DesiredObjects, live: Option<&'a LiveEnvironment>) -> ObjectDiff<'a> {
    let mut out = ObjectDiff::default();
    let Some(live) = live else {
        out.creates = desired.iter().map(|(id, _)| id).collect();
        return out;
    };
    // Desired as this very record: nothing differs.
    if let DesiredObjects::Applied(held) = desired
        && std::ptr::eq(held.as_ref(), live)
    {
        out.unchanged = live.objects.len();
        return out;
    }
    let mut wanted = BTreeSet::new();
    for (id, digest) in desired.iter() {
        match live.objects.get(id) {
            None => out.creates.push(id),
            Some(have) if *have != digest => out.updates.push(id),
            Some(_) => out.unchanged += 1,
        }
        wanted.insert(id);
    }
    out.deletes = live
        .objects
        .keys()
        .filter(|id| !wanted.contains(id))
        .collect();
    out
}

/// One field that would change: where, and its compact JSON value before and
/// after (`None`: absent, or a Secret value, which is never shown).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldChange {
    /// `spec.replicas`, `metadata.labels["app.kubernetes.io/name"]`,
    /// `spec.template.spec.containers[name=user-service].image`.
    pub path: String,
    pub from: Option<String>,
    pub to: Option<String>,
}

impl fmt::Display for FieldChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.from, &self.to) {
            (None, None) => write!(f, "{}: changed (value hidden)", self.path),
            (from, to) => write!(
                f,
                "{}: {} -> {}",
                self.path,
                from.as_deref().unwrap_or("(none)"),
                to.as_deref().unwrap_or("(none)")
            ),
        }
    }
}

/// Metadata the API server writes itself: never a change.
const SERVER_METADATA: &[&str] = &[
    "managedFields",
    "resourceVersion",
    "generation",
    "uid",
    "creationTimestamp",
    "selfLink",
];

const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// The longest value shown whole, in characters.
const SHOWN: usize = 80;

/// Characters of unchanged text kept before a change in a long value.
const CONTEXT: usize = 20;

/// The fields that differ between `live` and `desired` (the server's
/// dry-run result of applying the desired object), in path order: object
/// keys sorted, lists of objects that all have a distinct `name` matched by
/// name, other lists of objects of equal length by index, any other list as
/// one value. A field present on one side only is one change with the whole
/// value. Server-managed fields (`status`, `metadata.managedFields`,
/// `resourceVersion`, `generation`, `uid`, `creationTimestamp`, `selfLink`
/// and the `kubectl.kubernetes.io/last-applied-configuration` annotation)
/// are ignored. With `secret`, the values under `data` and `stringData` are
/// never shown: each changed key is reported with `from` and `to` `None`.
#[must_use]
pub fn fields(live: &Value, desired: &Value, secret: bool) -> Vec<FieldChange> {
    let mut out = Vec::new();
    let (live, desired) = (comparable(live), comparable(desired));
    let secret_keys: &[&str] = if secret { &["data", "stringData"] } else { &[] };
    match (&live, &desired) {
        (Value::Object(live), Value::Object(desired)) => {
            for key in keys(live, desired) {
                let path = Path::root().key(key);
                let (from, to) = (live.get(key), desired.get(key));
                if secret_keys.contains(&key) {
                    hidden(&mut out, &path, from, to);
                } else {
                    walk(&mut out, &path, from, to);
                }
            }
        }
        // Not objects: a Secret's are still not shown, as one change of the whole.
        _ if secret => hidden(&mut out, &Path::root(), Some(&live), Some(&desired)),
        _ => walk(&mut out, &Path::root(), Some(&live), Some(&desired)),
    }
    out
}

/// `object` without what the server manages.
fn comparable(object: &Value) -> Value {
    let mut object = object.clone();
    let Some(top) = object.as_object_mut() else {
        return object;
    };
    top.remove("status");
    if let Some(metadata) = top.get_mut("metadata").and_then(Value::as_object_mut) {
        for key in SERVER_METADATA {
            metadata.remove(*key);
        }
        if let Some(annotations) = metadata
            .get_mut("annotations")
            .and_then(Value::as_object_mut)
            && annotations.remove(LAST_APPLIED).is_some()
            && annotations.is_empty()
        {
            metadata.remove("annotations");
        }
    }
    object
}

/// The keys of two objects, sorted.
fn keys<'a>(a: &'a Map<String, Value>, b: &'a Map<String, Value>) -> BTreeSet<&'a str> {
    a.keys().chain(b.keys()).map(String::as_str).collect()
}

/// A field path being built.
#[derive(Debug, Clone)]
struct Path(String);

impl Path {
    fn root() -> Path {
        Path(String::new())
    }

    /// `.key`, or `["key"]` when the key is not a plain word.
    fn key(&self, key: &str) -> Path {
        let plain = key.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !plain {
            return Path(format!("{}[{}]", self.0, Value::from(key)));
        }
        if self.0.is_empty() {
            Path(key.to_owned())
        } else {
            Path(format!("{}.{key}", self.0))
        }
    }

    /// `[name=x]`, quoted when the name has brackets, quotes or spaces.
    fn named(&self, name: &str) -> Path {
        let plain = !name.is_empty()
            && !name
                .chars()
                .any(|c| c.is_whitespace() || matches!(c, '[' | ']' | '"' | '='));
        if plain {
            Path(format!("{}[name={name}]", self.0))
        } else {
            Path(format!("{}[name={}]", self.0, Value::from(name)))
        }
    }

    fn index(&self, i: usize) -> Path {
        Path(format!("{}[{i}]", self.0))
    }
}

fn walk(out: &mut Vec<FieldChange>, path: &Path, from: Option<&Value>, to: Option<&Value>) {
    if from == to {
        return;
    }
    match (from, to) {
        (Some(Value::Object(a)), Some(Value::Object(b))) => {
            for key in keys(a, b) {
                walk(out, &path.key(key), a.get(key), b.get(key));
            }
        }
        (Some(Value::Array(a)), Some(Value::Array(b))) => {
            if let (Some(names_a), Some(names_b)) = (names(a), names(b)) {
                for (name, item) in names_b.iter().zip(b) {
                    let old = names_a.iter().position(|n| n == name).map(|i| &a[i]);
                    walk(out, &path.named(name), old, Some(item));
                }
                for (name, item) in names_a.iter().zip(a) {
                    if !names_b.contains(name) {
                        walk(out, &path.named(name), Some(item), None);
                    }
                }
            } else if a.len() == b.len() && a.iter().chain(b).any(Value::is_object) {
                for (i, (x, y)) in a.iter().zip(b).enumerate() {
                    walk(out, &path.index(i), Some(x), Some(y));
                }
            } else {
                out.push(change(path, from, to));
            }
        }
        _ => out.push(change(path, from, to)),
    }
}

/// The `name` of every item when all items are objects with distinct string
/// names (an empty list qualifies: every item of the other side is added).
fn names(items: &[Value]) -> Option<Vec<&str>> {
    let names: Vec<&str> = items
        .iter()
        .map(|v| v.get("name").and_then(Value::as_str))
        .collect::<Option<_>>()?;
    let distinct: BTreeSet<&str> = names.iter().copied().collect();
    (distinct.len() == names.len()).then_some(names)
}

/// A Secret's `data` or `stringData`: which keys changed, never their values.
fn hidden(out: &mut Vec<FieldChange>, path: &Path, from: Option<&Value>, to: Option<&Value>) {
    if from == to {
        return;
    }
    let empty = Map::new();
    let (a, b) = (
        from.map_or(Some(&empty), Value::as_object),
        to.map_or(Some(&empty), Value::as_object),
    );
    let change = |path: &Path| FieldChange {
        path: path.0.clone(),
        from: None,
        to: None,
    };
    match (a, b) {
        (Some(a), Some(b)) => {
            for key in keys(a, b) {
                if a.get(key) != b.get(key) {
                    out.push(change(&path.key(key)));
                }
            }
        }
        _ => out.push(change(path)),
    }
}

fn change(path: &Path, from: Option<&Value>, to: Option<&Value>) -> FieldChange {
    let (from, to) = (from.map(Value::to_string), to.map(Value::to_string));
    let (from, to) = match (from, to) {
        (Some(a), Some(b)) => {
            let (a, b) = abbreviate_pair(&a, &b);
            (Some(a), Some(b))
        }
        (a, b) => (a.map(|a| abbreviate(&a)), b.map(|b| abbreviate(&b))),
    };
    FieldChange {
        path: path.0.clone(),
        from,
        to,
    }
}

/// `text`, or its first [`SHOWN`] characters and an ellipsis.
fn abbreviate(text: &str) -> String {
    match text.char_indices().nth(SHOWN) {
        None => text.to_owned(),
        Some((end, _)) => format!("{}…", &text[..end]),
    }
}

/// Two renderings of one field, each cut (when longer than [`SHOWN`]) to a
/// window that starts a little before the first character where they differ,
/// so that a change deep inside a long value stays visible.
fn abbreviate_pair(a: &str, b: &str) -> (String, String) {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let prefix = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let window = |s: &[char]| -> String {
        if s.len() <= SHOWN {
            return s.iter().collect();
        }
        let start = prefix.saturating_sub(CONTEXT).min(s.len() - SHOWN);
        let end = start + SHOWN;
        let mut out = String::new();
        if start > 0 {
            out.push('…');
        }
        out.extend(&s[start..end]);
        if end < s.len() {
            out.push('…');
        }
        out
    };
    (window(&a), window(&b))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use super::*;
    use crate::inventory::EnvironmentRecord;
    use crate::render::{Digest, Object, digest};

    fn object(kind: &str, name: &str, body: &str) -> Object {
        Object {
            id: ObjectRef {
                api_version: "v1".into(),
                kind: kind.into(),
                namespace: (kind != "Namespace").then(|| Arc::from("e")),
                name: name.into(),
            },
            digest: digest(body.as_bytes()),
        }
    }

    #[test]
    fn creates_updates_deletes_and_unchanged() {
        let desired = vec![
            object("Namespace", "e", "a"),
            object("ConfigMap", "c", "new"),
            object("Service", "s", "s"),
        ];
        let gone = object("Deployment", "gone", "");
        let live = LiveEnvironment {
            record: EnvironmentRecord {
                origin: None,
                env_type: "dev".into(),
                pool: "p".into(),
                owner: "o".into(),
                versions: BTreeMap::new(),
                expires_at: None,
                secrets: BTreeMap::new(),
                manifests: BTreeMap::new(),
            },
            objects: BTreeMap::from([
                (desired[0].id.clone(), desired[0].digest),
                (desired[1].id.clone(), digest(b"old")),
                (gone.id.clone(), Digest::PENDING),
            ]),
        };
        let rendered = DesiredObjects::Rendered(desired.clone());
        let d = diff(&rendered, Some(&live));
        assert_eq!(d.unchanged, 1);
        assert_eq!(d.updates, vec![&desired[1].id]);
        assert_eq!(d.creates, vec![&desired[2].id]);
        assert_eq!(d.deletes, vec![&gone.id]);
        assert_eq!(diff(&rendered, None).creates.len(), 3);
        // Desired as the target's own record of them: the same answer.
        let live = Arc::new(live);
        let applied = DesiredObjects::Applied(live.clone());
        assert!(applied.held_by(&live) && !rendered.held_by(&live));
        let same = diff(&applied, Some(&live));
        assert!(same.is_empty());
        assert_eq!(same.unchanged, 3);
        let mut now = (*live).clone();
        now.objects.remove(&desired[0].id);
        let d = diff(&applied, Some(&now));
        assert_eq!(d.creates, vec![&desired[0].id]);
        assert_eq!((d.updates.len(), d.deletes.len(), d.unchanged), (0, 0, 2));
    }

    #[test]
    fn a_new_api_version_of_an_object_is_an_update_not_a_create_and_a_delete() {
        let mut hpa = object("HorizontalPodAutoscaler", "h", "v2");
        hpa.id.api_version = "autoscaling/v2".into();
        let mut old = hpa.id.clone();
        old.api_version = "autoscaling/v1".into();
        let live = LiveEnvironment {
            record: EnvironmentRecord {
                origin: None,
                env_type: "dev".into(),
                pool: "p".into(),
                owner: "o".into(),
                versions: BTreeMap::new(),
                expires_at: None,
                secrets: BTreeMap::new(),
                manifests: BTreeMap::new(),
            },
            objects: BTreeMap::from([(old, digest(b"v1"))]),
        };
        let desired = DesiredObjects::Rendered(vec![hpa]);
        let d = diff(&desired, Some(&live));
        assert_eq!(
            (d.creates.len(), d.updates.len(), d.deletes.len()),
            (0, 1, 0)
        );
    }

    use serde_json::json;

    fn changes(list: &[FieldChange]) -> Vec<(&str, Option<&str>, Option<&str>)> {
        list.iter()
            .map(|c| (c.path.as_str(), c.from.as_deref(), c.to.as_deref()))
            .collect()
    }

    /// A Deployment as the API server returns it (server-side applied by
    /// converge, once edited by kubectl long ago).
    fn live_deployment() -> Value {
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {
                "name": "user-service",
                "namespace": "pr-1234",
                "uid": "6f1b7a52-1f0e-4a55-9a3c-2b8f0c6d9e11",
                "resourceVersion": "48213",
                "generation": 3,
                "creationTimestamp": "2026-11-30T09:12:44Z",
                "labels": {
                    "app.kubernetes.io/name": "user-service",
                    "app.kubernetes.io/managed-by": "converge",
                    "converge.dev/environment": "pr-1234"
                },
                "annotations": {
                    "deployment.kubernetes.io/revision": "3",
                    "kubectl.kubernetes.io/last-applied-configuration": "{\"apiVersion\":\"apps/v1\",\"kind\":\"Deployment\"}"
                },
                "managedFields": [{
                    "manager": "converge", "operation": "Apply", "apiVersion": "apps/v1",
                    "time": "2026-11-30T09:12:44Z", "fieldsType": "FieldsV1",
                    "fieldsV1": {"f:spec": {"f:replicas": {}}}
                }]
            },
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app.kubernetes.io/name": "user-service"}},
                "template": {
                    "metadata": {"labels": {"app.kubernetes.io/name": "user-service"}},
                    "spec": {
                        "containers": [{
                            "name": "user-service",
                            "image": "registry.example.com/user-service:1.4.2",
                            "args": ["--port=8080", "--log-level=info"],
                            "env": [
                                {"name": "DATABASE_URL", "valueFrom": {"secretKeyRef": {"name": "db", "key": "url"}}},
                                {"name": "LOG_FORMAT", "value": "json"}
                            ],
                            "ports": [{"containerPort": 8080, "protocol": "TCP"}],
                            "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}},
                            "volumeMounts": [{"name": "cache", "mountPath": "/cache"}]
                        }],
                        "volumes": [{"name": "cache", "emptyDir": {}}],
                        "tolerations": [{"key": "spot", "operator": "Exists", "effect": "NoSchedule"}]
                    }
                },
                "progressDeadlineSeconds": 600
            },
            "status": {
                "observedGeneration": 3, "replicas": 2, "updatedReplicas": 2,
                "readyReplicas": 2, "availableReplicas": 2
            }
        })
    }

    #[test]
    fn an_unchanged_dry_run_differs_only_in_server_managed_fields_and_is_no_change() {
        let live = live_deployment();
        let mut dry_run = live.clone();
        dry_run["metadata"]["resourceVersion"] = json!("48977");
        dry_run["metadata"]["managedFields"][0]["time"] = json!("2026-11-30T11:02:13Z");
        dry_run["metadata"]["annotations"]
            .as_object_mut()
            .expect("annotations")
            .remove("kubectl.kubernetes.io/last-applied-configuration");
        dry_run["status"]["readyReplicas"] = json!(1);
        assert_eq!(fields(&live, &dry_run, false), vec![]);
        // Without any other annotation, the annotations map goes with it.
        let mut bare = live.clone();
        bare["metadata"]["annotations"] =
            json!({"kubectl.kubernetes.io/last-applied-configuration": "{}"});
        let mut bare_dry_run = bare.clone();
        bare_dry_run["metadata"]
            .as_object_mut()
            .expect("metadata")
            .remove("annotations");
        assert_eq!(fields(&bare, &bare_dry_run, false), vec![]);
    }

    #[test]
    fn a_deployment_update_lists_each_changed_field_with_compact_values() {
        let live = live_deployment();
        let mut dry_run = live.clone();
        dry_run["metadata"]["generation"] = json!(4);
        dry_run["metadata"]["resourceVersion"] = json!("48977");
        dry_run["metadata"]["labels"]["team"] = json!("payments");
        dry_run["spec"]["replicas"] = json!(3);
        let spec = &mut dry_run["spec"]["template"]["spec"];
        let app = &mut spec["containers"][0];
        app["image"] = json!("registry.example.com/user-service:1.5.0");
        app["args"] = json!(["--port=8080", "--log-level=debug"]);
        app["env"] = json!([
            {"name": "DATABASE_URL", "valueFrom": {"secretKeyRef": {"name": "db", "key": "url"}}},
            {"name": "FEATURE_FLAGS", "value": "checkout-v2"}
        ]);
        app["resources"]["limits"] = json!({"memory": "256Mi"});
        spec["containers"]
            .as_array_mut()
            .expect("containers")
            .insert(
                0,
                json!({"name": "envoy", "image": "envoyproxy/envoy:v1.34.1"}),
            );
        spec["tolerations"][0]["effect"] = json!("NoExecute");
        spec.as_object_mut().expect("pod spec").remove("volumes");
        assert_eq!(
            changes(&fields(&live, &dry_run, false)),
            vec![
                ("metadata.labels.team", None, Some("\"payments\"")),
                ("spec.replicas", Some("2"), Some("3")),
                (
                    "spec.template.spec.containers[name=envoy]",
                    None,
                    Some(r#"{"name":"envoy","image":"envoyproxy/envoy:v1.34.1"}"#)
                ),
                (
                    "spec.template.spec.containers[name=user-service].args",
                    Some(r#"["--port=8080","--log-level=info"]"#),
                    Some(r#"["--port=8080","--log-level=debug"]"#)
                ),
                (
                    "spec.template.spec.containers[name=user-service].env[name=FEATURE_FLAGS]",
                    None,
                    Some(r#"{"name":"FEATURE_FLAGS","value":"checkout-v2"}"#)
                ),
                (
                    "spec.template.spec.containers[name=user-service].env[name=LOG_FORMAT]",
                    Some(r#"{"name":"LOG_FORMAT","value":"json"}"#),
                    None
                ),
                (
                    "spec.template.spec.containers[name=user-service].image",
                    Some("\"registry.example.com/user-service:1.4.2\""),
                    Some("\"registry.example.com/user-service:1.5.0\"")
                ),
                (
                    "spec.template.spec.containers[name=user-service].resources.limits",
                    None,
                    Some(r#"{"memory":"256Mi"}"#)
                ),
                (
                    "spec.template.spec.tolerations[0].effect",
                    Some("\"NoSchedule\""),
                    Some("\"NoExecute\"")
                ),
                (
                    "spec.template.spec.volumes",
                    Some(r#"[{"name":"cache","emptyDir":{}}]"#),
                    None
                ),
            ]
        );
    }

    #[test]
    fn keys_and_names_that_are_not_plain_words_are_quoted_in_paths() {
        let live = json!({
            "metadata": {"labels": {"app.kubernetes.io/name": "a", "tier": "web"}},
            "data": {"application.yaml": "x: 1", "2fa": "on", "log-level": "info"},
            "items": [{"name": "odd name]", "v": 1}, {"name": "a=b", "v": 1}]
        });
        let desired = json!({
            "metadata": {"labels": {"app.kubernetes.io/name": "b", "tier": "web"}},
            "data": {"application.yaml": "x: 2", "2fa": "off", "log-level": "debug"},
            "items": [{"name": "odd name]", "v": 2}, {"name": "a=b", "v": 2}]
        });
        let paths: Vec<String> = fields(&live, &desired, false)
            .into_iter()
            .map(|c| c.path)
            .collect();
        assert_eq!(
            paths,
            [
                r#"data["2fa"]"#,
                r#"data["application.yaml"]"#,
                "data.log-level",
                r#"items[name="odd name]"].v"#,
                r#"items[name="a=b"].v"#,
                r#"metadata.labels["app.kubernetes.io/name"]"#,
            ]
        );
    }

    #[test]
    fn lists_fall_back_to_indexes_or_whole_values_when_names_cannot_match_items() {
        // The same volume mounted twice: names are not distinct.
        let live = json!({"volumeMounts": [
            {"name": "config", "mountPath": "/etc/app", "subPath": "app"},
            {"name": "config", "mountPath": "/etc/nginx", "subPath": "nginx"}
        ]});
        let mut desired = live.clone();
        desired["volumeMounts"][1]["mountPath"] = json!("/etc/nginx/conf.d");
        assert_eq!(
            changes(&fields(&live, &desired, false)),
            vec![(
                "volumeMounts[1].mountPath",
                Some("\"/etc/nginx\""),
                Some("\"/etc/nginx/conf.d\"")
            )]
        );
        // A Service's ports without names, one added: the list is one value.
        let live = json!({"spec": {"ports": [{"port": 80, "targetPort": 8080}]}});
        let desired = json!({"spec": {"ports": [{"port": 80, "targetPort": 8080}, {"port": 443, "targetPort": 8443}]}});
        assert_eq!(
            changes(&fields(&live, &desired, false)),
            vec![(
                "spec.ports",
                Some(r#"[{"port":80,"targetPort":8080}]"#),
                Some(r#"[{"port":80,"targetPort":8080},{"port":443,"targetPort":8443}]"#)
            )]
        );
        // A value that changes type is one change.
        let live = json!({"spec": {"strategy": "Recreate"}});
        let desired = json!({"spec": {"strategy": {"type": "RollingUpdate"}}});
        assert_eq!(
            changes(&fields(&live, &desired, false)),
            vec![(
                "spec.strategy",
                Some("\"Recreate\""),
                Some(r#"{"type":"RollingUpdate"}"#)
            )]
        );
    }

    #[test]
    fn a_secrets_values_are_never_shown_only_which_keys_changed() {
        let live = json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": "db", "namespace": "pr-1234", "resourceVersion": "5120",
                "labels": {"converge.dev/environment": "pr-1234"},
                "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{\"data\":{\"password\":\"aHVudGVyMg==\"}}"}
            },
            "type": "Opaque",
            "data": {
                "password": "aHVudGVyMg==",
                "url": "cG9zdGdyZXM6Ly9kYi9hcHA=",
                "legacy": "b2xk"
            }
        });
        let dry_run = json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": "db", "namespace": "pr-1234", "resourceVersion": "5121",
                "labels": {"converge.dev/environment": "pr-1234", "team": "payments"}
            },
            "type": "Opaque",
            "data": {
                "password": "czNjcjN0LXJvdGF0ZWQ=",
                "url": "cG9zdGdyZXM6Ly9kYi9hcHA=",
                "api-key": "a2V5LTEyMw=="
            },
            "stringData": {"token": "plain-text-token"}
        });
        let found = fields(&live, &dry_run, true);
        assert_eq!(
            changes(&found),
            vec![
                ("data.api-key", None, None),
                ("data.legacy", None, None),
                ("data.password", None, None),
                ("metadata.labels.team", None, Some("\"payments\"")),
                ("stringData.token", None, None),
            ]
        );
        let shown = format!("{found:?} {}", serde_json::to_string(&found).expect("json"));
        for value in ["aHVudGVyMg", "czNjcjN0", "a2V5", "b2xk", "plain-text-token"] {
            assert!(!shown.contains(value), "{value} leaked: {shown}");
        }
        // Data that is not a map is still hidden, as one change.
        let mut odd = live.clone();
        odd["data"] = json!("c2VjcmV0");
        assert_eq!(
            changes(&fields(&odd, &live, true)),
            vec![("data", None, None)]
        );
        assert_eq!(
            changes(&fields(&json!("c2VjcmV0"), &json!(["b2xk"]), true)),
            vec![("", None, None)]
        );
        // Without `secret`, data is data (a ConfigMap's is shown).
        assert_eq!(
            changes(&fields(&live, &dry_run, false))[0],
            ("data.api-key", None, Some("\"a2V5LTEyMw==\""))
        );
    }

    #[test]
    fn long_values_are_abbreviated_around_the_first_difference() {
        let config = |level: &str| {
            format!(
                "server:\n  port: 8080\n  shutdown: graceful\nlogging:\n  format: json\n  level: {level}\n\
                 database:\n  pool: 20\n  timeout: 30s\ncache:\n  ttl: 300s\n  size: 10000\n"
            )
        };
        let live = json!({"data": {"application.yaml": config("info")}});
        let desired = json!({"data": {"application.yaml": config("debug")}});
        let found = fields(&live, &desired, false);
        let (from, to) = (
            found[0].from.as_deref().expect("from"),
            found[0].to.as_deref().expect("to"),
        );
        assert!(from.starts_with('…') && from.ends_with('…'), "{from}");
        assert!(from.contains(r"level: info\ndatabase"), "{from}");
        assert!(to.contains(r"level: debug\ndatabase"), "{to}");
        for side in [from, to] {
            assert!(side.chars().count() <= SHOWN + 2, "{side}");
        }
        // A change near the end keeps the end; an added long value keeps its start.
        let digest = |d: char| {
            json!(format!(
                "registry.example.com/user-service@sha256:{}",
                d.to_string().repeat(64)
            ))
        };
        let found = fields(
            &json!({"image": digest('a')}),
            &json!({"image": digest('b')}),
            false,
        );
        let to = found[0].to.as_deref().expect("to");
        assert!(to.starts_with('…') && to.contains("@sha256:bbbb"), "{to}");
        let found = fields(&json!({}), &json!({"image": digest('c')}), false);
        let to = found[0].to.as_deref().expect("to");
        assert!(
            to.starts_with("\"registry.example.com") && to.ends_with('…'),
            "{to}"
        );
        assert_eq!(to.chars().count(), SHOWN + 1);
        // Short values are whole, multi-byte characters are never split.
        assert_eq!(abbreviate("\"ünïcødé\""), "\"ünïcødé\"");
        assert_eq!(abbreviate(&"é".repeat(100)).chars().count(), SHOWN + 1);
    }

    #[test]
    fn a_field_change_reads_as_path_from_and_to() {
        let change = |path: &str, from: Option<&str>, to: Option<&str>| FieldChange {
            path: path.to_owned(),
            from: from.map(str::to_owned),
            to: to.map(str::to_owned),
        };
        assert_eq!(
            change("spec.replicas", Some("2"), Some("3")).to_string(),
            "spec.replicas: 2 -> 3"
        );
        assert_eq!(
            change("metadata.labels.team", None, Some("\"payments\"")).to_string(),
            "metadata.labels.team: (none) -> \"payments\""
        );
        assert_eq!(
            change("data.password", None, None).to_string(),
            "data.password: changed (value hidden)"
        );
    }
}
