//! `Environment` resources: each environment's status where `kubectl` reads
//! it (`kubectl get environments`, short name `cenv`).
//!
//! The Kubernetes target publishes one `environments.converge.dev` object
//! per environment in its inventory Namespace, named after the environment:
//! the claim's type, pool, owner and source as `spec`, and what converge last
//! saw (ready, reason, message, short versions, conditions) as `status`. They
//! are an output only: converge never reads them to decide anything, and the
//! cluster's inventory `ConfigMap`s stay the truth about what is applied.
//!
//! **Off the pass.** [`Publisher::publish`] runs on the pass's thread but only
//! compares a digest of each changed environment's document with the one it
//! last handed over and queues the differing ones; a thread of its own (its
//! own runtime and client) writes each batch, `concurrency` requests at a
//! time, with server-side apply under converge's field manager (`force`):
//! the object when its spec or labels change, then its status subresource.
//! A failed write is logged, counted
//! (`converge_environment_resource_writes_total{op,result}`) and retried
//! with backoff; it never fails an environment's apply.
//!
//! **Read-only for everyone else.** The thread also watches the Environments
//! of the Namespace: one whose content differs from what converge last
//! published (a user's edit of its status) is written again, and one deleted
//! by hand is published again. An environment converge forgets (deleted,
//! no longer claimed) has its Environment deleted; at start and on each
//! resync the Environments of this installation that name no environment
//! are deleted (one LIST), with shards only those this replica owns.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::{StreamExt, stream};
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde::Serialize;
use serde_json::Value;

use crate::render::{ENVIRONMENT_LABEL, MANAGED_BY};
use crate::status::EnvStatus;

/// The `CustomResourceDefinition`, as the chart ships it.
pub const CRD: &str = include_str!("../../../charts/converge/crds/environments.yaml");

pub const GROUP: &str = "converge.dev";
pub const VERSION: &str = "v1alpha1";
pub const KIND: &str = "Environment";
pub const PLURAL: &str = "environments";

/// Services shown in the `Versions` column before `+N`.
const VERSIONS_SHOWN: usize = 3;
/// Characters of a message kept (the detail is in `converge status`).
const MESSAGE_CHARS: usize = 512;
/// The longest wait before failed writes are tried again.
const MAX_RETRY: Duration = Duration::from_mins(1);

/// What one `Environment` says: its `spec` and its `status`.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    pub spec: Value,
    pub status: Value,
}

#[derive(Serialize)]
struct Spec<'a> {
    #[serde(rename = "type")]
    env_type: &'a str,
    pool: &'a str,
    owner: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    source: Option<&'a str>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Status<'a> {
    ready: &'static str,
    state: &'a str,
    reason: &'a str,
    message: String,
    versions: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    revision: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_at: Option<&'a str>,
    drifted: bool,
    conditions: Vec<ConditionDoc>,
}

#[derive(Serialize)]
struct ConditionDoc {
    #[serde(rename = "type")]
    kind: &'static str,
    status: &'static str,
    reason: &'static str,
    message: String,
}

fn true_false(b: bool) -> &'static str {
    if b { "True" } else { "False" }
}

fn shortened(message: &str) -> String {
    match message.char_indices().nth(MESSAGE_CHARS) {
        Some((at, _)) => format!("{}…", &message[..at]),
        None => message.to_owned(),
    }
}

/// `service=tag` for the first services by name, then `+N` for the rest.
#[must_use]
pub fn short_versions<'a>(versions: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let all: Vec<(&str, &str)> = versions.into_iter().collect();
    let mut out: Vec<String> = all
        .iter()
        .take(VERSIONS_SHOWN)
        .map(|(service, tag)| format!("{service}={tag}"))
        .collect();
    if all.len() > VERSIONS_SHOWN {
        out.push(format!("+{}", all.len() - VERSIONS_SHOWN));
    }
    out.join(",")
}

