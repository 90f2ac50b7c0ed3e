pub mod claim;
pub mod config;
pub mod diagnostic;
pub mod load;
pub mod render;
pub mod resolve;
pub mod source;
pub mod validate;
