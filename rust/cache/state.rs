// SPDX-License-Identifier: GPL-2.0

//! Leaf state machine of the nested-VMX guest page cache.
//!
//! C reference: [virt/kvm/pfncache.c](srctree/virt/kvm/pfncache.c).
//!
//! This file holds no lock, sleeps nowhere and touches no memory outside
//! itself. It is plain safe Rust over `core` only, so the same text compiles
//! as a module of the kernel crate (no `std`, no `alloc`, no `kernel`) and
//! as the userspace crate `tools/nvmx-model`, where `cargo test` and an
//! exhaustive interleaving explorer check it. The kernel module keeps every
//! value of these types inside its own locks and does the sleeping work
//! (pinning the page, `kmap()`, `memremap()`) outside them.
//!
//! # API
//!
//! - [`PageKind`]: the five L1 pages and their policies:
//!   [`PageKind::hardware_visible`], [`PageKind::kvm_writes`],
//!   [`PageKind::mark_dirty`].
//! - [`InvalSeq`]: the per-VM invalidation counters that the module's own
//!   mmu_notifier drives: [`InvalSeq::begin`], [`InvalSeq::end`],
//!   [`InvalSeq::snapshot`] and [`InvalSeq::retry_needed`].
//! - [`CacheState`]: the locked half of one cache. [`CacheState::activate`],
//!   [`CacheState::check`] (shared lock), [`CacheState::note_miss`],
//!   [`CacheState::begin_refresh`], [`CacheState::finish_refresh`],
//!   [`CacheState::invalidate_range`], [`CacheState::invalidate_all`],
//!   [`CacheState::deactivate`] and [`CacheState::stats`]. The methods that
//!   change what may be served take the cache's [`HitView`] and keep it
//!   in step.
//! - [`HitView`]: the lock-free half, which the vCPU's hit path reads and
//!   writes: [`HitView::claim`], [`HitView::lookup`], [`HitView::still`],
//!   [`HitView::release`]. Its documentation holds the hit path's
//!   ordering argument.
//!
//! # States
//!
//! A cache is *inactive*, *active-invalid* or *valid*. Only
//! [`CacheState::finish_refresh`] makes it valid, and only when no
//! invalidation began or was in progress since the snapshot that
//! [`CacheState::begin_refresh`] took.
//!
//! # How the kernel caller refreshes
//!
//! The refresh runs in process context on the vCPU's own thread (so one
//! refresh of a cache at a time is in flight). `L` is the lock that makes both
//! the cache's [`CacheState`] and the VM's [`InvalSeq`] stable (see
//! "Locking" below).
//!
//! ```text
//! if the lock-free hit of `HitView` finds the page { return Ok }  // No lock.
//! loop {                                        // kvm->srcu held throughout.
//!     slot = gfn_to_memslot(gfn); uhva = gfn_to_hva_memslot(slot, gfn);
//!     lock(L);                                  // No sleeping from here...
//!     ticket = state.begin_refresh(gpa, gen_now, uhva, &vm.inval, &view)?;
//!     unlock(L);                                // ...to here.
//!     pfn = gfn_to_pfn_memslot(slot, gfn);      // May sleep (faults uhva in).
//!     mapping = kmap(pfn) or memremap(pfn);     // May sleep.
//!     lock(L);                                  // No sleeping.
//!     commit = state.finish_refresh(ticket, resolved, &vm.inval, &view);
//!     unlock(L);
//!     match commit {                            // Everything below may sleep.
//!         Installed { old } => { drop the page reference (or hand it to KVM); unmap `old` if it is a
//!                                different mapping; return Ok }
//!         Retry { discard } => { unmap and release `discard`; cond_resched() }
//!         Stale { discard } => { unmap and release `discard`; return Err(EAGAIN) }
//!     }
//! }
//! ```
//!
//! Like `hva_to_pfn_retry()`, the cache holds no page reference once a
//! mapping is installed: the mmu_notifier is what keeps the pfn honest.
//! The loop has no bound, like stock KVM's (with `cond_resched()`): a
//! bounded one would fail while invalidations keep coming, because
//! [`InvalSeq`] is per VM, not per range, so any invalidation of the VM's
//! address space makes a refresh in flight retry once.
//!
//! # How the kernel notifier invalidates
//!
//! ```text
//! invalidate_range_start(range):                // Never fails, blockable or not.
//!     lock(VM);                                 // No sleeping under the locks.
//!     vm.inval.begin();                         // First, before any cache.
//!     for each vCPU v, for each cache c of v:
//!         lock(c);
//!         if c.state.invalidate_range(start, end).kick_vcpu {
//!             make KVM_REQ_NESTED_PAGES_RELOAD pending on v;  // Before unlock(c):
//!         }                                     // get() never sees the invalid
//!         unlock(c);                            // cache without the request.
//!     kick the marked vCPUs out of guest mode, KVM_REQUEST_WAIT;
//!     unlock(VM);                               // No marked vCPU was freed.
//! invalidate_range_end(range):
//!     lock(VM); vm.inval.end(); unlock(VM);
//! memslot update (after the new memslots are visible), release of the mm:
//!     the same walk with state.invalidate_all(cause), no begin/end.
//! ```
//!
//! A failed start would get no `invalidate_range_end` from the mm core for
//! this notifier's range, but `end` for every notifier anyway, and a `WARN`
//! because this notifier has an `end`; so start never fails, and waits for
//! the vCPUs in non-blockable ranges too, as KVM's own notifier does for its
//! TLB flush (the wait spins; it does not sleep).
//!
//! [`Invalidated::kick_vcpu`] is set while the vCPU may have the page's
//! address in vmcs02 (its claim, see [`HitView`]): from the hit or refresh
//! that gave it out until [`HitView::release`], also for a cache that was
//! already invalid.
//!
//! # Locking
//!
//! [`CacheState::finish_refresh`] must see [`InvalSeq`] and [`CacheState`]
//! at the same instant. The simplest way is one per-VM spinlock around the
//! VM's [`InvalSeq`] and the states of all its caches. If the module uses a
//! lock per cache instead, its notifier must call [`InvalSeq::begin`] (and
//! make it visible) before it takes any cache lock, and call
//! [`InvalSeq::end`] only after the host page tables changed, exactly the
//! `mn_active_invalidate_count` argument of `mmu_notifier_retry_cache()`.
//!
//! # What the model checks
//!
//! `tools/nvmx-model/tests/interleavings.rs` runs every interleaving of a
//! refresher/vCPU, an invalidator, a memslot update, a teardown and a
//! software user, with the critical sections above as atomic steps. See
//! `Documentation/cache-state.md`.

#![forbid(unsafe_code)]

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Shift of the host and guest page size.
pub const PAGE_SHIFT: u32 = 12;

