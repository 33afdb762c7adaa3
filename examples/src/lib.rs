//! Shared helpers for the runnable example programs in `examples/examples/`.
//!
//! This crate is part of a workspace of small crates for tools that manage
//! ChatGPT/OpenAI OAuth accounts for the Codex CLI. See the workspace README.
#![warn(missing_docs)]
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

pub mod account_add;
pub mod mock_openai;
pub mod mock_upstream;
pub mod mock_usage;
pub mod proxy;
