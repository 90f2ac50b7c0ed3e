//! Targets against the real servers they talk to.

mod cluster;
mod environments;
mod kube;
mod lease;
mod manifests;
mod shards;
mod visible;