impl Document {
    /// An environment's document, from the status the daemon serves.
    #[must_use]
    pub fn of(status: &EnvStatus) -> Document {
        let item = &status.item;
        let ready = item
            .conditions
            .iter()
            .find(|c| c.kind == crate::condition::ConditionType::Ready);
        let spec = Spec {
            env_type: &item.env_type,
            pool: &item.pool,
            owner: &item.owner,
            source: item.source.as_deref(),
        };
        let doc = Status {
            ready: true_false(item.ready),
            state: item.status.as_str(),
            reason: ready.map_or("", |c| c.reason.as_str()),
            message: ready.map_or_else(String::new, |c| shortened(&c.message)),
            versions: short_versions(
                status
                    .versions()
                    .iter()
                    .map(|(s, r)| (s.as_str(), r.tag.as_str())),
            ),
            revision: item.revision.as_deref(),
            expires_at: item.expires_at.as_deref(),
            drifted: item.drifted(),
            conditions: item
                .conditions
                .iter()
                .map(|c| ConditionDoc {
                    kind: c.kind.as_str(),
                    status: true_false(c.status),
                    reason: c.reason.as_str(),
                    message: shortened(&c.message),
                })
                .collect(),
        };
        Document {
            spec: serde_json::to_value(spec).expect("a spec serializes"),
            status: serde_json::to_value(doc).expect("a status serializes"),
        }
    }

    /// A digest of the document (what "changed" means).
    fn digest(&self) -> [u8; 32] {
        use sha2::Digest as _;
        let mut h = sha2::Sha256::new();
        h.update(self.spec.to_string());
        h.update([0]);
        h.update(self.status.to_string());
        h.finalize().into()
    }
}

/// The `ApiResource` of `Environment`s (no discovery: converge defines it).
fn resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(GROUP, VERSION, KIND), PLURAL)
}

/// One batch for the writer thread.
#[derive(Default)]
struct Batch {
    put: Vec<(String, Arc<Document>)>,
    remove: Vec<String>,
    /// Delete this installation's Environments not named here (and, with
    /// shards, owned by this replica).
    sweep: Option<Sweep>,
}

struct Sweep {
    keep: HashSet<String>,
    members: Option<Arc<crate::shard::Members>>,
}

