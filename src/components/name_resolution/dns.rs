//! `dns` and `kubernetes`: an app id becomes a host name by a template,
//! resolved on every lookup (the block's cache keeps the answer for its
//! TTL); every A and AAAA record is an instance. For Kubernetes headless
//! services, one record per pod.
//!
//! Metadata: `template` (`{app-id}` and `{namespace}` are filled in, as are
//! Dapr's `{{.ID}}` and `{{.Namespace}}`), `port` (the sidecars' internal
//! port, default 50002). `kubernetes` defaults the template to Dapr's
//! `{app-id}-dapr.{namespace}.svc.{clusterDomain}`.

use std::sync::Arc;

use futures::FutureExt;
use futures::future::BoxFuture;

use super::{NameResolver, join_host_port};
use crate::components::meta::{self, Section};
use crate::components::{BuildContext, BuildError, Component, ComponentError, ComponentType, MetadataError, TypeEntry};

pub const DNS: TypeEntry<dyn NameResolver> = TypeEntry::of::<DnsType>();
pub const KUBERNETES: TypeEntry<dyn NameResolver> = TypeEntry::of::<KubernetesType>();

/// The internal port daprd's injector gives every sidecar.
const DEFAULT_PORT: u16 = 50002;

/// `dns` metadata.
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DnsMetadata {
    /// The host name of an app id's sidecars: `{app-id}` and `{namespace}`
    /// (or `{{.ID}}`, `{{.Namespace}}`) are filled in.
    #[serde(deserialize_with = "meta::non_empty")]
    pub template: String,
    /// The sidecars' internal gRPC port. Default 50002.
    #[serde(default = "default_port")]
    pub port: u16,
}

impl Section for DnsMetadata {
    fn check(&self, errors: &mut Vec<MetadataError>) {
        check_template(&self.template, errors);
    }
}

/// `kubernetes` metadata.
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KubernetesMetadata {
    /// The cluster's DNS domain. Default `cluster.local`.
    #[serde(default = "default_domain")]
    pub cluster_domain: String,
    /// Overrides the host name template (as for `dns`).
    #[serde(default)]
    pub template: Option<String>,
    /// The sidecars' internal gRPC port. Default 50002.
    #[serde(default = "default_port")]
    pub port: u16,
}

impl Section for KubernetesMetadata {
    fn check(&self, errors: &mut Vec<MetadataError>) {
        if let Some(template) = &self.template {
            check_template(template, errors);
        }
    }
}

fn default_port() -> u16 {
    DEFAULT_PORT
}

fn default_domain() -> String {
    "cluster.local".into()
}

fn check_template(template: &str, errors: &mut Vec<MetadataError>) {
    let filled = fill(template, "app", "ns");
    if filled.contains(['{', '}', '/', ' ']) || filled.is_empty() {
        errors.push(MetadataError::new(
            "template",
            format!("'{template}' is not a host name template; use {{app-id}} and {{namespace}}"),
        ));
    }
}

fn fill(template: &str, app_id: &str, namespace: &str) -> String {
    template
        .replace("{{.ID}}", app_id)
        .replace("{{.Namespace}}", namespace)
        .replace("{app-id}", app_id)
        .replace("{namespace}", namespace)
}

pub struct DnsType;

impl ComponentType<dyn NameResolver> for DnsType {
    const NAME: &'static str = "dns";
    type Metadata = DnsMetadata;

    fn build(_ctx: BuildContext, m: DnsMetadata) -> BoxFuture<'static, Result<Arc<dyn NameResolver>, BuildError>> {
        async move {
            Ok(Arc::new(Dns {
                template: m.template,
                port: m.port,
            }) as Arc<dyn NameResolver>)
        }
        .boxed()
    }
}

pub struct KubernetesType;

impl ComponentType<dyn NameResolver> for KubernetesType {
    const NAME: &'static str = "kubernetes";
    type Metadata = KubernetesMetadata;

    fn build(
        _ctx: BuildContext,
        m: KubernetesMetadata,
    ) -> BoxFuture<'static, Result<Arc<dyn NameResolver>, BuildError>> {
        let template = m
            .template
            .unwrap_or_else(|| format!("{{app-id}}-dapr.{{namespace}}.svc.{}", m.cluster_domain));
        async move { Ok(Arc::new(Dns { template, port: m.port }) as Arc<dyn NameResolver>) }.boxed()
    }
}

struct Dns {
    template: String,
    port: u16,
}

#[async_trait::async_trait]
impl Component for Dns {
    async fn health_check(&self) -> Result<(), ComponentError> {
        Ok(())
    }
}

#[async_trait::async_trait]
impl NameResolver for Dns {
    async fn resolve(&self, app_id: &str, namespace: &str) -> Result<Vec<String>, ComponentError> {
        let host = fill(&self.template, app_id, namespace);
        match tokio::net::lookup_host((host.as_str(), self.port)).await {
            Ok(addrs) => {
                let mut out: Vec<String> = addrs.map(|a| join_host_port(&a.ip().to_string(), a.port())).collect();
                out.sort();
                out.dedup();
                Ok(out)
            }
            // No such name: no instance (NXDOMAIN and friends).
            Err(e) if e.kind() == std::io::ErrorKind::NotFound || e.to_string().contains("not known") => Ok(Vec::new()),
            Err(e) => {
                let message = e.to_string();
                if message.contains("failed to lookup address") {
                    Ok(Vec::new())
                } else {
                    Err(ComponentError::Unavailable(format!("dns lookup of {host}: {message}")))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_take_both_spellings() {
        assert_eq!(fill("{app-id}.{namespace}.svc", "a", "n"), "a.n.svc");
        assert_eq!(fill("{{.ID}}-dapr.{{.Namespace}}", "a", "n"), "a-dapr.n");
        let mut errors = Vec::new();
        check_template("{app}.x", &mut errors);
        assert_eq!(errors.len(), 1);
    }

    #[tokio::test]
    async fn localhost_resolves_to_loopback() {
        let dns = Dns {
            template: "localhost".into(),
            port: 7,
        };
        let found = dns.resolve("x", "default").await.expect("resolves");
        assert!(found.iter().any(|a| a == "127.0.0.1:7" || a == "[::1]:7"), "{found:?}");
        let none = Dns {
            template: "{app-id}.invalid".into(),
            port: 7,
        };
        assert_eq!(
            none.resolve("nobody", "default").await.expect("answers"),
            Vec::<String>::new()
        );
    }
}
