//! Connecting to etcd (v3 API over gRPC), shared by the etcd component
//! types: the connection keys of their metadata ([`EtcdConnection`],
//! spelled as Layotto's etcd components spell them), a small client over
//! the KV, Lease, Watch and Auth services, and error mapping.
//!
//! The client is generated from `proto/etcd/rpc.proto`, our own subset of
//! etcd's wire contract, by the crate's build script (so no system
//! `protoc` is needed, as for the rest of the crate).

use std::time::Duration;

use tonic::metadata::AsciiMetadataValue;
use tonic::transport::{Channel, Endpoint};

use super::meta::{self, Seconds};
use super::{BuildError, ComponentError, MetadataError};
use crate::proto::etcd as pb;

/// The connection keys, a section of every etcd component's metadata.
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EtcdConnection {
    /// The servers, `host:port` (or `http://host:port`), separated by `;`
    /// as in Layotto (`,` is accepted too).
    #[serde(deserialize_with = "meta::non_empty")]
    pub endpoints: String,
    /// How long connecting may take, in seconds (Layotto's default: 5).
    #[serde(default = "default_dial_timeout")]
    pub dial_timeout: Seconds,
    /// User for etcd's authentication; none by default.
    #[serde(default)]
    pub username: String,
    /// Password of `username`.
    #[serde(default)]
    pub password: String,
    /// Where keys live: every key is written under this path (Layotto's
    /// default for locks and sequencers: `/layotto/`; the configuration
    /// store's default is `/`, Layotto's `/<appId>/<group>/...`; a `/` is
    /// added at either end when missing).
    #[serde(default)]
    pub key_prefix_path: Option<String>,
    /// TLS to etcd is not supported: a CA file here is refused.
    #[serde(default)]
    pub tls_ca: String,
    /// TLS to etcd is not supported: a certificate file here is refused.
    #[serde(default)]
    pub tls_cert: String,
    /// TLS to etcd is not supported: a key file here is refused.
    #[serde(default)]
    pub tls_cert_key: String,
}

fn default_dial_timeout() -> Seconds {
    Seconds::secs(5)
}

impl meta::Section for EtcdConnection {
    fn check(&self, errors: &mut Vec<MetadataError>) {
        for (key, value) in [
            ("tlsCa", &self.tls_ca),
            ("tlsCert", &self.tls_cert),
            ("tlsCertKey", &self.tls_cert_key),
        ] {
            if !value.trim().is_empty() {
                errors.push(MetadataError::new(
                    key,
                    "TLS to etcd is not supported by layotto-rs; reach etcd over plain gRPC (a local proxy can add TLS)",
                ));
            }
        }
        if self.endpoint_urls().is_empty() {
            errors.push(MetadataError::new("endpoints", "names no server"));
        }
    }
}

impl EtcdConnection {
    /// `http://host:port` for every server named.
    pub fn endpoint_urls(&self) -> Vec<String> {
        self.endpoints
            .split([';', ','])
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .map(|e| {
                if e.contains("://") {
                    e.to_owned()
                } else {
                    format!("http://{e}")
                }
            })
            .collect()
    }

    /// The key prefix, with a `/` at either end, as Layotto writes it;
    /// `/layotto/` when none is set.
    pub fn prefix(&self) -> String {
        self.prefix_or("/layotto/")
    }

    /// The key prefix, or `default` when none is set.
    pub fn prefix_or(&self, default: &str) -> String {
        let Some(set) = &self.key_prefix_path else {
            return default.to_owned();
        };
        let mut p = set.trim().to_owned();
        if !p.starts_with('/') {
            p.insert(0, '/');
        }
        if !p.ends_with('/') {
            p.push('/');
        }
        p
    }

    /// Connects (to any of the servers), authenticates when a user is set,
    /// and proves the connection with a read.
    pub async fn connect(&self) -> Result<Etcd, BuildError> {
        let urls = self.endpoint_urls();
        let dial: Duration = self.dial_timeout.into();
        let fail = |e: String| BuildError(format!("etcd {}: {e}", self.endpoints));
        let mut endpoints = Vec::with_capacity(urls.len());
        for url in &urls {
            let endpoint = Endpoint::from_shared(url.clone())
                .map_err(|e| fail(format!("'{url}' is not an address: {e}")))?
                .connect_timeout(dial)
                .timeout(Duration::from_secs(10))
                .tcp_nodelay(true);
            endpoints.push(endpoint);
        }
        let channel = match endpoints.as_slice() {
            [one] => one.connect().await.map_err(|e| fail(e.to_string()))?,
            _ => Channel::balance_list(endpoints.into_iter()),
        };
        let mut etcd = Etcd { channel, token: None };
        if !self.username.is_empty() {
            let answer = pb::auth_client::AuthClient::new(etcd.channel.clone())
                .authenticate(pb::AuthenticateRequest {
                    name: self.username.clone(),
                    password: self.password.clone(),
                })
                .await
                .map_err(|s| fail(format!("authentication failed: {}", s.message())))?
                .into_inner();
            let token = AsciiMetadataValue::try_from(answer.token)
                .map_err(|_| fail("etcd answered an unusable token".into()))?;
            etcd.token = Some(token);
        }
        tokio::time::timeout(dial, etcd.ping())
            .await
            .map_err(|_| fail(format!("no answer within {dial:?}")))?
            .map_err(|e| fail(e.to_string()))?;
        Ok(etcd)
    }
}

