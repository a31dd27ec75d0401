//! `static`: app ids and their sidecars' addresses written in the config,
//! for fixed deployments and tests. Each metadata key is an app id, its
//! value a comma-separated list of `host:port` addresses:
//! `{ orders = "10.0.0.5:50002,10.0.0.6:50002" }`.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::FutureExt;
use futures::future::BoxFuture;

use super::NameResolver;
use crate::components::meta::{Metadata, Parser};
use crate::components::{BuildContext, BuildError, Component, ComponentError, ComponentType, TypeEntry};

pub const TYPE: TypeEntry<dyn NameResolver> = TypeEntry::of::<StaticType>();

pub struct StaticType;

/// App id -> the addresses of its sidecars.
#[derive(Clone, Debug, Default)]
pub struct StaticMetadata {
    pub apps: BTreeMap<String, Addresses>,
}

/// A comma-separated list of `host:port` addresses.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Addresses(pub Vec<String>);

impl std::str::FromStr for Addresses {
    type Err = String;

    fn from_str(text: &str) -> Result<Addresses, String> {
        let list: Vec<String> = text
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(str::to_owned)
            .collect();
        if list.is_empty() {
            return Err("no address".into());
        }
        for address in &list {
            let port = address.rsplit_once(':').map(|(_, p)| p);
            if port.and_then(|p| p.parse::<u16>().ok()).is_none_or(|p| p == 0) {
                return Err(format!("'{address}' is not host:port"));
            }
        }
        Ok(Addresses(list))
    }
}

impl Metadata for StaticMetadata {
    fn read(parser: &mut Parser<'_>) -> Option<Self> {
        let apps = parser.prefixed::<Addresses>("", "a comma-separated list of host:port addresses");
        Some(StaticMetadata { apps })
    }
}

impl ComponentType<dyn NameResolver> for StaticType {
    const NAME: &'static str = "static";
    type Metadata = StaticMetadata;

    fn build(
        _ctx: BuildContext,
        metadata: StaticMetadata,
    ) -> BoxFuture<'static, Result<Arc<dyn NameResolver>, BuildError>> {
        async move { Ok(Arc::new(Static(metadata.apps)) as Arc<dyn NameResolver>) }.boxed()
    }
}

struct Static(BTreeMap<String, Addresses>);

#[async_trait::async_trait]
impl Component for Static {
    async fn health_check(&self) -> Result<(), ComponentError> {
        Ok(())
    }
}

#[async_trait::async_trait]
impl NameResolver for Static {
    async fn resolve(&self, app_id: &str, _namespace: &str) -> Result<Vec<String>, ComponentError> {
        Ok(self.0.get(app_id).map(|a| a.0.clone()).unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_lists_are_checked() {
        let list: Addresses = " a:1, [::1]:2 ,".parse().expect("parses");
        assert_eq!(list.0, ["a:1", "[::1]:2"]);
        assert!("a".parse::<Addresses>().is_err());
        assert!("a:0".parse::<Addresses>().is_err());
        assert!("".parse::<Addresses>().is_err());
    }
}
