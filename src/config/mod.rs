//! The config file: sources, target, policies, presets and safety knobs.
//!
//! YAML, parsed with a budget; unknown keys are refused. Relative paths are
//! resolved against the config file's directory once, at load, so every later
//! stage sees absolute paths. The built-in environment presets live here and
//! can be overridden field by field from the config.
//!
//! The files: `schema.rs` (the top-level [`Config`] and its smaller blocks),
//! `sources.rs` (`sources:` entries and their git auth), `target.rs`
//! (`target:`: manifests or Kubernetes, leader election, shards),
//! `preset.rs` (the built-in [`Preset`]s and their overrides; it uses
//! nothing else of the config but durations, so render imports it alone),
//! `duration.rs` (`30s`, `5m`, `24h`), `load.rs` (reading the file, the
//! checks across blocks, relative paths).

mod duration;
mod load;
pub mod preset;
mod schema;
mod sources;
mod target;

pub use duration::{format_duration, parse_duration};
pub use load::{DEFAULT_MAX_FILE_BYTES, Error, ServicesError};
pub use preset::{Autoscaling, ContainerDefaults, Placement, Preset, PresetError, Presets, Quota};
pub use schema::*;
pub use sources::*;
pub use target::*;

#[cfg(test)]
mod tests;
