//! One environment's apply, phase by phase (stage, widen, replace, narrow,
//! clean up), each phase run across the batch between two filesystem syncs
//! (`Manifests::apply_all`).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::files::{Access, commit, create, remove_stale_temp_files, stage};
use super::inventory::inventory_bytes;
use super::{Error, INVENTORY_FILE, Manifests, TMP_DIR_PREFIX, file_name};
use crate::render::Digest;
use crate::target::{EnvironmentChange, EnvironmentRecord, LiveEnvironment};

/// What an environment's apply left, for the in-memory inventory.
pub(super) enum Outcome {
    /// Nothing of ours was there and nothing was written.
    Unchanged,
    Live(Box<LiveEnvironment>),
    Removed,
}

/// One environment's apply, phase by phase.
pub(super) struct Work<'c, 'a> {
    pub(super) change: &'c EnvironmentChange<'a>,
    pub(super) dir: PathBuf,
    /// The environment as the in-memory inventory has it; `None` when it has
    /// none or there is no in-memory inventory (then the disk tells).
    pub(super) known: Option<Arc<LiveEnvironment>>,
    pub(super) live: Option<LiveEnvironment>,
    /// A new environment, written whole into this directory and renamed into
    /// place (no per-file temp files).
    pub(super) aside: Option<PathBuf>,
    pub(super) widened: bool,
    /// Changed the directory since the last barrier.
    pub(super) dirty: bool,
    /// Remove the inventory and the directory at the end (environment gone).
    pub(super) remove: bool,
    pub(super) outcome: Outcome,
    pub(super) result: Result<(), Error>,
}

impl<'c, 'a> Work<'c, 'a> {
    pub(super) fn new(
        root: &Path,
        change: &'c EnvironmentChange<'a>,
        known: Option<Arc<LiveEnvironment>>,
    ) -> Self {
        Work {
            change,
            dir: root.join(change.name),
            known,
            live: None,
            aside: None,
            widened: false,
            dirty: false,
            remove: false,
            outcome: Outcome::Unchanged,
            result: Ok(()),
        }
    }

    pub(super) fn run(&mut self, phase: fn(&mut Self) -> Result<(), Error>) {
        if self.result.is_ok() {
            self.result = phase(self);
        }
    }

    pub(super) fn after(
        &mut self,
        synced: &Result<(), Error>,
        phase: fn(&mut Self) -> Result<(), Error>,
    ) {
        if let Err(e) = synced {
            if self.result.is_ok() {
                self.result = Err(Error::Io {
                    path: self.dir.display().to_string(),
                    op: "sync",
                    source: std::io::Error::other(e.to_string()),
                });
            }
            return;
        }
        self.run(phase);
    }

    pub(super) fn stage(&mut self) -> Result<(), Error> {
        let change = self.change;
        let known = match self.known.take() {
            Some(live) => Some(Arc::unwrap_or_clone(live)),
            // Not in memory: a directory there is someone else's (or from
            // before a reload); read what it says.
            None => match self.dir.symlink_metadata() {
                Ok(_) => Manifests::read_inventory(&self.dir, change.name)?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => match change.record {
                    Some(record) => return self.stage_aside(record),
                    None => return Ok(()), // nothing of ours is there
                },
                Err(e) => return Err(Manifests::io(&self.dir, "stat")(e)),
            },
        };
        let mut live = match known {
            Some(live) => live,
            None => match change.record {
                Some(record) => LiveEnvironment {
                    record: record.clone(),
                    objects: BTreeMap::new(),
                },
                None => return Ok(()), // nothing of ours is there
            },
        };
        if !change.upserts.is_empty() {
            std::fs::create_dir_all(&self.dir)
                .map_err(Manifests::io(&self.dir, "create directory"))?;
        }
        remove_stale_temp_files(&self.dir);
        // Never overwrite a file converge did not write.
        for rendered in &change.upserts {
            let id = &rendered.object.id;
            if live.objects.contains_key(id) {
                continue;
            }
            let path = self.dir.join(file_name(id));
            if path.symlink_metadata().is_ok() {
                return Err(Error::ForeignFile {
                    environment: change.name.to_owned(),
                    object: id.to_string(),
                    path: path.display().to_string(),
                });
            }
            live.objects.insert(id.clone(), Digest::PENDING);
            self.widened = true;
        }
        if self.widened {
            stage(
                &self.dir.join(INVENTORY_FILE),
                &inventory_bytes(change.name, &live),
                Access::Private,
            )?;
        }
        self.dirty |= self.widened || !change.upserts.is_empty();
        for rendered in &change.upserts {
            stage(
                &self.dir.join(file_name(&rendered.object.id)),
                rendered.yaml.as_bytes(),
                Access::of(rendered),
            )?;
        }
        self.live = Some(live);
        Ok(())
    }

