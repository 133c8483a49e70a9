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
//! The cache is bounded in bytes: each file counts its length plus [`ENTRY_OVERHEAD`]
//! for the key, the list links and the map slot; each checked document what it holds
//! ([`CheckedDocument::size`]) plus the same overhead. Both kinds share one budget and
//! one order of use: past the budget the least recently used entries go, whatever
//! their kind. A budget of 0 keeps nothing.

use crate::phone_config::format::checked::CheckedDocument;
use crate::phone_config::plan::BuildKey;
use lru::LruCache;
use std::sync::{Arc, Mutex, MutexGuard};

/// What an entry costs besides what it holds: the 32-byte key, the list node with its
/// two links, the map slot and the shared buffer's counts, rounded up (about 150 bytes
/// with the `lru` crate on a 64-bit target).
pub const ENTRY_OVERHEAD: usize = 192;

/// What an entry is kept under.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Key {
    File(BuildKey),
    /// The BLAKE3 digest of a base document's bytes.
    Checked([u8; 32]),
}

enum Entry {
    File(Arc<[u8]>),
    Checked(Arc<CheckedDocument>),
}

impl Entry {
    /// What the entry counts against the budget.
    fn cost(&self) -> usize {
        let held = match self {
            Entry::File(file) => file.len(),
            Entry::Checked(checked) => checked.size(),
        };
        held.saturating_add(ENTRY_OVERHEAD)
    }
}

/// Built files by [`BuildKey`] and checked documents by digest, least recently used
/// evicted first past `budget` bytes.
pub struct FileCache {
    budget: usize,
    inner: Mutex<Inner>,
}

struct Inner {
    entries: LruCache<Key, Entry>,
    /// The sum of [`Entry::cost`] over `entries`; never above the budget between calls.
    bytes: usize,
    /// How many of `entries` are files.
    files: usize,
}

impl FileCache {
    /// A cache holding at most `budget` bytes (entries and [`ENTRY_OVERHEAD`] each).
    pub fn new(budget: usize) -> FileCache {
        FileCache {
            budget,
            inner: Mutex::new(Inner {
                entries: LruCache::unbounded(),
                bytes: 0,
                files: 0,
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
        match self.lock().entries.get(&Key::File(*key)) {
            Some(Entry::File(file)) => Some(file.clone()),
            _ => None,
        }
    }

    /// Keeps `file` under `key`, then drops the least recently used entries until the
    /// cache is within its budget again. A file larger than the whole budget is not
    /// kept. Two requests that missed at once both build and both insert: the second
    /// replaces the first, and the count stays exact.
    pub fn insert(&self, key: BuildKey, file: Arc<[u8]>) {
        self.keep(Key::File(key), Entry::File(file));
    }

    /// The check of the document whose bytes have this BLAKE3 digest, if it is kept.
    pub fn checked(&self, digest: &blake3::Hash) -> Option<Arc<CheckedDocument>> {
        match self.lock().entries.get(&Key::Checked(*digest.as_bytes())) {
            Some(Entry::Checked(checked)) => Some(checked.clone()),
            _ => None,
        }
    }

    /// Keeps the check of the document whose bytes have this digest.
    pub fn insert_checked(&self, digest: &blake3::Hash, checked: Arc<CheckedDocument>) {
        self.keep(Key::Checked(*digest.as_bytes()), Entry::Checked(checked));
    }

    fn keep(&self, key: Key, entry: Entry) {
        let added = entry.cost();
        if added > self.budget {
            return;
        }
        let is_file = matches!(entry, Entry::File(_));
        let mut inner = self.lock();
        if let Some(replaced) = inner.entries.put(key, entry) {
            inner.forget(&replaced);
        }
        inner.bytes += added;
        inner.files += usize::from(is_file);
        while inner.bytes > self.budget {
            let Some((_, evicted)) = inner.entries.pop_lru() else {
                break;
            };
            inner.forget(&evicted);
        }
    }

    /// The bytes counted against the budget now.
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }

    /// The number of files kept now.
    pub fn len(&self) -> usize {
        self.lock().files
    }

    /// The number of checked documents kept now.
    pub fn documents(&self) -> usize {
        let inner = self.lock();
        inner.entries.len() - inner.files
    }

    pub fn is_empty(&self) -> bool {
        self.lock().entries.is_empty()
    }

    /// Nothing between `lock` and the end of a method can panic half-way through an
    /// update, so a poisoned lock still guards a consistent map.
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Inner {
    /// Takes an entry that left the map out of the counts.
    fn forget(&mut self, gone: &Entry) {
        self.bytes -= gone.cost();
        self.files -= usize::from(matches!(gone, Entry::File(_)));
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
        let kept: usize = inner.entries.iter().map(|(_, e)| e.cost()).sum();
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

    fn checked(doc: &str) -> (blake3::Hash, Arc<CheckedDocument>) {
        let checked = CheckedDocument::check(doc.as_bytes()).unwrap();
        (blake3::hash(doc.as_bytes()), Arc::new(checked))
    }

    #[test]
    fn checked_documents_share_the_budget_and_the_order_of_use_with_files() {
        let (digest, document) = checked("<device><loadInformation>x</loadInformation></device>");
        let document_cost = document.size() + ENTRY_OVERHEAD;
        let budget = 3 * (1000 + ENTRY_OVERHEAD) + document_cost;
        let cache = FileCache::new(budget);
        cache.insert_checked(&digest, document.clone());
        for n in 0..3 {
            cache.insert(key(n), file(1000, 0));
        }
        assert_eq!((cache.len(), cache.documents()), (3, 1));
        assert_eq!(cache.bytes(), budget);
        // Found under its digest only, and not as a file.
        assert!(cache.checked(&digest).is_some());
        assert!(cache.checked(&blake3::hash(b"<device/>")).is_none());
        assert!(cache
            .get(&BuildKey::from_bytes(digest.as_bytes()))
            .is_none());

        // The check was just used, so the next file evicts the oldest file.
        cache.insert(key(3), file(1000, 0));
        assert!(cache.get(&key(0)).is_none());
        assert!(cache.checked(&digest).is_some());
        // Files used since: now the check is the oldest, and goes.
        for n in 1..4 {
            assert!(cache.get(&key(n)).is_some());
        }
        cache.insert(key(4), file(1000 + document_cost - ENTRY_OVERHEAD, 0));
        assert!(cache.checked(&digest).is_none());
        assert_eq!(cache.documents(), 0);
        assert!(cache.bytes() <= budget);
        let inner = cache.lock();
        assert_eq!(
            inner.entries.iter().map(|(_, e)| e.cost()).sum::<usize>(),
            inner.bytes
        );
        assert_eq!(inner.files, inner.entries.len());
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
