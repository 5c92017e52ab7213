// SPDX-License-Identifier: GPL-2.0

//! Exhaustive interleaving check of "invalidate racing refresh and use".
//!
//! Each actor is a short program whose steps are the atomic critical
//! sections of the kernel protocol (or the lock-free steps between them).
//! A depth-first search runs every schedule of every scenario, cloning the
//! whole world at each branch, and checks the invariants after every step
//! and at the end of every schedule. Mutants (deliberately broken variants)
//! must be caught by the same search, so that the checker cannot go blind
//! unnoticed. The search and the test helpers are shared with `vcpus.rs`
//! (`common/mod.rs`).
//!
//! This model has one vCPU, whose entry check reads `valid`, and a software
//! user that retries on a miss. The kick protocol with two vCPUs, the
//! request bit and the mm core's notifier semantics are in `vcpus.rs`.
//!
//! Actors:
//!
//! - vCPU (the refresher): `Check` [lock: `lookup`, on a miss
//!   `begin_refresh`] -> `Resolve` [no lock: read the page the uhva maps to,
//!   "map" it] -> `Finish` [lock: `finish_refresh`, release what it returns]
//!   -> `Enter` [the entry check: enter guest mode only if the cache is active
//!   and valid, and let the hardware use the pfn written to vmcs02]. A
//!   retry or a cancelled entry goes back to `Check`, at most
//!   `MAX_ATTEMPTS` times.
//! - Invalidator: `Begin` [lock: `InvalSeq::begin` and `invalidate_range`]
//!   -> `Kick` [force the vCPU out of guest mode and wait, if the page is
//!   hardware-visible] -> `Move` [the host page behind the uhva changes] ->
//!   `End` [lock: `InvalSeq::end`].
//! - Memslot update: `Swap` [new generation, the gpa now translates to
//!   another uhva] -> `InvalAll` [lock: `invalidate_all(Memslot)`] -> `Kick`.
//! - Remote teardown: `Deactivate` [lock: `deactivate`, release].
//! - User (KVM software access): `Use` [lock: `check`, on a hit the pfn must
//!   be the current backing of the gpa].

mod common;

use common::{Model, Outcome};
use nvmx_cache_model::{
    CacheState, Commit, HitView, InvalCause, InvalSeq, Lookup, Mutant, PageKind, Resolved,
};

const GPA: u64 = 0x5000;
/// The uhva of `GPA` under memslot generation 0.
const U0: u64 = 0x10_0000;
/// The uhva of `GPA` after the memslot update (generation 1).
const U1: u64 = 0x20_0000;
/// Pfns at or above this have no `struct page` (they were `memremap()`ed).
const UNMANAGED_BASE: u64 = 1000;
const MAX_ATTEMPTS: u32 = 3;

/// Ways of breaking the protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Faults {
    /// A broken `finish_refresh` from state.rs.
    state: Option<Mutant>,
    /// The notifier invalidates the caches before it raises `in_progress`.
    invalidate_before_begin: bool,
    /// The notifier ignores `Invalidated::kick_vcpu` (no kick).
    no_kick: bool,
    /// The notifier kicks only when it found the cache valid (the
    /// `gfn_to_pfn_cache_invalidate_start()` eviction rule of the old
    /// `KVM_GUEST_USES_PFN` pfncache and of the v4 series).
    kick_only_if_was_valid: bool,
    /// Memslot updates do not invalidate caches (v4's behaviour).
    no_memslot_hook: bool,
    /// The user's check ignores the memslot generation.
    gen_blind_user: bool,
}

/// The unbroken protocol.
const NONE: Faults = Faults {
    state: None,
    invalidate_before_begin: false,
    no_kick: false,
    kick_only_if_was_valid: false,
    no_memslot_hook: false,
    gen_blind_user: false,
};

