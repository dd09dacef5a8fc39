/*!
Store connections for queries: at most `pool_size` at once, reused between requests.

An SQLite read connection is cheap to open, a PostgreSQL one is not (a TCP and maybe TLS
handshake, authentication, a backend process), so idle connections are kept for the next
query. The bound is also what keeps many concurrent exports from exhausting the database's
`max_connections`: a request waits for a free connection instead, for at most `pool_wait`, so
that a pool held by slow exports answers "busy, come back" rather than hanging every query.
*/

use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::{Store, StoreError, StoreTarget};

/// A connection idle this long is checked with a round trip before it is handed out again: the
/// database may have restarted meanwhile, and a query on a dead connection fails (or, for a
/// streamed export, breaks off after its headers). Busy pools reuse connections sooner, unchecked.
const CHECK_IDLE_AFTER: Duration = Duration::from_secs(1);
/// How long that check may take before the connection counts as dead.
const ALIVE_TIMEOUT: Duration = Duration::from_secs(2);

/// Hands out read-only store connections.
#[derive(Debug)]
pub struct QueryPool {
    target: StoreTarget,
    /// Connections given back, with when: one idle for a while is checked before reuse.
    idle: Mutex<Vec<(Store, Instant)>>,
    permits: Arc<Semaphore>,
    pool_size: usize,
    pool_wait: Duration,
}

impl QueryPool {
    /// A pool of at most `pool_size` (at least 1) connections to `target`, each waited for at
    /// most `pool_wait`.
    pub fn new(target: StoreTarget, pool_size: usize, pool_wait: Duration) -> Arc<QueryPool> {
        let pool_size = pool_size.max(1);
        let permits = Arc::new(Semaphore::new(pool_size));
        Arc::new(QueryPool { target, idle: Mutex::new(Vec::new()), permits, pool_size, pool_wait })
    }

    /// Where the store is.
    pub fn target(&self) -> &StoreTarget {
        &self.target
    }

    /// A connection: an idle one, or a new one once fewer than `pool_size` are in use;
    /// [`StoreError::PoolBusy`] when none came free within `pool_wait`.
    pub async fn get(self: &Arc<Self>) -> Result<PooledStore, StoreError> {
        let busy = || StoreError::PoolBusy { pool_size: self.pool_size, waited: self.pool_wait };
        let permit = tokio::time::timeout(self.pool_wait, self.permits.clone().acquire_owned())
            .await
            .map_err(|_| busy())?
            .expect("the pool's semaphore is never closed");
        let idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner).pop();
        let idle = match idle {
            Some((mut store, since)) if since.elapsed() >= CHECK_IDLE_AFTER => {
                let checked = tokio::task::spawn_blocking(move || store.is_alive(ALIVE_TIMEOUT).then_some(store));
                checked.await.map_err(|e| StoreError::Join(e.to_string()))?
            }
            Some((store, _)) => Some(store),
            None => None,
        };
        let store = match idle {
            Some(store) => store,
            None => {
                let target = self.target.clone();
                tokio::task::spawn_blocking(move || Store::open_read_only(&target))
                    .await
                    .map_err(|e| StoreError::Join(e.to_string()))??
            }
        };
        Ok(PooledStore { store: Some(store), pool: self.clone(), _permit: permit })
    }
}

/// A store connection on loan from [`QueryPool`]; goes back to the pool when dropped.
#[derive(Debug)]
pub struct PooledStore {
    store: Option<Store>,
    pool: Arc<QueryPool>,
    _permit: OwnedSemaphorePermit,
}

impl Deref for PooledStore {
    type Target = Store;

    fn deref(&self) -> &Store {
        self.store.as_ref().expect("a reader holds its store until dropped")
    }
}

impl DerefMut for PooledStore {
    fn deref_mut(&mut self) -> &mut Store {
        self.store.as_mut().expect("a reader holds its store until dropped")
    }
}

impl Drop for PooledStore {
    fn drop(&mut self) {
        if let Some(store) = self.store.take().filter(Store::is_reusable) {
            self.pool.idle.lock().unwrap_or_else(PoisonError::into_inner).push((store, Instant::now()));
        }
    }
}