/// Host and guest page size in bytes.
pub const PAGE_SIZE: u64 = 1 << PAGE_SHIFT;

/// Returns the page frame of a guest-physical or host-virtual address.
#[inline]
pub const fn page_of(addr: u64) -> u64 {
    addr >> PAGE_SHIFT
}

/// One of the five L1-owned pages that nested VMX maps for a vCPU. The
/// values are those of the C header's `enum nvmx_page` (the kernel module
/// checks that at compile time).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum PageKind {
    /// The MSR bitmap of vmcs12, read by KVM to merge the vmcs02 bitmap.
    MsrBitmap = 0,
    /// The enlightened VMCS (Hyper-V), read and written by KVM.
    Evmcs = 1,
    /// The APIC-access page, whose HPA goes into vmcs02.
    ApicAccess = 2,
    /// The virtual-APIC page, whose HPA goes into vmcs02.
    VirtualApic = 3,
    /// The posted-interrupt descriptor, whose HPA goes into vmcs02.
    PiDesc = 4,
}

impl PageKind {
    /// All page kinds, in vmcs12 order.
    pub const ALL: [PageKind; 5] = [
        PageKind::MsrBitmap,
        PageKind::Evmcs,
        PageKind::ApicAccess,
        PageKind::VirtualApic,
        PageKind::PiDesc,
    ];

    /// Returns whether the page's host-physical address sits in vmcs02.
    ///
    /// The CPU uses such a page while L2 runs, without any check or
    /// reference. Invalidating it therefore requires kicking the vCPU out of
    /// guest mode (and waiting) before the host page may change, and a
    /// reload of the nested pages before the next entry.
    pub const fn hardware_visible(self) -> bool {
        matches!(
            self,
            PageKind::ApicAccess | PageKind::VirtualApic | PageKind::PiDesc
        )
    }

    /// Returns whether KVM reads the page through its kernel address only
    /// inside one function that does not sleep (the MSR bitmap, in
    /// `nested_vmx_prepare_msr_bitmap()`), so that a cache may keep the
    /// page from `map()` to `unmap()` with its lock held shared instead of
    /// with a page reference for KVM.
    pub const fn read_in_bracket(self) -> bool {
        matches!(self, PageKind::MsrBitmap)
    }

    /// Returns whether KVM itself writes the page through its mapping.
    pub const fn kvm_writes(self) -> bool {
        matches!(
            self,
            PageKind::Evmcs | PageKind::VirtualApic | PageKind::PiDesc
        )
    }

    /// Returns whether the page must be reported dirty to dirty logging.
    ///
    /// This follows stock 6.12: `nested_mark_vmcs12_pages_dirty()` marks the
    /// virtual-APIC page and the PI descriptor on every nested VM-exit, and
    /// `nested_release_evmcs()` unmaps the eVMCS with `dirty = true`. The
    /// APIC-access page is deliberately not marked ("it is never written to
    /// by the CPU during APIC virtualization", and it is unmapped with
    /// `dirty = false`), and the MSR bitmap is only read.
    pub const fn mark_dirty(self) -> bool {
        matches!(
            self,
            PageKind::Evmcs | PageKind::VirtualApic | PageKind::PiDesc
        )
    }
}

/// Why a notifier counter was misused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SeqError {
    /// [`InvalSeq::end`] without a matching [`InvalSeq::begin`].
    Unbalanced,
    /// Too many nested [`InvalSeq::begin`] calls; the counter stays
    /// saturated, so every refresh retries (fails safe).
    Overflow,
}

/// A snapshot of [`InvalSeq`] taken when a refresh starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Ticket {
    seq: u64,
}

/// Per-VM invalidation counters, the module's `mmu_invalidate_seq` and
/// `mn_active_invalidate_count`.
///
/// # Invariants
///
/// - `in_progress` is the number of [`InvalSeq::begin`] calls without a
///   matching [`InvalSeq::end`], or `u32::MAX` once it saturated (after which
///   it never drops).
/// - `seq` changes exactly once per [`InvalSeq::end`].
///
/// Caller contract: every change of a host mapping that a cache may have
/// resolved happens between a [`InvalSeq::begin`] and its [`InvalSeq::end`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct InvalSeq {
    seq: u64,
    in_progress: u32,
}

impl InvalSeq {
    /// Creates counters with no invalidation in progress.
    pub const fn new() -> Self {
        InvalSeq {
            seq: 0,
            in_progress: 0,
        }
    }

    /// Records the start of an invalidation (`invalidate_range_start`).
    ///
    /// Call it before invalidating any cache of the range.
    pub fn begin(&mut self) -> Result<(), SeqError> {
        if self.in_progress == u32::MAX {
            return Err(SeqError::Overflow);
        }
        // INVARIANT: One more begin without an end; below `u32::MAX` here.
        self.in_progress += 1;
        if self.in_progress == u32::MAX {
            return Err(SeqError::Overflow);
        }
        Ok(())
    }

    /// Records the end of an invalidation (`invalidate_range_end`).
    ///
    /// Call it after the host page tables changed. The sequence moves even
    /// on error: a spurious move only causes a retry.
    pub fn end(&mut self) -> Result<(), SeqError> {
        // INVARIANT: `seq` changes once for this call.
        self.seq = self.seq.wrapping_add(1);
        match self.in_progress {
            0 => Err(SeqError::Unbalanced),
            // INVARIANT: A saturated counter stays saturated.
            u32::MAX => Err(SeqError::Overflow),
            _ => {
                // INVARIANT: One begin fewer without an end.
                self.in_progress -= 1;
                Ok(())
            }
        }
    }

    /// Takes the snapshot that a refresh is validated against.
    pub const fn snapshot(&self) -> Ticket {
        Ticket { seq: self.seq }
    }

    /// Returns whether a refresh that snapshotted `ticket` must retry.
    ///
    /// That is the case while an invalidation is in progress and once any
    /// invalidation ended after the snapshot.
    pub const fn retry_needed(&self, ticket: Ticket) -> bool {
        self.in_progress != 0 || self.seq != ticket.seq
    }

    /// Returns the number of invalidations in progress.
    pub const fn in_progress(&self) -> u32 {
        self.in_progress
    }

    /// Returns the number of invalidations that ended.
    pub const fn seq(&self) -> u64 {
        self.seq
    }
}

/// What resolving and mapping a page produced, outside the lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Resolved {
    /// The host page frame number.
    pub pfn: u64,
    /// An opaque token for the kernel mapping (the kernel address).
    pub mapping: u64,
    /// Whether the pfn has no `struct page` and was `memremap()`ed rather
    /// than `kmap()`ed.
    pub unmanaged: bool,
}