    /// A new environment: every file, the final inventory included, goes
    /// straight into a directory aside, which appears in one rename (`widen`).
    pub(super) fn stage_aside(&mut self, record: &EnvironmentRecord) -> Result<(), Error> {
        let change = self.change;
        let root = self
            .dir
            .parent()
            .expect("an environment directory has a parent");
        let aside = root.join(format!("{TMP_DIR_PREFIX}{}", change.name));
        match std::fs::remove_dir_all(&aside) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Manifests::io(&aside, "delete")(e)),
        }
        std::fs::create_dir_all(root).map_err(Manifests::io(root, "create directory"))?;
        std::fs::create_dir(&aside).map_err(Manifests::io(&aside, "create directory"))?;
        self.aside = Some(aside.clone());
        self.dirty = true;
        let mut objects = Vec::with_capacity(change.upserts.len());
        for rendered in &change.upserts {
            let object = &rendered.object;
            let file = file_name(&object.id);
            let path = aside.join(&file);
            create(&path, Access::of(rendered))
                .and_then(|mut f| f.write_all(rendered.yaml.as_bytes()))
                .map_err(Manifests::io(&self.dir.join(&file), "write"))?;
            objects.push((object.id.clone(), object.digest));
        }
        let live = LiveEnvironment {
            record: record.clone(),
            objects: objects.into_iter().collect(),
        };
        let inventory = aside.join(INVENTORY_FILE);
        create(&inventory, Access::Private)
            .and_then(|mut f| f.write_all(&inventory_bytes(change.name, &live)))
            .map_err(Manifests::io(&self.dir.join(INVENTORY_FILE), "write"))?;
        self.live = Some(live);
        Ok(())
    }

    pub(super) fn widen(&mut self) -> Result<(), Error> {
        if let Some(aside) = &self.aside {
            self.dirty = true;
            std::fs::rename(aside, &self.dir).map_err(Manifests::io(&self.dir, "rename"))?;
            self.aside = None;
            self.outcome = Outcome::Live(Box::new(self.live.take().expect("staged aside")));
            return Ok(());
        }
        if self.widened {
            self.dirty = true;
            commit(&self.dir.join(INVENTORY_FILE))?;
        }
        Ok(())
    }

    pub(super) fn replace(&mut self) -> Result<(), Error> {
        let Some(live) = self.live.as_mut() else {
            return Ok(());
        };
        self.dirty = true;
        let change = self.change;
        for rendered in &change.upserts {
            let object = &rendered.object;
            commit(&self.dir.join(file_name(&object.id)))?;
            // Replaces the key too: the object may be written under a new version.
            live.objects.remove(&object.id);
            live.objects.insert(object.id.clone(), object.digest);
        }
        for id in &change.deletes {
            if change
                .upserts
                .iter()
                .any(|r| file_name(&r.object.id) == file_name(id))
            {
                continue; // the same file, written above under another version
            }
            if live.objects.remove(id).is_none() {
                continue; // only files converge wrote
            }
            let path = self.dir.join(file_name(id));
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Manifests::io(&path, "delete")(e)),
            }
        }
        match change.record {
            Some(record) => live.record = record.clone(),
            None if live.objects.is_empty() => {
                self.remove = true;
                return Ok(());
            }
            None => {}
        }
        stage(
            &self.dir.join(INVENTORY_FILE),
            &inventory_bytes(change.name, live),
            Access::Private,
        )
    }

    pub(super) fn narrow(&mut self) -> Result<(), Error> {
        let Some(live) = self.live.take() else {
            return Ok(());
        };
        self.dirty = true;
        let inventory = self.dir.join(INVENTORY_FILE);
        if self.remove {
            std::fs::remove_file(&inventory).map_err(Manifests::io(&inventory, "delete"))?;
            // Only removes the directory when nothing foreign is left in it.
            let _ = std::fs::remove_dir(&self.dir);
            self.outcome = Outcome::Removed;
            return Ok(());
        }
        commit(&inventory)?;
        self.outcome = Outcome::Live(Box::new(live));
        Ok(())
    }

    /// Removes a new environment's directory aside if it never appeared.
    pub(super) fn clean_up(&mut self) {
        if let Some(aside) = self.aside.take() {
            let _ = std::fs::remove_dir_all(aside);
        }
    }
}
