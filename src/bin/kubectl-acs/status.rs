//! `kubectl acs status`: one line per user and token.

use std::collections::HashMap;

use acs_identity_operator::api::condition::types;
use acs_identity_operator::api::{CommunicationToken, CommunicationUser, ConditionExt};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Api, ListParams};
use kube::ResourceExt;

use crate::{advice, Error, Target};

/// One row of the table.
struct Row {
    namespace: String,
    kind: &'static str,
    name: String,
    ready: String,
    reason: String,
    expires: String,
    renewal: String,
    last_event: String,
    next: String,
}

fn ready(conditions: &[Condition]) -> (String, String) {
    conditions
        .find(types::READY)
        .map_or(("Unknown".into(), String::new()), |c| {
            (c.status.clone(), c.reason.clone())
        })
}

/// `in 3h12m` / `5m ago`, relative to now.
fn relative(t: Option<&Time>) -> String {
    let Some(t) = t else {
        return "-".into();
    };
    let secs = t.0.as_second() - jiff::Timestamp::now().as_second();
    let span = |s: i64| {
        let (h, m) = (s / 3600, (s % 3600) / 60);
        if h > 0 {
            format!("{h}h{m:02}m")
        } else if m > 0 {
            format!("{m}m")
        } else {
            format!("{s}s")
        }
    };
    if secs >= 0 {
        format!("in {}", span(secs))
    } else {
        format!("{} ago", span(-secs))
    }
}

/// The latest event about each object, by UID: `Reason: note`.
async fn last_events(t: &Target, all: bool) -> HashMap<String, String> {
    let api: Api<Event> = if all {
        Api::all(t.client.clone())
    } else {
        Api::namespaced(t.client.clone(), &t.namespace)
    };
    let Ok(list) = api.list(&ListParams::default()).await else {
        // Reading events is optional: a caller without the right sees no last event.
        return HashMap::new();
    };
    let mut latest: HashMap<String, (jiff::Timestamp, String)> = HashMap::new();
    for e in list {
        let Some(uid) = e.regarding.as_ref().and_then(|r| r.uid.clone()) else {
            continue;
        };
        let at = e
            .series
            .as_ref()
            .map(|s| s.last_observed_time.0)
            .or(e.event_time.as_ref().map(|t| t.0))
            .or(e.deprecated_last_timestamp.as_ref().map(|t| t.0))
            .or(e.metadata.creation_timestamp.as_ref().map(|t| t.0))
            .unwrap_or_default();
        let text = format!(
            "{}: {}",
            e.reason.clone().unwrap_or_default(),
            e.note.clone().unwrap_or_default()
        );
        if latest.get(&uid).is_none_or(|(t, _)| at >= *t) {
            latest.insert(uid, (at, text));
        }
    }
    latest.into_iter().map(|(k, (_, v))| (k, v)).collect()
}

fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(max - 1).collect::<String>())
    }
}

pub async fn run(t: &Target, name: Option<&str>, all: bool) -> Result<(), Error> {
    let (users, tokens): (Api<CommunicationUser>, Api<CommunicationToken>) = if all {
        (Api::all(t.client.clone()), Api::all(t.client.clone()))
    } else {
        (
            Api::namespaced(t.client.clone(), &t.namespace),
            Api::namespaced(t.client.clone(), &t.namespace),
        )
    };
    let events = last_events(t, all).await;
    let event_of = |uid: Option<&String>| {
        uid.and_then(|u| events.get(u))
            .map_or("-".to_string(), |e| shorten(e, 60))
    };
    let mut rows = Vec::new();
    for u in users.list(&ListParams::default()).await? {
        if name.is_some_and(|n| n != u.name_any()) {
            continue;
        }
        let conditions = u.status.as_ref().map_or(&[][..], |s| &s.conditions[..]);
        let (r, reason) = ready(conditions);
        rows.push(Row {
            namespace: u.namespace().unwrap_or_default(),
            kind: "CommunicationUser",
            name: u.name_any(),
            next: advice::next_step("CommunicationUser", &r, &reason)
                .unwrap_or("-")
                .into(),
            ready: r,
            reason,
            expires: "-".into(),
            renewal: "-".into(),
            last_event: event_of(u.metadata.uid.as_ref()),
        });
    }
    for tok in tokens.list(&ListParams::default()).await? {
        if name.is_some_and(|n| n != tok.name_any()) {
            continue;
        }
        let st = tok.status.as_ref();
        let conditions = st.map_or(&[][..], |s| &s.conditions[..]);
        let (r, reason) = ready(conditions);
        rows.push(Row {
            namespace: tok.namespace().unwrap_or_default(),
            kind: "CommunicationToken",
            name: tok.name_any(),
            next: advice::next_step("CommunicationToken", &r, &reason)
                .unwrap_or("-")
                .into(),
            ready: r,
            reason,
            expires: relative(st.and_then(|s| s.expires_on.as_ref())),
            renewal: relative(st.and_then(|s| s.renewal_time.as_ref())),
            last_event: event_of(tok.metadata.uid.as_ref()),
        });
    }
    if let (Some(n), true) = (name, rows.is_empty()) {
        return Err(format!(
            "no CommunicationUser or CommunicationToken named {n} in namespace {}",
            t.namespace
        )
        .into());
    }
    print_table(&rows, all);
    Ok(())
}

fn print_table(rows: &[Row], all: bool) {
    let mut table: Vec<Vec<String>> = vec![[
        "NAMESPACE",
        "KIND",
        "NAME",
        "READY",
        "REASON",
        "EXPIRES",
        "RENEWAL",
        "LAST EVENT",
        "NEXT STEP",
    ]
    .map(String::from)
    .to_vec()];
    for r in rows {
        table.push(vec![
            r.namespace.clone(),
            r.kind.to_string(),
            r.name.clone(),
            r.ready.clone(),
            if r.reason.is_empty() {
                "-".into()
            } else {
                r.reason.clone()
            },
            r.expires.clone(),
            r.renewal.clone(),
            r.last_event.clone(),
            r.next.clone(),
        ]);
    }
    let skip = usize::from(!all);
    let widths: Vec<usize> = (0..table[0].len())
        .map(|i| {
            table
                .iter()
                .map(|r| r[i].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in &table {
        let cells: Vec<String> = row
            .iter()
            .enumerate()
            .skip(skip)
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect();
        println!("{}", cells.join("  ").trim_end());
    }
}
