// SPDX-License-Identifier: GPL-2.0

//! A reader-writer lock for Rust backed by a C `rwlock_t`, with lockdep
//! classes chosen by the caller.

use core::cell::UnsafeCell;
use core::marker::PhantomData;
use core::ops::{Deref, DerefMut};
use core::ptr::NonNull;

use kernel::prelude::*;

use super::raw;

/// A reader-writer lock backed by a C `rwlock_t` (the 6.12 `kernel` crate
/// has none). Non-sleeping on both sides.
///
/// # Invariants
///
/// `lock` points to a live `nvmx_rwlock` owned by this object; `data` is
/// only reached through a [`ReadGuard`] (lock held shared) or a
/// [`WriteGuard`] (lock held exclusive).
pub(crate) struct RwLock<T> {
    lock: NonNull<raw::nvmx_rwlock>,
    data: UnsafeCell<T>,
}

// SAFETY: The lock owns `T`; moving it to another thread moves `T`.
unsafe impl<T: Send> Send for RwLock<T> {}
// SAFETY: Shared access hands out `&T` to several threads (needs `Sync`)
// and exclusive access `&mut T` to one at a time (needs `Send`).
unsafe impl<T: Send + Sync> Sync for RwLock<T> {}

impl<T> RwLock<T> {
    /// A lock of lockdep class `class` (see `nvmx_shim_rwlock_new()`).
    pub(crate) fn new(class: u32, data: T) -> Result<Self> {
        // SAFETY: Allocates and initialises a lock; no preconditions.
        let lock = NonNull::new(unsafe { raw::nvmx_shim_rwlock_new(class) }).ok_or(ENOMEM)?;
        // INVARIANT: `lock` is freshly allocated and owned by the new value.
        Ok(RwLock {
            lock,
            data: UnsafeCell::new(data),
        })
    }

    /// Takes the lock shared. Does not sleep.
    pub(crate) fn read(&self) -> ReadGuard<'_, T> {
        // SAFETY: The lock is live (type invariant).
        unsafe { raw::nvmx_shim_read_lock(self.lock.as_ptr()) };
        ReadGuard {
            lock: self,
            _not_send: PhantomData,
        }
    }

    /// Takes the lock exclusive. Does not sleep.
    pub(crate) fn write(&self) -> WriteGuard<'_, T> {
        // SAFETY: The lock is live (type invariant).
        unsafe { raw::nvmx_shim_write_lock(self.lock.as_ptr()) };
        WriteGuard {
            lock: self,
            _not_send: PhantomData,
        }
    }

    /// Releases a shared hold that a [`ReadGuard::leak`] kept.
    ///
    /// # Safety
    ///
    /// The caller must own a shared hold of this lock taken by `read()` whose
    /// guard was leaked, and must not use that guard's reference afterwards.
    pub(super) unsafe fn unlock_leaked_read(&self) {
        // SAFETY: The caller owns a shared hold of the live lock.
        unsafe { raw::nvmx_shim_read_unlock(self.lock.as_ptr()) }
    }
}

impl<T> Drop for RwLock<T> {
    fn drop(&mut self) {
        // SAFETY: We own the lock and nobody holds it (`&mut self`).
        unsafe { raw::nvmx_shim_rwlock_free(self.lock.as_ptr()) }
    }
}

/// Shared hold of an [`RwLock`]; released when dropped.
#[must_use = "the lock is released immediately when the guard is unused"]
pub(crate) struct ReadGuard<'a, T> {
    lock: &'a RwLock<T>,
    /// A lock is released on the CPU that took it.
    _not_send: PhantomData<*mut ()>,
}

impl<'a, T> ReadGuard<'a, T> {
    /// Keeps the lock held past the guard, for a KVM `get()` that a later
    /// `put()` ends; see `nvmx_rs_put`.
    pub(super) fn leak(self) {
        core::mem::forget(self);
    }
}

impl<T> Deref for ReadGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: The lock is held shared (type invariant of `RwLock`).
        unsafe { &*self.lock.data.get() }
    }
}

impl<T> Drop for ReadGuard<'_, T> {
    fn drop(&mut self) {
        // SAFETY: This guard owns a shared hold.
        unsafe { raw::nvmx_shim_read_unlock(self.lock.lock.as_ptr()) }
    }
}

/// Exclusive hold of an [`RwLock`]; released when dropped.
#[must_use = "the lock is released immediately when the guard is unused"]
pub(crate) struct WriteGuard<'a, T> {
    lock: &'a RwLock<T>,
    /// A lock is released on the CPU that took it.
    _not_send: PhantomData<*mut ()>,
}

impl<T> Deref for WriteGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: The lock is held exclusive (type invariant of `RwLock`).
        unsafe { &*self.lock.data.get() }
    }
}

impl<T> DerefMut for WriteGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: The lock is held exclusive (type invariant of `RwLock`).
        unsafe { &mut *self.lock.data.get() }
    }
}

impl<T> Drop for WriteGuard<'_, T> {
    fn drop(&mut self) {
        // SAFETY: This guard owns the exclusive hold.
        unsafe { raw::nvmx_shim_write_unlock(self.lock.lock.as_ptr()) }
    }
}
