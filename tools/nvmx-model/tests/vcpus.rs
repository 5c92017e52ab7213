// SPDX-License-Identifier: GPL-2.0

//! Exhaustive check of the kick protocol with two vCPUs, the mm core's
//! notifier semantics and KVM's reading of a NULL from `get()`.
//!
//! `interleavings.rs` checks the retry protocol with one vCPU, whose entry
//! check reads `valid` and whose software user retries on a miss. This file
//! checks what that model cannot see (`review-2026-12.md` F1, F2, F3, F5
//! and F7):
//!
//! - Two vCPUs, each with its own cache of a hardware-visible page
//!   (virtual-APIC), backed by the same host page or by different ones.
//! - The notifier of `rust/cache.rs`: `invalidate_range_start` takes the
//!   per-VM lock, calls `InvalSeq::begin`, then walks the caches one by one
//!   under each cache's lock. When `invalidate_range` returns `kick_vcpu`,
//!   it makes `KVM_REQ_NESTED_PAGES_RELOAD` pending on the cache's own vCPU
//!   before it drops that cache's lock. After the walk, still under the VM
//!   lock, it kicks the marked vCPUs out of guest mode and waits. It never
//!   fails. `invalidate_range_end` calls `InvalSeq::end` under the VM lock.
//! - The mm core (`mm/mmu_notifier.c`): a start that fails (only `-EAGAIN`,
//!   only for non-blockable ranges) is a `WARN` when the notifier has an
//!   `invalidate_range_end`, and the core then calls `invalidate_range_end`
//!   of every notifier, the failed one included; the caller (the OOM
//!   reaper) then skips the range, so no page is freed. A start can also
//!   fail in another subscriber, with the same call of every `end`.
//! - The host page is freed once `invalidate_range_start` returned 0: from
//!   then on, a vCPU in guest mode with that page's address, a valid cache
//!   entry holding it or a `get()` returning it is a use-after-free.
//! - The lock-free hit of `rust/cache.rs`: `map()` claims the page
//!   (`HitView::claim`) in one step and reads the published copy
//!   (`HitView::lookup`) in the next; the walk withdraws the copy and reads
//!   the claim in one step under the cache's lock.
//! - KVM: the vCPU thread runs `vcpu_enter_guest()`: it handles a pending
//!   reload request (`unmap()` then `map()`), runs the software user (event
//!   injection: `get()`), then sets `IN_GUEST_MODE` and enters unless a
//!   request is pending. In guest mode the CPU uses the pfn written to
//!   vmcs02 until it leaves guest mode. A NULL from `get()` while the page is
//!   mapped is fatal (`KVM_EXIT_INTERNAL_ERROR`) unless the reload request
//!   is pending on that vCPU, in which case KVM retries after the reload.
//!   A nested VM-exit calls `unmap()` (`HitView::release`); VM teardown then
//!   calls `vcpu_free()`, which takes the VM lock, deactivates the cache
//!   and takes it off the VM's list, after which the vCPU is freed: a
//!   request or a kick that reaches it then is a use-after-free.
//! - A performance property (F7): the walk never asks to kick a vCPU that
//!   has no page mapped.
//!
//! Every step is one critical section (or one lock-free step) of the
//! kernel code. The search is a depth-first search over all schedules that
//! remembers the states it has explored (by a 128-bit hash), so it visits
//! each state once; it counts the complete schedules exactly, as the number
//! of paths through the state graph. The search and the test helpers are
//! shared with `interleavings.rs` (`common/mod.rs`).

mod common;

use common::{Model, Outcome};
use nvmx_cache_model::{
    CacheState, Commit, Hit, HitView, InvalSeq, PageKind, RefreshTicket, Resolved,
};

const NR_VCPUS: usize = 2;
/// The two host pages: `UA` and `UB`, one page each.
const UA: u64 = 0x10_0000;
const UB: u64 = 0x20_0000;
const PAGE: u64 = 4096;
/// The gpa of each vCPU's virtual-APIC page (L1 chooses it per vCPU).
const GPA: [u64; NR_VCPUS] = [0x5000, 0x6000];
/// The pfns behind `UA` and `UB` at the start.
const PFN0: [u64; 2] = [100, 200];
const MAX_ATTEMPTS: u8 = 3;

