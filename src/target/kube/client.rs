//! The Kubernetes target's client: setup from the kubeconfig (or the
//! cluster's own service account) and discovery of the API resource and
//! scope of each kind, cached per process.

use super::Kubernetes;
use super::error::{RequestError, SetupError, classify, is_not_found, request_error};
use crate::config::KubernetesConfig;
use crate::coordination::Coordination;
use crate::object::ObjectRef;
use kube::api::{Api, DynamicObject};
use kube::core::{ApiResource, GroupVersionKind};
use kube::discovery::Scope;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

pub(super) fn plural(resource: &ApiResource) -> String {
    if resource.group.is_empty() {
        resource.plural.clone()
    } else {
        format!("{}.{}", resource.plural, resource.group)
    }
}

impl Kubernetes {
    /// A client for the configured cluster. Nothing is requested yet: a
    /// cluster that is down fails the first pass (transiently), not the start.
    pub fn from_config(options: &KubernetesConfig) -> Result<Kubernetes, SetupError> {
        let runtime = crate::io_runtime::Runtime::new().map_err(SetupError::Runtime)?;
        let kube_options = kube::config::KubeConfigOptions {
            context: options.context.clone(),
            ..Default::default()
        };
        let config = runtime.block_on(async {
            match &options.kubeconfig {
                Some(path) => {
                    let file = kube::config::Kubeconfig::read_from(path).map_err(|e| {
                        let path = path.display().to_string();
                        match e {
                            // kube's own text repeats the path, quoted twice.
                            kube::config::KubeconfigError::ReadConfig(source, _) => {
                                SetupError::KubeconfigUnreadable { path, source }
                            }
                            source => SetupError::Kubeconfig { path, source },
                        }
                    })?;
                    kube::Config::from_custom_kubeconfig(file, &kube_options)
                        .await
                        .map_err(SetupError::Context)
                }
                None if options.context.is_some() => kube::Config::from_kubeconfig(&kube_options)
                    .await
                    .map_err(SetupError::Context),
                None => kube::Config::infer().await.map_err(SetupError::Infer),
            }
        })?;
        let mut config = config;
        config.read_timeout = Some(options.timeout);
        config.write_timeout = Some(options.timeout);
        config.connect_timeout = Some(options.timeout.min(Duration::from_secs(5)));
        let client = runtime
            .block_on(async { kube::Client::try_from(config.clone()) })
            .map_err(SetupError::Client)?;
        let recorder = kube::runtime::events::Recorder::new(
            client.clone(),
            kube::runtime::events::Reporter {
                controller: options.field_manager.clone(),
                instance: std::env::var("HOSTNAME").ok(),
            },
        );
        let notify = tokio::sync::watch::channel(0).0;
        let coordination = Coordination::new(
            config.clone(),
            options.inventory_namespace.clone(),
            options.field_manager.clone(),
            options.leader_election.as_deref().cloned(),
            options.shards.as_deref().cloned(),
            notify.clone(),
        );
        Ok(Kubernetes {
            runtime,
            client,
            config,
            options: options.clone(),
            resources: Mutex::new(HashMap::new()),
            cache: Mutex::new(None),
            watches: std::sync::OnceLock::new(),
            recorder,
            coordination,
            cache_generation: std::sync::atomic::AtomicU64::new(0),
            notify,
            namespace_ensured: std::sync::atomic::AtomicBool::new(false),
            held: Mutex::new(HashMap::new()),
            fingerprints: Arc::new(Mutex::new(HashMap::new())),
            scanned: Mutex::new(None),
            restored: Mutex::new(HashMap::new()),
            environments: std::sync::OnceLock::new(),
        })
    }

    /// The API resource and scope of an object's group, version and kind.
    pub(super) async fn resource(
        &self,
        id: &ObjectRef,
    ) -> Result<(ApiResource, Scope), crate::target::Error> {
        let key = (
            id.group().to_owned(),
            id.version().to_owned(),
            id.kind.to_string(),
        );
        if let Some(found) = self
            .resources
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
        {
            return Ok(found.clone());
        }
        let gvk = GroupVersionKind::gvk(&key.0, &key.1, &key.2);
        let (resource, caps) = kube::discovery::pinned_kind(&self.client, &gvk)
            .await
            .map_err(|e| {
                let e = request_error("discover", &id.api_version, "", e);
                match e.status {
                    // The group/version is not served, or has no such kind.
                    Some(404) | None if e.source.as_ref().is_some_and(is_not_found) => {
                        crate::target::Error::Invalid(Box::new(RequestError {
                            message: format!(
                                "the cluster has no kind {} in {} (is its CustomResourceDefinition installed?)",
                                id.kind, id.api_version
                            ),
                            ..e
                        }))
                    }
                    _ => classify(e),
                }
            })?;
        let found = (resource, caps.scope);
        self.resources
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key, found.clone());
        Ok(found)
    }

    /// The dynamic API for an object, and the namespace it lives in.
    pub(super) async fn api(
        &self,
        id: &ObjectRef,
        environment: &str,
    ) -> Result<(Api<DynamicObject>, ApiResource, Option<String>), crate::target::Error> {
        let (resource, scope) = self.resource(id).await?;
        Ok(match scope {
            // Render places every object of a template not listed in
            // `templates.cluster_scoped` in the environment's namespace; a
            // kind the cluster serves cluster-wide is refused, never
            // applied outside it.
            Scope::Cluster if id.namespace.is_some() => {
                return Err(crate::target::Error::Invalid(Box::new(RequestError {
                    verb: "discover",
                    resource: resource.plural.clone(),
                    object: format!(" {}", id.name),
                    status: None,
                    message: format!(
                        "{} is cluster-scoped but was rendered into namespace {}: only a template listed in templates.cluster_scoped may create cluster-scoped objects",
                        id.kind,
                        id.namespace.as_deref().unwrap_or_default()
                    ),
                    source: None,
                })));
            }
            Scope::Cluster => (
                Api::all_with(self.client.clone(), &resource),
                resource,
                None,
            ),
            Scope::Namespaced => {
                let ns = id.namespace.as_deref().unwrap_or(environment).to_owned();
                (
                    Api::namespaced_with(self.client.clone(), &ns, &resource),
                    resource,
                    Some(ns),
                )
            }
        })
    }
}