/// What a cache holds for an installed page: in the kernel module the
/// owned kernel mapping (which the module undoes when the state gives it
/// back), in the model the plain [`Resolved`] facts. The state only reads
/// the facts; it hands the value back exactly once, in a [`Commit`] or from
/// [`CacheState::take_invalid_alias`] or [`CacheState::deactivate`].
pub trait Mapping {
    /// The page's facts.
    fn resolved(&self) -> Resolved;
}

impl Mapping for Resolved {
    fn resolved(&self) -> Resolved {
        *self
    }
}

/// Why [`CacheState::check`] missed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MissReason {
    /// The cache is not active.
    Inactive,
    /// Nothing valid is installed (never refreshed, invalidated, or a
    /// refresh is in flight).
    Invalid,
    /// A different guest page is installed.
    GpaChanged,
    /// The memslots changed since the installed page was resolved.
    GenerationChanged,
}

/// Result of [`CacheState::check`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Lookup {
    /// The installed page may be used while the lock stays held.
    Hit {
        /// The host page frame number.
        pfn: u64,
        /// The kernel mapping token of the page.
        mapping: u64,
    },
    /// The caller must refresh.
    Miss(MissReason),
}

/// Why [`CacheState::begin_refresh`] refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefreshError {
    /// The cache is not active.
    Inactive,
}

/// A refresh in flight, returned by [`CacheState::begin_refresh`].
///
/// It is deliberately not `Clone` in the kernel: one ticket, one
/// [`CacheState::finish_refresh`]. (The model checker clones whole worlds,
/// so its build derives `Clone`.)
#[derive(Debug, PartialEq, Eq, Hash)]
#[cfg_attr(any(test, feature = "mutants"), derive(Clone))]
pub struct RefreshTicket {
    id: u64,
    gpa: u64,
    generation: u64,
    uhva: u64,
    snap: Ticket,
}

impl RefreshTicket {
    /// Returns the host virtual address the caller must resolve.
    pub const fn uhva(&self) -> u64 {
        self.uhva
    }

    /// Returns the guest-physical address being refreshed.
    pub const fn gpa(&self) -> u64 {
        self.gpa
    }
}

/// Result of [`CacheState::finish_refresh`]; the caller acts on it after
/// dropping the lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[must_use = "the caller must release the mapping this returns"]
pub enum Commit<M = Resolved> {
    /// The page is installed and valid; the caller unmaps `old` (if it is
    /// a different mapping).
    Installed {
        /// The previously installed mapping.
        old: Option<M>,
    },
    /// An invalidation raced with the resolve; the caller releases
    /// `discard` and begins again.
    Retry {
        /// The mapping that must not be installed.
        discard: M,
    },
    /// The cache was deactivated or another refresh took over; the caller
    /// releases `discard` and gives up.
    Stale {
        /// The mapping that must not be installed.
        discard: M,
    },
}

/// Why caches were invalidated, for [`Stats`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum InvalCause {
    /// An mmu_notifier range invalidation.
    Notifier,
    /// A memslot update (new generation).
    Memslot,
    /// Teardown of the cache, the vCPU or the VM.
    Teardown,
}

/// Result of an invalidation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[must_use = "a hardware-visible page requires a vCPU kick"]
pub struct Invalidated {
    /// The cache was valid and no longer is.
    pub was_valid: bool,
    /// The page's HPA may still be in use by the CPU (it is hardware-visible
    /// and the vCPU may be in guest mode with it): the caller must kick the
    /// vCPU out of guest mode and wait for it, as
    /// `KVM_REQ_OUTSIDE_GUEST_MODE` with `KVM_REQUEST_WAIT` does, before it
    /// returns from `invalidate_range_start`. The vCPU's entry check then
    /// sees the cache invalid and reloads.
    ///
    /// This can be set although `was_valid` is not: a second invalidation
    /// of the page may overtake the kick of the first, and must not let the
    /// page change before the vCPU is out.
    pub kick_vcpu: bool,
}

/// Per-cache counters.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Stats {
    /// Lookups that missed ([`CacheState::note_miss`]); the hits are
    /// counted by the [`HitView`].
    pub misses: u64,
    /// Refreshes that installed a page.
    pub refreshes: u64,
    /// Refreshes that had to retry.
    pub retries: u64,
    /// Refreshes abandoned because the cache was torn down or taken over.
    pub stale: u64,
    /// Valid caches invalidated by the mmu_notifier.
    pub inval_notifier: u64,
    /// Valid caches invalidated by a memslot update.
    pub inval_memslot: u64,
    /// Valid caches invalidated by teardown.
    pub inval_teardown: u64,
    /// Installs of pages without `struct page` (`memremap()`).
    pub memremap: u64,
    /// Invalidations that required a vCPU kick and a reload.
    pub reloads: u64,
}

/// The page a cache has installed.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Installed<M> {
    gpa: u64,
    generation: u64,
    uhva: u64,
    held: M,
}

/// A hit: what [`HitView::lookup`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Hit {
    /// The host page frame number.
    pub pfn: u64,
    /// The kernel mapping token of the page.
    pub mapping: u64,
}

/// The part of one cache that its vCPU uses without the cache's lock: a
/// published copy of the valid installed page, and the vCPU's claim that
/// its vmcs02 may hold that page's address.
///
/// # The hit path
///
/// A nested VM-entry that finds its page cached takes no lock:
///
/// ```text
/// vCPU, map() of a hardware-visible page:    invalidation, under the lock:
///     claim := true        (SeqCst)              key := 0          (SeqCst)
///     read key, compare    (SeqCst)              read claim        (SeqCst)
///     hit: fill kvm_host_map                     claim: request + kick
///     miss: claim := previous value, lock, refresh
/// vCPU, unmap():
///     claim := false       (SeqCst)
///     read key: 0 means invalid, lock and undo an alias (F9)
/// ```
///
/// This is the store-buffering pattern of `vcpu->mode` against
/// `kvm_make_all_cpus_request()`: with sequentially consistent operations
/// on both sides, at least one side sees the other's store. Either the vCPU
/// reads the withdrawn key and misses, or the invalidation reads the claim
/// and kicks; both can happen (a spurious kick), neither-nor cannot. A page
/// without a place in vmcs02 (MSR bitmap, eVMCS) claims nothing: its hit
/// takes a page reference for KVM and then reads `key` again
/// ([`HitView::still`]); a key that is still the same means no
/// invalidation of the page had begun when the reference was taken.
///
/// # Invariants
///
/// - Outside the cache's lock, `key` is `page_of(gpa) + 1` of the installed
///   page while the [`CacheState`] is valid, and 0 otherwise; `generation`,
///   `pfn` and `mapping` are the installed page's while `key` is not 0.
/// - Only the vCPU's thread (serialised by `vcpu->mutex`) publishes, so the
///   fields other than `key` never change under the vCPU's own reads; other
///   threads only withdraw (set `key` to 0).
/// - Only the vCPU's thread writes `claim` and `hits`.
pub struct HitView {
    key: AtomicU64,
    generation: AtomicU64,
    pfn: AtomicU64,
    mapping: AtomicU64,
    claim: AtomicBool,
    hits: AtomicU64,
}

