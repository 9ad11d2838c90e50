//! `kubectl acs check`: is the operator installed and running, which API versions do the CRDs
//! serve, and what may the caller do with the namespaced kinds in the namespace.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ListParams, PostParams};
use kube::ResourceExt;

use crate::{Error, Target};

const CRDS: [&str; 4] = [
    "communicationusers.communication.acs.dev",
    "communicationtokens.communication.acs.dev",
    "communicationservices.communication.acs.dev",
    "clustercommunicationservices.communication.acs.dev",
];
const VERBS: [&str; 7] = [
    "get", "list", "watch", "create", "update", "patch", "delete",
];
/// The label every object of the chart carries, whatever its name overrides.
const OPERATOR_SELECTOR: &str = "app.kubernetes.io/part-of=acs-identity-operator";

async fn allowed(t: &Target, verb: &str, resource: &str) -> Result<bool, Error> {
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                namespace: Some(t.namespace.clone()),
                verb: Some(verb.into()),
                group: Some("communication.acs.dev".into()),
                resource: Some(resource.into()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let api: Api<SelfSubjectAccessReview> = Api::all(t.client.clone());
    let answer = api.create(&PostParams::default(), &review).await?;
    Ok(answer.status.is_some_and(|s| s.allowed))
}

pub async fn run(t: &Target) -> Result<(), Error> {
    let mut problems = 0;
    // The operator: its Deployments (any namespace the caller may list), version and readiness.
    let deployments: Api<Deployment> = Api::all(t.client.clone());
    let lp = ListParams::default().labels(OPERATOR_SELECTOR);
    match deployments.list(&lp).await {
        Ok(list) if list.items.is_empty() => {
            problems += 1;
            println!("operator   not found (no Deployment labelled {OPERATOR_SELECTOR})");
        }
        Ok(list) => {
            for d in list {
                let version = d
                    .labels()
                    .get("app.kubernetes.io/version")
                    .cloned()
                    .unwrap_or("-".into());
                let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
                let ready = d
                    .status
                    .as_ref()
                    .and_then(|s| s.ready_replicas)
                    .unwrap_or(0);
                if ready == 0 {
                    problems += 1;
                }
                println!(
                    "operator   {}/{}: version {version}, {ready}/{want} replicas ready",
                    d.namespace().unwrap_or_default(),
                    d.name_any()
                );
            }
        }
        Err(kube::Error::Api(s)) if s.code == 403 => {
            println!("operator   cannot tell: you may not list Deployments in every namespace");
        }
        Err(e) => return Err(e.into()),
    }
    // The CRDs and the versions they serve.
    let crds: Api<CustomResourceDefinition> = Api::all(t.client.clone());
    for name in CRDS {
        match crds.get_opt(name).await {
            Ok(Some(crd)) => {
                let versions: Vec<String> = crd
                    .spec
                    .versions
                    .iter()
                    .filter(|v| v.served)
                    .map(|v| {
                        if v.storage {
                            format!("{} (storage)", v.name)
                        } else {
                            v.name.clone()
                        }
                    })
                    .collect();
                println!("crd        {name}: serves {}", versions.join(", "));
            }
            Ok(None) => {
                problems += 1;
                println!("crd        {name}: not installed");
            }
            Err(kube::Error::Api(s)) if s.code == 403 => {
                println!("crd        {name}: cannot tell (you may not read CRDs)");
            }
            Err(e) => return Err(e.into()),
        }
    }
    // The caller's rights on the kinds in this namespace.
    for resource in [
        "communicationusers",
        "communicationtokens",
        "communicationservices",
    ] {
        let mut may = Vec::new();
        for verb in VERBS {
            if allowed(t, verb, resource).await? {
                may.push(verb);
            }
        }
        println!(
            "rbac       {resource} in {}: {}",
            t.namespace,
            if may.is_empty() {
                "nothing".to_string()
            } else {
                may.join(", ")
            }
        );
    }
    if problems > 0 {
        return Err(format!("{problems} problem(s) found").into());
    }
    Ok(())
}
