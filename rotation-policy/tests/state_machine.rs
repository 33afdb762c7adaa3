//! State-machine property test: random operation sequences run against `Pool` and against
//! the linear-scan reference model in `model/`, which must agree on every selection,
//! consume, refund and decision, and on every account's state after every step. On top of
//! that, the invariants the issue names are asserted directly against the pool's own status:
//! a selected account is enabled, out of cooldown for the family and holds a token; tokens
//! never exceed capacity; a session stays on its account while that account is usable.

mod model;

use std::time::Duration;

use model::{Model, ModelRequest, view_of};
use proptest::prelude::*;
use rotation_policy::{
    AccountId, Decision, Outcome, PolicyConfig, PolicyError, Pool, Request, Selection,
    Strategy as Pick, Timestamp, TokenBucket,
};

const ACCOUNTS: u8 = 6;
const FAMILIES: [&str; 3] = ["gpt-5", "gpt-5-codex", "o4-mini"];

#[derive(Clone, Debug)]
enum Op {
    Add(u8),
    Remove(u8),
    Disable(u8),
    Enable(u8),
    MarkRefreshed(u8),
    Refund(u8),
    Consume(u8),
    Advance(u64),
    Serve {
        family: usize,
        session: Option<u8>,
        consume: bool,
        outcomes: Vec<Outcome>,
    },
}