impl HitView {
    /// A view of an invalid cache, with no claim.
    pub const fn new() -> Self {
        HitView {
            key: AtomicU64::new(0),
            generation: AtomicU64::new(0),
            pfn: AtomicU64::new(0),
            mapping: AtomicU64::new(0),
            claim: AtomicBool::new(false),
            hits: AtomicU64::new(0),
        }
    }

    /// The vCPU, without the lock: the published page if it is `gpa`'s
    /// under memslot generation `generation`.
    #[inline]
    pub fn lookup(&self, gpa: u64, generation: u64) -> Option<Hit> {
        self.lookup_page(page_of(gpa), generation)
    }

    /// [`HitView::lookup`] by page frame number (`page_of(gpa)`, a gfn).
    #[inline]
    pub fn lookup_page(&self, page: u64, generation: u64) -> Option<Hit> {
        if self.key.load(Ordering::SeqCst) != page.wrapping_add(1)
            || self.generation.load(Ordering::Relaxed) != generation
        {
            return None;
        }
        Some(Hit {
            pfn: self.pfn.load(Ordering::Relaxed),
            mapping: self.mapping.load(Ordering::Relaxed),
        })
    }

    /// The vCPU, without the lock: the memslot generation of the page its
    /// last refresh published (only the vCPU publishes).
    #[inline]
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
    }

    /// The vCPU, without the lock, after a [`HitView::lookup_page`] of
    /// `page` that hit: whether the page is still published.
    #[inline]
    pub fn still(&self, page: u64) -> bool {
        self.key.load(Ordering::SeqCst) == page.wrapping_add(1)
    }

    /// The vCPU, before its [`HitView::lookup`] of a hardware-visible page:
    /// from now on its vmcs02 may hold the page. Returns the previous claim
    /// for [`HitView::restore_claim`].
    #[inline]
    pub fn claim(&self) -> bool {
        self.claim.swap(true, Ordering::SeqCst)
    }

    /// The vCPU: sets the claim (a miss gives back what
    /// [`HitView::claim`] returned; a refresh sets it under the lock).
    #[inline]
    pub fn restore_claim(&self, claim: bool) {
        self.claim.store(claim, Ordering::SeqCst);
    }

    /// The vCPU, at `unmap()` of a hardware-visible page: vmcs02 gets the
    /// address again only through `map()`, so invalidations need not kick
    /// any more. Returns whether the cache is invalid now, in which case
    /// the caller takes the lock to undo an alias
    /// ([`CacheState::take_invalid_alias`]).
    #[inline]
    pub fn release(&self) -> bool {
        self.claim.store(false, Ordering::SeqCst);
        self.key.load(Ordering::SeqCst) == 0
    }

    /// Whether the vCPU's vmcs02 may hold the page (an invalidation must
    /// kick it).
    pub fn claimed(&self) -> bool {
        self.claim.load(Ordering::SeqCst)
    }

    /// The vCPU: counts a hit.
    #[inline]
    pub fn count_hit(&self) {
        // The vCPU is the only writer: no read-modify-write needed.
        let n = self.hits.load(Ordering::Relaxed);
        self.hits.store(n.wrapping_add(1), Ordering::Relaxed);
    }

    /// Hits so far.
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    /// Under the lock, on the vCPU's thread: `resolved` is now the valid
    /// page of `gpa` under `generation`.
    fn publish(&self, gpa: u64, generation: u64, resolved: Resolved) {
        self.generation.store(generation, Ordering::Relaxed);
        self.pfn.store(resolved.pfn, Ordering::Relaxed);
        self.mapping.store(resolved.mapping, Ordering::Relaxed);
        self.key.store(page_of(gpa) + 1, Ordering::SeqCst);
    }

    /// Under the lock: nothing may be served from the view any more.
    fn withdraw(&self) {
        self.key.store(0, Ordering::SeqCst);
    }

    fn snapshot(&self) -> [u64; 6] {
        [
            self.key.load(Ordering::Relaxed),
            self.generation.load(Ordering::Relaxed),
            self.pfn.load(Ordering::Relaxed),
            self.mapping.load(Ordering::Relaxed),
            u64::from(self.claim.load(Ordering::Relaxed)),
            self.hits.load(Ordering::Relaxed),
        ]
    }
}

impl Default for HitView {
    fn default() -> Self {
        Self::new()
    }
}

impl core::fmt::Debug for HitView {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let [key, generation, pfn, mapping, claim, hits] = self.snapshot();
        f.debug_struct("HitView")
            .field("key", &key)
            .field("generation", &generation)
            .field("pfn", &pfn)
            .field("mapping", &mapping)
            .field("claim", &(claim != 0))
            .field("hits", &hits)
            .finish()
    }
}

/// The model checker copies and compares whole worlds; the kernel never
/// copies a view.
#[cfg(feature = "model")]
impl Clone for HitView {
    fn clone(&self) -> Self {
        let [key, generation, pfn, mapping, claim, hits] = self.snapshot();
        HitView {
            key: AtomicU64::new(key),
            generation: AtomicU64::new(generation),
            pfn: AtomicU64::new(pfn),
            mapping: AtomicU64::new(mapping),
            claim: AtomicBool::new(claim != 0),
            hits: AtomicU64::new(hits),
        }
    }
}

#[cfg(feature = "model")]
impl PartialEq for HitView {
    fn eq(&self, other: &Self) -> bool {
        self.snapshot() == other.snapshot()
    }
}

#[cfg(feature = "model")]
impl Eq for HitView {}

#[cfg(feature = "model")]
impl core::hash::Hash for HitView {
    fn hash<H: core::hash::Hasher>(&self, state: &mut H) {
        self.snapshot().hash(state);
    }
}

/// The state of one cache, kept under the module's lock.
///
/// # Invariants
///
/// - `valid` implies `active` and `installed.is_some()`.
/// - `valid` implies that no invalidation overlapping `installed.uhva`
///   began (by [`InvalSeq::begin`] or [`CacheState::invalidate_all`]) after
///   the [`InvalSeq`] snapshot under which `installed.held`'s pfn was
///   resolved. With the caller contract of [`InvalSeq`], the installed pfn
///   is therefore the page that `installed.uhva` maps to now.
/// - Only the ticket whose `id` equals `refresh_id` may install a page.
/// - `raced` is set if a whole-cache invalidation happened since the
///   in-flight refresh (if any) began.
/// - The cache's [`HitView`] (passed to every method that changes the
///   state) publishes `installed` exactly while `valid` holds, whenever the
///   lock is not held.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CacheState<M = Resolved> {
    kind: PageKind,
    active: bool,
    valid: bool,
    installed: Option<Installed<M>>,
    refresh_id: u64,
    raced: bool,
    stats: Stats,
}