/// Publishes `Environment`s from the daemon's statuses (see the module).
pub(super) struct Publisher {
    queue: tokio::sync::mpsc::UnboundedSender<Batch>,
    /// Each environment's document digest as last handed to the writer.
    sent: Mutex<HashMap<String, [u8; 32]>>,
    /// The next publish hands over every status and sweeps (at start and
    /// after a resync).
    full: AtomicBool,
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// What the writer thread needs.
pub(super) struct Options {
    pub config: kube::Config,
    pub namespace: String,
    pub manager: String,
    pub install_crd: bool,
    pub concurrency: usize,
}

impl Publisher {
    /// Starts the writer thread (it installs the CRD first when asked).
    pub(super) fn start(options: Options) -> Publisher {
        let (queue, batches) = tokio::sync::mpsc::unbounded_channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let spawned = std::thread::Builder::new()
            .name("converge-kube-environments".into())
            .spawn(move || {
                let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                else {
                    tracing::error!("cannot start the Environment publisher's runtime");
                    return;
                };
                runtime.block_on(async move {
                    let client = match kube::Client::try_from(options.config.clone()) {
                        Ok(c) => c,
                        Err(e) => {
                            tracing::error!(error = %e, "cannot start the Environment publisher's client");
                            return;
                        }
                    };
                    let writer = Writer::new(client, options);
                    tokio::select! {
                        () = writer.run(batches) => {}
                        _ = stopped => {}
                    }
                });
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the Environment publisher");
        }
        Publisher {
            queue,
            sent: Mutex::new(HashMap::new()),
            full: AtomicBool::new(true),
            _stop: stop,
        }
    }

    /// The next publish compares every status (and sweeps).
    pub(super) fn resync(&self) {
        self.full.store(true, Ordering::Relaxed);
    }

    /// Queues the Environments whose document changed: those of `changed`
    /// (or of every status, on the first call and after a resync), and the
    /// deletion of those gone from `all`. Never waits for a write.
    pub(super) fn publish(
        &self,
        all: &BTreeMap<String, Arc<EnvStatus>>,
        changed: &[String],
        members: Option<Arc<crate::shard::Members>>,
    ) {
        let full = self.full.swap(false, Ordering::Relaxed);
        let mut sent = self.sent.lock().unwrap_or_else(PoisonError::into_inner);
        let batch = batch(all, changed, full, members, &mut sent);
        drop(sent);
        if batch.put.is_empty() && batch.remove.is_empty() && batch.sweep.is_none() {
            return;
        }
        if self.queue.send(batch).is_err() {
            tracing::debug!("the Environment publisher has stopped");
        }
    }
}

/// What to write: the documents of `changed` (of every status when `full`,
/// with a sweep) that differ from what was last handed over (`sent`), and
/// the deletions of those gone from `all`.
fn batch(
    all: &BTreeMap<String, Arc<EnvStatus>>,
    changed: &[String],
    full: bool,
    members: Option<Arc<crate::shard::Members>>,
    sent: &mut HashMap<String, [u8; 32]>,
) -> Batch {
    let mut batch = Batch::default();
    if full {
        let gone: Vec<String> = sent
            .keys()
            .filter(|n| !all.contains_key(n.as_str()))
            .cloned()
            .collect();
        for name in all.keys().chain(&gone) {
            consider(name, all, members.as_deref(), sent, &mut batch);
        }
        batch.sweep = Some(Sweep {
            keep: all.keys().cloned().collect(),
            members,
        });
    } else {
        for name in changed {
            consider(name, all, members.as_deref(), sent, &mut batch);
        }
    }
    batch
}

/// Queues `name`'s document when it changed since it was last handed over,
/// or its deletion when it is gone from `all`.
fn consider(
    name: &str,
    all: &BTreeMap<String, Arc<EnvStatus>>,
    members: Option<&crate::shard::Members>,
    sent: &mut HashMap<String, [u8; 32]>,
    batch: &mut Batch,
) {
    match all.get(name) {
        Some(status) => {
            let doc = Document::of(status);
            let digest = doc.digest();
            if sent.get(name) != Some(&digest) {
                sent.insert(name.to_owned(), digest);
                batch.put.push((name.to_owned(), Arc::new(doc)));
            }
        }
        None => {
            // An environment another shard took over is not deleted: its
            // new owner publishes it.
            if sent.remove(name).is_some() && members.is_none_or(|m| m.owns(name)) {
                batch.remove.push(name.to_owned());
            }
        }
    }
}

/// The writer thread's state.
struct Writer {
    api: Api<DynamicObject>,
    client: kube::Client,
    options: Options,
    /// What converge published (or is publishing) per environment.
    wanted: HashMap<String, Arc<Document>>,
    /// The spec last written per environment (the object itself is applied
    /// again only when it changes).
    spec_written: HashMap<String, Value>,
    /// Environments whose last write (or deletion) failed, tried again
    /// after `retry`.
    failed: HashSet<String>,
    retry: Duration,
    crd_done: bool,
    /// "Not installed" was logged (once, until a write succeeds).
    missing_logged: bool,
}

enum Op {
    Put,
    Remove,
}

impl Writer {
    fn new(client: kube::Client, options: Options) -> Writer {
        Writer {
            api: Api::namespaced_with(client.clone(), &options.namespace, &resource()),
            client,
            crd_done: !options.install_crd,
            options,
            wanted: HashMap::new(),
            spec_written: HashMap::new(),
            failed: HashSet::new(),
            retry: Duration::from_secs(1),
            missing_logged: false,
        }
    }