/// Ways of breaking the protocol, each an older or a test-knob version of
/// `rust/cache.rs` and `rust/shim.c`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Faults {
    /// F1: the request and the kick go to vCPU 0 whatever vCPU's cache
    /// was invalidated (`vcpu_idx` read in `vcpu_init()`, before KVM sets
    /// it; `break_kick_target`).
    kick_vcpu0: bool,
    /// F2: a non-blockable start that must kick calls `InvalSeq::end`
    /// itself and returns `-EAGAIN` (the code before 250dc60); the core
    /// then calls `invalidate_range_end` again.
    nonblock_eagain: bool,
    /// F2 as the `break_nonblock` knob of `rust/shim.c` re-creates it: a
    /// non-blockable start returns `-EAGAIN` at once, without
    /// `InvalSeq::begin`; the core then calls `invalidate_range_end`.
    nonblock_eagain_at_once: bool,
    /// F3: the requests are made after the whole walk, once the cache locks
    /// are dropped (the code before 250dc60).
    request_after_walk: bool,
    /// F7: `unmap()` does not release the claim (`break_sticky_hw`).
    sticky_hw: bool,
    /// The lock-free hit reads the published page before it claims it
    /// (the store-buffering pair of `HitView` in the wrong order).
    check_before_claim: bool,
    /// F5: the kick and its wait run after the VM lock is dropped (the code
    /// before 250dc60), so `vcpu_free()` can run in between.
    kick_after_unlock: bool,
    /// The walk asks for a kick only when it found the cache valid (the
    /// rule of the old `KVM_GUEST_USES_PFN` pfncache and of the v4 series).
    kick_only_if_was_valid: bool,
    /// Not a fault of the module: the host does not panic on `WARN`, so
    /// the core's `WARN` and an unbalanced `invalidate_range_end` are only
    /// counted, and the search goes on to what they lead to.
    lenient_warns: bool,
}

/// The module as it is.
const NONE: Faults = Faults {
    kick_vcpu0: false,
    nonblock_eagain: false,
    nonblock_eagain_at_once: false,
    request_after_walk: false,
    sticky_hw: false,
    check_before_claim: false,
    kick_after_unlock: false,
    kick_only_if_was_valid: false,
    lenient_warns: false,
};

// The mutants.
const KICK_VCPU0: Faults = Faults {
    kick_vcpu0: true,
    ..NONE
};
const NONBLOCK_EAGAIN: Faults = Faults {
    nonblock_eagain: true,
    ..NONE
};
const NONBLOCK_EAGAIN_AT_ONCE: Faults = Faults {
    nonblock_eagain_at_once: true,
    ..NONE
};
const REQUEST_AFTER_WALK: Faults = Faults {
    request_after_walk: true,
    ..NONE
};
const STICKY_HW: Faults = Faults {
    sticky_hw: true,
    ..NONE
};
const KICK_AFTER_UNLOCK: Faults = Faults {
    kick_after_unlock: true,
    ..NONE
};
const CHECK_BEFORE_CLAIM: Faults = Faults {
    check_before_claim: true,
    ..NONE
};
const MUTANTS: [Faults; 7] = [
    KICK_VCPU0,
    NONBLOCK_EAGAIN,
    NONBLOCK_EAGAIN_AT_ONCE,
    REQUEST_AFTER_WALK,
    STICKY_HW,
    KICK_AFTER_UNLOCK,
    CHECK_BEFORE_CLAIM,
];

/// `f` on a host that does not panic on `WARN`.
const fn lenient(f: Faults) -> Faults {
    Faults {
        lenient_warns: true,
        ..f
    }
}

/// Where a vCPU thread is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum VPc {
    /// `map()` fast path, no lock: `HitView::claim` (one atomic step).
    MapFast,
    /// `map()` fast path, no lock: `HitView::lookup`; a miss gives the
    /// claim back.
    MapCheck,
    /// `map()` slow path: under the VM lock and the cache lock,
    /// `note_miss` and `begin_refresh`.
    MapBegin,
    /// No lock: resolve the uhva and map the page.
    Resolve,
    /// Under the VM lock and the cache lock: `finish_refresh`.
    Finish,
    /// Top of `vcpu_enter_guest()`: `kvm_check_request()` clears a pending
    /// reload request, and the vCPU goes to reload the page.
    Requests,
    /// The first half of the reload: `unmap()` (`HitView::release`); then
    /// `map()`.
    Unmap,
    /// Event injection: `get()` under the cache lock (read).
    Inject,
    /// `IN_GUEST_MODE`, then the request check; enter if none is pending.
    Enter,
    /// In guest mode (L2): the CPU uses the pfn in vmcs02.
    InGuest,
    /// In L1 after a nested VM-exit (`unmap()` done).
    L1,
    /// `map()` gave up after `MAX_ATTEMPTS` retries.
    Failed,
    /// `vcpu_free()` (`CacheVcpu::drop`): under the VM lock, deactivate the
    /// cache and take it off the VM's list; KVM then frees the vCPU.
    Free,
    /// The vCPU is freed.
    Freed,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Vcpu {
    pc: VPc,
    /// The host page that backs this vCPU's gpa.
    uhva: u64,
    cache: CacheState,
    view: HitView,
    /// What `MapFast` left for `MapCheck`: the previous claim, or (with
    /// `check_before_claim`) the lookup's result.
    prev_claim: bool,
    peek: Option<Hit>,
    /// `KVM_REQ_NESTED_PAGES_RELOAD` is pending on this vCPU.
    request: bool,
    /// KVM holds a map of the page (from a successful `map()` to `unmap()`).
    mapped: bool,
    /// The pfn the CPU uses while in guest mode.
    hw: Option<u64>,
    /// The pfn the last successful `map()` returned (written to vmcs02).
    entry_pfn: u64,
    ticket: Option<RefreshTicket>,
    resolved: Option<Resolved>,
    attempts: u8,
    /// Runs the software user (`get()`) before every entry.
    user: bool,
    /// Leaves L2 for good (nested VM-exit, `unmap()`) once in it.
    exit_to_l1: bool,
    /// Has one exit from L2 that L0 handles (the page stays mapped) left.
    l0_exit: bool,
    /// After the nested VM-exit, the VM goes away: `free_nested()` unmapped
    /// the page, then `vcpu_free()`.
    teardown: bool,
}

