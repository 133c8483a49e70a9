//! Signed files already built, kept under their [`BuildKey`] so that a phone fetching an
//! unchanged file is not signed for again; and base documents already checked, kept
//! under the digest of their bytes so that the next file built from one does not read
//! it through again.
//!
//! The key of a file is the digest of every input of the build (`plan::BuildKey`), and
//! the service computes it from inputs read fresh on every request, so an entry can
//! only be found while everything it was built from is unchanged: nothing is ever
//! invalidated by hand, and nothing can be served stale. Entries whose inputs changed
//! are simply never asked for again and age out. A checked document is found only by
//! the BLAKE3 digest of exactly the bytes it was checked in.
//!
//! Both are bounded in bytes, each entry counting what it holds plus
//! [`ENTRY_OVERHEAD`] for the key, the list links and the map slot; past its bound the
//! least recently used go. Files have the budget (`config_cache_mib`); checks have
//! [`CHECKS_BUDGET`] of their own, since what they save is a second read of a
//! document soon after the first (a phone fetches its partial and its `.enc.sgn`
//! together, and both again after it enrolls), and files are what must fit a fleet.
//! A budget of 0 keeps nothing of either.

use crate::phone_config::format::checked::CheckedDocument;
use crate::phone_config::plan::BuildKey;
use lru::LruCache;
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard};

/// What an entry costs besides what it holds: the 32-byte key, the list node with its
/// two links, the map slot and the shared buffer's counts, rounded up (about 150 bytes
/// with the `lru` crate on a 64-bit target).
pub const ENTRY_OVERHEAD: usize = 192;

/// The bytes of checked documents kept: about 15,000 CUCM-sized documents (a check
/// keeps 0.9 KiB of one, 1.1 KiB with its entry: where capf's elements are, and the
/// few elements the partial copies).
pub const CHECKS_BUDGET: usize = 16 * 1024 * 1024;

/// What a kept value counts against its budget, besides [`ENTRY_OVERHEAD`].
trait Held {
    fn held(&self) -> usize;
}

impl Held for Arc<[u8]> {
    fn held(&self) -> usize {
        self.len()
    }
}

impl Held for Arc<CheckedDocument> {
    fn held(&self) -> usize {
        self.size()
    }
}

fn cost(value: &impl Held) -> usize {
    value.held().saturating_add(ENTRY_OVERHEAD)
}

/// Values by key, least recently used evicted first past `budget` bytes.
struct Bounded<K: Hash + Eq, V> {
    budget: usize,
    entries: Mutex<Entries<K, V>>,
}

struct Entries<K: Hash + Eq, V> {
    map: LruCache<K, V>,
    /// The sum of [`cost`] over `map`; never above the budget between calls.
    bytes: usize,
}

impl<K: Hash + Eq, V: Held + Clone> Bounded<K, V> {
    fn new(budget: usize) -> Self {
        Bounded {
            budget,
            entries: Mutex::new(Entries {
                map: LruCache::unbounded(),
                bytes: 0,
            }),
        }
    }

    fn get(&self, key: &K) -> Option<V> {
        self.lock().map.get(key).cloned()
    }

    /// Keeps `value`, then drops the least recently used entries until within the
    /// budget again. A value larger than the whole budget is not kept. Two requests
    /// that missed at once both build and both insert: the second replaces the first,
    /// and the count stays exact.
    fn insert(&self, key: K, value: V) {
        let added = cost(&value);
        if added > self.budget {
            return;
        }
        let mut entries = self.lock();
        if let Some(replaced) = entries.map.put(key, value) {
            entries.bytes -= cost(&replaced);
        }
        entries.bytes += added;
        while entries.bytes > self.budget {
            let Some((_, evicted)) = entries.map.pop_lru() else {
                break;
            };
            entries.bytes -= cost(&evicted);
        }
    }

