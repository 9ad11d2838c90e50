//! Revocation is fenced: many tokens of one user changing at once, round after round, with a
//! slow revoke call, give exactly one revoke per round, and every Secret ends with a token
//! the service accepts (no sibling re-issued before a revoke that then killed its token).

use acs_identity_operator::api::token::Scope;
use acs_identity_operator::api::{CommunicationToken, CommunicationUser, CommunicationUserSpec};
use kube::api::{Api, Patch, PatchParams};

use crate::harness::*;
use crate::support::{wait_for, TestEnv};

const TOKENS: usize = 5;
const ROUNDS: usize = 20;

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_spec_changes_revoke_once_per_round_and_leave_only_valid_tokens() {
    let env = TestEnv::new("revoke-fence").await;
    let acs = Acs::start().await;
    put_secret(
        &env,
        "acs-credentials",
        "connectionString",
        &acs.connection_string(),
    )
    .await;
    // Twenty rounds are twenty revocations of one user: lift the user's limit. The tokens'
    // own guard keeps its default (3 per window): re-issues forced by a revocation are not
    // charged to it.
    let op = Operator::spawn(
        OperatorArgs::new(&env, &acs)
            .arg("--revocation-limit")
            .arg("100"),
    );
    op.wait_ready().await;
    create_user(&env, "alice", CommunicationUserSpec::default()).await;
    let users: Api<CommunicationUser> = env.api();
    let u = wait_for(&users, "alice", CONVERGE, "user Ready", user_ready(""))
        .await
        .unwrap();
    let id = u.identity_id().unwrap().to_string();
    let tokens: Api<CommunicationToken> = env.api();
    let names: Vec<String> = (0..TOKENS).map(|i| format!("t{i}")).collect();
    for n in &names {
        create_token(&env, n, token_spec("alice")).await;
    }
    for n in &names {
        wait_for(&tokens, n, CONVERGE, "token Ready", token_ready(""))
            .await
            .unwrap();
    }
    // A slow revoke widens every race window between the revoke and the siblings' issues.
    acs.set_faults(serde_json::json!({"latencyMs": 300, "operations": ["revokeAccessTokens"]}))
        .await;

    for round in 1..=ROUNDS {
        let scopes = if round % 2 == 1 {
            vec![Scope::Chat]
        } else {
            vec![Scope::Voip]
        };
        // All tokens change at once (no waiting between the patches).
        let patch = serde_json::json!({"spec": {"scopes": scopes}});
        let patches = names.iter().map(|n| {
            let tokens = tokens.clone();
            let patch = patch.clone();
            async move {
                tokens
                    .patch(n, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .unwrap()
            }
        });
        futures::future::join_all(patches).await;
        for n in &names {
            let want = scopes.clone();
            wait_for(
                &tokens,
                n,
                CONVERGE,
                "re-issued with the new scopes",
                move |t: Option<&CommunicationToken>| {
                    t.and_then(|t| t.status.as_ref()).is_some_and(|s| {
                        s.issued_scopes == want
                            && s.revocation_epoch == Some(round as i64)
                            && s.conditions
                                .iter()
                                .any(|c| c.type_ == "Ready" && c.status == "True")
                    })
                },
            )
            .await
            .unwrap_or_else(|| panic!("round {round}, token {n}: gone"));
        }
        assert_eq!(
            acs.revocations(&id).await,
            round as u64,
            "round {round}: one revoke per round"
        );
    }
    for n in &names {
        let token = secret_token(&env, n).await.unwrap();
        let (valid, reason) = acs.validate(&token).await;
        assert!(valid, "{n}: {reason}");
    }
    let u = users.get("alice").await.unwrap();
    let rev = u.status.unwrap().revocation.unwrap();
    assert_eq!(rev.epoch, ROUNDS as i64);
    assert_eq!(rev.pending, None);
}