    async fn run(mut self, mut batches: tokio::sync::mpsc::UnboundedReceiver<Batch>) {
        use kube::runtime::{WatchStreamExt, watcher};
        let config = watcher::Config::default().labels(&format!("{MANAGED_BY}=converge"));
        let mut events = watcher(self.api.clone(), config).default_backoff().boxed();
        loop {
            let mut pending: BTreeMap<String, Op> = BTreeMap::new();
            let mut sweep = None;
            let retry = tokio::time::sleep(self.retry);
            tokio::select! {
                batch = batches.recv() => {
                    let Some(batch) = batch else { return };
                    self.take(batch, &mut pending, &mut sweep);
                    // Everything queued meanwhile goes in the same batch.
                    while let Ok(batch) = batches.try_recv() {
                        self.take(batch, &mut pending, &mut sweep);
                    }
                }
                event = events.next() => {
                    let Some(event) = event else { return };
                    self.observe(event, &mut pending);
                }
                () = retry, if !self.failed.is_empty() => {
                    for name in std::mem::take(&mut self.failed) {
                        let op = if self.wanted.contains_key(&name) { Op::Put } else { Op::Remove };
                        pending.entry(name).or_insert(op);
                    }
                }
            }
            if !self.crd_done && !pending.is_empty() {
                self.install_crd().await;
            }
            if let Some(sweep) = sweep {
                self.sweep(sweep, &mut pending).await;
            }
            self.write(pending).await;
        }
    }

    fn take(
        &mut self,
        batch: Batch,
        pending: &mut BTreeMap<String, Op>,
        sweep: &mut Option<Sweep>,
    ) {
        for (name, doc) in batch.put {
            self.wanted.insert(name.clone(), doc);
            self.failed.remove(&name);
            pending.insert(name, Op::Put);
        }
        for name in batch.remove {
            self.wanted.remove(&name);
            self.spec_written.remove(&name);
            self.failed.remove(&name);
            pending.insert(name, Op::Remove);
        }
        if batch.sweep.is_some() {
            *sweep = batch.sweep;
        }
    }

    /// An Environment that differs from what converge published, or is
    /// gone, is written again.
    fn observe(
        &mut self,
        event: Result<kube::runtime::watcher::Event<DynamicObject>, kube::runtime::watcher::Error>,
        pending: &mut BTreeMap<String, Op>,
    ) {
        use kube::runtime::watcher::Event;
        let (object, deleted) = match event {
            Ok(Event::Apply(o) | Event::InitApply(o)) => (o, false),
            Ok(Event::Delete(o)) => (o, true),
            Ok(Event::Init | Event::InitDone) => return,
            Err(e) => {
                tracing::debug!(error = %crate::diagnostic::chain(&e), "watching Environments failed; retrying");
                return;
            }
        };
        let Some(name) = object.metadata.name.as_deref() else {
            return;
        };
        let Some(doc) = self.wanted.get(name) else {
            return;
        };
        let spec_differs = object.data.get("spec") != Some(&doc.spec);
        let status_differs = object.data.get("status") != Some(&doc.status);
        if deleted || spec_differs {
            self.spec_written.remove(name);
        }
        if deleted || spec_differs || status_differs {
            tracing::info!(
                environment = name,
                deleted,
                "the Environment resource differs from what converge published; publishing it again"
            );
            pending.entry(name.to_owned()).or_insert(Op::Put);
        }
    }

    /// Server-side applies the CRD (once; a refusal is logged, and converge
    /// publishes anyway: someone else may install it).
    async fn install_crd(&mut self) {
        let crd: Value = match serde_saphyr::from_str(CRD) {
            Ok(v) => v,
            Err(e) => {
                tracing::error!(error = %e, "the embedded Environment CRD does not parse");
                self.crd_done = true;
                return;
            }
        };
        let resource = ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("apiextensions.k8s.io", "v1", "CustomResourceDefinition"),
            "customresourcedefinitions",
        );
        let api: Api<DynamicObject> = Api::all_with(self.client.clone(), &resource);
        let params = PatchParams::apply(&self.options.manager).force();
        match api
            .patch(&format!("{PLURAL}.{GROUP}"), &params, &Patch::Apply(&crd))
            .await
        {
            Ok(_) => {
                tracing::info!("installed the Environment CRD (environments.converge.dev)");
                self.crd_done = true;
            }
            Err(kube::Error::Api(e)) if e.code == 401 || e.code == 403 => {
                tracing::warn!(
                    "cannot install the Environment CRD (forbidden): apply charts/converge/crds/environments.yaml, or set target.environments.install_crd: false where something else installs it"
                );
                self.crd_done = true;
            }
            Err(e) => {
                tracing::warn!(error = %crate::diagnostic::chain(&e), "cannot install the Environment CRD; trying again with the next write");
            }
        }
    }

