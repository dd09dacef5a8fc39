/*!
The erasure ledger: what the consumers must not deliver again.

An erasure deletes a person from the store and the lake, but their records may still be in the
journal: journaled and not yet loaded when the erasure ran, or re-read later (a consumer
restarting before its checkpoint, `adopt-journal`, the lake writer archiving a retained journal
afresh). Rather than rewrite sealed segments, each erasure records here its hashed ids and its
horizon, the journal's end when it ran; every consumer asks [`ErasureLedger::covers`] of each
entry it decodes and skips an entry below a horizon that carries one of that erasure's ids.
Records journaled after the horizon are new and are delivered (unless a suppression dropped them
at ingest). Entries are kept for ever: they hold no id in clear and are small.

The check costs nothing for entries at or past the highest horizon, which is every entry once
the consumers have passed the last erasure: one atomic load.
*/

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use serde::{Deserialize, Serialize};

use super::ids::{IdHasher, decode_hex};
use super::{PrivacyError, read_json, write_atomically};

/// One erasure, as the ledger keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerEntry {
    /// The erasure's id.
    pub erasure: String,
    /// The journal's next offset when the erasure ran: entries below it are skipped.
    pub horizon: u64,
    /// The hashed ids of the person ([`IdHasher::hash`]).
    pub ids: Vec<String>,
}

/// The ledger file and its lookup table.
#[derive(Debug)]
pub struct ErasureLedger {
    path: PathBuf,
    entries: Mutex<Vec<LedgerEntry>>,
    /// Hashed id → the highest horizon of an erasure naming it.
    horizons: RwLock<Arc<HashMap<[u8; 32], u64>>>,
    /// The highest horizon of all: entries at or past it need no look-up.
    max_horizon: AtomicU64,
    /// Bumped on every change, so a consumer holding records decoded before can tell.
    generation: AtomicU64,
}

impl ErasureLedger {
    /// Reads the ledger at `path` (empty when there is none yet).
    pub fn open(path: &Path) -> Result<ErasureLedger, PrivacyError> {
        let entries: Vec<LedgerEntry> = read_json(path)?.unwrap_or_default();
        let ledger = ErasureLedger {
            path: path.to_owned(),
            entries: Mutex::new(Vec::new()),
            horizons: RwLock::default(),
            max_horizon: AtomicU64::new(0),
            generation: AtomicU64::new(0),
        };
        ledger.publish(entries)?;
        Ok(ledger)
    }

    /// Adds (or, for an erasure already recorded, keeps) `entry`, durably, then applies it.
    pub fn record(&self, entry: LedgerEntry) -> Result<(), PrivacyError> {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner).clone();
        if entries.iter().any(|e| e.erasure == entry.erasure) {
            return Ok(());
        }
        entries.push(entry);
        let json = serde_json::to_vec_pretty(&entries)
            .map_err(|e| PrivacyError::Damaged { path: self.path.clone(), reason: e.to_string() })?;
        write_atomically(&self.path, &json)?;
        self.publish(entries)
    }

    /// True when the entry at `offset` carrying `ids` was erased: some erasure with a horizon
    /// above `offset` names one of them. `ids` is only called below the highest horizon.
    pub fn covers(&self, hasher: &IdHasher, offset: u64, ids: impl FnOnce() -> Vec<String>) -> bool {
        if offset >= self.max_horizon.load(Ordering::Acquire) {
            return false;
        }
        let horizons = self.horizons.read().unwrap_or_else(PoisonError::into_inner).clone();
        ids().iter().any(|id| horizons.get(&hasher.digest(id)).is_some_and(|horizon| offset < *horizon))
    }

    /// The hashed ids of every erasure that named `hash`: a person erased before, whose
    /// cluster the store no longer shows.
    pub fn erased_with(&self, hash: &str) -> Vec<String> {
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        entries.iter().filter(|e| e.ids.iter().any(|id| id == hash)).flat_map(|e| e.ids.iter().cloned()).collect()
    }

    /// Changes with every erasure recorded, and with every [`nudge`](Self::nudge).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Asks consumers that hold records in buffers (the lake writer) to deliver them now: an
    /// erasure is waiting for them to pass its horizon.
    pub fn nudge(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    fn publish(&self, entries: Vec<LedgerEntry>) -> Result<(), PrivacyError> {
        let mut horizons: HashMap<[u8; 32], u64> = HashMap::new();
        for entry in &entries {
            for id in &entry.ids {
                let digest = decode_hex(id).and_then(|d| <[u8; 32]>::try_from(d).ok()).ok_or_else(|| {
                    PrivacyError::Damaged { path: self.path.clone(), reason: format!("`{id}` is not a hashed id") }
                })?;
                let horizon = horizons.entry(digest).or_default();
                *horizon = (*horizon).max(entry.horizon);
            }
        }
        let max = entries.iter().map(|e| e.horizon).max().unwrap_or(0);
        *self.horizons.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(horizons);
        *self.entries.lock().unwrap_or_else(PoisonError::into_inner) = entries;
        self.max_horizon.store(max, Ordering::Release);
        self.generation.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_erased_id_is_skipped_below_the_horizon_only_and_the_ledger_survives_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let hasher = IdHasher::open(&dir.path().join("salt")).unwrap();
        let path = dir.path().join("erasure-ledger.json");
        let ledger = ErasureLedger::open(&path).unwrap();
        let ann = || vec!["ann".to_owned()];
        assert!(!ledger.covers(&hasher, 0, ann));
        let before = ledger.generation();
        let entry = LedgerEntry { erasure: "e1".into(), horizon: 10, ids: vec![hasher.hash("ann")] };
        ledger.record(entry.clone()).unwrap();
        ledger.record(entry).unwrap();
        assert_ne!(ledger.generation(), before);
        let reopened = ErasureLedger::open(&path).unwrap();
        for ledger in [&ledger, &reopened] {
            assert!(ledger.covers(&hasher, 9, ann));
            assert!(!ledger.covers(&hasher, 10, ann), "journaled after the erasure: new data");
            assert!(!ledger.covers(&hasher, 9, || vec!["bob".to_owned()]));
        }
        assert_eq!(reopened.entries.lock().unwrap().len(), 1);
        assert_eq!(reopened.erased_with(&hasher.hash("ann")), [hasher.hash("ann")]);
        assert!(reopened.erased_with(&hasher.hash("bob")).is_empty());
    }
}
