//! `kubectl apikey`: the kubectl plugin of the administrator's tools (binary `kubectl-apikey`).
//! [`args`] is its command line, [`output`] what it prints (pure), [`commands`] what each
//! command does. The shared calls and decisions are in [`crate::admin`].

pub mod args;
pub mod commands;
pub mod output;