impl<M: Mapping> CacheState<M> {
    /// Creates an inactive cache for a page of kind `kind`.
    pub const fn new(kind: PageKind) -> Self {
        // INVARIANT: Not valid.
        CacheState {
            kind,
            active: false,
            valid: false,
            installed: None,
            refresh_id: 0,
            raced: false,
            stats: Stats {
                misses: 0,
                refreshes: 0,
                retries: 0,
                stale: 0,
                inval_notifier: 0,
                inval_memslot: 0,
                inval_teardown: 0,
                memremap: 0,
                reloads: 0,
            },
        }
    }

    /// Returns the kind of page this cache holds.
    pub const fn kind(&self) -> PageKind {
        self.kind
    }

    /// Returns whether the cache is active.
    pub const fn is_active(&self) -> bool {
        self.active
    }

    /// Returns whether the installed page is valid.
    pub const fn is_valid(&self) -> bool {
        self.valid
    }

    /// Returns the installed mapping, valid or not.
    pub fn installed(&self) -> Option<Resolved> {
        self.installed.as_ref().map(|i| i.held.resolved())
    }

    /// Returns the host virtual address of the installed page.
    pub fn uhva(&self) -> Option<u64> {
        self.installed.as_ref().map(|i| i.uhva)
    }

    /// Returns the memslot generation the installed page was resolved under.
    pub fn generation(&self) -> Option<u64> {
        self.installed.as_ref().map(|i| i.generation)
    }

    /// Returns the counters.
    pub const fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Activates the cache; it stays invalid until a refresh.
    ///
    /// The cache must already be reachable by the module's notifier walk,
    /// as in `__kvm_gpc_activate()`.
    pub fn activate(&mut self) {
        // INVARIANT: `valid` is unchanged, and `valid` already implied
        // `active`.
        self.active = true;
    }

    /// Returns whether the page of `gpa` may be used, under a shared lock.
    ///
    /// `generation` is the current memslot generation. On a hit the caller
    /// adds the offset of `gpa` within the page to the mapping.
    pub fn check(&self, gpa: u64, generation: u64) -> Lookup {
        if !self.active {
            return Lookup::Miss(MissReason::Inactive);
        }
        let inst = match (self.valid, &self.installed) {
            (true, Some(inst)) => inst,
            _ => return Lookup::Miss(MissReason::Invalid),
        };
        if page_of(inst.gpa) != page_of(gpa) {
            return Lookup::Miss(MissReason::GpaChanged);
        }
        if inst.generation != generation {
            return Lookup::Miss(MissReason::GenerationChanged);
        }
        let r = inst.held.resolved();
        Lookup::Hit {
            pfn: r.pfn,
            mapping: r.mapping,
        }
    }

    /// The hit path of the module in one step, for callers that hold the
    /// lock anyway (the single-vCPU model): [`HitView::claim`] for a
    /// hardware-visible page, then [`HitView::lookup`]; a miss gives the
    /// claim back and is counted.
    pub fn lookup(&mut self, gpa: u64, generation: u64, view: &HitView) -> Lookup {
        let claim = self.kind.hardware_visible();
        let prev = claim && view.claim();
        match view.lookup(gpa, generation) {
            Some(hit) => {
                view.count_hit();
                Lookup::Hit {
                    pfn: hit.pfn,
                    mapping: hit.mapping,
                }
            }
            None => {
                if claim {
                    view.restore_claim(prev);
                }
                self.note_miss();
                self.check(gpa, generation)
            }
        }
    }

    /// Counts a lookup that did not hit (the caller refreshes).
    pub fn note_miss(&mut self) {
        self.stats.misses += 1;
    }

    /// Takes the mapping of an invalidated cache of memory without
    /// `struct page` (a `memremap()` alias), for the caller to undo outside
    /// the lock, so that the alias does not outlive the VMA or memslot it
    /// came from. `None` if the cache is valid, holds a direct-map address
    /// (nothing to undo) or its page may still be in vmcs02. An in-flight
    /// refresh then finds no old mapping to return.
    pub fn take_invalid_alias(&mut self, view: &HitView) -> Option<M> {
        if self.valid || view.claimed() || !self.has_invalid_alias() {
            return None;
        }
        self.installed.take().map(|i| i.held)
    }

    /// Whether [`CacheState::take_invalid_alias`] would take something, or
    /// will once the vCPU has left L2.
    pub fn has_invalid_alias(&self) -> bool {
        !self.valid
            && self
                .installed
                .as_ref()
                .is_some_and(|i| i.held.resolved().unmanaged)
    }

    /// Starts a refresh of `gpa`, which memslot generation `generation`
    /// translates to `uhva`.
    ///
    /// The cache becomes invalid. The caller resolves and maps
    /// [`RefreshTicket::uhva`] outside the lock, then calls
    /// [`CacheState::finish_refresh`].
    ///
    /// For a hardware-visible page the caller must be the vCPU, out of
    /// guest mode (`nested_get_vmcs12_pages()` context): the CPU stops using
    /// the installed HPA here, since the vCPU will not enter again before it
    /// wrote the HPA of a new install to vmcs02.
    pub fn begin_refresh(
        &mut self,
        gpa: u64,
        generation: u64,
        uhva: u64,
        inval: &InvalSeq,
        view: &HitView,
    ) -> Result<RefreshTicket, RefreshError> {
        if !self.active {
            return Err(RefreshError::Inactive);
        }
        // INVARIANT: Not valid while the refresh is in flight, as in
        // `hva_to_pfn_retry()`. The new ticket is the only one that may
        // install, and no whole-cache invalidation happened since it began.
        // The vCPU is out of guest mode (caller contract) and cannot enter
        // with the old HPA while the cache is invalid.
        self.valid = false;
        view.withdraw();
        view.restore_claim(false);
        self.refresh_id = self.refresh_id.wrapping_add(1);
        self.raced = false;
        Ok(RefreshTicket {
            id: self.refresh_id,
            gpa,
            generation,
            uhva: uhva & !(PAGE_SIZE - 1),
            snap: inval.snapshot(),
        })
    }

    /// Completes the refresh of `ticket` with the page the caller resolved
    /// and mapped.
    pub fn finish_refresh(
        &mut self,
        ticket: RefreshTicket,
        resolved: M,
        inval: &InvalSeq,
        view: &HitView,
    ) -> Commit<M> {
        self.finish(ticket, resolved, inval, view, Checks::ALL)
    }