impl Vcpu {
    fn done(&self) -> bool {
        match self.pc {
            VPc::InGuest => !self.exit_to_l1 && !self.l0_exit,
            VPc::L1 | VPc::Failed | VPc::Freed => true,
            _ => false,
        }
    }
}

/// Where a notifier call is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum NPc {
    /// `invalidate_range_start`: take the VM lock, `InvalSeq::begin`.
    Begin,
    /// The walk: the cache of vCPU `n`, under its lock.
    Walk(usize),
    /// F3 only: the requests, after the walk.
    Requests,
    /// F5 only: drop the VM lock before the kick.
    Unlock,
    /// Kick the marked vCPUs out of guest mode and wait, drop the VM lock,
    /// return (or, F2, `InvalSeq::end` and return `-EAGAIN`).
    Kick,
    /// The core calls `invalidate_range_end` after a failed start.
    CoreEnd,
    /// The host page tables change: the pages of the range are replaced.
    Zap,
    /// `invalidate_range_end`.
    End,
    Done,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Notifier {
    start: u64,
    end: u64,
    /// `mmu_notifier_range_blockable()`; false for the OOM reaper.
    blockable: bool,
    /// Another subscriber's start fails with `-EAGAIN` (non-blockable only).
    other_fails: bool,
    pc: NPc,
    /// vCPUs marked for the kick, as a bit mask.
    marked: u8,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct World {
    faults: Faults,
    inval: InvalSeq,
    /// The actor holding the per-VM lock across steps (a notifier in
    /// `invalidate_range_start`).
    vm_lock: Option<usize>,
    /// The host page tables: the pfn behind `UA` and behind `UB`.
    pt: [u64; 2],
    /// Freed pfns (sorted): those of every `invalidate_range_start` that
    /// returned 0, and those the page-table change replaced.
    gone: Vec<u64>,
    /// Kernel mapping tokens that exist (a sorted multiset).
    live: Vec<u64>,
    /// `WARN`s and unbalanced ends seen with `lenient_warns`.
    warns: u8,
    vcpus: [Vcpu; NR_VCPUS],
    notifiers: Vec<Notifier>,
}

type Step = Result<String, String>;

fn page_index(uhva: u64) -> usize {
    match uhva {
        UA => 0,
        UB => 1,
        _ => panic!("unknown uhva {uhva:#x}"),
    }
}

/// The pages of `[start, end)`.
fn pages(start: u64, end: u64) -> impl Iterator<Item = u64> {
    [UA, UB]
        .into_iter()
        .filter(move |&u| u < end && start < u + PAGE)
}

impl World {
    fn pt_get(&self, uhva: u64) -> u64 {
        self.pt[page_index(uhva)]
    }

    fn is_gone(&self, pfn: u64) -> bool {
        self.gone.binary_search(&pfn).is_ok()
    }

    fn free(&mut self, pfn: u64) {
        if let Err(i) = self.gone.binary_search(&pfn) {
            self.gone.insert(i, pfn);
        }
    }

    fn map(&mut self, vcpu: usize, pfn: u64) -> Resolved {
        let token = pfn * 4 + vcpu as u64 + 1;
        let i = self.live.binary_search(&token).unwrap_or_else(|i| i);
        self.live.insert(i, token);
        Resolved {
            pfn,
            mapping: token,
            unmanaged: false,
        }
    }

    fn release(&mut self, r: Resolved) -> Result<(), String> {
        match self.live.binary_search(&r.mapping) {
            Ok(i) => {
                self.live.remove(i);
                Ok(())
            }
            Err(_) => Err(format!("mapping {} released twice", r.mapping)),
        }
    }

    /// A `WARN` or a `pr_warn` of the kernel: a violation, or counted.
    fn warn(&mut self, msg: String) -> Result<(), String> {
        if self.faults.lenient_warns {
            self.warns += 1;
            Ok(())
        } else {
            Err(msg)
        }
    }

    fn inval_end(&mut self, who: &str) -> Result<(), String> {
        match self.inval.end() {
            Ok(()) => Ok(()),
            Err(e) => self.warn(format!(
                "{who}: unbalanced invalidate_range_end (InvalSeq::end -> {e:?})"
            )),
        }
    }

    /// Makes the reload request pending on vCPU `t`.
    fn request(&mut self, t: usize) -> Result<(), String> {
        if self.vcpus[t].pc == VPc::Freed {
            return Err(format!(
                "request made to vcpu{t}, which is freed (use-after-free of the vCPU)"
            ));
        }
        self.vcpus[t].request = true;
        Ok(())
    }

    /// Where the walk goes after the cache of vCPU `j`.
    fn after_walk(&self, j: usize) -> NPc {
        let f = self.faults;
        if j + 1 < NR_VCPUS {
            NPc::Walk(j + 1)
        } else if f.request_after_walk {
            NPc::Requests
        } else if f.kick_after_unlock {
            NPc::Unlock
        } else {
            NPc::Kick
        }
    }

    fn step_vcpu(&mut self, i: usize) -> Step {
        let gpa = GPA[i];
        let mut v = self.vcpus[i].clone();
        let what = match v.pc {
            VPc::MapFast => {
                v.pc = VPc::MapCheck;
                if self.faults.check_before_claim {
                    v.peek = v.view.lookup(gpa, 0);
                    format!("map: lookup first -> {:?}", v.peek)
                } else {
                    v.prev_claim = v.view.claim();
                    "map: claim".to_string()
                }
            }
            VPc::MapCheck => {
                let hit = if self.faults.check_before_claim {
                    v.prev_claim = v.view.claim();
                    v.peek.take()
                } else {
                    v.view.lookup(gpa, 0)
                };
                match hit {
                    Some(h) => {
                        v.view.count_hit();
                        v.mapped = true;
                        v.entry_pfn = h.pfn;
                        v.pc = VPc::Requests;
                        format!("map: hit pfn {}", h.pfn)
                    }
                    None => {
                        v.view.restore_claim(v.prev_claim);
                        v.pc = VPc::MapBegin;
                        "map: miss, claim given back".to_string()
                    }
                }
            }
            VPc::MapBegin => {
                v.cache.note_miss();
                let t = v
                    .cache
                    .begin_refresh(gpa, 0, v.uhva, &self.inval, &v.view)
                    .map_err(|e| format!("vcpu{i}: begin_refresh {e:?}"))?;
                v.ticket = Some(t);
                v.pc = VPc::Resolve;
                "map: begin_refresh".to_string()
            }
            VPc::Resolve => {
                let pfn = self.pt_get(v.uhva);
                v.resolved = Some(self.map(i, pfn));
                v.pc = VPc::Finish;
                format!("map: resolve {:#x} -> pfn {pfn}", v.uhva)
            }
            VPc::Finish => {
                let t = v.ticket.take().unwrap();
                let r = v.resolved.take().unwrap();
                let commit = v.cache.finish_refresh(t, r, &self.inval, &v.view);
                match commit {
                    Commit::Installed { old } => {
                        if let Some(old) = old {
                            self.release(old)?;
                        }
                        v.mapped = true;
                        v.entry_pfn = r.pfn;
                        v.pc = VPc::Requests;
                    }
                    Commit::Retry { discard } => {
                        self.release(discard)?;
                        v.attempts += 1;
                        v.pc = if v.attempts < MAX_ATTEMPTS {
                            VPc::MapFast
                        } else {
                            VPc::Failed
                        };
                    }
                    Commit::Stale { discard } => {
                        self.release(discard)?;
                        v.pc = VPc::Failed;
                    }
                }
                format!("map: finish_refresh -> {commit:?}")
            }
            VPc::Requests => {
                if v.request {
                    v.request = false;
                    v.pc = VPc::Unmap;
                    "reload request pending: cleared, reload".to_string()
                } else {
                    v.pc = if v.user { VPc::Inject } else { VPc::Enter };
                    "no request".to_string()
                }
            }
            VPc::Inject => match (v.cache.is_valid(), v.cache.installed()) {
                (true, Some(r)) => {
                    let now = self.pt_get(v.uhva);
                    if self.is_gone(r.pfn) || r.pfn != now {
                        return Err(format!(
                            "vcpu{i}: get() returned pfn {}, freed ({:#x} maps pfn {now})",
                            r.pfn, v.uhva
                        ));
                    }
                    v.pc = VPc::Enter;
                    format!("get() -> pfn {}", r.pfn)
                }
                _ if v.request => {
                    v.pc = VPc::Requests;
                    "get() -> NULL, reload request pending: retry after the reload".to_string()
                }
                _ => {
                    return Err(format!(
                        "vcpu{i}: get() returned NULL for a mapped page with no reload \
                         request pending: KVM takes it as fatal (KVM_EXIT_INTERNAL_ERROR)"
                    ))
                }
            },
            VPc::Enter => {
                if v.request {
                    v.pc = VPc::Requests;
                    "entry cancelled: request pending".to_string()
                } else {
                    v.hw = Some(v.entry_pfn);
                    v.pc = VPc::InGuest;
                    format!("enter L2, hardware uses pfn {}", v.entry_pfn)
                }
            }
            VPc::Unmap => {
                if !self.faults.sticky_hw {
                    let _ = v.view.release();
                }
                v.mapped = false;
                v.pc = VPc::MapFast;
                "reload: unmap, map again".to_string()
            }
            VPc::InGuest if v.l0_exit => {
                v.hw = None;
                v.l0_exit = false;
                v.pc = VPc::Requests;
                "exit from L2 handled by L0 (page stays mapped)".to_string()
            }
            VPc::InGuest => {
                v.hw = None;
                if !self.faults.sticky_hw {
                    let _ = v.view.release();
                }
                v.mapped = false;
                v.pc = if v.teardown { VPc::Free } else { VPc::L1 };
                "nested VM-exit to L1, unmap".to_string()
            }
            VPc::Free => {
                if let Some(r) = v.cache.deactivate(&v.view) {
                    self.release(r)?;
                }
                v.pc = VPc::Freed;
                "vcpu_free: VM lock, deactivate, off the list; vCPU freed".to_string()
            }
            VPc::L1 | VPc::Failed | VPc::Freed => unreachable!(),
        };
        self.vcpus[i] = v;
        Ok(what)
    }

    fn step_notifier(&mut self, n: usize) -> Step {
        let id = NR_VCPUS + n;
        let mut nf = self.notifiers[n].clone();
        let f = self.faults;
        let what = match nf.pc {
            NPc::Begin if f.nonblock_eagain_at_once && !nf.blockable => {
                nf.pc = NPc::CoreEnd;
                self.warn(format!(
                    "notifier{n}: mm core WARN: invalidate_range_start returned -EAGAIN \
                     from a notifier that has invalidate_range_end"
                ))?;
                "start: return -EAGAIN at once: core WARN".to_string()
            }
            NPc::Begin => {
                self.vm_lock = Some(id);
                self.inval.begin().map_err(|e| format!("{e:?}"))?;
                nf.pc = NPc::Walk(0);
                format!(
                    "start [{:#x}, {:#x}){}: VM lock, InvalSeq::begin",
                    nf.start,
                    nf.end,
                    if nf.blockable { "" } else { " non-blockable" }
                )
            }
            NPc::Walk(j) if self.vcpus[j].pc == VPc::Freed => {
                nf.pc = self.after_walk(j);
                format!("walk: vcpu{j} is off the list")
            }
            NPc::Walk(j) => {
                let vj = &mut self.vcpus[j];
                let r = vj.cache.invalidate_range(nf.start, nf.end, &vj.view);
                if r.kick_vcpu && (r.was_valid || !f.kick_only_if_was_valid) {
                    // Between its claim and its lookup, a vCPU may draw a
                    // kick it does not need: the price of the lock-free hit
                    // (`HitView`), at most one per nested VM-entry.
                    if !self.vcpus[j].mapped && self.vcpus[j].pc != VPc::MapCheck {
                        return Err(format!(
                            "notifier{n}: kicks vcpu{j}, which has no page mapped ({:?})",
                            self.vcpus[j].pc
                        ));
                    }
                    let target = if f.kick_vcpu0 { 0 } else { j };
                    nf.marked |= 1 << target;
                    if !f.request_after_walk {
                        self.request(target)?;
                    }
                }
                nf.pc = self.after_walk(j);
                format!("walk: cache of vcpu{j} -> {r:?}, marked {:#b}", nf.marked)
            }
            NPc::Requests => {
                for t in 0..NR_VCPUS {
                    if nf.marked & (1 << t) != 0 {
                        self.request(t)?;
                    }
                }
                nf.pc = if f.kick_after_unlock {
                    NPc::Unlock
                } else {
                    NPc::Kick
                };
                format!("requests to {:#b}, after the walk", nf.marked)
            }
            NPc::Unlock => {
                self.vm_lock = None;
                nf.pc = NPc::Kick;
                "drop the VM lock before the kick".to_string()
            }
            NPc::Kick => {
                if f.nonblock_eagain && !nf.blockable && nf.marked != 0 {
                    self.inval_end(&format!("notifier{n}"))?;
                    self.vm_lock = None;
                    nf.pc = NPc::CoreEnd;
                    self.warn(format!(
                        "notifier{n}: mm core WARN: invalidate_range_start returned -EAGAIN \
                         from a notifier that has invalidate_range_end"
                    ))?;
                    "InvalSeq::end, return -EAGAIN: core WARN".to_string()
                } else {
                    let mut out = Vec::new();
                    for t in 0..NR_VCPUS {
                        if nf.marked & (1 << t) != 0 && self.vcpus[t].pc == VPc::Freed {
                            return Err(format!(
                                "notifier{n}: the kick reaches vcpu{t}, which is freed \
                                 (use-after-free of the vCPU)"
                            ));
                        }
                        if nf.marked & (1 << t) != 0 && self.vcpus[t].hw.is_some() {
                            self.vcpus[t].hw = None;
                            self.vcpus[t].pc = VPc::Requests;
                            out.push(t);
                        }
                    }
                    self.vm_lock = None;
                    if nf.other_fails {
                        nf.pc = NPc::CoreEnd;
                        format!("kicked out {out:?}, return 0; another notifier fails")
                    } else {
                        for u in pages(nf.start, nf.end) {
                            let pfn = self.pt_get(u);
                            self.free(pfn);
                        }
                        nf.pc = NPc::Zap;
                        format!("kicked out {out:?}, return 0: the range's pages are freed")
                    }
                }
            }
            NPc::CoreEnd => {
                self.inval_end(&format!("notifier{n} (core, after -EAGAIN)"))?;
                nf.pc = NPc::Done;
                "core: invalidate_range_end of every notifier, range skipped".to_string()
            }
            NPc::Zap => {
                for u in pages(nf.start, nf.end) {
                    let old = self.pt_get(u);
                    self.free(old);
                    self.pt[page_index(u)] = 1000 + 16 * n as u64 + page_index(u) as u64;
                }
                nf.pc = NPc::End;
                format!("page tables change: {:?}", self.pt)
            }
            NPc::End => {
                self.inval_end(&format!("notifier{n}"))?;
                nf.pc = NPc::Done;
                "end: InvalSeq::end".to_string()
            }
            NPc::Done => unreachable!(),
        };
        self.notifiers[n] = nf;
        Ok(what)
    }
}

/// What a search counts, step by step.
#[derive(Debug, Default)]
struct Tally {
    /// Steps in which a `get()` returned NULL with the request pending.
    null_retries: u64,
    /// Steps in which a notifier kicked a vCPU out of guest mode.
    kicks: u64,
    /// Steps in which `finish_refresh` returned `Retry`.
    retries: u64,
}

impl Model for World {
    type Tally = Tally;

    const COLUMNS: &'static [(&'static str, usize)] = &[
        ("scenario", 20),
        ("schedules", 21),
        ("states", 7),
        ("transitions", 11),
        ("kicks", 6),
        ("retries", 7),
        ("get-NULL", 8),
    ];

    const PROPERTY: &'static str = "property";

    fn actors(&self) -> usize {
        NR_VCPUS + self.notifiers.len()
    }

    fn done(&self, id: usize) -> bool {
        if id < NR_VCPUS {
            self.vcpus[id].done()
        } else {
            self.notifiers[id - NR_VCPUS].pc == NPc::Done
        }
    }

    /// Whether actor `id` can take its next step (it would spin on the VM
    /// lock otherwise).
    fn enabled(&self, id: usize) -> bool {
        if self.done(id) {
            return false;
        }
        let lock_free = self.vm_lock.is_none() || self.vm_lock == Some(id);
        if id < NR_VCPUS {
            match self.vcpus[id].pc {
                VPc::MapBegin | VPc::Finish | VPc::Free => lock_free,
                _ => true,
            }
        } else {
            let nf = &self.notifiers[id - NR_VCPUS];
            match nf.pc {
                // The knob fails before it takes any lock.
                NPc::Begin if self.faults.nonblock_eagain_at_once && !nf.blockable => true,
                NPc::Begin | NPc::End | NPc::CoreEnd => lock_free,
                _ => true,
            }
        }
    }

    fn step(&mut self, id: usize) -> Step {
        if id < NR_VCPUS {
            self.step_vcpu(id).map(|s| format!("[vcpu{id}] {s}"))
        } else {
            let n = id - NR_VCPUS;
            self.step_notifier(n).map(|s| format!("[notifier{n}] {s}"))
        }
    }

    /// Properties of every reachable state.
    fn check_always(&self) -> Result<(), String> {
        for (i, v) in self.vcpus.iter().enumerate() {
            let c = &v.cache;
            if c.is_valid() {
                let pfn = c.installed().unwrap().pfn;
                let uhva = c.uhva().unwrap();
                if self.is_gone(pfn) {
                    return Err(format!(
                        "valid cache of vcpu{i} holds pfn {pfn}, which is freed (use-after-free)"
                    ));
                }
                if self.pt_get(uhva) != pfn {
                    return Err(format!(
                        "valid cache of vcpu{i} holds pfn {pfn}, {uhva:#x} maps {}",
                        self.pt_get(uhva)
                    ));
                }
            }
            if let Some(pfn) = v.hw {
                if self.is_gone(pfn) {
                    return Err(format!(
                        "vcpu{i} in guest mode uses pfn {pfn}, which is freed (use-after-free)"
                    ));
                }
                if self.pt_get(v.uhva) != pfn {
                    return Err(format!(
                        "vcpu{i} in guest mode uses pfn {pfn}, {:#x} maps {}",
                        v.uhva,
                        self.pt_get(v.uhva)
                    ));
                }
            }
        }
        Ok(())
    }

    /// Properties once every actor finished.
    fn check_final(&self) -> Result<(), String> {
        if self.inval.in_progress() != 0 {
            return Err("invalidation still in progress".into());
        }
        let mut installed: Vec<u64> = self
            .vcpus
            .iter()
            .filter_map(|v| v.cache.installed().map(|r| r.mapping))
            .collect();
        installed.sort_unstable();
        if self.live != installed {
            return Err(format!(
                "mappings leaked: live {:?}, installed {:?}",
                self.live, installed
            ));
        }
        Ok(())
    }

    fn key(&self) -> Option<u128> {
        Some(common::state_key(self))
    }

    fn tally_step(what: &str, t: &mut Tally) {
        t.null_retries += u64::from(what.contains("get() -> NULL"));
        t.kicks += u64::from(what.contains("kicked out [") && !what.contains("kicked out []"));
        t.retries += u64::from(what.contains("-> Retry"));
    }

    fn cells(o: &Outcome<Tally>) -> Vec<String> {
        let t = &o.tally;
        vec![
            o.schedules.to_string(),
            o.states.to_string(),
            o.transitions.to_string(),
            t.kicks.to_string(),
            t.retries.to_string(),
            t.null_retries.to_string(),
        ]
    }

    /// Every scenario kicks a vCPU out of L2.
    fn exercised(o: &Outcome<Tally>) -> bool {
        o.schedules > 0 && o.tally.kicks > 0
    }
}

