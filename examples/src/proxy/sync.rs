//! Keeping a running proxy in step with the pool other processes change (I/O shell around
//! [`Accounts::apply_document`](super::accounts::Accounts::apply_document)).
//!
//! Every [`SYNC_INTERVAL`] a background task looks at `pool.json`'s identity (size,
//! modification time, inode: every writer replaces the file, so any write changes it) and
//! only when it changed reads the pool and applies it: accounts added by `accounts add` or
//! `import` join the rotation, removed ones leave it (requests already using them finish),
//! `accounts disable`/`enable` and "login required"/"deactivated" marks written by any
//! process take the account out of (or back into) rotation, and tokens another process
//! refreshed replace this proxy's copy.
//!
//! The same task shares the policy's state (cooldowns, disabled reasons, health) through
//! `pool-state.json` ([`auth_storage::policy`]): what another proxy learned (a 429, an
//! account that keeps failing) is merged into this one's policy when the file changes, and
//! what this proxy learned since the last tick is written, coalesced, once per tick — only
//! the accounts that changed, merged under the file's lock by the written rules. The policy
//! lock is held only to take or apply state; file reads and writes run on blocking threads,
//! so request handling never waits for the disk.

use std::sync::Arc;
use std::time::Duration;

use rotation_policy::{DisabledReason, PolicyState};

use auth_storage::policy::FileStamp;

use super::Shared;
use super::accounts::Standing;

/// How often the pool file is checked for changes (changes apply within this, plus the
/// time to read the file).
pub const SYNC_INTERVAL: Duration = Duration::from_millis(250);

/// How long a tick waits for the state file's lock before keeping its changes for the next
/// tick.
const STATE_LOCK_WAIT: Duration = Duration::from_millis(200);

/// Runs until the task is aborted (at shutdown).
pub(crate) async fn follow_pool(shared: Arc<Shared>) {
    let Some(store) = shared.accounts.store().cloned() else {
        return;
    };
    let state_store = store.clone().with_lock_timeout(STATE_LOCK_WAIT);
    let mut pool_seen = FileStamp::of(&store.file());
    let mut state_seen = FileStamp::of(&store.state_file());
    // Changes whose write failed, retried with the next tick's.
    let mut unsaved = PolicyState::default();
    let mut ticker = tokio::time::interval(SYNC_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        // Others' state first, then ours: our write merges theirs in anyway.
        let mut changes = {
            let mut state = shared.lock();
            state.policy.take_changes()
        };
        changes.merge(&unsaved);
        // The pool first, on its own: a state file whose lock another process holds must
        // not hold up account changes (nor the reverse).
        let (st, sh, pool_last) = (store.clone(), shared.clone(), pool_seen);
        let read = tokio::task::spawn_blocking(move || {
            // Refreshed tokens a failed save left in memory: saved as soon as possible (the
            // pool's in-flight mark holds other processes off the spent token meanwhile).
            sh.accounts.retry_unsaved();
            let pool_stamp = FileStamp::of(&st.file());
            let pool = (pool_stamp != pool_last).then(|| st.load());
            (pool_stamp, pool)
        })
        .await;
        if let Ok((pool_stamp, Some(loaded))) = read {
            pool_seen = pool_stamp;
            match loaded {
                Ok(loaded) => apply(&shared, &loaded.pool),
                // Kept: the last good view. Tried again at the next change.
                Err(err) => {
                    tracing::warn!(error = %auth_core::terminal::escape_control(&err.to_string()), "could not read the changed pool; keeping the accounts as they were")
                }
            }
        }
        // A busy state lock costs a tick, not the loop: the changes are kept and written
        // next time.
        let (st, state_last) = (state_store.clone(), state_seen);
        let step = tokio::task::spawn_blocking(move || {
            // The stamp recorded is that of the version merged: taken before a read (a
            // version written meanwhile is read next tick), under the lock for a write.
            let state_now = FileStamp::of(&st.state_file());
            if changes.accounts.is_empty() {
                if state_now == state_last {
                    StateStep::Unchanged
                } else {
                    match st.load_policy_state() {
                        Ok(loaded) => StateStep::Read(loaded.state, loaded.problem, state_now),
                        Err(err) => StateStep::Failed(err, PolicyState::default()),
                    }
                }
            } else {
                match st.save_policy_state_stamped(&changes, Some(super::now())) {
                    Ok((state, stamp)) => StateStep::Read(state, None, stamp),
                    Err(err) => StateStep::Failed(err, changes),
                }
            }
        })
        .await;
        let Ok(state) = step else {
            continue;
        };
        match state {
            StateStep::Unchanged => {}
            StateStep::Read(state, problem, stamp) => {
                state_seen = stamp;
                unsaved = PolicyState::default();
                if let Some(problem) = problem {
                    tracing::warn!(problem = %auth_core::terminal::escape_control(&problem.to_string()), "policy state not shared");
                }
                let pool_disabled = shared.accounts.pool_disabled();
                let mut guard = shared.lock();
                guard.policy.merge_state(&state, super::now());
                pool_word_last(&mut guard.policy, &pool_disabled, &state);
            }
            StateStep::Failed(err, changes) => {
                // Kept for the next tick.
                unsaved = changes;
                tracing::warn!(error = %auth_core::terminal::escape_control(&err.to_string()), "could not share the policy state; retrying");
            }
        }
    }
}

