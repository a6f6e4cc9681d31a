//! What one provider instance may hold in memory, counted in one place: its linear memories,
//! its tables, and the host buffers it pins through its grants (object-store parts in flight).
//! Together they stay under the provider's `limits.memory_mib`.
//!
//! - [`MemoryBudget`] is the instance's account; [`InstanceLimiter`] is the wasmtime
//!   `ResourceLimiter` that charges memory and table growth to it, and remembers a refusal so
//!   that the trap that usually follows is reported as the memory limit.
//! - [`HostReservation`] is a host buffer charged to it until dropped (a part upload holds one
//!   until the store answered).
//! - [`ProviderUsage`] counts a provider's live instances and host buffers across its instances,
//!   for [`super::EgressHost::usage`].

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use wasmtime::ResourceLimiter;

/// Bytes a table element is counted as: a function reference is a pointer.
const TABLE_ELEMENT_BYTES: usize = std::mem::size_of::<usize>();

/// Most tables, memories and core instances one instance may create: the component model
/// needs a few of each per core module; these bounds only stop pathological components.
const MAX_TABLES: usize = 1000;
const MAX_MEMORIES: usize = 100;
const MAX_INSTANCES: usize = 1000;

/// A provider's live instances and host buffers, across its instances.
#[derive(Debug, Default)]
pub(crate) struct ProviderUsage {
    /// Instances alive, each on a thread of its own.
    pub(crate) threads: AtomicUsize,
    /// Host buffers held by its instances, in bytes.
    pub(crate) host_bytes: AtomicUsize,
}

/// A thread counted in [`ProviderUsage::threads`] until dropped.
pub(crate) struct CountedThread(Arc<ProviderUsage>);

impl CountedThread {
    /// Counts one more thread of the provider.
    pub(crate) fn start(usage: &Arc<ProviderUsage>) -> CountedThread {
        usage.threads.fetch_add(1, Ordering::SeqCst);
        CountedThread(usage.clone())
    }
}

impl Drop for CountedThread {
    fn drop(&mut self) {
        self.0.threads.fetch_sub(1, Ordering::SeqCst);
    }
}

/// One instance's memory account.
#[derive(Debug)]
pub(crate) struct MemoryBudget {
    limit: usize,
    /// Linear memory, all memories together.
    linear: AtomicUsize,
    /// Tables, all together, in bytes.
    tables: AtomicUsize,
    /// Host buffers held for the instance.
    host: AtomicUsize,
    provider: Arc<ProviderUsage>,
}

/// Why a host buffer was refused, for the message.
#[derive(Debug, Clone, Copy)]
pub(crate) struct OverBudget {
    /// What was asked for.
    pub(crate) requested: usize,
    /// The limit.
    pub(crate) limit: usize,
    /// Linear memory and tables in use.
    pub(crate) instance: usize,
    /// Host buffers in use.
    pub(crate) host: usize,
}

impl std::fmt::Display for OverBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} bytes do not fit in the provider's memory limit (`limits.memory_mib` = {}: {} bytes \
             of instance memory and {} bytes of host buffers in use)",
            self.requested,
            self.limit >> 20,
            self.instance,
            self.host
        )
    }
}

impl MemoryBudget {
    /// An empty account of `limit` bytes whose host buffers also count in `provider`.
    pub(crate) fn new(limit: usize, provider: Arc<ProviderUsage>) -> Arc<MemoryBudget> {
        Arc::new(MemoryBudget {
            limit,
            linear: AtomicUsize::new(0),
            tables: AtomicUsize::new(0),
            host: AtomicUsize::new(0),
            provider,
        })
    }

    fn used(&self) -> usize {
        self.linear.load(Ordering::SeqCst)
            + self.tables.load(Ordering::SeqCst)
            + self.host.load(Ordering::SeqCst)
    }

    /// Charges `bytes` of host buffer, or says why not.
    pub(crate) fn reserve(self: &Arc<Self>, bytes: usize) -> Result<HostReservation, OverBudget> {
        let mut host = self.host.load(Ordering::SeqCst);
        loop {
            let instance = self.linear.load(Ordering::SeqCst) + self.tables.load(Ordering::SeqCst);
            if instance.saturating_add(host).saturating_add(bytes) > self.limit {
                return Err(OverBudget {
                    requested: bytes,
                    limit: self.limit,
                    instance,
                    host,
                });
            }
            match self
                .host
                .compare_exchange(host, host + bytes, Ordering::SeqCst, Ordering::SeqCst)
            {
                Ok(_) => break,
                Err(current) => host = current,
            }
        }
        self.provider.host_bytes.fetch_add(bytes, Ordering::SeqCst);
        Ok(HostReservation {
            budget: self.clone(),
            bytes,
        })
    }

    /// Charges a change of a linear memory or table from `current` to `desired` bytes in
    /// `counter`; false when it does not fit.
    fn grow(&self, counter: &AtomicUsize, current: usize, desired: usize) -> bool {
        let others = self.used() - counter.load(Ordering::SeqCst);
        let total = counter
            .load(Ordering::SeqCst)
            .saturating_sub(current)
            .saturating_add(desired);
        if others.saturating_add(total) > self.limit {
            return false;
        }
        counter.store(total, Ordering::SeqCst);
        true
    }
}

