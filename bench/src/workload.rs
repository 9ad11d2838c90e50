//! The objects the benchmark works on: namespaces, the credentials Secret, N CommunicationUsers
//! and M CommunicationTokens (token `i` belongs to user `i / (M/N)`), created in bulk by a pool
//! of workers.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};

use acs_identity_operator::api::{
    self, CommunicationToken, CommunicationTokenSpec, CommunicationUser, CommunicationUserSpec,
    UserRef,
};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};
use kube::Client;
use tokio::task::JoinSet;

use crate::error::Error;

/// Runs `f` over `jobs` with `workers` tasks pulling from one queue; stops at the first error.
pub async fn for_each_parallel<J, F, Fut>(jobs: Vec<J>, workers: usize, f: F) -> Result<(), Error>
where
    J: Send + 'static,
    F: Fn(J) -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = Result<(), Error>> + Send + 'static,
{
    let queue = Arc::new(Mutex::new(VecDeque::from(jobs)));
    let mut set = JoinSet::new();
    for _ in 0..workers.max(1) {
        let queue = queue.clone();
        let f = f.clone();
        set.spawn(async move {
            loop {
                let job = queue
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .pop_front();
                let Some(job) = job else {
                    return Ok(());
                };
                if let Err(e) = f(job).await {
                    // Drain the queue so the other workers stop too.
                    queue.lock().unwrap_or_else(PoisonError::into_inner).clear();
                    return Err(e);
                }
            }
        });
    }
    let mut first = Ok(());
    while let Some(r) = set.join_next().await {
        let r = r.map_err(Error::Worker).and_then(|r| r);
        if first.is_ok() {
            first = r;
        }
    }
    first
}

/// Creates `name` unless it exists.
pub async fn ensure_namespace(client: &Client, name: &str) -> Result<(), Error> {
    let api: Api<Namespace> = Api::all(client.clone());
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };
    match api.create(&PostParams::default(), &ns).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(Error::Kube {
            action: "create a namespace",
            source: e,
        }),
    }
}

/// The `acs-credentials` Secret every CommunicationUser of `ns` uses by default.
pub async fn create_credentials(client: &Client, ns: &str, connection: &str) -> Result<(), Error> {
    let api: Api<Secret> = Api::namespaced(client.clone(), ns);
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(api::DEFAULT_CREDENTIALS_SECRET.to_string()),
            ..ObjectMeta::default()
        },
        string_data: Some(
            [(
                api::DEFAULT_CREDENTIALS_KEY.to_string(),
                connection.to_string(),
            )]
            .into(),
        ),
        ..Secret::default()
    };
    // Already there (a phase that prepared the namespace first): the same connection string.
    match api.create(&PostParams::default(), &secret).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(Error::kube("create the credentials Secret")(e)),
    }
}

/// Names of the objects of one workload.
#[derive(Debug, Clone)]
pub struct Workload {
    pub prefix: String,
    pub users: usize,
    pub tokens: usize,
}

impl Workload {
    pub fn new(prefix: &str, users: usize, tokens: usize) -> Workload {
        Workload {
            prefix: prefix.to_string(),
            users: users.max(1),
            tokens,
        }
    }

    pub fn user_name(&self, i: usize) -> String {
        format!("{}u-{i:05}", self.prefix)
    }

    pub fn token_name(&self, i: usize) -> String {
        format!("{}t-{i:05}", self.prefix)
    }

    /// The user token `i` belongs to: tokens are dealt out in equal runs.
    pub fn user_of(&self, i: usize) -> usize {
        let per_user = self.tokens.div_ceil(self.users).max(1);
        (i / per_user).min(self.users - 1)
    }

    pub fn user(&self, i: usize) -> CommunicationUser {
        CommunicationUser::new(&self.user_name(i), CommunicationUserSpec::default())
    }

    pub fn token(&self, i: usize) -> CommunicationToken {
        CommunicationToken::new(
            &self.token_name(i),
            CommunicationTokenSpec {
                user_ref: UserRef {
                    name: self.user_name(self.user_of(i)),
                },
                scopes: vec![api::token::Scope::Voip],
                expires_in_minutes: 1440,
                renew_before: None,
                renew_before_percentage: None,
                secret_name: None,
                secret_template: None,
                suspend: false,
                revoke_on_delete: true,
                rollout_restart_targets: Vec::new(),
            },
        )
    }

    /// Creates every user, then every token, in `ns` with `workers` concurrent requests.
    pub async fn create(&self, client: &Client, ns: &str, workers: usize) -> Result<(), Error> {
        let users: Api<CommunicationUser> = Api::namespaced(client.clone(), ns);
        let jobs: Vec<CommunicationUser> = (0..self.users).map(|i| self.user(i)).collect();
        for_each_parallel(jobs, workers, move |u| {
            let users = users.clone();
            async move {
                users
                    .create(&PostParams::default(), &u)
                    .await
                    .map_err(Error::kube("create a CommunicationUser"))?;
                Ok(())
            }
        })
        .await?;
        self.create_tokens(client, ns, workers).await
    }

    /// Creates every token in `ns` (their users exist, or will).
    pub async fn create_tokens(
        &self,
        client: &Client,
        ns: &str,
        workers: usize,
    ) -> Result<(), Error> {
        let tokens: Api<CommunicationToken> = Api::namespaced(client.clone(), ns);
        let jobs: Vec<CommunicationToken> = (0..self.tokens).map(|i| self.token(i)).collect();
        for_each_parallel(jobs, workers, move |t| {
            let tokens = tokens.clone();
            async move {
                tokens
                    .create(&PostParams::default(), &t)
                    .await
                    .map_err(Error::kube("create a CommunicationToken"))?;
                Ok(())
            }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_dealt_to_users_in_equal_runs() {
        let w = Workload::new("x-", 1000, 5000);
        assert_eq!(w.user_of(0), 0);
        assert_eq!(w.user_of(4), 0);
        assert_eq!(w.user_of(5), 1);
        assert_eq!(w.user_of(4999), 999);
        let odd = Workload::new("", 3, 10);
        let owners: Vec<usize> = (0..10).map(|i| odd.user_of(i)).collect();
        assert_eq!(owners, [0, 0, 0, 0, 1, 1, 1, 1, 2, 2]);
    }

    #[test]
    fn tokens_name_their_user() {
        let w = Workload::new("b-", 2, 4);
        assert_eq!(w.token(3).spec.user_ref.name, "b-u-00001");
        assert_eq!(w.token_name(3), "b-t-00003");
    }

    #[tokio::test]
    async fn parallel_jobs_all_run_and_the_first_error_is_returned() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        for_each_parallel((0..50).collect(), 4, move |i: i32| {
            let s = s.clone();
            async move {
                s.lock().unwrap().push(i);
                Ok(())
            }
        })
        .await
        .unwrap();
        let mut all = seen.lock().unwrap().clone();
        all.sort();
        assert_eq!(all, (0..50).collect::<Vec<_>>());

        let r = for_each_parallel((0..50).collect(), 4, |i: i32| async move {
            if i == 7 {
                Err(Error::Interrupted)
            } else {
                Ok(())
            }
        })
        .await;
        assert!(matches!(r, Err(Error::Interrupted)));
    }
}
