//! Bookkeeping of one request between account selection and its answer, kept exact when
//! the client goes away (an RAII guard), and the one place attempt outcomes are recorded
//! ([`Pending::record_outcome`]).

use std::sync::Arc;

use rotation_policy::usage::UsageReport;
use rotation_policy::{AccountId, Decision, Outcome};

use super::{Shared, now};

/// The end of one proxied request, for the counters.
pub(super) enum Answer {
    Ok,
    UpstreamError,
    GaveUp,
    NoAccount,
    BadGateway,
}

/// One request between account selection and its answer. Keeps `in_flight` and the
/// policy's dispatch bookkeeping exact even when the client goes away mid-request (hyper
/// then drops the handler future): the drop counts it as cancelled and refunds the dispatch.
pub(super) struct Pending {
    pub(super) shared: Arc<Shared>,
    pub(super) finished: bool,
    pub(super) dispatched: Option<AccountId>,
}

impl Pending {
    pub(super) fn finish(&mut self, answer: Answer, error: Option<String>) {
        self.finished = true;
        let mut state = self.shared.lock();
        let c = &mut state.counters;
        c.in_flight -= 1;
        match answer {
            Answer::Ok => c.ok += 1,
            Answer::UpstreamError => c.upstream_errors += 1,
            Answer::GaveUp => c.gave_up += 1,
            Answer::NoAccount => c.no_account += 1,
            Answer::BadGateway => c.bad_gateway += 1,
        }
        if error.is_some() {
            state.last_error = error;
        }
    }

    /// Tells the policy how the attempt on `account` ended (which also ends its dispatch),
    /// records `error` as the last error of the proxy and of the account, and returns the
    /// policy's decision.
    pub(super) fn record_outcome(
        &mut self,
        request: &mut rotation_policy::Request,
        account: &AccountId,
        outcome: Outcome,
        error: Option<String>,
    ) -> Decision {
        self.record(request, account, outcome, error, None)
    }

    /// [`record_outcome`](Self::record_outcome) for an upstream answer that reported
    /// `usage`: the usage is recorded first, under the same lock, so the policy decides
    /// what follows the answer with it.
    pub(super) fn record_answer(
        &mut self,
        request: &mut rotation_policy::Request,
        account: &AccountId,
        outcome: Outcome,
        error: Option<String>,
        usage: &UsageReport,
    ) -> Decision {
        self.record(request, account, outcome, error, Some(usage))
    }

    fn record(
        &mut self,
        request: &mut rotation_policy::Request,
        account: &AccountId,
        outcome: Outcome,
        error: Option<String>,
        usage: Option<&UsageReport>,
    ) -> Decision {
        self.dispatched = None;
        let t = now();
        let mut state = self.shared.lock();
        if let Some(usage) = usage.filter(|u| !u.is_empty()) {
            // ok: only an account the pool no longer holds is refused; nothing to record.
            let _ = state.policy.record_usage(account, usage, t);
        }
        let decision = state.policy.report(request, account, outcome, t);
        if let Some(e) = &error {
            state.last_error = Some(e.clone());
        }
        drop(state);
        if let Some(e) = error {
            self.shared.accounts.note_error(account, e);
        }
        decision
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let mut state = self.shared.lock();
        if let Some(id) = self.dispatched.take() {
            let _ = state.policy.refund(&id, now());
        }
        state.counters.in_flight -= 1;
        state.counters.cancelled += 1;
        drop(state);
        tracing::info!("client went away before the answer; request cancelled");
    }
}