fn outcome() -> impl Strategy<Value = Outcome> {
    prop_oneof![
        4 => Just(Outcome::Success),
        2 => Just(Outcome::RateLimited { retry_after: None }),
        2 => (0u64..200_000).prop_map(|ms| Outcome::RateLimited {
            retry_after: Some(Duration::from_millis(ms))
        }),
        1 => Just(Outcome::Unauthorized),
        1 => Just(Outcome::Forbidden),
        2 => Just(Outcome::ServerError),
        1 => Just(Outcome::NetworkError),
        1 => Just(Outcome::Timeout),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let idx = 0..ACCOUNTS;
    prop_oneof![
        2 => idx.clone().prop_map(Op::Add),
        1 => idx.clone().prop_map(Op::Remove),
        1 => idx.clone().prop_map(Op::Disable),
        1 => idx.clone().prop_map(Op::Enable),
        1 => idx.clone().prop_map(Op::MarkRefreshed),
        1 => idx.clone().prop_map(Op::Refund),
        1 => idx.prop_map(Op::Consume),
        3 => prop_oneof![0u64..2_000, 0u64..120_000].prop_map(Op::Advance),
        8 => (
            0..FAMILIES.len(),
            proptest::option::of(0u8..3),
            any::<bool>(),
            proptest::collection::vec(outcome(), 1..5)
        )
            .prop_map(|(family, session, consume, outcomes)| Op::Serve {
                family,
                session,
                consume,
                outcomes
            }),
    ]
}

fn config() -> impl Strategy<Value = PolicyConfig> {
    (
        prop_oneof![
            Just(Pick::LeastRecentlyUsed),
            Just(Pick::RoundRobin),
            Just(Pick::HealthWeighted)
        ],
        proptest::option::of(1u64..60_000),
        proptest::option::of((1u32..4, 1u64..5_000)),
        (1u32..5, 0u64..10_000),
        (0u64..3_000, 3_000u64..600_000, 1u64..5_000),
        (1u32..4, 1u64..60_000, 1u64..30_000),
        (1u64..120_000, 1u32..4, 1u64..300_000),
        (0u8..=50, 1usize..4),
    )
        .prop_map(
            |(
                strategy,
                ttl,
                bucket,
                (max_attempts, max_wait),
                (min_cd, max_cd, rl_backoff),
                (burst, window, failure_cd),
                (unauth_cd, disable_after, forbidden_cd),
                (jitter, max_families),
            )| {
                let mut c = PolicyConfig::default();
                c.strategy = strategy;
                c.session_ttl = ttl.map(Duration::from_millis);
                c.bucket = bucket
                    .map(|(cap, refill)| TokenBucket::new(cap, Duration::from_millis(refill)));
                c.max_attempts = max_attempts;
                c.max_wait = Duration::from_millis(max_wait);
                c.min_cooldown = Duration::from_millis(min_cd);
                c.max_cooldown = Duration::from_millis(max_cd);
                c.rate_limit_backoff = Duration::from_millis(rl_backoff);
                c.failure_burst = burst;
                c.failure_window = Duration::from_millis(window);
                c.failure_cooldown = Duration::from_millis(failure_cd);
                c.unauthorized_cooldown = Duration::from_millis(unauth_cd);
                c.disable_after_unauthorized = disable_after;
                c.forbidden_cooldown = Duration::from_millis(forbidden_cd);
                c.jitter_percent = jitter;
                c.max_families = max_families;
                c
            },
        )
}

fn id(i: u8) -> AccountId {
    AccountId::new(format!("acct-{i}")).unwrap()
}

struct Harness {
    pool: Pool,
    model: Model,
    now: u64,
    capacity: Option<u32>,
}

impl Harness {
    fn check_state(&self) -> Result<(), TestCaseError> {
        let status = self.pool.status(Timestamp::from_millis(self.now));
        let view = view_of(&status);
        prop_assert_eq!(&view, &self.model.view(self.now));
        prop_assert_eq!(status.sessions, self.model.live_sessions(self.now));
        let c = &status.counters;
        let m = &self.model.counters;
        prop_assert_eq!(
            (
                c.requests,
                c.attempts,
                c.retries,
                c.rotations,
                c.waits,
                c.exhausted
            ),
            (
                m.requests,
                m.attempts,
                m.retries,
                m.rotations,
                m.waits,
                m.exhausted
            )
        );
        let o = &c.outcomes;
        let mo = &self.model.outcomes;
        prop_assert_eq!(
            (o.success, o.rate_limited, o.unauthorized, o.forbidden),
            (mo.success, mo.rate_limited, mo.unauthorized, mo.forbidden)
        );
        prop_assert_eq!(
            (o.server_error, o.network_error, o.timeout),
            (mo.server_error, mo.network_error, mo.timeout)
        );
        // Counters agree with each other.
        prop_assert_eq!(c.attempts, c.requests + c.retries);
        // Refunds never push a bucket past its capacity.
        if let Some(cap) = self.capacity {
            for a in &status.accounts {
                prop_assert!(a.tokens.is_some_and(|t| t <= cap), "{:?} over capacity", a);
            }
        }
        Ok(())
    }

    fn serve(
        &mut self,
        family: &str,
        session: Option<String>,
        consume: bool,
        outcomes: &[Outcome],
    ) -> Result<(), TestCaseError> {
        let mut request = Request::new(family);
        if let Some(s) = &session {
            request = request.with_session(s.clone());
        }
        let mut mreq = ModelRequest::new(family, session.as_deref());
        // Bounded: attempts are capped by max_attempts (< 5) and each wait is followed by
        // a selection; 16 steps is far more than any legal run needs.
        for step in 0..16 {
            let now = Timestamp::from_millis(self.now);
            let before = self.pool.status(now);
            let sticky = self.model.bound_candidate(&mreq, self.now);
            let got = self.pool.select(&mut request, now);
            let want = self.model.select(&mut mreq, self.now);
            prop_assert_eq!(&got, &want, "select, step {}", step);
            let account = match got {
                Selection::Account(account) => account,
                Selection::Exhausted { retry_after } => {
                    prop_assert!(retry_after > Duration::ZERO);
                    return Ok(());
                }
                Selection::NoAccount => return Ok(()),
            };
            // Affinity: a usable bound account is kept.
            if let Some(bound) = sticky {
                prop_assert_eq!(&bound, &account, "session moved off a usable account");
            }
            // The chosen account was usable at `now` by the pool's own account.
            let state = before
                .accounts
                .iter()
                .find(|a| a.id == account)
                .ok_or_else(|| TestCaseError::fail("selected account missing from status"))?;
            prop_assert!(state.disabled.is_none(), "selected a disabled account");
            prop_assert!(state.cooldown_until.is_none(), "selected a cooling account");
            let tracked = self.model.resolved_family(family);
            prop_assert!(
                !state
                    .family_cooldowns
                    .iter()
                    .any(|c| Some(&c.family) == tracked.as_ref()),
                "selected an account cooling for the family: {:?}",
                state
            );
            prop_assert!(
                state.tokens.is_none_or(|t| t >= 1),
                "selected an empty bucket"
            );

            if consume {
                let got = self.pool.consume(&account, now);
                let want = self.model.consume(&account, self.now);
                match (got, want) {
                    (Ok(()), Ok(())) => {}
                    (Err(PolicyError::NoToken { ready_in, .. }), Err(Some(ms))) => {
                        prop_assert_eq!(ready_in, Duration::from_millis(ms));
                    }
                    (got, want) => prop_assert!(false, "consume: {:?} vs {:?}", got, want),
                }
            }
            let outcome = outcomes[step % outcomes.len()];
            let got = self.pool.report(&mut request, &account, outcome, now);
            let want = self.model.report(&mut mreq, &account, outcome, self.now);
            prop_assert_eq!(got, want, "report {:?}", outcome);
            self.check_state()?;
            match got {
                Decision::Retry => {}
                Decision::Wait(delay) => {
                    prop_assert!(delay > Duration::ZERO);
                    prop_assert!(delay <= self.pool.config().max_wait);
                    self.now += u64::try_from(delay.as_millis()).unwrap();
                }
                Decision::ReturnToClient { retry_after } => {
                    if let Some(wait) = retry_after {
                        prop_assert!(wait > Duration::ZERO);
                        prop_assert!(wait <= Duration::from_secs(24 * 3600));
                    }
                    return Ok(());
                }
            }
        }
        prop_assert!(false, "request loop did not end within 16 steps");
        Ok(())
    }

    fn run(&mut self, op: &Op) -> Result<(), TestCaseError> {
        let now = Timestamp::from_millis(self.now);
        match op {
            Op::Add(i) => {
                let got = self.pool.add(id(*i));
                prop_assert_eq!(got.is_ok(), self.model.add(id(*i)));
            }
            Op::Remove(i) => {
                prop_assert_eq!(
                    self.pool.remove(&id(*i)).is_ok(),
                    self.model.remove(&id(*i))
                );
            }
            Op::Disable(i) => {
                prop_assert_eq!(
                    self.pool.disable(&id(*i)).is_ok(),
                    self.model.disable(&id(*i))
                );
            }
            Op::Enable(i) => {
                prop_assert_eq!(
                    self.pool.enable(&id(*i)).is_ok(),
                    self.model.enable(&id(*i))
                );
            }
            Op::MarkRefreshed(i) => {
                prop_assert_eq!(
                    self.pool.mark_refreshed(&id(*i), now).is_ok(),
                    self.model.mark_refreshed(&id(*i), self.now)
                );
            }
            Op::Refund(i) => {
                prop_assert_eq!(
                    self.pool.refund(&id(*i), now).ok(),
                    self.model.refund(&id(*i), self.now)
                );
            }
            Op::Consume(i) => {
                let got = self.pool.consume(&id(*i), now);
                let want = self.model.consume(&id(*i), self.now);
                match (got, want) {
                    (Ok(()), Ok(())) | (Err(PolicyError::UnknownAccount { .. }), Err(None)) => {}
                    (Err(PolicyError::NoToken { ready_in, .. }), Err(Some(ms))) => {
                        prop_assert_eq!(ready_in, Duration::from_millis(ms));
                    }
                    (got, want) => prop_assert!(false, "consume: {:?} vs {:?}", got, want),
                }
            }
            Op::Advance(ms) => self.now += ms,
            Op::Serve {
                family,
                session,
                consume,
                outcomes,
            } => {
                let session = session.map(|s| format!("session-{s}"));
                self.serve(FAMILIES[*family], session, *consume, outcomes)?;
            }
        }
        self.check_state()
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn pool_matches_reference_model(
        config in config(),
        seed in any::<u64>(),
        ops in proptest::collection::vec(op(), 1..80),
    ) {
        let capacity = config.bucket.map(|b| b.capacity);
        let mut h = Harness {
            pool: Pool::new(config.clone(), seed).unwrap(),
            model: Model::new(config, seed),
            now: 0,
            capacity,
        };
        for op in &ops {
            h.run(op)?;
        }
    }
}

/// A hand-written run through the model and the pool that must hit every outcome kind, so
/// the property test's comparison is known to exercise real state (not only empty pools).
#[test]
fn reference_model_and_pool_agree_on_a_scripted_run() {
    let mut config = PolicyConfig::default();
    config.jitter_percent = 25;
    config.bucket = Some(TokenBucket::new(2, Duration::from_millis(500)));
    config.forbidden_cooldown = Duration::from_secs(5);
    config.unauthorized_cooldown = Duration::from_secs(5);
    config.disable_after_unauthorized = 100;
    let mut h = Harness {
        pool: Pool::new(config.clone(), 9).unwrap(),
        model: Model::new(config, 9),
        now: 0,
        capacity: Some(2),
    };
    for i in 0..4 {
        h.run(&Op::Add(i)).unwrap();
    }
    let all = vec![
        Outcome::RateLimited { retry_after: None },
        Outcome::ServerError,
        Outcome::ServerError,
        Outcome::ServerError,
        Outcome::Unauthorized,
        Outcome::Forbidden,
        Outcome::Timeout,
        Outcome::NetworkError,
        Outcome::Success,
    ];
    for round in 0..30u8 {
        h.run(&Op::Serve {
            family: usize::from(round % 2),
            session: Some(round % 3),
            consume: true,
            outcomes: all[usize::from(round) % all.len()..].to_vec(),
        })
        .unwrap();
        h.run(&Op::Advance(9_000)).unwrap();
    }
    let status = h.pool.status(Timestamp::from_millis(h.now));
    let o = status.counters.outcomes;
    assert!(
        o.rate_limited > 0 && o.server_error > 0 && o.unauthorized > 0 && o.success > 0,
        "{o:?}"
    );
    assert!(status.counters.rotations > 0);
}