/// A connection to etcd.
#[derive(Clone)]
pub struct Etcd {
    channel: Channel,
    token: Option<AsciiMetadataValue>,
}

impl Etcd {
    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        if let Some(token) = &self.token {
            request.metadata_mut().insert("token", token.clone());
        }
        request
    }

    fn kv(&self) -> pb::kv_client::KvClient<Channel> {
        pb::kv_client::KvClient::new(self.channel.clone())
    }

    fn lease(&self) -> pb::lease_client::LeaseClient<Channel> {
        pb::lease_client::LeaseClient::new(self.channel.clone())
    }

    /// A cheap read: the health check of every etcd component.
    pub async fn ping(&self) -> Result<(), ComponentError> {
        self.kv()
            .range(self.request(pb::RangeRequest {
                key: b"/layotto-health".to_vec(),
                count_only: true,
                serializable: true,
                ..Default::default()
            }))
            .await
            .map(drop)
            .map_err(map_status)
    }

    /// The key-values of `key` (of every key starting with it when
    /// `prefix`), at `revision` (0: now).
    pub async fn range(&self, key: &[u8], prefix: bool, revision: i64) -> Result<pb::RangeResponse, ComponentError> {
        self.kv()
            .range(self.request(pb::RangeRequest {
                key: key.to_vec(),
                range_end: if prefix { prefix_end(key) } else { Vec::new() },
                revision,
                ..Default::default()
            }))
            .await
            .map(tonic::Response::into_inner)
            .map_err(map_status)
    }

    pub async fn txn(&self, txn: pb::TxnRequest) -> Result<pb::TxnResponse, ComponentError> {
        self.kv()
            .txn(self.request(txn))
            .await
            .map(tonic::Response::into_inner)
            .map_err(map_status)
    }

    /// Runs `ops` as one transaction with no condition: all or none.
    pub async fn all_of(&self, ops: Vec<pb::RequestOp>) -> Result<(), ComponentError> {
        if ops.is_empty() {
            return Ok(());
        }
        self.txn(pb::TxnRequest {
            compare: Vec::new(),
            success: ops,
            failure: Vec::new(),
        })
        .await
        .map(drop)
    }

    /// A lease of `ttl` seconds (etcd may round a short one up to its
    /// minimum).
    pub async fn grant(&self, ttl: i64) -> Result<i64, ComponentError> {
        let answer = self
            .lease()
            .lease_grant(self.request(pb::LeaseGrantRequest { ttl, id: 0 }))
            .await
            .map_err(map_status)?
            .into_inner();
        if !answer.error.is_empty() {
            return Err(ComponentError::Internal(format!("etcd lease grant: {}", answer.error)));
        }
        Ok(answer.id)
    }

    /// Ends a lease (and removes its keys); one that is gone already is no
    /// error.
    pub async fn revoke(&self, id: i64) -> Result<(), ComponentError> {
        match self
            .lease()
            .lease_revoke(self.request(pb::LeaseRevokeRequest { id }))
            .await
        {
            Ok(_) => Ok(()),
            Err(status) if status.code() == tonic::Code::NotFound => Ok(()),
            Err(status) => Err(map_status(status)),
        }
    }

    /// A watch of every key starting with `prefix`, from `start_revision`
    /// (0: from now). The stream ends when the connection does.
    pub async fn watch_prefix(
        &self,
        prefix: &[u8],
        start_revision: i64,
    ) -> Result<tonic::Streaming<pb::WatchResponse>, ComponentError> {
        let create = pb::WatchRequest {
            request_union: Some(pb::watch_request::RequestUnion::CreateRequest(pb::WatchCreateRequest {
                key: prefix.to_vec(),
                range_end: prefix_end(prefix),
                start_revision,
                ..Default::default()
            })),
        };
        // The request stream stays open (a closed one cancels the watch).
        let requests = futures::stream::once(async move { create }).chain(futures::stream::pending());
        let mut client = pb::watch_client::WatchClient::new(self.channel.clone());
        client
            .watch(self.request(requests))
            .await
            .map(tonic::Response::into_inner)
            .map_err(map_status)
    }
}

use futures::StreamExt;

/// The end of the range of keys starting with `prefix`: the prefix with
/// its last byte below 0xff increased (etcd's `WithPrefix`).
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // Every byte 0xff (or empty): to the end of the keyspace.
    vec![0]
}

