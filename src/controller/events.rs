//! The event recorder. kube-runtime's `Recorder` keeps each event it published for 6 minutes,
//! to fold repeats into a series, and drops old ones only when it publishes again (scanning
//! all of them each time). After a burst (20,000 tokens deleted, an event each) an idle
//! operator kept tens of MB of events for good. So the recorder is replaced by a fresh one
//! once idle for longer than that cache's lifetime (nothing a repeat could join is lost), and
//! after every [`MAX_CACHED`] events (a repeat after that starts a new Event instead of
//! counting in the old one's series).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, Recorder, Reporter};
use kube::Client;

/// kube-runtime's cache lifetime (6 minutes), and a little more.
pub const IDLE_RENEWAL: Duration = Duration::from_secs(6 * 60 + 5);

/// Events one recorder caches at most: about 1.4 KB each, so 1.5 MB (4,096 cost 5.9 MB at the
/// peak of a cold start). A repeat is folded only within this many events; most events are
/// about distinct objects and are never repeated.
pub const MAX_CACHED: usize = 1024;

/// Publishes events through a recorder renewed when idle or full.
pub struct Events {
    client: Client,
    reporter: Reporter,
    recorder: RwLock<Recorder>,
    published: AtomicUsize,
    last: Mutex<Instant>,
}

impl Events {
    pub fn new(client: Client, reporter: Reporter) -> Self {
        Self {
            recorder: RwLock::new(Recorder::new(client.clone(), reporter.clone())),
            client,
            reporter,
            published: AtomicUsize::new(0),
            last: Mutex::new(Instant::now()),
        }
    }

    /// Publishes `ev` about the object `reference`.
    pub async fn publish(
        &self,
        ev: &Event,
        reference: &ObjectReference,
    ) -> Result<(), kube::Error> {
        *self.last.lock().unwrap_or_else(PoisonError::into_inner) = Instant::now();
        if self.published.fetch_add(1, Ordering::SeqCst) + 1 >= MAX_CACHED {
            self.renew();
        }
        let recorder = self
            .recorder
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        recorder.publish(ev, reference).await
    }

    /// Replaces the recorder when nothing was published for `idle` (called every few seconds);
    /// returns whether it did.
    pub fn renew_if_idle(&self, idle: Duration) -> bool {
        let quiet = self
            .last
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .elapsed()
            >= idle;
        let cached = self.published.load(Ordering::SeqCst) > 0;
        if quiet && cached {
            self.renew();
        }
        quiet && cached
    }

    /// Events published since the recorder was last replaced (its cache holds at most these).
    pub fn cached(&self) -> usize {
        self.published.load(Ordering::SeqCst)
    }

    fn renew(&self) {
        *self
            .recorder
            .write()
            .unwrap_or_else(PoisonError::into_inner) =
            Recorder::new(self.client.clone(), self.reporter.clone());
        self.published.store(0, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_idle_or_full_recorder_is_replaced() {
        let client =
            Client::try_from(kube::Config::new("http://127.0.0.1:9".parse().unwrap())).unwrap();
        let e = Events::new(
            client,
            Reporter {
                controller: "c".into(),
                instance: None,
            },
        );
        // Nothing published: nothing to drop.
        assert!(!e.renew_if_idle(Duration::ZERO));
        e.published.store(10, Ordering::SeqCst);
        assert!(!e.renew_if_idle(Duration::from_secs(3600)), "not idle yet");
        assert!(e.renew_if_idle(Duration::ZERO));
        assert_eq!(e.cached(), 0);
        // Full: the next publish starts a fresh recorder (the publish itself fails here: no
        // apiserver).
        e.published.store(MAX_CACHED - 1, Ordering::SeqCst);
        let ev = Event {
            type_: kube::runtime::events::EventType::Normal,
            reason: "R".into(),
            note: None,
            action: "A".into(),
            secondary: None,
        };
        let _ = e.publish(&ev, &ObjectReference::default()).await;
        assert_eq!(e.cached(), 0);
    }
}
