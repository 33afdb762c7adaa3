//! A deliberately simple reference implementation of the rotation policy: plain vectors,
//! linear scans, a level-based token bucket (not the pool's GCRA), and shared state exported
//! and merged field by field, straight from the merge-rule table. The state-machine property
//! test compares `Pool` against it step by step, and the `select_report` benchmark uses it as
//! the naive baseline. Keep it obviously correct rather than fast.
#![allow(dead_code, unreachable_pub)]

use std::cmp::Reverse;
use std::collections::HashMap;
use std::time::Duration;

use rotation_policy::{
    AccountId, AccountState, Cooldown, CooldownReason, Decision, Disabled, DisabledReason,
    FamilyState, LAST_PLAUSIBLE_TIME, MAX_COOLDOWN_SPAN, Outcome, PolicyConfig, PolicyState,
    PoolStatus, Selection, Strategy, Timestamp,
};

/// The fields of an account's status both implementations must agree on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct View {
    pub id: String,
    pub disabled: Option<DisabledReason>,
    pub cooldown_until: Option<u64>,
    pub cooldown_reason: Option<CooldownReason>,
    /// (family, until, streak)
    pub family_cooldowns: Vec<(String, u64, u32)>,
    pub needs_refresh: bool,
    pub health: u8,
    pub tokens: Option<u32>,
    pub in_flight: u32,
    pub attempts: u64,
}

/// The pool's status in the model's terms.
pub fn view_of(status: &PoolStatus) -> Vec<View> {
    status
        .accounts
        .iter()
        .map(|a| View {
            id: a.id.as_str().to_owned(),
            disabled: a.disabled,
            cooldown_until: a.cooldown_until.map(|t| t.as_millis()),
            cooldown_reason: a.cooldown_reason,
            family_cooldowns: a
                .family_cooldowns
                .iter()
                .map(|c| (c.family.clone(), c.until.as_millis(), c.streak))
                .collect(),
            needs_refresh: a.needs_refresh,
            health: a.health,
            tokens: a.tokens,
            in_flight: a.in_flight,
            attempts: a.attempts,
        })
        .collect()
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX)
}

/// SplitMix64, the published algorithm (same as the pool's jitter source).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, bound: u64) -> u64 {
        ((u128::from(self.next()) * u128::from(bound)) >> 64) as u64
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcomes {
    pub success: u64,
    pub rate_limited: u64,
    pub unauthorized: u64,
    pub forbidden: u64,
    pub server_error: u64,
    pub network_error: u64,
    pub timeout: u64,
}

impl Outcomes {
    fn new() -> Self {
        Outcomes {
            success: 0,
            rate_limited: 0,
            unauthorized: 0,
            forbidden: 0,
            server_error: 0,
            network_error: 0,
            timeout: 0,
        }
    }
    fn bump(&mut self, o: Outcome) {
        match o {
            Outcome::Success => self.success += 1,
            Outcome::RateLimited { .. } => self.rate_limited += 1,
            Outcome::Unauthorized => self.unauthorized += 1,
            Outcome::Forbidden => self.forbidden += 1,
            Outcome::ServerError => self.server_error += 1,
            Outcome::NetworkError => self.network_error += 1,
            Outcome::Timeout => self.timeout += 1,
            _ => unreachable!("model knows every outcome"),
        }
    }
}

#[derive(Clone, Debug)]
struct Acct {
    id: AccountId,
    order: u64,
    disabled: Option<DisabledReason>,
    disabled_since: u64,
    enabled_since: Option<u64>,
    until: u64,
    until_reason: Option<CooldownReason>,
    until_since: u64,
    refreshed_at: Option<u64>,
    health_at: u64,
    needs_refresh: bool,
    unauthorized_streak: u32,
    burst_streak: u32,
    failures: Vec<u64>,
    health: u8,
    last_used: u64,
    pass: u64,
    /// Bucket level in milliseconds of refill (tokens × refill), as of `level_at`.
    level: u64,
    level_at: u64,
    in_flight: u32,
    attempts: u64,
    outcomes: Outcomes,
    /// Per family index.
    fam: Vec<Fam>,
}

