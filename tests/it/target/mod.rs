//! Targets against the real servers they talk to.

mod kube;