/// A compare of `key`'s value with `value`.
pub fn value_is(key: &[u8], value: &[u8]) -> pb::Compare {
    pb::Compare {
        result: pb::compare::CompareResult::Equal as i32,
        target: pb::compare::CompareTarget::Value as i32,
        key: key.to_vec(),
        target_union: Some(pb::compare::TargetUnion::Value(value.to_vec())),
        range_end: Vec::new(),
    }
}

/// A compare of `key`'s modification revision (0: the key does not
/// exist).
pub fn mod_revision_is(key: &[u8], revision: i64) -> pb::Compare {
    pb::Compare {
        result: pb::compare::CompareResult::Equal as i32,
        target: pb::compare::CompareTarget::Mod as i32,
        key: key.to_vec(),
        target_union: Some(pb::compare::TargetUnion::ModRevision(revision)),
        range_end: Vec::new(),
    }
}

/// A compare that holds when `key` does not exist.
pub fn absent(key: &[u8]) -> pb::Compare {
    pb::Compare {
        result: pb::compare::CompareResult::Equal as i32,
        target: pb::compare::CompareTarget::Create as i32,
        key: key.to_vec(),
        target_union: Some(pb::compare::TargetUnion::CreateRevision(0)),
        range_end: Vec::new(),
    }
}

pub fn put(key: &[u8], value: &[u8], lease: i64) -> pb::RequestOp {
    pb::RequestOp {
        request: Some(pb::request_op::Request::RequestPut(pb::PutRequest {
            key: key.to_vec(),
            value: value.to_vec(),
            lease,
            prev_kv: true,
            ..Default::default()
        })),
    }
}

pub fn get(key: &[u8]) -> pb::RequestOp {
    pb::RequestOp {
        request: Some(pb::request_op::Request::RequestRange(pb::RangeRequest {
            key: key.to_vec(),
            ..Default::default()
        })),
    }
}

/// Deletes `key`, or every key starting with it when `prefix`.
pub fn delete(key: &[u8], prefix: bool) -> pb::RequestOp {
    pb::RequestOp {
        request: Some(pb::request_op::Request::RequestDeleteRange(pb::DeleteRangeRequest {
            key: key.to_vec(),
            range_end: if prefix { prefix_end(key) } else { Vec::new() },
            prev_kv: false,
        })),
    }
}

/// The key-values a range operation of a transaction answered.
pub fn range_kvs(op: Option<&pb::ResponseOp>) -> &[pb::KeyValue] {
    match op.and_then(|op| op.response.as_ref()) {
        Some(pb::response_op::Response::ResponseRange(r)) => &r.kvs,
        _ => &[],
    }
}

/// The previous value a put of a transaction replaced.
pub fn put_prev(op: Option<&pb::ResponseOp>) -> Option<&pb::KeyValue> {
    match op.and_then(|op| op.response.as_ref()) {
        Some(pb::response_op::Response::ResponsePut(r)) => r.prev_kv.as_ref(),
        _ => None,
    }
}

/// Maps an etcd answer: an unreachable server restarts the component.
pub fn map_status(status: tonic::Status) -> ComponentError {
    use tonic::Code;
    match status.code() {
        Code::Unavailable | Code::Unknown if status.message().contains("transport") => {
            ComponentError::Fatal(format!("etcd connection failed: {}", status.message()))
        }
        Code::Unavailable => ComponentError::Unavailable(format!("etcd: {}", status.message())),
        Code::DeadlineExceeded => ComponentError::Unavailable(format!("etcd timed out: {}", status.message())),
        Code::Unauthenticated | Code::PermissionDenied => {
            ComponentError::Fatal(format!("etcd refused the credentials: {}", status.message()))
        }
        _ => ComponentError::Internal(format!("etcd: {}", status.message())),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn connection(pairs: &[(&str, &str)]) -> EtcdConnection {
        let map: BTreeMap<String, String> = pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        meta::parse_map(&map).expect("parses")
    }

    #[test]
    fn endpoints_and_prefix_read_as_layotto_writes_them() {
        let c = connection(&[
            ("endpoints", "localhost:2379;http://10.0.0.2:2379"),
            ("keyPrefixPath", "lock"),
        ]);
        assert_eq!(c.endpoint_urls(), ["http://localhost:2379", "http://10.0.0.2:2379"]);
        assert_eq!(c.prefix(), "/lock/");
        assert_eq!(connection(&[("endpoints", "a:1")]).prefix(), "/layotto/");
    }

    #[test]
    fn prefix_ends_are_etcds() {
        assert_eq!(prefix_end(b"/a/"), b"/a0".to_vec());
        assert_eq!(prefix_end(&[b'a', 0xff]), b"b".to_vec());
        assert_eq!(prefix_end(&[0xff]), vec![0]);
    }
}