// The mutants.
const IGNORE_SEQ: Faults = Faults {
    state: Some(Mutant::IgnoreSeq),
    ..NONE
};
const IGNORE_RACED: Faults = Faults {
    state: Some(Mutant::IgnoreRaced),
    ..NONE
};
const INVALIDATE_BEFORE_BEGIN: Faults = Faults {
    invalidate_before_begin: true,
    ..NONE
};
const NO_KICK: Faults = Faults {
    no_kick: true,
    ..NONE
};
const KICK_ONLY_IF_WAS_VALID: Faults = Faults {
    kick_only_if_was_valid: true,
    ..NONE
};
const NO_MEMSLOT_HOOK: Faults = Faults {
    no_memslot_hook: true,
    ..NONE
};
const GEN_BLIND_USER: Faults = Faults {
    gen_blind_user: true,
    ..NONE
};
const MUTANTS: [Faults; 7] = [
    IGNORE_SEQ,
    IGNORE_RACED,
    INVALIDATE_BEFORE_BEGIN,
    NO_KICK,
    KICK_ONLY_IF_WAS_VALID,
    NO_MEMSLOT_HOOK,
    GEN_BLIND_USER,
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum VPc {
    Check,
    Resolve,
    Finish,
    Enter,
    Exit,
    Teardown,
    Done,
}

#[derive(Clone, Debug)]
struct Vcpu {
    pc: VPc,
    attempts: u32,
    ticket: Option<nvmx_cache_model::RefreshTicket>,
    resolved: Option<Resolved>,
    entry_pfn: u64,
    /// Leave guest mode and deactivate the cache at the end (on the vCPU
    /// thread, as `free_nested()` does).
    teardown: bool,
    gave_up: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum IStep {
    BeginAndInvalidate,
    Invalidate,
    Begin,
    Kick,
    Move,
    End,
}

#[derive(Clone, Debug)]
struct Invalidator {
    uhva: u64,
    steps: &'static [IStep],
    idx: usize,
    kick: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum MPc {
    Swap,
    InvalAll,
    Kick,
    Done,
}

#[derive(Clone, Debug)]
struct Memslot {
    pc: MPc,
    kick: bool,
}

#[derive(Clone, Debug)]
enum Actor {
    Vcpu(Vcpu),
    Invalidator(Invalidator),
    Memslot(Memslot),
    RemoteTeardown { done: bool },
    User { done: bool },
}

impl Actor {
    fn done(&self) -> bool {
        match self {
            Actor::Vcpu(v) => v.pc == VPc::Done,
            Actor::Invalidator(i) => i.idx == i.steps.len(),
            Actor::Memslot(m) => m.pc == MPc::Done,
            Actor::RemoteTeardown { done } | Actor::User { done } => *done,
        }
    }
}

#[derive(Clone, Debug)]
struct World {
    faults: Faults,
    inval: InvalSeq,
    cache: CacheState,
    /// The cache's lock-free half.
    view: HitView,
    /// Current memslot generation.
    gen: u64,
    /// Host page tables: the pfn behind `U0` and behind `U1`.
    pt: [u64; 2],
    next_pfn: u64,
    /// What the hardware uses while the vCPU is in guest mode: the uhva and
    /// the pfn written to vmcs02.
    hw: Option<(u64, u64)>,
    /// Kernel mappings that exist (tokens).
    live: Vec<u64>,
    next_token: u64,
    actors: Vec<Actor>,
}

type Check = Result<(), String>;

impl World {
    fn new(kind: PageKind, faults: Faults, warm: bool, actors: Vec<Actor>) -> World {
        let mut w = World {
            faults,
            inval: InvalSeq::new(),
            cache: CacheState::new(kind),
            view: HitView::new(),
            gen: 0,
            pt: [100, 200],
            next_pfn: UNMANAGED_BASE,
            hw: None,
            live: Vec::new(),
            next_token: 1,
            actors,
        };
        w.cache.activate();
        if warm {
            let t = w
                .cache
                .begin_refresh(GPA, 0, U0, &w.inval, &w.view)
                .unwrap();
            let r = w.map(w.pt_get(U0));
            assert_eq!(
                w.cache.finish_refresh(t, r, &w.inval, &w.view),
                Commit::Installed { old: None }
            );
        }
        w
    }

    fn pt_get(&self, uhva: u64) -> u64 {
        match uhva {
            U0 => self.pt[0],
            U1 => self.pt[1],
            _ => panic!("unknown uhva {uhva:#x}"),
        }
    }

    fn pt_set(&mut self, uhva: u64, pfn: u64) {
        match uhva {
            U0 => self.pt[0] = pfn,
            U1 => self.pt[1] = pfn,
            _ => panic!("unknown uhva {uhva:#x}"),
        }
    }

    /// The uhva that the current memslots give `GPA`.
    fn slot_uhva(&self) -> u64 {
        if self.gen == 0 {
            U0
        } else {
            U1
        }
    }

    /// The page that currently backs `GPA`.
    fn backing(&self) -> u64 {
        self.pt_get(self.slot_uhva())
    }

    fn map(&mut self, pfn: u64) -> Resolved {
        let token = self.next_token;
        self.next_token += 1;
        self.live.push(token);
        Resolved {
            pfn,
            mapping: token,
            unmanaged: pfn >= UNMANAGED_BASE,
        }
    }

    fn release(&mut self, r: Resolved) -> Check {
        match self.live.iter().position(|&t| t == r.mapping) {
            Some(i) => {
                self.live.swap_remove(i);
                Ok(())
            }
            None => Err(format!("mapping {} released twice", r.mapping)),
        }
    }

    fn kick(&mut self) {
        // KVM_REQ_OUTSIDE_GUEST_MODE with KVM_REQUEST_WAIT: the vCPU is out of
        // guest mode when this returns, and its next entry check sees the
        // cache invalid.
        self.hw = None;
    }

    fn vcpu_retry(v: &mut Vcpu) {
        v.attempts += 1;
        if v.attempts < MAX_ATTEMPTS {
            v.pc = VPc::Check;
        } else {
            v.gave_up = true;
            v.pc = if v.teardown { VPc::Exit } else { VPc::Done };
        }
    }

    fn step_vcpu(&mut self, v: &mut Vcpu) -> Result<String, String> {
        Ok(match v.pc {
            VPc::Check => match self.cache.lookup(GPA, self.gen, &self.view) {
                Lookup::Hit { pfn, .. } => {
                    if pfn != self.backing() {
                        return Err(format!("vCPU hit pfn {pfn}, backing is {}", self.backing()));
                    }
                    v.entry_pfn = pfn;
                    v.pc = VPc::Enter;
                    format!("vcpu: check hit pfn {pfn}")
                }
                Lookup::Miss(why) => {
                    let uhva = self.slot_uhva();
                    match self
                        .cache
                        .begin_refresh(GPA, self.gen, uhva, &self.inval, &self.view)
                    {
                        Ok(t) => {
                            v.ticket = Some(t);
                            v.pc = VPc::Resolve;
                            format!("vcpu: miss {why:?}, begin_refresh gen {}", self.gen)
                        }
                        Err(e) => {
                            v.pc = if v.teardown { VPc::Exit } else { VPc::Done };
                            format!("vcpu: miss {why:?}, begin_refresh {e:?}")
                        }
                    }
                }
            },
            VPc::Resolve => {
                let uhva = v.ticket.as_ref().unwrap().uhva();
                let pfn = self.pt_get(uhva);
                v.resolved = Some(self.map(pfn));
                v.pc = VPc::Finish;
                format!("vcpu: resolve {uhva:#x} -> pfn {pfn}, map")
            }
            VPc::Finish => {
                let t = v.ticket.take().unwrap();
                let r = v.resolved.take().unwrap();
                let commit = match self.faults.state {
                    None => self.cache.finish_refresh(t, r, &self.inval, &self.view),
                    Some(m) => self
                        .cache
                        .finish_refresh_mutant(t, r, &self.inval, &self.view, m),
                };
                match commit {
                    Commit::Installed { old } => {
                        if let Some(old) = old {
                            self.release(old)?;
                        }
                        v.entry_pfn = r.pfn;
                        v.pc = VPc::Enter;
                    }
                    Commit::Retry { discard } => {
                        self.release(discard)?;
                        Self::vcpu_retry(v);
                    }
                    Commit::Stale { discard } => {
                        self.release(discard)?;
                        v.pc = if v.teardown { VPc::Exit } else { VPc::Done };
                    }
                }
                format!("vcpu: finish_refresh -> {commit:?}")
            }
            VPc::Enter => {
                if self.cache.is_active() && self.cache.is_valid() {
                    if self.cache.kind().hardware_visible() {
                        let uhva = self.cache.uhva().unwrap();
                        self.hw = Some((uhva, v.entry_pfn));
                    }
                    v.pc = if v.teardown { VPc::Exit } else { VPc::Done };
                    format!("vcpu: enter guest, hw uses pfn {}", v.entry_pfn)
                } else {
                    Self::vcpu_retry(v);
                    "vcpu: entry cancelled (cache invalid), reload".to_string()
                }
            }
            VPc::Exit => {
                self.hw = None;
                let _ = self.view.release();
                v.pc = VPc::Teardown;
                "vcpu: exit guest".to_string()
            }
            VPc::Teardown => {
                if let Some(r) = self.cache.deactivate(&self.view) {
                    self.release(r)?;
                }
                v.pc = VPc::Done;
                "vcpu: deactivate".to_string()
            }
            VPc::Done => unreachable!(),
        })
    }

    fn step_invalidator(&mut self, i: &mut Invalidator) -> Result<String, String> {
        let step = i.steps[i.idx];
        i.idx += 1;
        let (start, end) = (i.uhva, i.uhva + 4096);
        let mut invalidate = |w: &mut World| {
            let r = w.cache.invalidate_range(start, end, &w.view);
            i.kick = r.kick_vcpu
                && !w.faults.no_kick
                && (r.was_valid || !w.faults.kick_only_if_was_valid);
            format!("{r:?}")
        };
        Ok(match step {
            IStep::BeginAndInvalidate => {
                self.inval.begin().map_err(|e| format!("{e:?}"))?;
                format!("inval: begin + invalidate_range -> {}", invalidate(self))
            }
            IStep::Invalidate => format!("inval: invalidate_range -> {}", invalidate(self)),
            IStep::Begin => {
                self.inval.begin().map_err(|e| format!("{e:?}"))?;
                "inval: begin".to_string()
            }
            IStep::Kick => {
                if i.kick {
                    self.kick();
                }
                format!("inval: kick {}", i.kick)
            }
            IStep::Move => {
                let pfn = self.next_pfn;
                self.next_pfn += 1;
                self.pt_set(i.uhva, pfn);
                format!("inval: page at {:#x} moves to pfn {pfn}", i.uhva)
            }
            IStep::End => {
                self.inval.end().map_err(|e| format!("{e:?}"))?;
                "inval: end".to_string()
            }
        })
    }

    fn step_memslot(&mut self, m: &mut Memslot) -> Result<String, String> {
        Ok(match m.pc {
            MPc::Swap => {
                self.gen += 1;
                m.pc = if self.faults.no_memslot_hook {
                    MPc::Done
                } else {
                    MPc::InvalAll
                };
                format!("memslot: generation {}, gpa -> {:#x}", self.gen, U1)
            }
            MPc::InvalAll => {
                let r = self.cache.invalidate_all(InvalCause::Memslot, &self.view);
                m.kick = r.kick_vcpu;
                m.pc = MPc::Kick;
                format!("memslot: invalidate_all -> {r:?}")
            }
            MPc::Kick => {
                if m.kick {
                    self.kick();
                }
                m.pc = MPc::Done;
                format!("memslot: kick {}", m.kick)
            }
            MPc::Done => unreachable!(),
        })
    }

    fn step_user(&mut self) -> Result<String, String> {
        let hit = if self.faults.gen_blind_user {
            // v4's kvm_gpc_invalid()-style check: no generation.
            match (self.cache.is_valid(), self.cache.installed()) {
                (true, Some(r)) => Some(r.pfn),
                _ => None,
            }
        } else {
            // get(): under the lock, shared; no claim, no count.
            match self.cache.check(GPA, self.gen) {
                Lookup::Hit { pfn, .. } => Some(pfn),
                Lookup::Miss(_) => None,
            }
        };
        match hit {
            Some(pfn) if pfn != self.backing() => Err(format!(
                "user read pfn {pfn}, gpa is backed by {}",
                self.backing()
            )),
            Some(pfn) => Ok(format!("user: hit pfn {pfn}")),
            None => Ok("user: miss".to_string()),
        }
    }
}

/// What a search counts at the end of each complete schedule.
#[derive(Debug, Default)]
struct Tally {
    /// Schedules in which the vCPU ran out of attempts.
    gave_up: u64,
    /// Schedules that end with L2 running on the cached page.
    in_guest: u64,
    retries: u64,
    stale: u64,
}

impl Model for World {
    type Tally = Tally;

    const COLUMNS: &'static [(&'static str, usize)] = &[
        ("scenario", 22),
        ("schedules", 10),
        ("states", 11),
        ("in-guest", 9),
        ("gave-up", 9),
        ("retries", 9),
        ("stale", 7),
    ];

    const PROPERTY: &'static str = "invariant";

    fn actors(&self) -> usize {
        self.actors.len()
    }

    fn done(&self, id: usize) -> bool {
        self.actors[id].done()
    }

    fn step(&mut self, id: usize) -> Result<String, String> {
        let mut actor = self.actors[id].clone();
        let what = match &mut actor {
            Actor::Vcpu(v) => self.step_vcpu(v)?,
            Actor::Invalidator(i) => self.step_invalidator(i)?,
            Actor::Memslot(m) => self.step_memslot(m)?,
            Actor::RemoteTeardown { done } => {
                if let Some(r) = self.cache.deactivate(&self.view) {
                    self.release(r)?;
                }
                *done = true;
                "teardown: deactivate".to_string()
            }
            Actor::User { done } => {
                *done = true;
                self.step_user()?
            }
        };
        self.actors[id] = actor;
        Ok(format!("[{id}] {what}"))
    }

    /// Invariants of every reachable state.
    fn check_always(&self) -> Check {
        let c = &self.cache;
        if c.is_valid() && (!c.is_active() || c.installed().is_none()) {
            return Err("valid cache is inactive or empty".into());
        }
        if c.is_valid() {
            let (uhva, pfn) = (c.uhva().unwrap(), c.installed().unwrap().pfn);
            if self.pt_get(uhva) != pfn {
                return Err(format!(
                    "valid cache holds pfn {pfn}, {uhva:#x} maps {}",
                    self.pt_get(uhva)
                ));
            }
        }
        let published = self.view.lookup(GPA, self.gen).map(|h| h.pfn);
        let checked = match c.check(GPA, self.gen) {
            Lookup::Hit { pfn, .. } => Some(pfn),
            Lookup::Miss(_) => None,
        };
        if published != checked {
            return Err(format!(
                "the hit view publishes {published:?}, the locked state gives {checked:?}"
            ));
        }
        if let Lookup::Hit { pfn, .. } = c.check(GPA, self.gen) {
            if pfn != self.backing() {
                return Err(format!(
                    "check() hits pfn {pfn}, gpa is backed by {}",
                    self.backing()
                ));
            }
        }
        if let Some((uhva, pfn)) = self.hw {
            if self.pt_get(uhva) != pfn {
                return Err(format!(
                    "hardware uses pfn {pfn}, {uhva:#x} maps {}",
                    self.pt_get(uhva)
                ));
            }
        }
        Ok(())
    }

    /// Invariants once every actor finished.
    fn check_final(&self) -> Check {
        let c = &self.cache;
        if c.is_valid() && c.generation() != Some(self.gen) {
            return Err(format!(
                "valid cache of generation {:?} after generation {}",
                c.generation(),
                self.gen
            ));
        }
        if let Some((_, pfn)) = self.hw {
            if pfn != self.backing() {
                return Err(format!(
                    "L2 runs on pfn {pfn}, gpa is backed by {}",
                    self.backing()
                ));
            }
            if !c.is_active() {
                return Err("L2 runs on a deactivated cache".into());
            }
        }
        let installed: Vec<u64> = c.installed().iter().map(|r| r.mapping).collect();
        if self.live != installed {
            return Err(format!(
                "mappings leaked: live {:?}, installed {:?}",
                self.live, installed
            ));
        }
        if self.inval.in_progress() != 0 {
            return Err("invalidation still in progress".into());
        }
        Ok(())
    }

    fn tally_final(&self, t: &mut Tally) {
        for a in &self.actors {
            if let Actor::Vcpu(v) = a {
                t.gave_up += u64::from(v.gave_up);
            }
        }
        t.in_guest += u64::from(self.hw.is_some());
        t.retries += self.cache.stats().retries;
        t.stale += self.cache.stats().stale;
    }

    fn cells(o: &Outcome<Tally>) -> Vec<String> {
        let t = &o.tally;
        // Without a key the search walks the tree of schedules: each step
        // reaches a new state.
        let states = o.transitions;
        vec![
            o.schedules.to_string(),
            states.to_string(),
            t.in_guest.to_string(),
            t.gave_up.to_string(),
            t.retries.to_string(),
            t.stale.to_string(),
        ]
    }
}

// Scenarios.

const INVAL_STEPS: &[IStep] = &[
    IStep::BeginAndInvalidate,
    IStep::Kick,
    IStep::Move,
    IStep::End,
];
const INVAL_STEPS_BROKEN_ORDER: &[IStep] = &[
    IStep::Invalidate,
    IStep::Kick,
    IStep::Begin,
    IStep::Move,
    IStep::End,
];
const INVAL_STEPS_NO_KICK: &[IStep] = &[IStep::BeginAndInvalidate, IStep::Move, IStep::End];

fn vcpu(teardown: bool) -> Actor {
    Actor::Vcpu(Vcpu {
        pc: VPc::Check,
        attempts: 0,
        ticket: None,
        resolved: None,
        entry_pfn: 0,
        teardown,
        gave_up: false,
    })
}

fn invalidator(uhva: u64, f: Faults) -> Actor {
    let steps = if f.invalidate_before_begin {
        INVAL_STEPS_BROKEN_ORDER
    } else if f.no_kick {
        INVAL_STEPS_NO_KICK
    } else {
        INVAL_STEPS
    };
    Actor::Invalidator(Invalidator {
        uhva,
        steps,
        idx: 0,
        kick: false,
    })
}

fn memslot() -> Actor {
    Actor::Memslot(Memslot {
        pc: MPc::Swap,
        kick: false,
    })
}

fn user() -> Actor {
    Actor::User { done: false }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scenario {
    /// vCPU refresh + one invalidation of the page + a user.
    Notifier,
    /// Same, the cache already valid and the vCPU may enter directly.
    NotifierWarm,
    /// vCPU refresh + two overlapping invalidations of the page.
    NotifierTwice,
    /// vCPU refresh + memslot update + a user.
    Memslot,
    /// vCPU refresh + memslot update + munmap of the old uhva (no user: the
    /// per-state `check()` invariant covers it, and four actors take
    /// minutes).
    MemslotThenNotifier,
    /// Refresh of a KVM-only page + remote teardown + invalidation + user.
    RemoteTeardown,
    /// vCPU refresh, exit and teardown on its own thread + invalidation.
    VcpuTeardown,
}

const SCENARIOS: [Scenario; 7] = [
    Scenario::Notifier,
    Scenario::NotifierWarm,
    Scenario::NotifierTwice,
    Scenario::Memslot,
    Scenario::MemslotThenNotifier,
    Scenario::RemoteTeardown,
    Scenario::VcpuTeardown,
];

fn build(s: Scenario, f: Faults) -> World {
    let hw = PageKind::VirtualApic;
    match s {
        Scenario::Notifier => {
            World::new(hw, f, false, vec![vcpu(false), invalidator(U0, f), user()])
        }
        Scenario::NotifierWarm => {
            World::new(hw, f, true, vec![vcpu(false), invalidator(U0, f), user()])
        }
        Scenario::NotifierTwice => World::new(
            hw,
            f,
            false,
            vec![vcpu(false), invalidator(U0, f), invalidator(U0, f)],
        ),
        Scenario::Memslot => World::new(hw, f, false, vec![vcpu(false), memslot(), user()]),
        Scenario::MemslotThenNotifier => World::new(
            hw,
            f,
            false,
            vec![vcpu(false), memslot(), invalidator(U0, f)],
        ),
        Scenario::RemoteTeardown => World::new(
            PageKind::MsrBitmap,
            f,
            false,
            vec![
                vcpu(false),
                Actor::RemoteTeardown { done: false },
                invalidator(U0, f),
                user(),
            ],
        ),
        Scenario::VcpuTeardown => {
            World::new(hw, f, false, vec![vcpu(true), invalidator(U0, f), user()])
        }
    }
}

#[test]
fn all_scenarios_hold() {
    common::all_scenarios_hold(&SCENARIOS, |s| build(s, NONE));
}

common::mutant_tests! {
    build;
    mutant_finish_ignores_seq_is_caught {
        "finish_refresh ignores InvalSeq", IGNORE_SEQ, Scenario::Notifier =>
            |m| m.contains("valid cache holds pfn") || m.contains("hits pfn");
    }
    mutant_finish_ignores_invalidate_all_is_caught {
        "finish_refresh ignores invalidate_all", IGNORE_RACED, Scenario::Memslot =>
            |m| m.contains("generation") || m.contains("L2 runs");
    }
    mutant_invalidate_before_begin_is_caught {
        "notifier invalidates before begin", INVALIDATE_BEFORE_BEGIN, Scenario::Notifier =>
            |_| true;
    }
    mutant_no_kick_is_caught {
        "notifier does not kick", NO_KICK, Scenario::NotifierWarm =>
            |m| m.contains("hardware uses pfn");
    }
    mutant_kick_only_if_was_valid_is_caught {
        "second invalidation does not kick", KICK_ONLY_IF_WAS_VALID, Scenario::NotifierTwice =>
            |m| m.contains("hardware uses pfn");
    }
    mutant_no_memslot_hook_is_caught {
        "memslot update without invalidate_all", NO_MEMSLOT_HOOK, Scenario::Memslot =>
            |m| m.contains("L2 runs on pfn") || m.contains("after generation");
    }
    mutant_generation_blind_user_is_caught {
        "check without generation", GEN_BLIND_USER, Scenario::Memslot =>
            |m| m.contains("user read pfn");
    }
}

#[test]
fn every_mutant_breaks_some_scenario() {
    common::every_mutant_breaks_some_scenario(&MUTANTS, &SCENARIOS, build);
}
