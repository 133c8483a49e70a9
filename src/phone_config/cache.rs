//! Signed files already built, kept under their [`BuildKey`] so that a phone fetching an
//! unchanged file is not signed for again.
//!
//! The key is the digest of every input of the build (`plan::BuildKey`), and the
//! service computes it from inputs read fresh on every request, so an entry can only
//! be found while everything it was built from is unchanged: nothing is ever
//! invalidated by hand, and nothing can be served stale. Entries whose inputs changed
//! are simply never asked for again and age out.
//!
//! The cache is bounded in bytes: each entry counts its file's length plus
//! [`ENTRY_OVERHEAD`] for the key, the list links and the map slot. Past the budget the
//! least recently used entries go. A budget of 0 keeps nothing.

use crate::phone_config::plan::BuildKey;
use lru::LruCache;
use std::sync::{Arc, Mutex, MutexGuard};

/// What an entry costs besides its file: the 32-byte key, the list node with its two
/// links, the map slot and the shared buffer's counts, rounded up (about 150 bytes
/// with the `lru` crate on a 64-bit target).
pub const ENTRY_OVERHEAD: usize = 192;

/// Built files by [`BuildKey`], least recently used evicted first past `budget` bytes.
pub struct FileCache {
    budget: usize,
    inner: Mutex<Inner>,
}

struct Inner {
    files: LruCache<BuildKey, Arc<[u8]>>,
    /// The sum of [`cost`] over `files`; never above the budget between calls.
    bytes: usize,
}

/// What `file` counts against the budget.
fn cost(file: &[u8]) -> usize {
    file.len().saturating_add(ENTRY_OVERHEAD)
}

impl FileCache {
    /// A cache holding at most `budget` bytes (files and [`ENTRY_OVERHEAD`] each).
    pub fn new(budget: usize) -> FileCache {
        FileCache {
            budget,
            inner: Mutex::new(Inner {
                files: LruCache::unbounded(),
                bytes: 0,
            }),
        }
    }

    /// Whether anything is kept at all (`config_cache_mib = 0` turns the cache off).
    pub fn is_on(&self) -> bool {
        self.budget > 0
    }

    pub fn budget(&self) -> usize {
        self.budget
    }

    /// The file built under `key`, now the most recently used, if it is kept.
    pub fn get(&self, key: &BuildKey) -> Option<Arc<[u8]>> {
        self.lock().files.get(key).cloned()
    }

    /// Keeps `file` under `key`, then drops the least recently used entries until the
    /// cache is within its budget again. A file larger than the whole budget is not
    /// kept. Two requests that missed at once both build and both insert: the second
    /// replaces the first, and the count stays exact.
    pub fn insert(&self, key: BuildKey, file: Arc<[u8]>) {
        let added = cost(&file);
        if added > self.budget {
            return;
        }
        let mut inner = self.lock();
        if let Some(replaced) = inner.files.put(key, file) {
            inner.bytes -= cost(&replaced);
        }
        inner.bytes += added;
        while inner.bytes > self.budget {
            let Some((_, evicted)) = inner.files.pop_lru() else {
                break;
            };
            inner.bytes -= cost(&evicted);
        }
    }

    /// The bytes counted against the budget now.
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }

    /// The number of files kept now.
    pub fn len(&self) -> usize {
        self.lock().files.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Nothing between `lock` and the end of a method can panic half-way through an
    /// update, so a poisoned lock still guards a consistent map.
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u32) -> BuildKey {
        BuildKey::from_bytes(&n.to_be_bytes())
    }

    fn file(len: usize, fill: u8) -> Arc<[u8]> {
        vec![fill; len].into()
    }

    #[test]
    fn a_kept_file_comes_back_under_its_key_only() {
        let cache = FileCache::new(1 << 20);
        cache.insert(key(1), file(100, 1));
        assert_eq!(cache.get(&key(1)).as_deref(), Some(&[1u8; 100][..]));
        assert!(cache.get(&key(2)).is_none());
        assert_eq!(cache.len(), 1);
        assert_eq!(cache.bytes(), 100 + ENTRY_OVERHEAD);
    }

    #[test]
    fn more_than_the_budget_keeps_the_cache_within_it_dropping_the_least_recently_used() {
        let per_entry = 1000 + ENTRY_OVERHEAD;
        let budget = 10 * per_entry;
        let cache = FileCache::new(budget);
        for n in 0..10 {
            cache.insert(key(n), file(1000, n as u8));
        }
        assert_eq!(cache.len(), 10);
        assert_eq!(cache.bytes(), budget);
        // Entry 0 is used again, so entry 1 is now the least recently used.
        assert!(cache.get(&key(0)).is_some());
        cache.insert(key(10), file(1000, 10));
        assert_eq!(cache.bytes(), budget);
        assert!(cache.get(&key(1)).is_none(), "the least recently used went");
        assert!(cache.get(&key(0)).is_some(), "the one just used stayed");
        assert!(cache.get(&key(10)).is_some());

        // Far more than the budget, in files of every size: never above it.
        for n in 100..5000 {
            cache.insert(key(n), file((n as usize * 37) % 3000, 0));
            assert!(cache.bytes() <= budget, "{} > {budget}", cache.bytes());
        }
        assert!(cache.get(&key(4999)).is_some(), "the newest is kept");
        // The count is the sum of what is kept.
        let inner = cache.lock();
        let kept: usize = inner.files.iter().map(|(_, f)| cost(f)).sum();
        assert_eq!(kept, inner.bytes);
    }

    #[test]
    fn a_file_larger_than_the_budget_is_not_kept_and_a_zero_budget_keeps_nothing() {
        let cache = FileCache::new(1000);
        cache.insert(key(1), file(1000, 0));
        assert!(cache.is_empty());
        assert_eq!(cache.bytes(), 0);

        let off = FileCache::new(0);
        assert!(!off.is_on());
        off.insert(key(1), file(0, 0));
        assert!(off.get(&key(1)).is_none());
        assert_eq!(off.bytes(), 0);
    }

    #[test]
    fn inserting_a_key_again_replaces_its_file_and_counts_it_once() {
        let cache = FileCache::new(1 << 20);
        cache.insert(key(1), file(100, 1));
        cache.insert(key(1), file(300, 2));
        assert_eq!(cache.len(), 1);
        assert_eq!(cache.bytes(), 300 + ENTRY_OVERHEAD);
        assert_eq!(cache.get(&key(1)).unwrap()[0], 2);
    }
}
