//! Stage 6, diff: desired objects x live inventory -> per-object changes.
//!
//! Pure: compares the digests of rendered objects with the digests the target
//! recorded when it applied them. An object whose recorded digest is empty (a
//! write that was interrupted) always differs, so the next pass rewrites it.

use std::collections::BTreeSet;

use crate::inventory::LiveEnvironment;
use crate::object::ObjectRef;
use crate::render::Object;

/// How one environment's objects differ from what is live.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ObjectDiff<'a> {
    pub creates: Vec<&'a Object>,
    pub updates: Vec<&'a Object>,
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
pub fn diff<'a>(desired: &'a [Object], live: Option<&'a LiveEnvironment>) -> ObjectDiff<'a> {
    let mut out = ObjectDiff::default();
    let Some(live) = live else {
        out.creates = desired.iter().collect();
        return out;
    };
    let mut wanted = BTreeSet::new();
    for object in desired {
        match live.objects.get(&object.id) {
            None => out.creates.push(object),
            Some(digest) if *digest != object.digest => out.updates.push(object),
            Some(_) => out.unchanged += 1,
        }
        wanted.insert(&object.id);
    }
    out.deletes = live
        .objects
        .keys()
        .filter(|id| !wanted.contains(id))
        .collect();
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use super::*;
    use crate::inventory::EnvironmentRecord;
    use crate::render::{Digest, digest};

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
            },
            objects: BTreeMap::from([
                (desired[0].id.clone(), desired[0].digest),
                (desired[1].id.clone(), digest(b"old")),
                (gone.id.clone(), Digest::PENDING),
            ]),
        };
        let d = diff(&desired, Some(&live));
        assert_eq!(d.unchanged, 1);
        assert_eq!(d.updates, vec![&desired[1]]);
        assert_eq!(d.creates, vec![&desired[2]]);
        assert_eq!(d.deletes, vec![&gone.id]);
        assert_eq!(diff(&desired, None).creates.len(), 3);
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
            },
            objects: BTreeMap::from([(old, digest(b"v1"))]),
        };
        let desired = [hpa];
        let d = diff(&desired, Some(&live));
        assert_eq!(
            (d.creates.len(), d.updates.len(), d.deletes.len()),
            (0, 1, 0)
        );
    }
}