// Scenarios.

/// How a vCPU starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Start {
    /// In L1, cache empty, about to enter L2 (`map()` refreshes).
    Cold,
    /// In L1, cache valid, about to enter L2 (`map()` hits).
    Warm,
    /// In L2 with the cached page: mapped, in guest mode.
    InL2,
}

#[derive(Clone, Copy, Debug)]
struct VcpuInit {
    uhva: u64,
    start: Start,
    user: bool,
    exit_to_l1: bool,
    l0_exit: bool,
    teardown: bool,
}

fn vcpu(uhva: u64, start: Start, user: bool, exit_to_l1: bool) -> VcpuInit {
    VcpuInit {
        uhva,
        start,
        user,
        exit_to_l1,
        l0_exit: false,
        teardown: false,
    }
}

/// The same, with one exit from L2 that L0 handles.
fn vcpu_l0_exit(uhva: u64, start: Start, user: bool) -> VcpuInit {
    VcpuInit {
        l0_exit: true,
        ..vcpu(uhva, start, user, false)
    }
}

fn munmap(start: u64, end: u64) -> Notifier {
    Notifier {
        start,
        end,
        blockable: true,
        other_fails: false,
        pc: NPc::Begin,
        marked: 0,
    }
}

/// The OOM reaper (or `process_mrelease()`): a non-blockable range.
fn reaper(start: u64, end: u64, other_fails: bool) -> Notifier {
    Notifier {
        blockable: false,
        other_fails,
        ..munmap(start, end)
    }
}

