//! Metrics of the operator's own machinery: how many entries each in-memory table holds (so a
//! table that only grows is seen, not assumed away) and watch failures (a watch that keeps
//! failing leaves its cache stale, which no other metric shows).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};
use std::sync::atomic::AtomicU64;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TableLabels {
    table: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HeapLabels {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResourceLabels {
    resource: &'static str,
}

/// The families of this module, registered in the operator's registry.
#[derive(Debug, Default)]
pub struct RuntimeMetrics {
    tracked: Family<TableLabels, Gauge>,
    watch_errors: Family<ResourceLabels, Counter>,
    watches_failing: Gauge,
    tables_reported: Gauge<f64, AtomicU64>,
    leader: Gauge,
    heap: Family<HeapLabels, Gauge>,
}

impl RuntimeMetrics {
    pub(super) fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register(
            "tracked_entries",
            "Entries held by each in-memory table of the operator (per-object state outside the caches), by table; updated every few seconds",
            m.tracked.clone(),
        );
        registry.register(
            "watch_errors",
            "Errors of the operator's watches (each is retried with backoff), by resource",
            m.watch_errors.clone(),
        );
        registry.register(
            "watches_failing",
            "Watches failing (an error in the last minute and no event since) or ended; /readyz fails while this is not 0",
            m.watches_failing.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica leads and may write (always, once started, without leader election); 0 while it waits as a standby",
            m.leader.clone(),
        );
        registry.register_with_unit(
            "heap",
            "Bytes the memory allocator holds, by state: in_use by the operator, free (freed but kept: fragmentation the resident size still counts); updated with tracked_entries",
            Unit::Bytes,
            m.heap.clone(),
        );
        registry.register_with_unit(
            "tracked_entries_reported_timestamp",
            "Unix time of the last report of tracked_entries",
            Unit::Seconds,
            m.tables_reported.clone(),
        );
        m
    }

    /// Whether this replica leads (may write) now.
    pub fn set_leader(&self, leads: bool) {
        self.leader.set(i64::from(leads));
    }

    /// The tables were reported at `at`.
    pub fn tables_reported(&self, at: jiff::Timestamp) {
        self.tables_reported
            .set(at.as_millisecond() as f64 / 1000.0);
    }

    /// Records what the allocator holds.
    pub fn set_heap(&self, heap: crate::alloc::HeapBytes) {
        for (state, bytes) in [("in_use", heap.in_use), ("free", heap.free)] {
            self.heap
                .get_or_create(&HeapLabels { state })
                .set(i64::try_from(bytes).unwrap_or(i64::MAX));
        }
    }

    /// Records that `table` holds `entries`.
    pub fn set_tracked(&self, table: &'static str, entries: usize) {
        self.tracked
            .get_or_create(&TableLabels { table })
            .set(i64::try_from(entries).unwrap_or(i64::MAX));
    }

    /// The entries `table` was last reported to hold (tests and benchmarks read the exposition).
    pub fn tracked(&self, table: &'static str) -> Option<i64> {
        self.tracked.get(&TableLabels { table }).map(|g| g.get())
    }

    /// Counts one error of the watch of `resource` (a kind).
    pub fn watch_error(&self, resource: &'static str) {
        self.watch_errors
            .get_or_create(&ResourceLabels { resource })
            .inc();
    }

    /// Sets the number of watches failing or ended.
    pub fn set_watches_failing(&self, n: usize) {
        self.watches_failing
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }
}
