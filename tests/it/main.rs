//! converge's integration tests: one binary, a module per area, mirroring
//! `src/` (`source/` for the sources against real servers, `daemon/` for the
//! daemon end to end, `target/` for the targets, `chart.rs` for the Helm chart, `image.rs` for the container image); `support/` holds the project helpers and the harnesses
//! for real servers.
//!
//! A test that needs a tool a machine may lack (Garage, lighttpd, sshd, gpg,
//! openssl, Chromium, Python's prometheus-client, the Kubernetes API server, helm, sops) is `#[ignore = "needs …"]`:
//! plain `cargo test` reports it as ignored, and `scripts/test` installs the
//! tools and runs `cargo test -- --include-ignored`, where a missing tool fails
//! the test.

mod support;

mod api;
mod bad_input;
mod chart;
mod claim;
mod cli;
mod daemon;
mod examples;
mod faults;
mod forge;
mod fuzz;
mod golden;
mod image;
mod manifests;
mod pipeline;
mod render;
mod secret;
mod source;
mod tags;
mod target;
mod trust;
mod unfinished_reads;