/// One account's rate-limit state for one family.
#[derive(Clone, Copy, Debug, Default)]
struct Fam {
    until: u64,
    /// When the cooldown started.
    since: u64,
    streak: u32,
    /// The latest end of a start-less cooldown adopted for this family.
    unstamped_seen: u64,
}

/// A request as the model sees it.
#[derive(Clone, Debug)]
pub struct ModelRequest {
    pub family: String,
    pub session: Option<String>,
    pub attempts: u32,
    tried: Vec<(AccountId, u64)>,
}

impl ModelRequest {
    pub fn new(family: &str, session: Option<&str>) -> Self {
        ModelRequest {
            family: family.to_owned(),
            session: session.map(str::to_owned),
            attempts: 0,
            tried: Vec::new(),
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ModelCounters {
    pub requests: u64,
    pub attempts: u64,
    pub retries: u64,
    pub rotations: u64,
    pub waits: u64,
    pub exhausted: u64,
}

pub struct Model {
    c: PolicyConfig,
    rng: Rng,
    clock: u64,
    accounts: Vec<Acct>,
    families: Vec<(String, u64)>,
    sessions: HashMap<String, (AccountId, u64, u64)>,
    use_seq: u64,
    pass_clock: u64,
    order_seq: u64,
    pub counters: ModelCounters,
    pub outcomes: Outcomes,
}

impl Model {
    pub fn new(c: PolicyConfig, seed: u64) -> Self {
        Model {
            c,
            rng: Rng(seed),
            clock: 0,
            accounts: Vec::new(),
            families: Vec::new(),
            sessions: HashMap::new(),
            use_seq: 0,
            pass_clock: 0,
            order_seq: 0,
            counters: ModelCounters::default(),
            outcomes: Outcomes::new(),
        }
    }

    fn tick(&mut self, now: u64) {
        self.clock = self.clock.max(now);
    }

    fn bucket(&self) -> Option<(u64, u64)> {
        self.c
            .bucket
            .map(|b| (u64::from(b.capacity), ms(b.refill_every)))
    }

    fn level(&self, a: &Acct, t: u64) -> u64 {
        match self.bucket() {
            Some((cap, refill)) => (a.level + (t - a.level_at)).min(cap * refill),
            None => 0,
        }
    }

    fn token_at(&self, a: &Acct) -> u64 {
        match self.bucket() {
            Some((_, refill)) => {
                let l = self.level(a, self.clock);
                if l >= refill {
                    0
                } else {
                    self.clock + (refill - l)
                }
            }
            None => 0,
        }
    }

    fn avail(&self, a: &Acct, f: usize) -> u64 {
        a.until.max(a.fam[f].until).max(self.token_at(a))
    }

    fn family(&mut self, name: &str) -> usize {
        if let Some(i) = self.families.iter().position(|(n, _)| n == name) {
            return i;
        }
        let named = self.families.iter().filter(|(n, _)| n != "*").count();
        let name = if name != "*" && named >= self.c.max_families {
            if let Some(i) = self.families.iter().position(|(n, _)| n == "*") {
                return i;
            }
            "*"
        } else {
            name
        };
        self.families.push((name.to_owned(), 0));
        for a in &mut self.accounts {
            a.fam.push(Fam::default());
        }
        self.families.len() - 1
    }

    /// The family a merged record for `name` goes to: one already tracked, or a new one
    /// while fewer than half of `max_families` named families are tracked; never `*`.
    fn merge_family(&mut self, name: &str) -> Option<usize> {
        if let Some(i) = self.families.iter().position(|(n, _)| n == name) {
            return Some(i);
        }
        let named = self.families.iter().filter(|(n, _)| n != "*").count();
        if name == "*" || named >= self.c.max_families / 2 {
            return None;
        }
        Some(self.family(name))
    }

    /// Every family tracked, in the order it was first used.
    pub fn family_names(&self) -> Vec<String> {
        self.families.iter().map(|(n, _)| n.clone()).collect()
    }

    /// The family name `name` is tracked under (itself, or `*` past `max_families`), once
    /// it has been used.
    pub fn resolved_family(&self, name: &str) -> Option<String> {
        if self.families.iter().any(|(n, _)| n == name) {
            return Some(name.to_owned());
        }
        self.families
            .iter()
            .any(|(n, _)| n == "*")
            .then(|| "*".to_owned())
    }

    fn find(&self, id: &AccountId) -> Option<usize> {
        self.accounts.iter().position(|a| &a.id == id)
    }

    pub fn add(&mut self, id: AccountId) -> bool {
        if self.find(&id).is_some() {
            return false;
        }
        self.order_seq += 1;
        let (cap, refill) = self.bucket().unwrap_or((0, 0));
        self.accounts.push(Acct {
            id,
            order: self.order_seq,
            disabled: None,
            disabled_since: 0,
            enabled_since: None,
            until: 0,
            until_reason: None,
            until_since: 0,
            refreshed_at: None,
            health_at: 0,
            needs_refresh: false,
            unauthorized_streak: 0,
            burst_streak: 0,
            failures: Vec::new(),
            health: 100,
            last_used: 0,
            pass: 0,
            level: cap * refill,
            level_at: self.clock,
            in_flight: 0,
            attempts: 0,
            outcomes: Outcomes::new(),
            fam: vec![Fam::default(); self.families.len()],
        });
        true
    }

    pub fn remove(&mut self, id: &AccountId) -> bool {
        match self.find(id) {
            Some(i) => {
                self.accounts.remove(i);
                true
            }
            None => false,
        }
    }

    pub fn disable(&mut self, id: &AccountId) -> bool {
        self.disable_for(id, DisabledReason::Manual)
    }

    /// A disable is stamped no earlier than the last enable; a gone reason replaces another
    /// one strictly later, so it also wins a merge against it.
    fn disable_acct(a: &mut Acct, reason: DisabledReason, clock: u64) {
        let gone = matches!(
            reason,
            DisabledReason::LoginRequired | DisabledReason::Deactivated
        );
        let not_before_enable = clock.max(a.enabled_since.unwrap_or(0));
        match a.disabled {
            None => {
                a.disabled = Some(reason);
                a.disabled_since = not_before_enable;
            }
            Some(current) if gone && current != reason => {
                a.disabled = Some(reason);
                a.disabled_since = not_before_enable.max(a.disabled_since + 1);
            }
            Some(_) => {}
        }
    }

    pub fn disable_for(&mut self, id: &AccountId, reason: DisabledReason) -> bool {
        let clock = self.clock;
        match self.find(id) {
            Some(i) => {
                Self::disable_acct(&mut self.accounts[i], reason, clock);
                true
            }
            None => false,
        }
    }

    pub fn enable(&mut self, id: &AccountId) -> bool {
        let clock = self.clock;
        match self.find(id) {
            Some(i) => {
                let a = &mut self.accounts[i];
                let before = Self::observation(a);
                let mut since = clock.max(a.enabled_since.unwrap_or(0));
                if a.disabled.is_some() {
                    since = since.max(a.disabled_since + 1);
                }
                a.enabled_since = Some(since);
                a.disabled = None;
                a.unauthorized_streak = 0;
                Self::stamp(a, before, clock);
                true
            }
            None => false,
        }
    }

    pub fn mark_refreshed(&mut self, id: &AccountId, now: u64) -> bool {
        self.tick(now);
        let clock = self.clock;
        match self.find(id) {
            Some(i) => {
                let a = &mut self.accounts[i];
                let before = Self::observation(a);
                a.needs_refresh = false;
                let mut at = clock.max(a.refreshed_at.unwrap_or(0));
                if a.until_reason == Some(CooldownReason::Unauthorized) {
                    at = at.max(a.until_since);
                    a.until = 0;
                    a.until_reason = None;
                }
                a.refreshed_at = Some(at);
                Self::stamp(a, before, clock);
                true
            }
            None => false,
        }
    }

    fn observation(a: &Acct) -> (u8, bool, u32, u32) {
        (
            a.health,
            a.needs_refresh,
            a.unauthorized_streak,
            a.burst_streak,
        )
    }

    /// A changed observation is stamped with the clock, never earlier than the last one.
    fn stamp(a: &mut Acct, before: (u8, bool, u32, u32), clock: u64) {
        if Self::observation(a) != before {
            a.health_at = a.health_at.max(clock);
        }
    }

    fn untried(r: &ModelRequest, a: &Acct) -> bool {
        !r.tried
            .iter()
            .any(|(id, order)| *id == a.id && *order == a.order)
    }

    fn candidate(&self, r: &ModelRequest, a: &Acct, f: usize) -> bool {
        a.disabled.is_none() && self.avail(a, f) <= self.clock && Self::untried(r, a)
    }

    /// Whether `r`'s session is bound to an account that is a candidate now (affinity must
    /// then return it).
    pub fn bound_candidate(&mut self, r: &ModelRequest, now: u64) -> Option<AccountId> {
        self.tick(now);
        self.c.session_ttl?;
        let f = self.families.iter().position(|(n, _)| *n == r.family)?;
        let (id, order, expires) = self.sessions.get(r.session.as_ref()?)?.clone();
        if expires <= self.clock {
            return None;
        }
        let a = self
            .accounts
            .iter()
            .find(|a| a.id == id && a.order == order)?;
        self.candidate(r, a, f).then(|| id.clone())
    }

    pub fn select(&mut self, r: &mut ModelRequest, now: u64) -> Selection {
        self.tick(now);
        if r.attempts >= self.c.max_attempts {
            self.counters.exhausted += 1;
            return Selection::NoAccount;
        }
        let f = self.family(&r.family);
        let mut live = false;
        let mut chosen: Option<usize> = None;
        if let (Some(_), Some(s)) = (self.c.session_ttl, r.session.as_ref())
            && let Some((id, order, expires)) = self.sessions.get(s).cloned()
            && expires > self.clock
        {
            live = true;
            chosen = self
                .accounts
                .iter()
                .position(|a| a.id == id && a.order == order && self.candidate(r, a, f));
        }
        let by_affinity = chosen.is_some();
        if chosen.is_none() {
            let cands: Vec<usize> = (0..self.accounts.len())
                .filter(|&i| self.candidate(r, &self.accounts[i], f))
                .collect();
            chosen = match self.c.strategy {
                Strategy::RoundRobin => {
                    let cursor = self.families[f].1;
                    cands
                        .iter()
                        .copied()
                        .filter(|&i| self.accounts[i].order > cursor)
                        .min_by_key(|&i| self.accounts[i].order)
                        .or_else(|| {
                            cands
                                .iter()
                                .copied()
                                .min_by_key(|&i| self.accounts[i].order)
                        })
                }
                Strategy::HealthWeighted => cands.iter().copied().min_by_key(|&i| {
                    let a = &self.accounts[i];
                    (a.pass, a.order)
                }),
                _ => cands.iter().copied().min_by_key(|&i| {
                    let a = &self.accounts[i];
                    (a.last_used, a.order)
                }),
            };
        }
        let Some(i) = chosen else {
            self.counters.exhausted += 1;
            let earliest = self
                .accounts
                .iter()
                .filter(|a| a.disabled.is_none() && Self::untried(r, a))
                .map(|a| self.avail(a, f))
                .min();
            return match earliest {
                Some(at) => Selection::Exhausted {
                    retry_after: Duration::from_millis(at - self.clock),
                },
                None => Selection::NoAccount,
            };
        };
        let rotated = r.attempts > 0 || (live && !by_affinity);
        if !by_affinity && self.c.strategy == Strategy::RoundRobin {
            self.families[f].1 = self.accounts[i].order;
        }
        self.use_seq += 1;
        let a = &mut self.accounts[i];
        a.last_used = self.use_seq;
        if self.c.strategy == Strategy::HealthWeighted {
            // Stride scheduling: share of picks proportional to health + 1.
            let base = a.pass.max(self.pass_clock);
            self.pass_clock = base;
            a.pass = base + 1_000_000 / (u64::from(a.health) + 1);
        }
        a.attempts += 1;
        r.attempts += 1;
        r.tried.push((a.id.clone(), a.order));
        self.counters.attempts += 1;
        if r.attempts == 1 {
            self.counters.requests += 1;
        } else {
            self.counters.retries += 1;
        }
        if rotated {
            self.counters.rotations += 1;
        }
        let (id, order) = (a.id.clone(), a.order);
        if let (Some(ttl), Some(s)) = (self.c.session_ttl, r.session.as_ref()) {
            self.sessions
                .insert(s.clone(), (id.clone(), order, self.clock + ms(ttl)));
        }
        Selection::Account(id)
    }

    /// `Ok(())` or `Err(Some(ready_in_ms))` for an empty bucket, `Err(None)` if unknown.
    pub fn consume(&mut self, id: &AccountId, now: u64) -> Result<(), Option<u64>> {
        self.tick(now);
        let i = self.find(id).ok_or(None)?;
        if let Some((_, refill)) = self.bucket() {
            let l = self.level(&self.accounts[i], self.clock);
            if l < refill {
                return Err(Some(refill - l));
            }
            let a = &mut self.accounts[i];
            a.level = l - refill;
            a.level_at = self.clock;
        }
        self.accounts[i].in_flight += 1;
        Ok(())
    }

    fn give_back(&mut self, i: usize) {
        if let Some((cap, refill)) = self.bucket() {
            let l = self.level(&self.accounts[i], self.clock);
            let a = &mut self.accounts[i];
            a.level = (l + refill).min(cap * refill);
            a.level_at = self.clock;
        }
    }

    pub fn refund(&mut self, id: &AccountId, now: u64) -> Option<bool> {
        self.tick(now);
        let i = self.find(id)?;
        if self.accounts[i].in_flight == 0 {
            return Some(false);
        }
        self.accounts[i].in_flight -= 1;
        self.give_back(i);
        Some(true)
    }

    fn backoff(&mut self, base: u64, streak: u32) -> u64 {
        let mut wait = base;
        for _ in 1..streak {
            wait = wait.saturating_mul(2);
        }
        let pct = u64::from(self.c.jitter_percent);
        if pct > 0 {
            let spread = wait.saturating_mul(pct) / 100;
            wait = wait.saturating_add(self.rng.below(spread.saturating_add(1)));
        }
        wait.min(ms(self.c.max_cooldown))
    }

    fn cool(a: &mut Acct, until: u64, reason: CooldownReason, clock: u64) {
        if until > a.until {
            a.until = until;
            a.until_reason = Some(reason);
            a.until_since = clock.max(a.refreshed_at.map_or(0, |r| r + 1));
        }
    }

    pub fn report(
        &mut self,
        r: &mut ModelRequest,
        id: &AccountId,
        o: Outcome,
        now: u64,
    ) -> Decision {
        self.tick(now);
        let f = self.family(&r.family);
        if let Some(i) = self.find(id) {
            let clock = self.clock;
            if self.accounts[i].in_flight > 0 {
                self.accounts[i].in_flight -= 1;
                if o != Outcome::Success {
                    self.give_back(i);
                }
            }
            self.outcomes.bump(o);
            self.accounts[i].outcomes.bump(o);
            let before = Self::observation(&self.accounts[i]);
            let (min_cd, max_cd) = (ms(self.c.min_cooldown), ms(self.c.max_cooldown));
            match o {
                Outcome::Success => {
                    let a = &mut self.accounts[i];
                    a.health = (a.health + 10).min(100);
                    a.unauthorized_streak = 0;
                    a.burst_streak = 0;
                    a.needs_refresh = false;
                    a.fam[f].streak = 0;
                }
                Outcome::RateLimited { retry_after } => {
                    let streak = self.accounts[i].fam[f].streak + 1;
                    let wait = match retry_after {
                        Some(h) => ms(h).min(max_cd),
                        None => self.backoff(ms(self.c.rate_limit_backoff), streak),
                    }
                    .max(min_cd);
                    let a = &mut self.accounts[i];
                    a.health = a.health.saturating_sub(15);
                    a.fam[f].streak = streak;
                    if clock + wait > a.fam[f].until {
                        a.fam[f].until = clock + wait;
                        a.fam[f].since = clock;
                    }
                }
                Outcome::Unauthorized => {
                    let (limit, cd) = (
                        self.c.disable_after_unauthorized,
                        ms(self.c.unauthorized_cooldown),
                    );
                    let a = &mut self.accounts[i];
                    a.health = a.health.saturating_sub(40);
                    a.needs_refresh = true;
                    a.unauthorized_streak += 1;
                    if a.unauthorized_streak >= limit {
                        Self::disable_acct(a, DisabledReason::Unauthorized, clock);
                    } else {
                        Self::cool(a, clock + cd, CooldownReason::Unauthorized, clock);
                    }
                }
                Outcome::Forbidden => {
                    let cd = ms(self.c.forbidden_cooldown);
                    let a = &mut self.accounts[i];
                    a.health = a.health.saturating_sub(40);
                    Self::cool(a, clock + cd, CooldownReason::Forbidden, clock);
                }
                _ => {
                    let burst = self.c.failure_burst as usize;
                    let window = ms(self.c.failure_window);
                    let a = &mut self.accounts[i];
                    a.health = a.health.saturating_sub(20);
                    a.failures.push(clock);
                    if a.failures.len() > burst {
                        a.failures.remove(0);
                    }
                    if a.failures.len() >= burst && clock - a.failures[0] <= window {
                        a.failures.clear();
                        let streak = a.burst_streak + 1;
                        let wait = self.backoff(ms(self.c.failure_cooldown), streak);
                        let a = &mut self.accounts[i];
                        a.burst_streak = streak;
                        Self::cool(a, clock + wait, CooldownReason::FailureBurst, clock);
                    }
                }
            }
            Self::stamp(&mut self.accounts[i], before, clock);
        }
        if o == Outcome::Success {
            return Decision::ReturnToClient { retry_after: None };
        }
        let earliest = |m: &Model, only_untried: bool| {
            m.accounts
                .iter()
                .filter(|a| a.disabled.is_none() && (!only_untried || Self::untried(r, a)))
                .map(|a| m.avail(a, f))
                .min()
        };
        if r.attempts < self.c.max_attempts {
            match earliest(self, true) {
                Some(at) if at <= self.clock => return Decision::Retry,
                Some(at) if at - self.clock <= ms(self.c.max_wait) => {
                    self.counters.waits += 1;
                    return Decision::Wait(Duration::from_millis(at - self.clock));
                }
                _ => {}
            }
        }
        let retry_after = earliest(self, false)
            .filter(|&at| at > self.clock)
            .map(|at| Duration::from_millis(at - self.clock));
        Decision::ReturnToClient { retry_after }
    }

    /// The model's view of every account, in insertion order, at `now`.
    pub fn view(&self, now: u64) -> Vec<View> {
        let t = self.clock.max(now);
        self.accounts
            .iter()
            .map(|a| View {
                id: a.id.as_str().to_owned(),
                disabled: a.disabled,
                cooldown_until: (a.until > t).then_some(a.until),
                cooldown_reason: if a.until > t { a.until_reason } else { None },
                family_cooldowns: a
                    .fam
                    .iter()
                    .zip(&self.families)
                    .filter(|(s, _)| s.until > t)
                    .map(|(s, (name, _))| (name.clone(), s.until, s.streak))
                    .collect(),
                needs_refresh: a.needs_refresh,
                health: a.health,
                tokens: self
                    .bucket()
                    .map(|(_, refill)| (self.level(a, t) / refill) as u32),
                in_flight: a.in_flight,
                attempts: a.attempts,
            })
            .collect()
    }

    /// Every account's shared state at the model clock, by the table in `rotation_policy::state`.
    pub fn export(&self) -> PolicyState {
        let t = self.clock;
        let mut state = PolicyState::default();
        for a in &self.accounts {
            let mut s = AccountState::default();
            if a.until > t
                && let Some(reason) = a.until_reason
            {
                s.cooldown = Some(Cooldown::new(ms_t(a.until), reason, ms_t(a.until_since)));
            }
            for (f, (name, _)) in a.fam.iter().zip(&self.families) {
                if f.until > t {
                    let family =
                        FamilyState::new(ms_t(f.until), f.streak).with_since(ms_t(f.since));
                    s.families.insert(name.clone(), family);
                }
            }
            s.disabled = a.disabled.map(|r| Disabled::new(r, ms_t(a.disabled_since)));
            s.enabled_since = a.enabled_since.map(ms_t);
            s.refreshed_at = a.refreshed_at.map(ms_t);
            s.health = a.health;
            s.health_at = ms_t(a.health_at);
            s.needs_refresh = a.needs_refresh;
            s.unauthorized_streak = a.unauthorized_streak;
            s.burst_streak = a.burst_streak;
            state.accounts.insert(a.id.clone(), s);
        }
        state
    }

    /// Merges `doc` into the model by the table, with the pool's guards: only running
    /// cooldowns some writer can have set (ending by year 9999, at most 30 days from their
    /// start), each capped at this config's longest for its kind from its own start (a
    /// family cooldown without a start: from the first time the model sees that end, and
    /// never again); records stamped more than `max_cooldown` after now ignored; family
    /// records only for families tracked or addable by a merge; nothing running is shortened
    /// except a 401 cooldown by a later refresh. Returns the ids not in the model.
    pub fn merge(&mut self, doc: &PolicyState, now: u64) -> Vec<AccountId> {
        self.tick(now);
        let clock = self.clock;
        let max_cd = ms(self.c.max_cooldown);
        let caps = [
            (
                CooldownReason::Unauthorized,
                ms(self.c.unauthorized_cooldown),
            ),
            (CooldownReason::Forbidden, ms(self.c.forbidden_cooldown)),
            (CooldownReason::FailureBurst, max_cd),
        ];
        let ok = |t: Timestamp| t.as_millis() <= clock.saturating_add(max_cd);
        let real = |t: Timestamp| t <= LAST_PLAUSIBLE_TIME;
        let short = |since: Timestamp, until: Timestamp| {
            until.saturating_duration_since(since) <= MAX_COOLDOWN_SPAN
        };
        let mut unknown = Vec::new();
        for (id, s) in &doc.accounts {
            let Some(i) = self.find(id) else {
                unknown.push(id.clone());
                continue;
            };
            for (name, f) in &s.families {
                let plausible = real(f.until)
                    && f.since
                        .is_none_or(|since| real(since) && short(since, f.until));
                if f.until.as_millis() <= clock || !plausible || f.since.is_some_and(|t| !ok(t)) {
                    continue;
                }
                let Some(fi) = self.merge_family(name) else {
                    continue;
                };
                let ours = &mut self.accounts[i].fam[fi];
                let since = match f.since {
                    Some(since) => since.as_millis(),
                    None if f.until.as_millis() <= ours.unstamped_seen => continue,
                    None => {
                        ours.unstamped_seen = f.until.as_millis();
                        clock
                    }
                };
                let until = f.until.as_millis().min(since.saturating_add(max_cd));
                if until > clock {
                    if (until, since) > (ours.until, ours.since) {
                        ours.until = until;
                        ours.since = since;
                    }
                    ours.streak = ours.streak.max(f.streak);
                }
            }
            let a = &mut self.accounts[i];
            if let Some(at) = s.refreshed_at.filter(|&t| ok(t)) {
                a.refreshed_at = a.refreshed_at.max(Some(at.as_millis()));
            }
            let voided = |refreshed: Option<u64>, reason: Option<CooldownReason>, since: u64| {
                reason == Some(CooldownReason::Unauthorized)
                    && refreshed.is_some_and(|r| r >= since)
            };
            if a.until > clock && voided(a.refreshed_at, a.until_reason, a.until_since) {
                a.until = 0;
                a.until_reason = None;
            }
            if let Some(c) = s.cooldown
                && real(c.until)
                && real(c.since)
                && short(c.since, c.until)
                && ok(c.since)
                && !voided(a.refreshed_at, Some(c.reason), c.since.as_millis())
            {
                let cap = caps.iter().find(|(r, _)| *r == c.reason).unwrap().1;
                let until = c
                    .until
                    .as_millis()
                    .min(c.since.as_millis().saturating_add(cap));
                let theirs = (until, cooldown_rank(Some(c.reason)), c.since.as_millis());
                let ours = (a.until, cooldown_rank(a.until_reason), a.until_since);
                if until > clock && theirs > ours {
                    a.until = until;
                    a.until_reason = Some(c.reason);
                    a.until_since = c.since.as_millis();
                }
            }
            // The latest disable and the latest enable; disabled unless the enable is later.
            let mut disables = Vec::new();
            if let Some(r) = a.disabled {
                disables.push((a.disabled_since, r));
            }
            if let Some(d) = s.disabled.filter(|d| ok(d.since)) {
                disables.push((d.since.as_millis(), d.reason));
            }
            let latest = disables
                .into_iter()
                .max_by_key(|&(since, r)| (since, disabled_rank(r)));
            if let Some(at) = s.enabled_since.filter(|&t| ok(t)) {
                a.enabled_since = a.enabled_since.max(Some(at.as_millis()));
            }
            a.disabled = None;
            if let Some((since, r)) = latest
                && a.enabled_since.is_none_or(|e| since >= e)
            {
                a.disabled = Some(r);
                a.disabled_since = since;
            }
            let theirs = (
                s.health_at.as_millis(),
                Reverse(s.health.min(100)),
                s.needs_refresh,
                s.unauthorized_streak,
                s.burst_streak,
            );
            let ours = (
                a.health_at,
                Reverse(a.health),
                a.needs_refresh,
                a.unauthorized_streak,
                a.burst_streak,
            );
            if ok(s.health_at) && theirs > ours {
                a.health = s.health.min(100);
                a.health_at = s.health_at.as_millis();
                a.needs_refresh = s.needs_refresh;
                a.unauthorized_streak = s.unauthorized_streak;
                a.burst_streak = s.burst_streak;
            }
        }
        unknown
    }

    pub fn live_sessions(&self, now: u64) -> usize {
        let t = self.clock.max(now);
        self.sessions.values().filter(|s| s.2 > t).count()
    }
}

fn ms_t(ms: u64) -> Timestamp {
    Timestamp::from_millis(ms)
}

/// Equal-`until` order of cooldown reasons (none lowest).
pub fn cooldown_rank(reason: Option<CooldownReason>) -> u8 {
    match reason {
        None => 0,
        Some(CooldownReason::Unauthorized) => 1,
        Some(CooldownReason::FailureBurst) => 2,
        Some(CooldownReason::Forbidden) => 3,
        Some(_) => unreachable!("model knows every cooldown reason"),
    }
}

/// Equal-`since` order of disable reasons.
pub fn disabled_rank(reason: DisabledReason) -> u8 {
    match reason {
        DisabledReason::Manual => 0,
        DisabledReason::Unauthorized => 1,
        DisabledReason::LoginRequired => 2,
        DisabledReason::Deactivated => 3,
        _ => unreachable!("model knows every disable reason"),
    }
}