/// A host buffer charged to an instance's budget (and its provider's usage) until dropped.
#[derive(Debug)]
pub(crate) struct HostReservation {
    budget: Arc<MemoryBudget>,
    bytes: usize,
}

impl Drop for HostReservation {
    fn drop(&mut self) {
        self.budget.host.fetch_sub(self.bytes, Ordering::SeqCst);
        self.budget
            .provider
            .host_bytes
            .fetch_sub(self.bytes, Ordering::SeqCst);
    }
}

/// What the instance was refused, so that the trap that usually follows is reported as the
/// memory limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// A linear memory could not grow.
    Memory,
    /// A table could not grow.
    Table,
}

/// The wasmtime `ResourceLimiter` of an instance: memory and table growth charged to its
/// [`MemoryBudget`] (wasmtime's own `StoreLimits` counts each memory separately and tables by
/// element count only).
pub(crate) struct InstanceLimiter {
    budget: Arc<MemoryBudget>,
    refused: Option<Refusal>,
}

impl InstanceLimiter {
    /// A limiter charging `budget`.
    pub(crate) fn new(budget: Arc<MemoryBudget>) -> InstanceLimiter {
        InstanceLimiter {
            budget,
            refused: None,
        }
    }

    /// What was refused, if anything.
    pub(crate) fn refused(&self) -> Option<Refusal> {
        self.refused
    }
}

impl ResourceLimiter for InstanceLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let fits = self.budget.grow(&self.budget.linear, current, desired);
        if !fits {
            self.refused = Some(Refusal::Memory);
        }
        Ok(fits)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let fits = self.budget.grow(
            &self.budget.tables,
            current.saturating_mul(TABLE_ELEMENT_BYTES),
            desired.saturating_mul(TABLE_ELEMENT_BYTES),
        );
        if !fits {
            self.refused = Some(Refusal::Table);
        }
        Ok(fits)
    }

    fn instances(&self) -> usize {
        MAX_INSTANCES
    }

    fn tables(&self) -> usize {
        MAX_TABLES
    }

    fn memories(&self) -> usize {
        MAX_MEMORIES
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(limit: usize) -> (Arc<MemoryBudget>, Arc<ProviderUsage>) {
        let usage = Arc::new(ProviderUsage::default());
        (MemoryBudget::new(limit, usage.clone()), usage)
    }

    #[test]
    fn memories_tables_and_host_buffers_share_one_limit() {
        let (budget, usage) = budget(1000);
        let mut limiter = InstanceLimiter::new(budget.clone());
        assert!(limiter.memory_growing(0, 600, None).unwrap());
        // 50 elements of 8 bytes: 400 bytes, 1000 in all.
        assert!(limiter.table_growing(0, 50, None).unwrap());
        assert!(limiter.refused().is_none());
        let refused = budget.reserve(1).unwrap_err();
        assert_eq!((refused.instance, refused.host), (1000, 0));
        assert!(
            refused.to_string().contains("`limits.memory_mib`"),
            "{refused}"
        );
        // Shrinking the table frees room for host buffers, which the provider's usage counts.
        assert!(limiter.table_growing(50, 25, None).unwrap());
        let reservation = budget.reserve(200).unwrap();
        assert_eq!(usage.host_bytes.load(Ordering::SeqCst), 200);
        assert!(!limiter.memory_growing(600, 601, None).unwrap());
        assert_eq!(limiter.refused(), Some(Refusal::Memory));
        assert!(!limiter.table_growing(25, 26, None).unwrap());
        assert_eq!(limiter.refused(), Some(Refusal::Table));
        drop(reservation);
        assert_eq!(usage.host_bytes.load(Ordering::SeqCst), 0);
        assert!(limiter.memory_growing(600, 800, None).unwrap());
    }

    #[test]
    fn a_real_module_whose_table_exceeds_the_limit_does_not_instantiate() {
        // (module (table 200000 funcref)): 200 000 elements, 1.6 MB, over a 1 MiB budget.
        let mut module = b"\0asm\x01\0\0\0".to_vec();
        let mut table = vec![0x01, 0x70, 0x00];
        let mut elements = 200_000u32;
        loop {
            let byte = (elements & 0x7f) as u8;
            elements >>= 7;
            if elements == 0 {
                table.push(byte);
                break;
            }
            table.push(byte | 0x80);
        }
        module.push(0x04);
        module.push(table.len() as u8);
        module.extend(table);
        let engine = super::super::engine::engine();
        let module = wasmtime::Module::new(engine, &module).unwrap();
        let (budget, _) = budget(1 << 20);
        let mut store = wasmtime::Store::new(engine, InstanceLimiter::new(budget));
        store.limiter(|limiter| limiter);
        let error = wasmtime::Instance::new(&mut store, &module, &[]).unwrap_err();
        assert_eq!(store.data().refused(), Some(Refusal::Table), "{error:#}");
    }
}
