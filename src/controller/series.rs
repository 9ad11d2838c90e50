//! The per-object metric series, read from the caches at scrape time.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::ResourceExt;

use crate::api::condition::types;
use crate::api::{CommunicationToken, CommunicationUser, ConditionExt};
use crate::metrics::objects::{ObjectSource, Readiness, TokenSeries, UserSeries};
use crate::stores::Stores;

/// The caches as the source of the per-object series.
pub struct CacheSeries {
    pub users: Stores<CommunicationUser>,
    pub tokens: Stores<CommunicationToken>,
}

/// The status of the Ready condition; Unknown when there is none (never reconciled).
fn readiness(conditions: Option<&[Condition]>) -> Readiness {
    match conditions.and_then(|c| c.find(types::READY)) {
        Some(c) if c.status == "True" => Readiness::True,
        Some(c) if c.status == "False" => Readiness::False,
        _ => Readiness::Unknown,
    }
}

impl ObjectSource for CacheSeries {
    fn tokens(&self) -> Vec<TokenSeries> {
        self.tokens
            .all()
            .iter()
            .map(|t| {
                // A suspended token is renewed by nobody: no times to alert on.
                let st = t.status.as_ref().filter(|_| !t.spec.suspend);
                TokenSeries {
                    namespace: t.namespace().unwrap_or_default(),
                    name: t.name_any(),
                    uid: t.metadata.uid.clone().unwrap_or_default(),
                    ready: readiness(t.status.as_ref().map(|s| s.conditions.as_slice())),
                    expiration: st
                        .and_then(|s| s.expires_on.as_ref())
                        .map(|e| e.0.as_second() as f64),
                    renewal: st
                        .and_then(|s| s.renewal_time.as_ref())
                        .map(|r| r.0.as_second() as f64),
                }
            })
            .collect()
    }

    fn users(&self) -> Vec<UserSeries> {
        self.users
            .all()
            .iter()
            .map(|u| UserSeries {
                namespace: u.namespace().unwrap_or_default(),
                name: u.name_any(),
                ready: readiness(u.status.as_ref().map(|s| s.conditions.as_slice())),
            })
            .collect()
    }
}
