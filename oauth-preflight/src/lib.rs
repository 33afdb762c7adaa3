//! Who holds the OAuth callback port? Identify it natively and free it only from a provably stale Codex login helper.
//!
//! This crate is part of a workspace of small crates for tools that manage
//! ChatGPT/OpenAI OAuth accounts for the Codex CLI. See the workspace README.
#![warn(missing_docs)]
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]