    /// A broken [`CacheState::finish_refresh`], only for the model checker.
    ///
    /// It skips the checks that `mutant` names, so that the interleaving
    /// explorer can prove it catches the resulting bug.
    #[cfg(any(test, feature = "mutants"))]
    #[doc(hidden)]
    pub fn finish_refresh_mutant(
        &mut self,
        ticket: RefreshTicket,
        resolved: M,
        inval: &InvalSeq,
        view: &HitView,
        mutant: Mutant,
    ) -> Commit<M> {
        let checks = match mutant {
            Mutant::IgnoreSeq => Checks {
                seq: false,
                ..Checks::ALL
            },
            Mutant::IgnoreRaced => Checks {
                raced: false,
                ..Checks::ALL
            },
        };
        self.finish(ticket, resolved, inval, view, checks)
    }

    fn finish(
        &mut self,
        ticket: RefreshTicket,
        resolved: M,
        inval: &InvalSeq,
        view: &HitView,
        checks: Checks,
    ) -> Commit<M> {
        if !self.active || ticket.id != self.refresh_id {
            self.stats.stale += 1;
            return Commit::Stale { discard: resolved };
        }
        if (checks.raced && self.raced) || (checks.seq && inval.retry_needed(ticket.snap)) {
            self.stats.retries += 1;
            return Commit::Retry { discard: resolved };
        }
        let facts = resolved.resolved();
        let old = self.installed.take().map(|i| i.held);
        // INVARIANT: The cache is active and this is the current ticket. No
        // invalidation was in progress or ended since `ticket.snap`, and no
        // whole-cache invalidation happened since `begin_refresh()`, so the
        // host mapping of `ticket.uhva` did not change since before the
        // caller resolved it: `resolved.pfn` is its current backing.
        self.installed = Some(Installed {
            gpa: ticket.gpa,
            generation: ticket.generation,
            uhva: ticket.uhva,
            held: resolved,
        });
        self.valid = true;
        view.publish(ticket.gpa, ticket.generation, facts);
        // The vCPU may now write the new HPA to vmcs02 and enter.
        view.restore_claim(self.kind.hardware_visible());
        self.stats.refreshes += 1;
        if facts.unmanaged {
            self.stats.memremap += 1;
        }
        Commit::Installed { old }
    }

    /// Invalidates the cache if its page overlaps `[start, end)` of the host
    /// virtual address space (mmu_notifier `invalidate_range_start`).
    ///
    /// A refresh in flight is not affected here; [`InvalSeq::begin`], which
    /// the caller calls first, makes it retry.
    pub fn invalidate_range(&mut self, start: u64, end: u64, view: &HitView) -> Invalidated {
        let overlaps = match &self.installed {
            Some(inst) => inst.uhva < end && start < inst.uhva.saturating_add(PAGE_SIZE),
            None => false,
        };
        if !overlaps {
            return Invalidated {
                was_valid: false,
                kick_vcpu: false,
            };
        }
        self.invalidate(InvalCause::Notifier, view)
    }

    /// Invalidates the cache whatever it holds, and makes an in-flight
    /// refresh retry.
    ///
    /// Use it for memslot updates (`cause` is [`InvalCause::Memslot`]) and
    /// before teardown.
    pub fn invalidate_all(&mut self, cause: InvalCause, view: &HitView) -> Invalidated {
        // INVARIANT: The in-flight refresh (if any) saw a whole-cache
        // invalidation after it began.
        self.raced = true;
        self.invalidate(cause, view)
    }

    /// Deactivates the cache and returns the installed mapping, which the
    /// caller releases outside the lock.
    ///
    /// An in-flight refresh will get [`Commit::Stale`]. Once inactive, the
    /// cache is invisible to invalidations, so for a hardware-visible page
    /// the vCPU must be out of guest mode and unable to enter with this page
    /// (vCPU thread under `vcpu->mutex`, as `free_nested()`), or the caller
    /// must kick it first and keep it out; [`HitView::claimed`] tells
    /// whether that matters.
    pub fn deactivate(&mut self, view: &HitView) -> Option<M> {
        if self.valid {
            self.stats.inval_teardown += 1;
        }
        // INVARIANT: Inactive and not valid; no ticket issued so far matches
        // `refresh_id` any more; the caller guarantees the CPU no longer uses
        // the page.
        self.active = false;
        self.valid = false;
        view.withdraw();
        view.restore_claim(false);
        self.refresh_id = self.refresh_id.wrapping_add(1);
        self.installed.take().map(|i| i.held)
    }

    fn invalidate(&mut self, cause: InvalCause, view: &HitView) -> Invalidated {
        let was_valid = self.valid;
        // INVARIANT: Clearing `valid` preserves every invariant. The claim
        // stays: the CPU stops only when the caller's kick completes.
        self.valid = false;
        // First withdraw, then read the claim: see "The hit path".
        view.withdraw();
        let kick_vcpu = view.claimed();
        if was_valid {
            match cause {
                InvalCause::Notifier => self.stats.inval_notifier += 1,
                InvalCause::Memslot => self.stats.inval_memslot += 1,
                InvalCause::Teardown => self.stats.inval_teardown += 1,
            }
        }
        if kick_vcpu {
            self.stats.reloads += 1;
        }
        Invalidated {
            was_valid,
            kick_vcpu,
        }
    }
}

/// Which checks [`CacheState::finish_refresh`] performs.
#[derive(Clone, Copy)]
struct Checks {
    seq: bool,
    raced: bool,
}

impl Checks {
    const ALL: Checks = Checks {
        seq: true,
        raced: true,
    };
}

/// A deliberately broken [`CacheState::finish_refresh`], for the model
/// checker only.
#[cfg(any(test, feature = "mutants"))]
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mutant {
    /// Installs without consulting [`InvalSeq`] (ignores the ticket's
    /// snapshot).
    IgnoreSeq,
    /// Installs although [`CacheState::invalidate_all`] ran during the
    /// refresh.
    IgnoreRaced,
}

#[cfg(test)]
mod tests {
    use super::*;

    const GPA: u64 = 0x5000;
    const UHVA: u64 = 0x7f00_0000_0000;

    fn res(pfn: u64) -> Resolved {
        Resolved {
            pfn,
            mapping: pfn + 0x1000_0000,
            unmanaged: false,
        }
    }

    fn refreshed(kind: PageKind, inval: &InvalSeq, pfn: u64) -> (CacheState, HitView) {
        let mut c: CacheState = CacheState::new(kind);
        let v = HitView::new();
        c.activate();
        let t = c.begin_refresh(GPA, 1, UHVA, inval, &v).unwrap();
        assert_eq!(
            c.finish_refresh(t, res(pfn), inval, &v),
            Commit::Installed { old: None }
        );
        (c, v)
    }