    /// Deletes this installation's Environments that name no environment
    /// this replica publishes (one paginated LIST); one that already says
    /// what converge would write is not written again (a restart over
    /// thousands of unchanged environments costs the LIST alone).
    async fn sweep(&mut self, sweep: Sweep, pending: &mut BTreeMap<String, Op>) {
        let mut params = ListParams::default()
            .labels(&format!("{MANAGED_BY}=converge"))
            .limit(500);
        loop {
            let page = match self.api.list(&params).await {
                Ok(page) => page,
                Err(e) => {
                    tracing::debug!(error = %crate::diagnostic::chain(&e), "cannot list Environments; not sweeping");
                    return;
                }
            };
            for object in &page.items {
                let Some(name) = object.metadata.name.as_deref() else {
                    continue;
                };
                let ours = object
                    .metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(super::INSTALLATION_ANNOTATION))
                    .is_some_and(|i| *i == self.options.manager);
                let same = self.wanted.get(name).is_some_and(|doc| {
                    object.data.get("spec") == Some(&doc.spec)
                        && object.data.get("status") == Some(&doc.status)
                });
                if same && ours && matches!(pending.get(name), Some(Op::Put)) {
                    pending.remove(name);
                    if let Some(spec) = object.data.get("spec") {
                        self.spec_written.insert(name.to_owned(), spec.clone());
                    }
                    continue;
                }
                let owned = sweep.members.as_ref().is_none_or(|m| m.owns(name));
                if ours && owned && !sweep.keep.contains(name) && !pending.contains_key(name) {
                    pending.insert(name.to_owned(), Op::Remove);
                }
            }
            match page.metadata.continue_.filter(|c| !c.is_empty()) {
                Some(token) => params = params.continue_token(&token),
                None => break,
            }
        }
    }

    /// Writes a batch, `concurrency` requests at a time.
    async fn write(&mut self, pending: BTreeMap<String, Op>) {
        if pending.is_empty() {
            return;
        }
        let this = &*self;
        let writes: Vec<_> = pending
            .into_iter()
            .map(|(name, op)| async move {
                let result = match op {
                    Op::Put => match this.wanted.get(&name) {
                        Some(doc) => this.put(&name, doc).await.map(Some),
                        None => Ok(None),
                    },
                    Op::Remove => this.remove(&name).await.map(|()| None),
                };
                (name, result)
            })
            .collect();
        let done: Vec<(String, Result<Option<Value>, kube::Error>)> = stream::iter(writes)
            .buffer_unordered(self.options.concurrency.max(1))
            .collect()
            .await;
        let mut failures = 0usize;
        for (name, result) in done {
            match result {
                Ok(Some(spec)) => {
                    self.spec_written.insert(name, spec);
                    self.missing_logged = false;
                }
                Ok(None) => {}
                Err(e) => {
                    failures += 1;
                    self.spec_written.remove(&name);
                    if is_not_found(&e) && !self.missing_logged {
                        self.missing_logged = true;
                        tracing::warn!(
                            environment = %name,
                            "cannot publish the Environment resource: not found (is the CRD environments.converge.dev installed? apply charts/converge/crds/environments.yaml, or set target.environments.install_crd); retrying"
                        );
                    } else {
                        tracing::warn!(environment = %name, error = %crate::diagnostic::chain(&e), "cannot publish the Environment resource; retrying");
                    }
                    self.failed.insert(name);
                }
            }
        }
        self.retry = if failures == 0 {
            Duration::from_secs(1)
        } else {
            (self.retry * 2).min(MAX_RETRY)
        };
    }

