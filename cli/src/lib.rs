//! The `slmkit` command's parts, as a library so they can be tested in process.

pub mod connections;
pub mod demo;
pub mod eval;
pub mod models;
pub mod server;
