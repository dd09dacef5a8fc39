/*!
The suppression list: people whose later records ingest drops, never journaled.

An erasure asked with `suppress=true` keeps an entry naming the person's whole identity cluster
by hashed ids. Ingest asks [`Suppressions::covers`] of every record it parsed; the answer must be
cheap at half a million records a second: with no entry it is one atomic load, otherwise a hash
per id and a look-up in a set swapped whole on every change (readers never wait on a writer).
*/

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use serde::{Deserialize, Serialize};

use super::ids::{IdHasher, decode_hex};
use super::{PrivacyError, read_json, write_atomically};

/// One suppressed person.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Suppression {
    /// The suppression's id: the id of the erasure that made it.
    pub id: String,
    /// When it was made, RFC 3339.
    pub created_at: String,
    /// Who made it.
    pub created_by: String,
    /// The hashed ids of the person's cluster.
    pub ids: Vec<String>,
}

/// The suppression file and the set ingest looks ids up in.
#[derive(Debug)]
pub struct Suppressions {
    path: PathBuf,
    entries: Mutex<Vec<Suppression>>,
    set: RwLock<Arc<HashSet<[u8; 32]>>>,
    empty: AtomicBool,
}

impl Suppressions {
    /// Reads the list at `path` (empty when there is none yet).
    pub fn open(path: &Path) -> Result<Suppressions, PrivacyError> {
        let list = Suppressions {
            path: path.to_owned(),
            entries: Mutex::default(),
            set: RwLock::default(),
            empty: AtomicBool::new(true),
        };
        list.publish(read_json(path)?.unwrap_or_default())?;
        Ok(list)
    }

    /// Every suppression, oldest first.
    pub fn list(&self) -> Vec<Suppression> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Adds `entry` durably. One with the same id, or whose ids `entry` all covers (the same
    /// person suppressed again), is replaced by it: lifting the newest lifts the person.
    pub fn add(&self, entry: Suppression) -> Result<(), PrivacyError> {
        let mut entries = self.list();
        entries.retain(|e| e.id != entry.id && !e.ids.iter().all(|id| entry.ids.contains(id)));
        entries.push(entry);
        self.save(entries)
    }

    /// Removes suppression `id` durably and returns it; `None` when there is none.
    pub fn lift(&self, id: &str) -> Result<Option<Suppression>, PrivacyError> {
        let mut entries = self.list();
        let Some(at) = entries.iter().position(|e| e.id == id) else { return Ok(None) };
        let lifted = entries.remove(at);
        self.save(entries)?;
        Ok(Some(lifted))
    }

    /// True when one of `ids` is suppressed. `ids` is only called when something is.
    pub fn covers(&self, hasher: &IdHasher, ids: impl FnOnce() -> Vec<String>) -> bool {
        if self.empty.load(Ordering::Acquire) {
            return false;
        }
        let set = self.set.read().unwrap_or_else(PoisonError::into_inner).clone();
        ids().iter().any(|id| set.contains(&hasher.digest(id)))
    }

    fn save(&self, entries: Vec<Suppression>) -> Result<(), PrivacyError> {
        let json = serde_json::to_vec_pretty(&entries)
            .map_err(|e| PrivacyError::Damaged { path: self.path.clone(), reason: e.to_string() })?;
        write_atomically(&self.path, &json)?;
        self.publish(entries)
    }

    fn publish(&self, entries: Vec<Suppression>) -> Result<(), PrivacyError> {
        let mut set = HashSet::new();
        for id in entries.iter().flat_map(|e| &e.ids) {
            let digest = decode_hex(id).and_then(|d| <[u8; 32]>::try_from(d).ok()).ok_or_else(|| {
                PrivacyError::Damaged { path: self.path.clone(), reason: format!("`{id}` is not a hashed id") }
            })?;
            set.insert(digest);
        }
        self.empty.store(set.is_empty(), Ordering::Release);
        *self.set.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(set);
        *self.entries.lock().unwrap_or_else(PoisonError::into_inner) = entries;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_suppressed_id_is_covered_until_lifted_and_the_list_survives_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let hasher = IdHasher::open(&dir.path().join("salt")).unwrap();
        let path = dir.path().join("suppressions.json");
        let list = Suppressions::open(&path).unwrap();
        let ann = || vec!["a1".to_owned(), "ann".to_owned()];
        assert!(!list.covers(&hasher, ann));
        let entry = Suppression {
            id: "e1".into(),
            created_at: "2026-11-30T00:00:00Z".into(),
            created_by: "test".into(),
            ids: vec![hasher.hash("ann")],
        };
        list.add(entry.clone()).unwrap();
        list.add(entry.clone()).unwrap();
        assert!(list.covers(&hasher, ann));
        assert!(!list.covers(&hasher, || vec!["bob".to_owned()]));
        let reopened = Suppressions::open(&path).unwrap();
        assert_eq!(reopened.list(), std::slice::from_ref(&entry));
        assert_eq!(reopened.lift("e1").unwrap(), Some(entry));
        assert_eq!(reopened.lift("e1").unwrap(), None);
        assert!(!reopened.covers(&hasher, ann));
        assert!(Suppressions::open(&path).unwrap().list().is_empty());
    }

    #[test]
    fn suppressing_the_same_person_again_replaces_the_entry_so_one_lift_lifts_them() {
        let dir = tempfile::tempdir().unwrap();
        let hasher = IdHasher::open(&dir.path().join("salt")).unwrap();
        let list = Suppressions::open(&dir.path().join("suppressions.json")).unwrap();
        let entry = |id: &str, ids: &[&str]| Suppression {
            id: id.into(),
            created_at: "2026-11-30T00:00:00Z".into(),
            created_by: "test".into(),
            ids: ids.iter().map(|i| hasher.hash(i)).collect(),
        };
        list.add(entry("e1", &["ann"])).unwrap();
        list.add(entry("bob", &["bob"])).unwrap();
        list.add(entry("e2", &["ann", "a1"])).unwrap();
        assert_eq!(list.list().iter().map(|e| e.id.as_str()).collect::<Vec<_>>(), ["bob", "e2"]);
        list.lift("e2").unwrap();
        assert!(!list.covers(&hasher, || vec!["ann".to_owned()]), "one lift lifts the person");
        assert!(list.covers(&hasher, || vec!["bob".to_owned()]));
    }
}
