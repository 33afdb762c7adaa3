//! The crate's error type.

use std::time::Duration;

use crate::AccountId;

/// Everything that can go wrong when configuring or driving a [`Pool`](crate::Pool).
///
/// Messages name the account (by its caller-chosen id, never an email) or the config field
/// that is wrong and say what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// A [`PolicyConfig`](crate::PolicyConfig) field has a value the policy cannot work with.
    #[error("rotation policy config field `{field}` {reason}")]
    InvalidConfig {
        /// The field, e.g. `bucket.capacity`.
        field: &'static str,
        /// What is wrong and what is allowed.
        reason: String,
    },
    /// An account id was refused by [`AccountId::new`].
    #[error("account id of {len} bytes is not usable: it {reason}")]
    InvalidAccountId {
        /// Why it was refused.
        reason: &'static str,
        /// Its length in bytes (the id itself is not echoed: it may be personal data).
        len: usize,
    },
    /// [`Pool::add`](crate::Pool::add) was given an id that is already in the pool.
    #[error("account `{id}` is already in the pool; remove it first or use another id")]
    DuplicateAccount {
        /// The id.
        id: AccountId,
    },
    /// An operation named an account that is not in the pool (never added, or removed).
    #[error("account `{id}` is not in the pool; add it with Pool::add before using it")]
    UnknownAccount {
        /// The id.
        id: AccountId,
    },
    /// [`Pool::consume`](crate::Pool::consume) found the account's token bucket empty.
    #[error(
        "account `{id}` has no token left; the next one is ready in {} ms (select again instead of dispatching)",
        ready_in.as_millis()
    )]
    NoToken {
        /// The id.
        id: AccountId,
        /// How long until the bucket holds a whole token again.
        ready_in: Duration,
    },
}
