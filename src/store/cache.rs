//! The connectors by access key, kept in memory: every provider request starts with this
//! lookup. A store clears it after each connector write it commits; a reader only fills
//! it when no write committed since it began reading (a generation check), so a value
//! read before a write can never be cached after it.

use crate::domain::connector::Connector;
use std::collections::HashMap;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// Cached connectors by access key (no `Debug`: they hold secret keys).
#[derive(Default)]
pub struct ConnectorCache {
    generation: AtomicU64,
    by_key: RwLock<HashMap<String, Connector>>,
}

impl ConnectorCache {
    /// The cached connector with this access key, if any.
    pub fn get(&self, access_key: &str) -> Option<Connector> {
        self.by_key
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(access_key)
            .cloned()
    }

    /// The generation to pass to [`ConnectorCache::fill`]; read it before reading the
    /// store.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Caches `c`, read from the store after [`ConnectorCache::generation`] returned
    /// `generation`, unless a write committed since.
    pub fn fill(&self, generation: u64, c: &Connector) {
        let mut map = self
            .by_key
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if self.generation.load(Ordering::Acquire) == generation {
            map.insert(c.access_key.clone(), c.clone());
        }
    }

    /// Forgets everything; call after committing any connector write.
    pub fn invalidate(&self) {
        let mut map = self
            .by_key
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.generation.fetch_add(1, Ordering::AcqRel);
        map.clear();
    }
}
