//! What an environment type renders to: the built-in [`Preset`]s
//! (PRODUCT.md's table) and [`Presets`], the built-ins with the config's
//! overrides merged in field by field and checked after the merge. Needs
//! nothing of the config but durations, so render imports it alone.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::duration::opt_duration;

use crate::claim::EnvironmentType;

/// What an environment type renders to; the built-in table is PRODUCT.md's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Preset {
    /// Highly available: several replicas and a `PodDisruptionBudget`.
    pub ha: bool,
    pub replicas: u32,
    /// Values of the `converge.dev/node-pool` node label a Deployment's
    /// pods go to (and whose taints they tolerate); empty: no affinity.
    pub node_pools: Vec<String>,
    /// How `node_pools` binds: `required` (only those nodes), `preferred`
    /// (those first, others when they are full or absent) or `none`.
    #[serde(default)]
    pub placement: Placement,
    pub autoscaling: Autoscaling,
    pub quota: Quota,
    pub container: ContainerDefaults,
    /// `shared` (on the platform) or `dedicated` logging, monitoring, gateway and authz.
    pub platform_services: String,
    pub waf: bool,
    /// Lifetime after `creation_date` when the claim gives no `expiration_date`.
    #[serde(default, with = "opt_duration")]
    pub ttl: Option<Duration>,
    /// Resolve versions against the dev tags.
    pub use_dev_tags: bool,
    /// The longest an environment of this type may live after its
    /// `creation_date`: a later `expiration_date` is refused
    /// (`max-lifetime`), and `converge claim extend` stops there. No limit
    /// when absent (the built-in presets set none).
    #[serde(default, with = "opt_duration")]
    pub max_lifetime: Option<Duration>,
}

