//! Targets against the real servers they talk to.

mod cluster;
mod dry_run;
mod environments;
mod kube;
mod lease;
mod manifests;
mod rollout;
mod shards;
mod visible;
