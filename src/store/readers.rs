/*!
Store connections for queries: at most `pool_size` at once, reused between requests.

An SQLite read connection is cheap to open, a PostgreSQL one is not (a TCP and maybe TLS
handshake, authentication, a backend process), so idle connections are kept for the next
query. The bound is also what keeps many concurrent exports from exhausting the database's
`max_connections`: a request waits for a free connection instead.
*/

use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::{Store, StoreError, StoreTarget};

/// Hands out read-only store connections.
#[derive(Debug)]
pub struct Readers {
    target: StoreTarget,
    idle: Mutex<Vec<Store>>,
    permits: Arc<Semaphore>,
}

impl Readers {
    /// A pool of at most `pool_size` (at least 1) connections to `target`.
    pub fn new(target: StoreTarget, pool_size: usize) -> Arc<Readers> {
        Arc::new(Readers { target, idle: Mutex::new(Vec::new()), permits: Arc::new(Semaphore::new(pool_size.max(1))) })
    }

    /// Where the store is.
    pub fn target(&self) -> &StoreTarget {
        &self.target
    }

    /// A connection: an idle one, or a new one once fewer than `pool_size` are in use.
    pub async fn get(self: &Arc<Self>) -> Result<Reader, StoreError> {
        let permit = self.permits.clone().acquire_owned().await.expect("the readers' semaphore is never closed");
        let idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner).pop();
        let store = match idle {
            Some(store) => store,
            None => {
                let target = self.target.clone();
                tokio::task::spawn_blocking(move || Store::open_read_only(&target))
                    .await
                    .map_err(|e| StoreError::Join(e.to_string()))??
            }
        };
        Ok(Reader { store: Some(store), readers: self.clone(), _permit: permit })
    }
}

/// A store connection on loan from [`Readers`]; goes back to the pool when dropped.
#[derive(Debug)]
pub struct Reader {
    store: Option<Store>,
    readers: Arc<Readers>,
    _permit: OwnedSemaphorePermit,
}

impl Deref for Reader {
    type Target = Store;

    fn deref(&self) -> &Store {
        self.store.as_ref().expect("a reader holds its store until dropped")
    }
}

impl DerefMut for Reader {
    fn deref_mut(&mut self) -> &mut Store {
        self.store.as_mut().expect("a reader holds its store until dropped")
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        if let Some(store) = self.store.take().filter(Store::is_reusable) {
            self.readers.idle.lock().unwrap_or_else(PoisonError::into_inner).push(store);
        }
    }
}
