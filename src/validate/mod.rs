//! Stage 3, validate: a parsed document -> a [`Claim`](crate::claim::Claim) the
//! platform accepts, or diagnostics.
//!
//! [`schema`] checks the document against the JSON Schema (compiled once);
//! [`policy`] asks Cedar whether the claim's user may create or update that
//! environment from that source. Both are pure and hold their compiled state
//! for the life of the process.

pub mod policy;
pub mod schema;