    /// Applies the object (when its spec was not written yet) and its
    /// status; returns the spec written.
    async fn put(&self, name: &str, doc: &Document) -> Result<Value, kube::Error> {
        let params = PatchParams::apply(&self.options.manager).force();
        if self.spec_written.get(name) != Some(&doc.spec) {
            let object = serde_json::json!({
                "apiVersion": format!("{GROUP}/{VERSION}"),
                "kind": KIND,
                "metadata": {
                    "name": name,
                    "namespace": self.options.namespace,
                    "labels": { MANAGED_BY: "converge", ENVIRONMENT_LABEL: name },
                    "annotations": { super::INSTALLATION_ANNOTATION: self.options.manager },
                },
                "spec": doc.spec,
            });
            counted(
                "apply",
                self.api.patch(name, &params, &Patch::Apply(&object)).await,
            )?;
        }
        let status = serde_json::json!({
            "apiVersion": format!("{GROUP}/{VERSION}"),
            "kind": KIND,
            "metadata": { "name": name, "namespace": self.options.namespace },
            "status": doc.status,
        });
        counted(
            "apply",
            self.api
                .patch_status(name, &params, &Patch::Apply(&status))
                .await,
        )?;
        Ok(doc.spec.clone())
    }

    async fn remove(&self, name: &str) -> Result<(), kube::Error> {
        match counted(
            "delete",
            self.api.delete(name, &DeleteParams::default()).await,
        ) {
            Err(e) if is_not_found(&e) => Ok(()),
            other => other.map(drop),
        }
    }
}

fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