/// How long shutdown waits for the state file's lock.
const SHUTDOWN_LOCK_WAIT: Duration = Duration::from_secs(2);

/// At shutdown: writes `changes` (what the policy learned since the last tick) to the
/// shared state. Blocking; waits at most [`SHUTDOWN_LOCK_WAIT`] for the file's lock.
pub(crate) fn save_last_changes(shared: &Shared, changes: &PolicyState) {
    let Some(store) = shared.accounts.store() else {
        return;
    };
    if changes.accounts.is_empty() {
        return;
    }
    let store = store.clone().with_lock_timeout(SHUTDOWN_LOCK_WAIT);
    if let Err(err) = store.save_policy_state_stamped(changes, Some(super::now())) {
        tracing::warn!(error = %auth_core::terminal::escape_control(&err.to_string()), "could not share the policy state at shutdown");
    }
}

/// After merging shared `state`: the pool's word wins both ways. What the pool keeps out
/// (disabled by hand, gone for everyone) stays out, and a disable for one of those reasons
/// that came from the shared state while the pool no longer holds it (the person signed in
/// again, `accounts enable`) is lifted. A disable the policy decided itself (too many 401s)
/// is left alone. O(accounts in `state` with a disable).
pub(crate) fn pool_word_last(
    policy: &mut rotation_policy::Pool,
    pool_disabled: &[(rotation_policy::AccountId, DisabledReason)],
    state: &PolicyState,
) {
    for (id, reason) in pool_disabled {
        let _ = policy.disable_for(id, *reason);
    }
    let kept: std::collections::HashSet<&rotation_policy::AccountId> =
        pool_disabled.iter().map(|(id, _)| id).collect();
    for (id, shared) in &state.accounts {
        let pools_reason = |r: DisabledReason| {
            matches!(
                r,
                DisabledReason::Manual
                    | DisabledReason::LoginRequired
                    | DisabledReason::Deactivated
            )
        };
        if kept.contains(id)
            || !shared
                .disabled
                .as_ref()
                .is_some_and(|d| pools_reason(d.reason))
        {
            continue;
        }
        let here = policy
            .export_account(id)
            .and_then(|a| a.disabled.map(|d| d.reason));
        if here.is_some_and(pools_reason) {
            let _ = policy.enable(id);
        }
    }
}