/// `presets.<type>.placement`: how a Deployment's pods are bound to the
/// nodes labelled `converge.dev/node-pool` with one of the preset's pools.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Placement {
    /// Required node affinity: pods wait for such a node.
    #[default]
    Required,
    /// Preferred node affinity: such nodes first, any node otherwise.
    Preferred,
    /// No node affinity (the tolerations stay).
    None,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Autoscaling {
    pub profile: String,
    pub min_replicas: u32,
    pub max_replicas: u32,
    pub target_cpu_utilization: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Quota {
    pub cpu: String,
    pub memory: String,
    pub pods: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContainerDefaults {
    pub cpu_request: String,
    pub memory_request: String,
    pub cpu_limit: String,
    pub memory_limit: String,
}

impl Preset {
    /// What the API server would refuse in the objects a preset renders
    /// to, as `key: rule` (`node_pools[1]: ...`).
    fn check(&self) -> Result<(), String> {
        let mut seen = std::collections::BTreeSet::new();
        for (i, pool) in self.node_pools.iter().enumerate() {
            if !is_label_value(pool) {
                return Err(format!(
                    "node_pools[{i}]: {pool:?} is not a Kubernetes label value (1 to 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit)"
                ));
            }
            if !seen.insert(pool) {
                return Err(format!("node_pools[{i}]: {pool:?} is listed twice"));
            }
        }
        let a = &self.autoscaling;
        if a.min_replicas == 0 || a.min_replicas > a.max_replicas {
            return Err(format!(
                "autoscaling: 1 <= min_replicas <= max_replicas is needed (min_replicas {}, max_replicas {})",
                a.min_replicas, a.max_replicas
            ));
        }
        if !(1..=100).contains(&a.target_cpu_utilization) {
            return Err(format!(
                "autoscaling.target_cpu_utilization: a percentage from 1 to 100 is needed, not {}",
                a.target_cpu_utilization
            ));
        }
        Ok(())
    }

    /// The built-in preset of a type (PRODUCT.md, "Environment types").
    #[must_use]
    pub fn builtin(t: EnvironmentType) -> Preset {
        let pools = |p: &[&str]| p.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let autoscaling = |profile: &str, min, max, cpu| Autoscaling {
            profile: profile.to_owned(),
            min_replicas: min,
            max_replicas: max,
            target_cpu_utilization: cpu,
        };
        let quota = |cpu: &str, memory: &str, pods| Quota {
            cpu: cpu.to_owned(),
            memory: memory.to_owned(),
            pods,
        };
        let container = |cr: &str, mr: &str, cl: &str, ml: &str| ContainerDefaults {
            cpu_request: cr.to_owned(),
            memory_request: mr.to_owned(),
            cpu_limit: cl.to_owned(),
            memory_limit: ml.to_owned(),
        };
        match t {
            EnvironmentType::Dev | EnvironmentType::Sue => Preset {
                ha: false,
                replicas: 1,
                node_pools: pools(&["general-restricted", "general-public", "spot"]),
                placement: Placement::Required,
                autoscaling: autoscaling("aggressive", 1, 3, 60),
                quota: quota("8", "16Gi", 50),
                container: container("100m", "128Mi", "500m", "512Mi"),
                platform_services: "shared".to_owned(),
                waf: false,
                ttl: (t == EnvironmentType::Sue).then_some(Duration::from_hours(24)),
                use_dev_tags: t == EnvironmentType::Sue,
                max_lifetime: None,
            },
            EnvironmentType::Stage => Preset {
                ha: true,
                replicas: 2,
                node_pools: pools(&["general-restricted", "general-public", "memory"]),
                placement: Placement::Required,
                autoscaling: autoscaling("moderate", 2, 6, 70),
                quota: quota("32", "64Gi", 200),
                container: container("250m", "256Mi", "1", "1Gi"),
                platform_services: "dedicated".to_owned(),
                waf: true,
                ttl: None,
                use_dev_tags: false,
                max_lifetime: None,
            },
            EnvironmentType::Prod => Preset {
                ha: true,
                replicas: 3,
                node_pools: pools(&[
                    "general-restricted",
                    "general-public",
                    "memory",
                    "storage",
                    "ai",
                ]),
                placement: Placement::Required,
                autoscaling: autoscaling("conservative", 3, 12, 80),
                quota: quota("128", "256Gi", 1000),
                container: container("500m", "512Mi", "2", "2Gi"),
                platform_services: "dedicated".to_owned(),
                waf: true,
                ttl: None,
                use_dev_tags: false,
                max_lifetime: None,
            },
        }
    }
}

/// Why the config's `presets:` cannot be used; each names the type and key.
#[derive(Debug, thiserror::Error)]
pub enum PresetError {
    /// A built-in preset did not serialize (a bug, never the config's fault).
    #[error("{error}")]
    Builtin {
        ty: EnvironmentType,
        #[source]
        error: serde_json::Error,
    },
    /// An override has an unknown key or a value of the wrong type.
    #[error("presets.{ty}: {error}")]
    Override {
        ty: EnvironmentType,
        #[source]
        error: serde_json::Error,
    },
    /// The merged preset breaks a rule (`node_pools[1]: ...`).
    #[error("presets.{ty}.{rule}")]
    Invalid { ty: EnvironmentType, rule: String },
}

/// The presets in force: built-ins with the config's overrides merged in.
#[derive(Debug, Clone)]
pub struct Presets(BTreeMap<EnvironmentType, Preset>);

impl Presets {
    /// Merges `overrides` (partial presets) onto the built-ins; an unknown key
    /// or a wrong type is an error naming the type and key.
    pub fn new(
        overrides: &BTreeMap<EnvironmentType, serde_json::Value>,
    ) -> Result<Presets, PresetError> {
        let mut out = BTreeMap::new();
        for t in EnvironmentType::ALL {
            let builtin = Preset::builtin(t);
            let preset = match overrides.get(&t) {
                None => builtin,
                Some(patch) => {
                    let mut base = serde_json::to_value(&builtin)
                        .map_err(|error| PresetError::Builtin { ty: t, error })?;
                    merge(&mut base, patch);
                    serde_json::from_value(base)
                        .map_err(|error| PresetError::Override { ty: t, error })?
                }
            };
            preset
                .check()
                .map_err(|rule| PresetError::Invalid { ty: t, rule })?;
            out.insert(t, preset);
        }
        Ok(Presets(out))
    }

    #[must_use]
    pub fn get(&self, t: EnvironmentType) -> &Preset {
        self.0.get(&t).expect("every environment type has a preset")
    }
}

impl Default for Presets {
    fn default() -> Self {
        Self::new(&BTreeMap::new()).expect("built-in presets are valid")
    }
}

/// A non-empty Kubernetes label value.
fn is_label_value(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

fn merge(base: &mut serde_json::Value, patch: &serde_json::Value) {
    match (base, patch) {
        (serde_json::Value::Object(b), serde_json::Value::Object(p)) => {
            for (k, v) in p {
                match b.get_mut(k) {
                    Some(slot) => merge(slot, v),
                    None => {
                        b.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (slot, v) => *slot = v.clone(),
    }
}
