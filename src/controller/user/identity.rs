//! The act steps that give a user its identity: adopting the one its spec names, or creating
//! one. Each records the identity with one status write before anything else happens.

use std::sync::Arc;

use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use tracing::{info, warn};

use super::status::{acs_failed, not_ready, remember, write_identity};
use super::{external_id_for, plan, resource_of, Error};
use crate::acs::{AcsClient, AcsError, ApiMode, CreateIdentity};
use crate::api::condition::{reasons, types};
use crate::api::{set_condition, CommunicationUser, CommunicationUserStatus};
use crate::controller::failure_backoff::inputs_hash;
use crate::controller::{key_of, Context};
use crate::credentials::Credentials;

/// Where an act step left the reconcile.
pub(super) enum Step {
    /// Go on with the user as written.
    Continue(Arc<CommunicationUser>),
    /// Done for now.
    Stop(Action),
}

/// Records `id` as the user's identity, after checking (`verify`, preview mode) that it exists
/// in the credentials' resource.
pub(super) async fn adopt(
    ctx: &Context,
    user: Arc<CommunicationUser>,
    status: &mut CommunicationUserStatus,
    acs: &AcsClient,
    creds: &Credentials,
    id: String,
    verify: bool,
) -> Result<Step, Error> {
    if verify {
        match acs.get_identity(&id).await {
            Ok(_) => {}
            Err(e) if e.is_not_found() || e.status() == Some(401) => {
                let msg = format!("identity {id} cannot be adopted: it does not exist in {} or belongs to another resource", creds.endpoint);
                not_ready(ctx, &user, status.clone(), reasons::IDENTITY_NOT_FOUND, msg).await?;
                return Ok(Step::Stop(Action::requeue(plan::MISMATCH_RECHECK)));
            }
            Err(e) => return Err(Error::GetIdentity(e)),
        }
    }
    status.resource_id = resource_of(&id);
    status.identity_id = Some(id.clone());
    status.endpoint = Some(creds.endpoint.clone());
    set_condition(
        &mut status.conditions,
        types::READY,
        true,
        reasons::IDENTITY_ADOPTED,
        format!("adopted identity {id}"),
        user.metadata.generation,
        ctx.now(),
    );
    let user = write_identity(ctx, &user, status).await?;
    ctx.event(
        user.as_ref(),
        EventType::Normal,
        reasons::IDENTITY_ADOPTED,
        "AdoptIdentity",
        format!("adopted identity {id}"),
    )
    .await;
    Ok(Step::Continue(user))
}

/// Creates an identity (behind the user's failure back-off) and records it.
pub(super) async fn create(
    ctx: &Context,
    user: Arc<CommunicationUser>,
    status: &mut CommunicationUserStatus,
    acs: &AcsClient,
    creds: &Credentials,
) -> Result<Step, Error> {
    let key = key_of(user.as_ref());
    let inputs = inputs_hash((
        &user.metadata.generation,
        &creds.endpoint,
        creds.fingerprint(),
    ));
    if let Some(wait) = ctx
        .failures
        .try_attempt(&key, inputs, std::time::Instant::now())
    {
        return Ok(Step::Stop(Action::requeue(wait)));
    }
    let external_id = match ctx.config.api_mode {
        ApiMode::Preview => external_id_for(&user),
        ApiMode::Ga => None,
    };
    let created = match acs
        .create_identity(CreateIdentity {
            external_id: external_id.clone(),
            token: None,
        })
        .await
    {
        Ok(c) => c,
        Err(e) => {
            if ctx.config.api_mode == ApiMode::Ga && e.is_ambiguous() {
                ambiguous_create(ctx, &user, &e).await;
            }
            acs_failed(ctx, &user, status.clone(), &e, "create identity").await?;
            return Err(Error::CreateIdentity(e));
        }
    };
    let id = created.identity.id.clone();
    status.resource_id = resource_of(&id);
    status.identity_id = Some(id.clone());
    status.external_id = external_id;
    status.endpoint = Some(creds.endpoint.clone());
    set_condition(
        &mut status.conditions,
        types::READY,
        true,
        reasons::IDENTITY_CREATED,
        format!("identity {id} is ready"),
        user.metadata.generation,
        ctx.now(),
    );
    // Remembered before the write: if the write fails, the retry must record this identity,
    // not create a second one (GA creation is not idempotent).
    remember(ctx, &user, status);
    // Written at once: in GA mode this write is the only durable record.
    let user = write_identity(ctx, &user, status).await?;
    if created.created {
        ctx.metrics.identity_created();
        info!(identity = %id, "identity created");
        ctx.event(
            user.as_ref(),
            EventType::Normal,
            reasons::IDENTITY_CREATED,
            "CreateIdentity",
            format!("created identity {id}"),
        )
        .await;
    } else {
        info!(identity = %id, "identity recovered by externalId");
    }
    Ok(Step::Continue(user))
}

/// A GA creation whose answer was lost may have created an identity nobody records: count
/// it and tell the user, so an orphan is never silent.
async fn ambiguous_create(ctx: &Context, user: &CommunicationUser, e: &AcsError) {
    ctx.metrics.ambiguous_create();
    warn!(category = e.category(), "identity creation failed after the request was sent; it may have created an orphan identity");
    ctx.event(
        user,
        EventType::Warning,
        reasons::AMBIGUOUS_CREATE,
        "CreateIdentity",
        format!("the create request was sent but its answer was lost ({}); ACS may have created an identity that is not recorded here and will be orphaned; a new one is created on retry", e.category()),
    )
    .await;
}
