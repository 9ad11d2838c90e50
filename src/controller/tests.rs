//! Tests of the helpers both reconcilers share.

use std::time::Instant;

use kube::core::Status;
use kube::runtime::finalizer::Error as FinalizerError;

use super::failure::gone_at_finalizer_removal;
use super::unscheduled::Unscheduled;
use super::{key_of, Context};
use crate::api::{CommunicationUser, CommunicationUserSpec};

fn user() -> CommunicationUser {
    let mut t = CommunicationUser::new("u", CommunicationUserSpec::default());
    t.metadata.namespace = Some("ns".into());
    t.metadata.uid = Some("uid-1".into());
    t
}

fn remove_finalizer_failed(code: u16) -> FinalizerError<std::io::Error> {
    FinalizerError::RemoveFinalizer(kube::Error::Api(
        Status::failure("x", "NotFound").with_code(code).boxed(),
    ))
}

#[tokio::test]
async fn a_lagging_copy_finding_its_finalizer_gone_forgets_the_object_and_records_nothing() {
    let (ctx, _api) = Context::test();
    let t = user();
    let key = key_of(&t);
    ctx.failures.record(&key);
    ctx.unscheduled
        .record("uid-1", Unscheduled::Issue, Instant::now());

    assert!(gone_at_finalizer_removal(
        &ctx,
        &t,
        &remove_finalizer_failed(404)
    ));
    assert_eq!(ctx.failures.get(&key), 0);
    assert!(ctx.unscheduled.is_empty());
}

#[tokio::test]
async fn any_other_finalizer_failure_is_a_failure_and_keeps_the_object_state() {
    let (ctx, _api) = Context::test();
    let t = user();
    let key = key_of(&t);
    ctx.failures.record(&key);
    ctx.unscheduled
        .record("uid-1", Unscheduled::Issue, Instant::now());

    assert!(!gone_at_finalizer_removal(
        &ctx,
        &t,
        &remove_finalizer_failed(409)
    ));
    assert_eq!(ctx.failures.get(&key), 1);
    assert_eq!(ctx.unscheduled.len(), 1);
}