    #[test]
    fn page_kind_policies() {
        use PageKind::*;
        let hw: [bool; 5] = PageKind::ALL.map(PageKind::hardware_visible);
        assert_eq!(hw, [false, false, true, true, true]);
        let kw: [bool; 5] = PageKind::ALL.map(PageKind::kvm_writes);
        assert_eq!(kw, [false, true, false, true, true]);
        assert!(!ApicAccess.mark_dirty() && !MsrBitmap.mark_dirty());
        assert!(Evmcs.mark_dirty() && VirtualApic.mark_dirty() && PiDesc.mark_dirty());
    }

    #[test]
    fn seq_begin_end_and_retry() {
        let mut s = InvalSeq::new();
        let t = s.snapshot();
        assert!(!s.retry_needed(t));
        s.begin().unwrap();
        assert!(s.retry_needed(t));
        let t2 = s.snapshot();
        assert!(s.retry_needed(t2));
        s.end().unwrap();
        assert!(s.retry_needed(t) && s.retry_needed(t2));
        assert!(!s.retry_needed(s.snapshot()));
        assert_eq!((s.seq(), s.in_progress()), (1, 0));
    }

    #[test]
    fn seq_unbalanced_end_moves_seq() {
        let mut s = InvalSeq::new();
        let t = s.snapshot();
        assert_eq!(s.end(), Err(SeqError::Unbalanced));
        assert_eq!(s.in_progress(), 0);
        assert!(s.retry_needed(t));
    }

    #[test]
    fn seq_overflow_is_sticky() {
        let mut s = InvalSeq {
            seq: 0,
            in_progress: u32::MAX - 1,
        };
        assert_eq!(s.begin(), Err(SeqError::Overflow));
        assert_eq!(s.begin(), Err(SeqError::Overflow));
        assert_eq!(s.end(), Err(SeqError::Overflow));
        assert!(s.retry_needed(s.snapshot()));
    }

    #[test]
    fn check_reasons() {
        let inval = InvalSeq::new();
        let mut c: CacheState = CacheState::new(PageKind::VirtualApic);
        assert_eq!(c.check(GPA, 1), Lookup::Miss(MissReason::Inactive));
        c.activate();
        assert_eq!(c.check(GPA, 1), Lookup::Miss(MissReason::Invalid));
        let (c, v) = refreshed(PageKind::VirtualApic, &inval, 42);
        assert_eq!(
            v.lookup(GPA + 0x80, 1),
            Some(Hit {
                pfn: 42,
                mapping: res(42).mapping
            })
        );
        assert_eq!(v.lookup(GPA + PAGE_SIZE, 1), None);
        assert_eq!(v.lookup(GPA, 2), None);
        assert_eq!(
            c.check(GPA + 0x80, 1),
            Lookup::Hit {
                pfn: 42,
                mapping: res(42).mapping
            }
        );
        assert_eq!(
            c.check(GPA + PAGE_SIZE, 1),
            Lookup::Miss(MissReason::GpaChanged)
        );
        assert_eq!(c.check(GPA, 2), Lookup::Miss(MissReason::GenerationChanged));
    }

    #[test]
    fn lookup_counts() {
        let inval = InvalSeq::new();
        let (mut c, v) = refreshed(PageKind::MsrBitmap, &inval, 7);
        assert!(matches!(c.lookup(GPA, 1, &v), Lookup::Hit { .. }));
        assert!(matches!(c.lookup(GPA, 2, &v), Lookup::Miss(_)));
        assert_eq!((v.hits(), c.stats().misses), (1, 1));
        // Claims: only a hardware-visible page's hit claims, a miss gives
        // the claim back, unmap releases it.
        assert!(!v.claimed());
        let (mut c, v) = refreshed(PageKind::VirtualApic, &inval, 7);
        assert!(v.claimed() && !v.release() && !v.claimed());
        assert!(matches!(c.lookup(GPA, 1, &v), Lookup::Hit { .. }));
        assert!(v.claimed());
        assert!(!v.release());
        assert!(matches!(c.lookup(GPA, 2, &v), Lookup::Miss(_)));
        assert!(!v.claimed());
        // An invalidation withdraws the page; the release then says so.
        assert!(matches!(c.lookup(GPA, 1, &v), Lookup::Hit { .. }));
        assert!(c.invalidate_range(0, u64::MAX, &v).kick_vcpu);
        assert!(v.lookup(GPA, 1).is_none() && !v.still(page_of(GPA)));
        assert!(v.release());
    }

    #[test]
    fn begin_refresh_inactive_and_invalidates() {
        let inval = InvalSeq::new();
        let mut c: CacheState = CacheState::new(PageKind::PiDesc);
        let v = HitView::new();
        assert_eq!(
            c.begin_refresh(GPA, 1, UHVA, &inval, &v),
            Err(RefreshError::Inactive)
        );
        let (mut c2, v2) = refreshed(PageKind::PiDesc, &inval, 9);
        let t = c2.begin_refresh(GPA, 1, UHVA + 0x40, &inval, &v2).unwrap();
        assert_eq!(t.uhva(), UHVA);
        assert_eq!(t.gpa(), GPA);
        assert!(!c2.is_valid());
        assert_eq!(c2.check(GPA, 1), Lookup::Miss(MissReason::Invalid));
        // The old page stays installed until the refresh commits.
        assert_eq!(c2.installed(), Some(res(9)));
        c.activate();
        assert!(c.begin_refresh(GPA, 1, UHVA, &inval, &v).is_ok());
    }

    #[test]
    fn finish_returns_old_mapping() {
        let inval = InvalSeq::new();
        let (mut c, v) = refreshed(PageKind::Evmcs, &inval, 1);
        let t = c.begin_refresh(GPA, 2, UHVA, &inval, &v).unwrap();
        assert_eq!(
            c.finish_refresh(t, res(2), &inval, &v),
            Commit::Installed { old: Some(res(1)) }
        );
        assert_eq!(c.generation(), Some(2));
        assert_eq!(c.stats().refreshes, 2);
    }

    #[test]
    fn finish_retries_after_invalidation() {
        let mut inval = InvalSeq::new();
        let mut c: CacheState = CacheState::new(PageKind::ApicAccess);
        let v = HitView::new();
        c.activate();
        // In progress at finish.
        let t = c.begin_refresh(GPA, 1, UHVA, &inval, &v).unwrap();
        inval.begin().unwrap();
        assert_eq!(
            c.finish_refresh(t, res(3), &inval, &v),
            Commit::Retry { discard: res(3) }
        );
        // In progress at the snapshot, ended before finish.
        let t = c.begin_refresh(GPA, 1, UHVA, &inval, &v).unwrap();
        inval.end().unwrap();
        assert_eq!(
            c.finish_refresh(t, res(4), &inval, &v),
            Commit::Retry { discard: res(4) }
        );
        // Quiet.
        let t = c.begin_refresh(GPA, 1, UHVA, &inval, &v).unwrap();
        assert!(matches!(
            c.finish_refresh(t, res(5), &inval, &v),
            Commit::Installed { old: None }
        ));
        assert_eq!(c.stats().retries, 2);
    }

