//! What the flags of several subcommands share.

use clap::ValueEnum;

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Reads a namespace flag: a DNS-1123 label ([`crate::core::names::check_namespace`]); the error
/// names the value.
pub fn parse_namespace(value: &str) -> Result<String, String> {
    crate::core::names::check_namespace(value)
        .map(|()| value.to_string())
        .map_err(|_| format!("{value:?} is not a valid namespace name (a DNS-1123 label)"))
}