/// What the state half of a tick did.
enum StateStep {
    /// The file did not change and this proxy had nothing to write.
    Unchanged,
    /// The file's state (after this proxy's write, if it had changes), and the stamp of
    /// that version.
    Read(
        PolicyState,
        Option<auth_storage::policy::StateProblem>,
        Option<FileStamp>,
    ),
    /// Reading or writing failed; the changes to write again.
    Failed(auth_storage::StorageError, PolicyState),
}

/// Applies a pool document to the live accounts and the policy.
pub(crate) fn apply(shared: &Shared, doc: &auth_storage::pool::PoolDocument) {
    let changes = shared.accounts.apply_document(doc);
    let t = super::now();
    let mut state = shared.lock();
    for id in &changes.removed {
        // ok: an id the policy does not know is already gone from it.
        let _ = state.policy.remove(id);
    }
    for id in &changes.added {
        // ok: only a duplicate is refused, and then the account is already in.
        let _ = state.policy.add(id.clone());
    }
    for id in &changes.adopted {
        let _ = state.policy.mark_refreshed(id, t);
    }
    for (id, standing) in &changes.standing {
        let current = state
            .policy
            .account_status(id, t)
            .and_then(|status| status.disabled);
        match (standing, current) {
            (Standing::Disabled(reason), current) if current != Some(*reason) => {
                let _ = state.policy.disable_for(id, *reason);
            }
            // Enabled in the pool: lift what the pool had imposed. A disable the policy
            // decided itself (too many 401s) holds until an explicit enable.
            (
                Standing::Enabled,
                Some(
                    DisabledReason::Manual
                    | DisabledReason::LoginRequired
                    | DisabledReason::Deactivated,
                ),
            ) => {
                let _ = state.policy.enable(id);
            }
            _ => {}
        }
    }
    let touched = changes.added.len() + changes.removed.len() + changes.adopted.len();
    drop(state);
    if touched > 0 {
        tracing::info!(
            added = changes.added.len(),
            removed = changes.removed.len(),
            adopted_tokens = changes.adopted.len(),
            "pool changed; accounts updated"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rotation_policy::{AccountId, AccountState, Disabled, PolicyConfig, Pool, Timestamp};

    fn reason(policy: &Pool, id: &AccountId) -> Option<DisabledReason> {
        policy
            .export_account(id)
            .and_then(|a| a.disabled.map(|d| d.reason))
    }

    /// Shared state saying "login required" for an account the pool has since cleared (the
    /// person signed in again) is lifted; for one the pool still keeps out, it holds; a
    /// disable the policy decided itself is never lifted.
    #[test]
    fn the_pools_word_wins_both_ways_after_a_merge() {
        let now = Timestamp::from_millis(1_700_000_000_000);
        let mut policy = Pool::new(PolicyConfig::default(), 1).unwrap();
        let ids: Vec<AccountId> = ["a", "b", "c"]
            .iter()
            .map(|i| AccountId::new(*i).unwrap())
            .collect();
        for id in &ids {
            policy.add(id.clone()).unwrap();
        }
        let mut state = PolicyState::default();
        for (id, why) in [
            (&ids[0], DisabledReason::LoginRequired),
            (&ids[1], DisabledReason::LoginRequired),
            (&ids[2], DisabledReason::Unauthorized),
        ] {
            let mut entry = AccountState::default();
            entry.disabled = Some(Disabled::new(why, now));
            state.accounts.insert(id.clone(), entry);
        }
        policy.merge_state(&state, now);
        assert_eq!(
            reason(&policy, &ids[0]),
            Some(DisabledReason::LoginRequired)
        );
        // The pool still marks b; a was signed in again.
        let pool_disabled = vec![(ids[1].clone(), DisabledReason::LoginRequired)];
        pool_word_last(&mut policy, &pool_disabled, &state);
        assert_eq!(reason(&policy, &ids[0]), None);
        assert_eq!(
            reason(&policy, &ids[1]),
            Some(DisabledReason::LoginRequired)
        );
        assert_eq!(reason(&policy, &ids[2]), Some(DisabledReason::Unauthorized));
    }
}