    /// Nothing between `lock` and the end of a method can panic half-way through an
    /// update, so a poisoned lock still guards a consistent map.
    fn lock(&self) -> MutexGuard<'_, Entries<K, V>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Built files by [`BuildKey`], and checked documents by digest.
pub struct FileCache {
    files: Bounded<BuildKey, Arc<[u8]>>,
    checks: Bounded<[u8; 32], Arc<CheckedDocument>>,
}

impl FileCache {
    /// A cache holding at most `budget` bytes of files (each counting its length and
    /// [`ENTRY_OVERHEAD`]), and checks within [`CHECKS_BUDGET`] (none if `budget` is 0).
    pub fn new(budget: usize) -> FileCache {
        FileCache {
            files: Bounded::new(budget),
            checks: Bounded::new(CHECKS_BUDGET.min(budget)),
        }
    }

    /// Whether anything is kept at all (`config_cache_mib = 0` turns the cache off).
    pub fn is_on(&self) -> bool {
        self.files.budget > 0
    }

    /// The files' budget.
    pub fn budget(&self) -> usize {
        self.files.budget
    }

    /// The file built under `key`, now the most recently used, if it is kept.
    pub fn get(&self, key: &BuildKey) -> Option<Arc<[u8]>> {
        self.files.get(key)
    }

    /// Keeps `file` under `key` (see [`Bounded::insert`]).
    pub fn insert(&self, key: BuildKey, file: Arc<[u8]>) {
        self.files.insert(key, file);
    }

    /// The check of the document whose bytes have this BLAKE3 digest, if it is kept.
    pub fn checked(&self, digest: &blake3::Hash) -> Option<Arc<CheckedDocument>> {
        self.checks.get(digest.as_bytes())
    }

    /// Keeps the check of the document whose bytes have this digest.
    pub fn insert_checked(&self, digest: &blake3::Hash, checked: Arc<CheckedDocument>) {
        self.checks.insert(*digest.as_bytes(), checked);
    }

    /// The bytes of files counted against the budget now.
    pub fn bytes(&self) -> usize {
        self.files.lock().bytes
    }

    /// The number of files kept now.
    pub fn len(&self) -> usize {
        self.files.lock().map.len()
    }

    /// The number of checked documents kept now.
    pub fn documents(&self) -> usize {
        self.checks.lock().map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0 && self.documents() == 0
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
        let files = cache.files.lock();
        let kept: usize = files.map.iter().map(|(_, f)| cost(f)).sum();
        assert_eq!(kept, files.bytes);
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

    fn checked(doc: &str) -> (blake3::Hash, Arc<CheckedDocument>) {
        let checked = CheckedDocument::check(doc.as_bytes()).unwrap();
        (blake3::hash(doc.as_bytes()), Arc::new(checked))
    }

    #[test]
    fn checks_are_kept_by_digest_within_their_own_budget() {
        let cache = FileCache::new(1 << 30);
        let (digest, document) = checked("<device><loadInformation>x</loadInformation></device>");
        cache.insert_checked(&digest, document.clone());
        assert_eq!((cache.len(), cache.documents()), (0, 1));
        assert_eq!(
            cache.bytes(),
            0,
            "checks do not count against the files' budget"
        );
        assert!(cache.checked(&digest).is_some());
        assert!(cache.checked(&blake3::hash(b"<device/>")).is_none());
        assert!(cache
            .get(&BuildKey::from_bytes(digest.as_bytes()))
            .is_none());

        // Far more checks than their budget holds: never above it, the newest kept.
        let per_check = cost(&document);
        let many = CHECKS_BUDGET / per_check + 100;
        for n in 0..many {
            let digest = blake3::hash(&n.to_be_bytes());
            cache.insert_checked(&digest, document.clone());
        }
        let checks = cache.checks.lock();
        assert!(checks.bytes <= CHECKS_BUDGET);
        assert_eq!(checks.bytes, checks.map.len() * per_check);
        assert!(checks.map.len() < many);
        drop(checks);
        assert!(cache
            .checked(&blake3::hash(&(many - 1).to_be_bytes()))
            .is_some());
        assert!(cache.checked(&digest).is_none(), "the oldest went");
    }

    #[test]
    fn a_zero_budget_keeps_no_check_either() {
        let (digest, document) = checked("<device/>");
        let off = FileCache::new(0);
        off.insert_checked(&digest, document);
        assert!(off.checked(&digest).is_none());
        assert!(off.is_empty());
    }
}