    #[test]
    fn finish_retries_after_invalidate_all() {
        let inval = InvalSeq::new();
        let mut c: CacheState = CacheState::new(PageKind::VirtualApic);
        let v = HitView::new();
        c.activate();
        let t = c.begin_refresh(GPA, 1, UHVA, &inval, &v).unwrap();
        let r = c.invalidate_all(InvalCause::Memslot, &v);
        assert!(!r.was_valid && !r.kick_vcpu);
        assert_eq!(
            c.finish_refresh(t, res(3), &inval, &v),
            Commit::Retry { discard: res(3) }
        );
        // The next refresh starts clean.
        let t = c.begin_refresh(GPA, 2, UHVA, &inval, &v).unwrap();
        assert!(matches!(
            c.finish_refresh(t, res(3), &inval, &v),
            Commit::Installed { .. }
        ));
    }

    #[test]
    fn stale_ticket_after_deactivate_or_takeover() {
        let inval = InvalSeq::new();
        let (mut c, v) = refreshed(PageKind::VirtualApic, &inval, 1);
        let t = c.begin_refresh(GPA, 1, UHVA, &inval, &v).unwrap();
        assert_eq!(c.deactivate(&v), Some(res(1)));
        assert!(!c.is_active() && !c.is_valid() && c.installed().is_none());
        assert_eq!(
            c.finish_refresh(t, res(2), &inval, &v),
            Commit::Stale { discard: res(2) }
        );
        c.activate();
        let t1 = c.begin_refresh(GPA, 1, UHVA, &inval, &v).unwrap();
        let t2 = c.begin_refresh(GPA, 1, UHVA, &inval, &v).unwrap();
        assert_eq!(
            c.finish_refresh(t1, res(3), &inval, &v),
            Commit::Stale { discard: res(3) }
        );
        assert!(matches!(
            c.finish_refresh(t2, res(4), &inval, &v),
            Commit::Installed { old: None }
        ));
        assert_eq!(c.stats().stale, 2);
        // The refresh had already made the cache invalid.
        assert_eq!(c.stats().inval_teardown, 0);
        let (mut c, v) = refreshed(PageKind::ApicAccess, &inval, 1);
        assert_eq!(c.deactivate(&v), Some(res(1)));
        assert_eq!(c.stats().inval_teardown, 1);
    }

    #[test]
    fn invalidate_range_overlap_and_kind() {
        let inval = InvalSeq::new();
        for kind in PageKind::ALL {
            let (mut c, v) = refreshed(kind, &inval, 1);
            let miss = c.invalidate_range(UHVA + PAGE_SIZE, UHVA + 2 * PAGE_SIZE, &v);
            assert!(!miss.was_valid && c.is_valid());
            let miss = c.invalidate_range(0, UHVA, &v);
            assert!(!miss.was_valid && c.is_valid());
            let hit = c.invalidate_range(UHVA + 0x800, UHVA + 0x801, &v);
            assert_eq!(
                hit,
                Invalidated {
                    was_valid: true,
                    kick_vcpu: kind.hardware_visible()
                }
            );
            assert!(!c.is_valid() && c.is_active());
            // A second invalidation may overtake the first one's kick, so it
            // must kick too.
            let again = c.invalidate_range(0, u64::MAX, &v);
            assert_eq!(
                again,
                Invalidated {
                    was_valid: false,
                    kick_vcpu: kind.hardware_visible()
                }
            );
            assert_eq!(c.stats().inval_notifier, 1);
            assert_eq!(c.stats().reloads, 2 * u64::from(kind.hardware_visible()));
            // Once the vCPU refreshes (out of guest mode), no more kicks.
            let _t = c.begin_refresh(GPA, 1, UHVA, &inval, &v).unwrap();
            assert!(!v.claimed());
            assert!(!c.invalidate_range(0, u64::MAX, &v).kick_vcpu);
        }
    }

    #[test]
    fn deactivate_stops_kicks() {
        let inval = InvalSeq::new();
        let (mut c, v) = refreshed(PageKind::ApicAccess, &inval, 1);
        assert!(v.claimed());
        let _ = c.deactivate(&v);
        assert!(!v.claimed());
        assert_eq!(
            c.invalidate_range(0, u64::MAX, &v),
            Invalidated {
                was_valid: false,
                kick_vcpu: false
            }
        );
    }

    #[test]
    fn invalidate_all_causes() {
        let inval = InvalSeq::new();
        let (mut c, v) = refreshed(PageKind::PiDesc, &inval, 1);
        assert!(c.invalidate_all(InvalCause::Memslot, &v).kick_vcpu);
        let again = c.invalidate_all(InvalCause::Memslot, &v);
        assert!(!again.was_valid && again.kick_vcpu);
        let (mut c2, v2) = refreshed(PageKind::MsrBitmap, &inval, 1);
        let r = c2.invalidate_all(InvalCause::Teardown, &v2);
        assert!(r.was_valid && !r.kick_vcpu);
        assert_eq!((c.stats().inval_memslot, c2.stats().inval_teardown), (1, 1));
        assert_eq!((c.stats().reloads, c2.stats().reloads), (2, 0));
    }

    #[test]
    fn memremap_counted() {
        let inval = InvalSeq::new();
        let mut c: CacheState = CacheState::new(PageKind::VirtualApic);
        let v = HitView::new();
        c.activate();
        let t = c.begin_refresh(GPA, 1, UHVA, &inval, &v).unwrap();
        let r = Resolved {
            unmanaged: true,
            ..res(5)
        };
        assert!(matches!(
            c.finish_refresh(t, r, &inval, &v),
            Commit::Installed { .. }
        ));
        assert_eq!(c.stats().memremap, 1);
    }

    #[test]
    fn mutants_skip_their_check() {
        let mut inval = InvalSeq::new();
        let mut c: CacheState = CacheState::new(PageKind::VirtualApic);
        let v = HitView::new();
        c.activate();
        let t = c.begin_refresh(GPA, 1, UHVA, &inval, &v).unwrap();
        inval.begin().unwrap();
        assert!(matches!(
            c.finish_refresh_mutant(t, res(1), &inval, &v, Mutant::IgnoreSeq),
            Commit::Installed { .. }
        ));
        inval.end().unwrap();
        let t = c.begin_refresh(GPA, 1, UHVA, &inval, &v).unwrap();
        let _ = c.invalidate_all(InvalCause::Memslot, &v);
        assert!(matches!(
            c.finish_refresh_mutant(t, res(2), &inval, &v, Mutant::IgnoreRaced),
            Commit::Installed { .. }
        ));
    }
}
