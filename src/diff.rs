//! Stage 6, diff: desired objects x live inventory -> per-object changes.
//!
//! Pure: compares the digests of rendered objects with the digests the target
//! recorded when it applied them. An object whose recorded digest is empty (a
//! write that was interrupted) always differs, so the next pass rewrites it.

use std::collections::BTreeMap;

use crate::render::Object;
use crate::target::LiveEnvironment;

/// How one environment's objects differ from what is live.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ObjectDiff<'a> {
    pub creates: Vec<&'a Object>,
    pub updates: Vec<&'a Object>,
    /// File names of live objects no longer desired.
    pub deletes: Vec<String>,
    pub unchanged: usize,
}

impl ObjectDiff<'_> {
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.creates.is_empty() && self.updates.is_empty() && self.deletes.is_empty()
    }
}

/// Diffs one environment: `desired` objects against its live record (if any).
#[must_use]
pub fn diff<'a>(desired: &'a [Object], live: Option<&LiveEnvironment>) -> ObjectDiff<'a> {
    let empty = BTreeMap::new();
    let live_objects = live.map_or(&empty, |l| &l.objects);
    let mut out = ObjectDiff::default();
    let mut wanted = std::collections::BTreeSet::new();
    for object in desired {
        let file = object.file_name();
        match live_objects.get(&file) {
            None => out.creates.push(object),
            Some(l) if l.digest != object.digest => out.updates.push(object),
            Some(_) => out.unchanged += 1,
        }
        wanted.insert(file);
    }
    out.deletes = live_objects
        .keys()
        .filter(|f| !wanted.contains(*f))
        .cloned()
        .collect();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::{Digest, digest};
    use crate::target::{EnvironmentRecord, LiveObject};

    fn object(kind: &str, name: &str, body: &str) -> Object {
        Object {
            kind: kind.into(),
            name: name.into(),
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
        let live_obj = |o: &Object, digest: Digest| (o.file_name(), LiveObject::of(o, digest));
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
                live_obj(&desired[0], desired[0].digest),
                live_obj(&desired[1], crate::render::digest(b"old")),
                (
                    "deployment-gone.yaml".to_owned(),
                    LiveObject {
                        kind: "Deployment".into(),
                        name: "gone".into(),
                        digest: Digest::PENDING,
                    },
                ),
            ]),
        };
        let d = diff(&desired, Some(&live));
        assert_eq!(d.unchanged, 1);
        assert_eq!(d.updates, vec![&desired[1]]);
        assert_eq!(d.creates, vec![&desired[2]]);
        assert_eq!(d.deletes, vec!["deployment-gone.yaml".to_owned()]);
        assert_eq!(diff(&desired, None).creates.len(), 3);
    }
}
