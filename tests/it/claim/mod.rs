//! The claim vocabulary through its public API.

mod version;
