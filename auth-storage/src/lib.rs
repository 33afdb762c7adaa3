//! Codex-compatible credential stores (file, keyring, ephemeral, auto) and a durable multi-account pool store.
//!
//! This crate is part of a workspace of small crates for tools that manage
//! ChatGPT/OpenAI OAuth accounts for the Codex CLI. See the workspace README.
#![warn(missing_docs)]
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]