/// Counts a write in `converge_environment_resource_writes_total`.
fn counted<T>(op: &str, result: Result<T, kube::Error>) -> Result<T, kube::Error> {
    let ok = match &result {
        Ok(_) => true,
        Err(e) => op == "delete" && is_not_found(e),
    };
    crate::metrics::ENVIRONMENT_WRITES
        .get_or_create(&crate::metrics::PublishLabels {
            op: op.to_owned(),
            result: if ok { "ok" } else { "failed" }.to_owned(),
        })
        .inc();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_versions_name_three_services_then_count_the_rest() {
        assert_eq!(short_versions([]), "");
        assert_eq!(short_versions([("api", "1.2.3")]), "api=1.2.3");
        assert_eq!(
            short_versions([("a", "1"), ("b", "2"), ("c", "3"), ("d", "4"), ("e", "5")]),
            "a=1,b=2,c=3,+2"
        );
    }

    #[test]
    fn long_messages_are_cut_at_a_character_boundary() {
        let long = "é".repeat(MESSAGE_CHARS + 10);
        let cut = shortened(&long);
        assert_eq!(cut.chars().count(), MESSAGE_CHARS + 1);
        assert!(cut.ends_with('…'));
        assert_eq!(shortened("short"), "short");
    }

    fn status(name: &str, ready: bool, tag: &str) -> Arc<EnvStatus> {
        let detail = serde_json::json!({
            "name": name, "type": "dev", "pool": "team1", "owner": "o@x",
            "source": "local:claims/x.yaml", "revision": null, "ready": ready,
            "status": if ready { "Ready" } else { "Pending" }, "expires_at": null,
            "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" },
                            "reason": if ready { "Applied" } else { "Progressing" }, "message": "m"}],
            "claim": null, "versions": {"api": {"tag": tag, "constraint": "*"}},
            "last_plan": null, "inventory": [], "history": [],
        });
        Arc::new(EnvStatus::restored(detail.to_string().as_bytes()).expect("a detail"))
    }

    fn names(batch: &Batch) -> (Vec<&str>, Vec<&str>) {
        (
            batch.put.iter().map(|(n, _)| n.as_str()).collect(),
            batch.remove.iter().map(String::as_str).collect(),
        )
    }

    #[test]
    fn only_changed_documents_are_written_and_gone_ones_deleted() {
        let mut sent = HashMap::new();
        let mut all = BTreeMap::from([
            ("a".to_owned(), status("a", false, "1.0.0")),
            ("b".to_owned(), status("b", true, "2.0.0")),
        ]);
        // The first publish: everything, and a sweep keeping both.
        let first = batch(&all, &[], true, None, &mut sent);
        assert_eq!(names(&first), (vec!["a", "b"], vec![]));
        let sweep = first.sweep.expect("a sweep");
        assert!(sweep.keep.contains("a") && sweep.keep.contains("b"));
        let doc = &first.put[0].1;
        assert_eq!(doc.status["ready"], "False");
        assert_eq!(doc.status["reason"], "Progressing");
        assert_eq!(doc.status["versions"], "api=1.0.0");
        assert_eq!(doc.spec["pool"], "team1");
        // Rebuilt but the same document: nothing to write.
        let same = batch(
            &all,
            &["a".to_owned(), "b".to_owned()],
            false,
            None,
            &mut sent,
        );
        assert_eq!(names(&same), (vec![], vec![]));
        assert!(same.sweep.is_none());
        // One became ready: only it.
        all.insert("a".to_owned(), status("a", true, "1.0.0"));
        let ready = batch(&all, &["a".to_owned()], false, None, &mut sent);
        assert_eq!(names(&ready), (vec!["a"], vec![]));
        // Gone: deleted once.
        all.remove("b");
        let gone = batch(&all, &["b".to_owned()], false, None, &mut sent);
        assert_eq!(names(&gone), (vec![], vec!["b"]));
        let again = batch(&all, &["b".to_owned()], false, None, &mut sent);
        assert_eq!(names(&again), (vec![], vec![]));
    }

    #[test]
    fn an_environment_another_shard_took_is_not_deleted() {
        let members = Arc::new(crate::shard::Members::new(
            "me",
            vec!["me".to_owned(), "other".to_owned()],
            1,
        ));
        let name = |owner: &str| {
            (0..100)
                .map(|i| format!("env-{i}"))
                .find(|n| members.owner(n) == Some(owner))
                .expect("rendezvous hashing gives each member some names")
        };
        let (mine, theirs) = (name("me"), name("other"));
        let mut sent = HashMap::new();
        let mut all = BTreeMap::from([
            (mine.clone(), status(&mine, true, "1")),
            (theirs.clone(), status(&theirs, true, "1")),
        ]);
        let _ = batch(&all, &[], true, None, &mut sent);
        all.clear();
        let out = batch(
            &all,
            &[mine.clone(), theirs],
            false,
            Some(members.clone()),
            &mut sent,
        );
        assert_eq!(
            names(&out),
            (vec![], vec![mine.as_str()]),
            "the other's new owner publishes it"
        );
    }

    #[test]
    fn the_embedded_crd_defines_the_printer_columns() {
        let crd: Value = serde_saphyr::from_str(CRD).expect("the CRD is YAML");
        assert_eq!(crd["spec"]["group"], GROUP);
        assert_eq!(crd["spec"]["names"]["plural"], PLURAL);
        assert_eq!(crd["spec"]["names"]["kind"], KIND);
        assert_eq!(crd["spec"]["scope"], "Namespaced");
        let version = &crd["spec"]["versions"][0];
        assert_eq!(version["name"], VERSION);
        let columns: Vec<&str> = version["additionalPrinterColumns"]
            .as_array()
            .expect("columns")
            .iter()
            .filter(|c| c["priority"].is_null())
            .filter_map(|c| c["name"].as_str())
            .collect();
        assert_eq!(
            columns,
            ["Type", "Pool", "Versions", "Ready", "Reason", "Age"]
        );
    }
}
