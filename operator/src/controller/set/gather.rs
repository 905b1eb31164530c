//! What a reconcile reads: the set's DockerHosts (those it selects, and those that may still
//! hold its containers), Secrets and ConfigMaps, as the same input the CLI reads from files;
//! hosts whose spec does not resolve are split off and reported on their own; host policy.

use std::collections::BTreeSet;

use berth_crd::{ContainerSet, DockerHost};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::ResourceExt;
use kube::api::Api;

use crate::controller::status::HostReport;
use crate::controller::{Context, Error};
use crate::engine::SetKey;
use crate::input::{self, Input};

/// Everything a reconcile of this set reads from the API server.
pub(super) async fn gather(cs: &ContainerSet, ctx: &Context) -> Result<Input, Error> {
    let ns = cs.namespace().unwrap_or_else(|| "default".into());
    // From the watch cache, not a list per reconcile (1k hosts × 10k sets adds up).
    ctx.hosts.wait_until_ready().await.map_err(|_| Error::Stopped)?;
    let key = SetKey::new(ns.clone(), cs.name_any());
    let hosts = relevant_hosts(ctx.hosts.state().iter().map(|h| h.as_ref()), cs, |h| ctx.pool.may_hold(h, &key));
    let t = &cs.spec.template;
    let mut secret_names: BTreeSet<String> = t.image_pull_secrets.iter().map(|s| s.name.clone()).collect();
    secret_names
        .extend(t.env.iter().filter_map(|e| e.value_from.as_ref()?.secret_key_ref.as_ref().map(|r| r.name.clone())));
    secret_names.extend(hosts.iter().filter_map(|h| h.spec.tls.as_ref().map(|t| t.secret_name.clone())));
    let cm_names: BTreeSet<String> = t
        .env
        .iter()
        .filter_map(|e| e.value_from.as_ref()?.config_map_key_ref.as_ref().map(|r| r.name.clone()))
        .collect();
    let secrets_api: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    let mut secrets = Vec::new();
    for name in secret_names {
        // A missing Secret is reported by resolve, naming the field that refers to it.
        if let Some(s) = secrets_api.get_opt(&name).await? {
            secrets.push(s);
        }
    }
    let cm_api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &ns);
    let mut config_maps = Vec::new();
    for name in cm_names {
        if let Some(c) = cm_api.get_opt(&name).await? {
            config_maps.push(c);
        }
    }
    Ok(Input::from_cluster(vec![cs.clone()], hosts, secrets, config_maps))
}

/// The DockerHosts a reconcile of `cs` must look at: those its selector picks, and those that
/// `may_hold` its containers (the pool's last observation of the host showed some, or the host
/// was never observed). The rest hold nothing of the set, so their plan would be empty;
/// skipping them keeps a reconcile at a few list calls however many hosts share the namespace.
pub(super) fn relevant_hosts<'a>(
    hosts: impl IntoIterator<Item = &'a DockerHost>,
    cs: &ContainerSet,
    may_hold: impl Fn(&str) -> bool,
) -> Vec<DockerHost> {
    // An invalid selector keeps every host: resolve reports it, naming the field.
    let selector = kube::core::Selector::try_from(cs.spec.host_selector.clone()).ok();
    hosts
        .into_iter()
        .filter(|h| h.metadata.namespace == cs.metadata.namespace)
        .filter(|h| {
            let labels = h.metadata.labels.clone().unwrap_or_default();
            selector.as_ref().is_none_or(|s| kube::core::SelectorExt::matches(s, &labels)) || may_hold(&h.name_any())
        })
        .cloned()
        .collect()
}

/// Remove from `input` the DockerHosts that do not resolve on their own; those this set
/// selects become host reports with the reason.
pub(super) fn split_broken_hosts(input: &mut Input, cs: &ContainerSet) -> Vec<HostReport> {
    let selector = kube::core::Selector::try_from(cs.spec.host_selector.clone()).ok();
    let secrets: Vec<Secret> = input.secrets.values().map(|s| s.object.clone()).collect();
    let mut broken = Vec::new();
    input.hosts.retain(|h| {
        let alone = Input::from_cluster(Vec::new(), vec![h.object.clone()], secrets.clone(), Vec::new());
        match input::resolve(&alone, false) {
            Ok(_) => true,
            Err(e) => {
                let labels = h.object.metadata.labels.clone().unwrap_or_default();
                if selector.as_ref().is_some_and(|s| kube::core::SelectorExt::matches(s, &labels)) {
                    broken.push(HostReport {
                        host: h.object.name_any(),
                        desired: cs.spec.replicas_per_host.max(0) as u32,
                        error: Some(
                            e.0.iter()
                                .map(|x| format!("{}: {}", x.field.as_deref().unwrap_or("spec"), x.message))
                                .collect::<Vec<_>>()
                                .join("; "),
                        ),
                        ..Default::default()
                    });
                }
                false
            }
        }
    });
    broken
}

/// `field: message` for every policy violation of the set on a host it would be placed on
/// (selected, in its namespace, not cordoned: as resolve places it).
pub(super) fn policy_refusals(input: &Input, cs: &ContainerSet) -> Vec<String> {
    let Ok(selector) = kube::core::Selector::try_from(cs.spec.host_selector.clone()) else {
        return Vec::new(); // resolve names the field
    };
    input
        .hosts
        .iter()
        .map(|h| &h.object)
        .filter(|h| h.metadata.namespace == cs.metadata.namespace && !h.spec.unschedulable)
        .filter(|h| kube::core::SelectorExt::matches(&selector, &h.metadata.labels.clone().unwrap_or_default()))
        .flat_map(|h| input::policy::policy_violations(&cs.spec.template, h))
        .map(|v| format!("{}: {}", v.field, v.message))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn host(name: &str, group: &str) -> DockerHost {
        serde_json::from_value(json!({
            "apiVersion": "berth.dev/v1alpha1", "kind": "DockerHost",
            "metadata": {"name": name, "namespace": "ns", "labels": {"group": group}},
            "spec": {"endpoint": format!("unix:///run/{name}.sock")}
        }))
        .expect("a DockerHost")
    }

    #[test]
    fn a_reconcile_looks_at_selected_hosts_and_those_that_may_hold_the_set() {
        let web: ContainerSet = serde_json::from_value(json!({
            "apiVersion": "berth.dev/v1alpha1", "kind": "ContainerSet",
            "metadata": {"name": "web", "namespace": "ns"},
            "spec": {"hostSelector": {"matchLabels": {"group": "web"}}, "template": {"image": "echo:1"}}
        }))
        .expect("a ContainerSet");
        let mut elsewhere = host("elsewhere", "web");
        elsewhere.metadata.namespace = Some("other".into());
        let hosts = [
            host("selected", "web"),
            host("left-behind", "api"),
            host("never-seen", "api"),
            host("empty", "api"),
            elsewhere,
        ];
        let may_hold = |h: &str| matches!(h, "left-behind" | "never-seen" | "elsewhere");
        let names: Vec<String> = relevant_hosts(&hosts, &web, may_hold).iter().map(|h| h.name_any()).collect();
        assert_eq!(names, ["selected", "left-behind", "never-seen"]);
    }
}