fn world(faults: Faults, init: [VcpuInit; NR_VCPUS], notifiers: Vec<Notifier>) -> World {
    let mk = |vi: &VcpuInit| Vcpu {
        pc: VPc::MapFast,
        uhva: vi.uhva,
        cache: CacheState::new(PageKind::VirtualApic),
        view: HitView::new(),
        prev_claim: false,
        peek: None,
        request: false,
        mapped: false,
        hw: None,
        entry_pfn: 0,
        ticket: None,
        resolved: None,
        attempts: 0,
        user: vi.user,
        exit_to_l1: vi.exit_to_l1,
        l0_exit: vi.l0_exit,
        teardown: vi.teardown,
    };
    let mut w = World {
        faults,
        inval: InvalSeq::new(),
        vm_lock: None,
        pt: PFN0,
        gone: Vec::new(),
        live: Vec::new(),
        warns: 0,
        vcpus: [mk(&init[0]), mk(&init[1])],
        notifiers,
    };
    for (i, vi) in init.iter().enumerate() {
        w.vcpus[i].cache.activate();
        if vi.start == Start::Cold {
            continue;
        }
        let pfn = w.pt_get(vi.uhva);
        let r = w.map(i, pfn);
        let v = &mut w.vcpus[i];
        let t = v
            .cache
            .begin_refresh(GPA[i], 0, vi.uhva, &w.inval, &v.view)
            .unwrap();
        assert_eq!(
            v.cache.finish_refresh(t, r, &w.inval, &v.view),
            Commit::Installed { old: None }
        );
        if vi.start == Start::InL2 {
            v.mapped = true;
            v.hw = Some(pfn);
            v.entry_pfn = pfn;
            v.pc = VPc::InGuest;
        } else {
            let _ = v.view.release();
        }
    }
    w
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scenario {
    /// Both vCPUs enter L2 on the same host page (cold caches; vCPU 1 runs
    /// the software user) + a munmap of it.
    SharedPage,
    /// vCPU 0 in L2 on `UA`, later exits to L1; vCPU 1 enters L2 on `UB`
    /// with the software user + a munmap of `UB` only.
    OwnPages,
    /// The same + a munmap of both pages.
    OwnPagesBoth,
    /// vCPU 0 enters L2 on `UA` (cold), vCPU 1 is in L2 on `UA` with the
    /// software user + two overlapping munmaps of `UA`.
    SharedPageTwice,
    /// Both vCPUs in L2 (`UA`, `UB`) + a munmap of `UA` + the OOM reaper
    /// on both pages (non-blockable), concurrently.
    OomReaper,
    /// Both vCPUs in L2, vCPU 0 with the software user + the OOM reaper on
    /// both pages, whose start fails in another subscriber.
    OomReaperOtherFails,
    /// vCPU 0 in L2 on `UA` leaves it and is freed (VM teardown); vCPU 1
    /// enters L2 on `UA` with the software user + a munmap of `UA`.
    VcpuFree,
}

const SCENARIOS: [Scenario; 7] = [
    Scenario::SharedPage,
    Scenario::OwnPages,
    Scenario::OwnPagesBoth,
    Scenario::SharedPageTwice,
    Scenario::OomReaper,
    Scenario::OomReaperOtherFails,
    Scenario::VcpuFree,
];

fn build(s: Scenario, f: Faults) -> World {
    use Start::*;
    let both = (UA, UB + PAGE);
    match s {
        Scenario::SharedPage => world(
            f,
            [vcpu(UA, Cold, false, false), vcpu(UA, Cold, true, false)],
            vec![munmap(UA, UA + PAGE)],
        ),
        Scenario::OwnPages => world(
            f,
            [vcpu(UA, InL2, false, true), vcpu(UB, Warm, true, false)],
            vec![munmap(UB, UB + PAGE)],
        ),
        Scenario::OwnPagesBoth => world(
            f,
            [vcpu(UA, InL2, false, true), vcpu(UB, Warm, true, false)],
            vec![munmap(both.0, both.1)],
        ),
        Scenario::SharedPageTwice => world(
            f,
            [vcpu(UA, Cold, false, false), vcpu_l0_exit(UA, InL2, true)],
            vec![munmap(UA, UA + PAGE), munmap(UA, UA + PAGE)],
        ),
        Scenario::OomReaper => world(
            f,
            [vcpu(UA, InL2, false, false), vcpu(UB, InL2, false, false)],
            vec![munmap(UA, UA + PAGE), reaper(both.0, both.1, false)],
        ),
        Scenario::OomReaperOtherFails => world(
            f,
            [vcpu_l0_exit(UA, InL2, true), vcpu(UB, InL2, false, false)],
            vec![reaper(both.0, both.1, true)],
        ),
        Scenario::VcpuFree => world(
            f,
            [
                VcpuInit {
                    teardown: true,
                    ..vcpu(UA, InL2, false, true)
                },
                vcpu(UA, Warm, true, false),
            ],
            vec![munmap(UA, UA + PAGE)],
        ),
    }
}

#[test]
fn all_scenarios_hold() {
    common::all_scenarios_hold(&SCENARIOS, |s| build(s, NONE));
}

common::mutant_tests! {
    build;
    mutant_f1_kick_vcpu0_is_caught {
        "F1 (kick goes to vCPU 0)", KICK_VCPU0, Scenario::OwnPages =>
            |m| m.starts_with("vcpu1 in guest mode uses pfn 200, which is freed");
        "F1 (kick goes to vCPU 0)", KICK_VCPU0, Scenario::SharedPage =>
            |m| m.contains("vcpu1 in guest mode uses pfn") && m.contains("freed");
    }
    mutant_f2_nonblock_eagain_is_caught {
        "F2 (-EAGAIN, end twice)", NONBLOCK_EAGAIN, Scenario::OomReaper =>
            |m| m.contains("mm core WARN");
        // Without panic_on_warn, the double end lets a refresh install the
        // page that a concurrent munmap frees.
        "F2 (-EAGAIN, end twice), WARNs not fatal",
        lenient(NONBLOCK_EAGAIN), Scenario::OomReaper =>
            |m| m.contains("use-after-free");
        // The test knob's version: no begin, and the core's end takes the
        // concurrent munmap's.
        "F2 (break_nonblock)", NONBLOCK_EAGAIN_AT_ONCE, Scenario::OomReaper =>
            |m| m.contains("mm core WARN");
        "F2 (break_nonblock), WARNs not fatal",
        lenient(NONBLOCK_EAGAIN_AT_ONCE), Scenario::OomReaper =>
            |m| m.contains("use-after-free");
    }
    mutant_f3_request_after_walk_is_caught {
        "F3 (request after the walk)", REQUEST_AFTER_WALK, Scenario::OwnPages =>
            |m| m.contains("get() returned NULL") && m.contains("no reload request pending");
    }
    mutant_f5_kick_after_unlock_is_caught {
        "F5 (kick after the VM lock)", KICK_AFTER_UNLOCK, Scenario::VcpuFree =>
            |m| m.contains("the kick reaches vcpu0, which is freed");
    }
    mutant_check_before_claim_is_caught {
        "lock-free hit reads before it claims", CHECK_BEFORE_CLAIM, Scenario::OwnPages =>
            |m| m.contains("get() returned NULL") && m.contains("no reload request pending");
    }
    mutant_f7_sticky_hw_is_caught {
        "F7 (claim sticky)", STICKY_HW, Scenario::OwnPagesBoth =>
            |m| m.contains("kicks vcpu0, which has no page mapped");
    }
}

/// Not a mutant the checker must catch: with the kick and its wait under
/// the VM lock, a second walk can no longer overtake the first one's kick,
/// so kicking only for a cache that was valid (the rule that
/// `interleavings.rs` catches in NotifierTwice, where the kick is outside
/// the lock) is safe here. `kick_vcpu` for an invalid cache now costs at
/// most one extra reload. If this test fails, the kick left the lock again.
#[test]
fn kick_only_if_was_valid_is_safe_under_the_vm_lock() {
    let f = Faults {
        kick_only_if_was_valid: true,
        ..NONE
    };
    for s in SCENARIOS {
        common::must_hold(s, build(s, f));
    }
}

#[test]
fn every_mutant_breaks_some_scenario() {
    common::every_mutant_breaks_some_scenario(&MUTANTS, &SCENARIOS, build);
}
