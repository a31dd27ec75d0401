//! `aws.s3` and `minio`: files as objects of an S3-compatible service,
//! through the `object_store` crate.
//!
//! A name is `<bucket>/<key>`, as Layotto's S3 stores take it; with the
//! component's `bucket` set, the whole name is a key in that bucket. A
//! listing's name is `<bucket>` or `<bucket>/<folder>` (or, with `bucket`,
//! a folder), and pages go in key order after `marker`.
//!
//! Uploads go up in parts of [`PART_BYTES`] (a small file in one request),
//! at most two parts at a time, and downloads come down as the service
//! sends them: a file of any size passes with a few parts' worth of memory.
//!
//! Metadata: [`S3Keys`]. Layotto's JSON form (an array of one endpoint's
//! settings) is read the same way.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::buffered::BufWriter;
use object_store::path::Path;
use object_store::{Attribute, GetOptions, ObjectStore, ObjectStoreExt};
use tokio::io::AsyncWriteExt;

use super::{ByteStream, FileInfo, FileListing, FileMeta, FileMetadata, FileStore, ListFiles, rfc3339};
use crate::components::meta::Section;
use crate::components::{BuildContext, BuildError, Component, ComponentError, ComponentType, MetadataError, TypeEntry};

pub const AWS_S3: TypeEntry<dyn FileStore> = TypeEntry::of::<AwsS3Type>();
pub const MINIO: TypeEntry<dyn FileStore> = TypeEntry::of::<MinioType>();

/// The size of an upload's parts (S3's smallest but the last).
pub const PART_BYTES: usize = 5 * 1024 * 1024;

/// Layotto's `ETag` key of GetFileMeta's answer.
pub const ETAG: &str = "ETag";

pub struct AwsS3Type;

impl ComponentType<dyn FileStore> for AwsS3Type {
    const NAME: &'static str = "aws.s3";
    type Metadata = S3Keys;

    fn build(ctx: BuildContext, keys: S3Keys) -> BoxFuture<'static, Result<Arc<dyn FileStore>, BuildError>> {
        async move { S3Files::new(&ctx.spec.name, keys).map(|s| Arc::new(s) as Arc<dyn FileStore>) }.boxed()
    }
}

pub struct MinioType;

impl ComponentType<dyn FileStore> for MinioType {
    const NAME: &'static str = "minio";
    type Metadata = S3Keys;

    fn build(ctx: BuildContext, keys: S3Keys) -> BoxFuture<'static, Result<Arc<dyn FileStore>, BuildError>> {
        async move { S3Files::new(&ctx.spec.name, keys).map(|s| Arc::new(s) as Arc<dyn FileStore>) }.boxed()
    }
}

/// What `aws.s3` and `minio` read from their metadata (Layotto's key
/// spelling).
#[derive(Clone, Debug, serde::Deserialize)]
pub struct S3Keys {
    /// The service's URL (`http://127.0.0.1:9000`), or `host:port` (then
    /// `SSL` picks the scheme). Default: AWS's endpoint for `region`.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Default `us-east-1`.
    #[serde(default = "default_region")]
    pub region: String,
    /// The access key; with `accessKeySecret`. Default: the environment's
    /// AWS credentials.
    #[serde(default, rename = "accessKeyID")]
    pub access_key_id: Option<String>,
    /// The secret of `accessKeyID` (a secret reference fits here).
    #[serde(default, rename = "accessKeySecret")]
    pub access_key_secret: Option<String>,
    /// Whether an `endpoint` without a scheme is reached over HTTPS.
    /// Default true.
    #[serde(default = "default_true", rename = "SSL")]
    pub ssl: bool,
    /// The one bucket of the store: names are then keys in it. Default
    /// none: names are `<bucket>/<key>`.
    #[serde(default)]
    pub bucket: Option<String>,
    /// Layotto's list of buckets; read and not needed (names carry their
    /// bucket).
    #[serde(default)]
    pub buckets: Option<String>,
}

fn default_region() -> String {
    "us-east-1".to_owned()
}

fn default_true() -> bool {
    true
}

impl Section for S3Keys {
    fn check(&self, errors: &mut Vec<MetadataError>) {
        if self.access_key_id.is_some() != self.access_key_secret.is_some() {
            errors.push(MetadataError::new(
                "accessKeyID",
                "accessKeyID and accessKeySecret go together: set both or neither",
            ));
        }
        if self.bucket.as_deref().is_some_and(|b| b.is_empty() || b.contains('/')) {
            errors.push(MetadataError::new("bucket", "a bucket name, without '/'"));
        }
    }
}

pub struct S3Files {
    component: String,
    keys: S3Keys,
    /// The endpoint as a URL, when one is configured.
    endpoint: Option<String>,
    /// One client per bucket, made on first use.
    buckets: Mutex<HashMap<String, Arc<AmazonS3>>>,
    http: reqwest::Client,
}

fn store_error(name: &str, e: object_store::Error) -> ComponentError {
    match e {
        object_store::Error::NotFound { .. } => ComponentError::NotFound(format!("file '{name}' does not exist")),
        object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. } => {
            ComponentError::Conflict(format!("'{name}': {e}"))
        }
        object_store::Error::InvalidPath { .. } => ComponentError::InvalidArgument(format!("'{name}': {e}")),
        other => {
            let text = other.to_string();
            if text.contains("NoSuchBucket") {
                ComponentError::NotFound(format!("the bucket of '{name}' does not exist"))
            } else if text.contains("error sending request") || text.contains("connect") {
                ComponentError::Unavailable(format!("'{name}': {text}"))
            } else {
                ComponentError::Internal(format!("'{name}': {text}"))
            }
        }
    }
}

impl S3Files {
    fn new(component: &str, keys: S3Keys) -> Result<S3Files, BuildError> {
        let endpoint = keys.endpoint.as_deref().filter(|e| !e.is_empty()).map(|e| {
            if e.contains("://") {
                e.to_owned()
            } else if keys.ssl {
                format!("https://{e}")
            } else {
                format!("http://{e}")
            }
        });
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(5))
            .build()
            .map_err(|e| BuildError(format!("file store '{component}': {e}")))?;
        let files = S3Files {
            component: component.to_owned(),
            keys,
            endpoint,
            buckets: Mutex::new(HashMap::new()),
            http,
        };
        if let Some(bucket) = files.keys.bucket.clone() {
            files.client(&bucket).map_err(|e| BuildError(e.to_string()))?;
        }
        Ok(files)
    }

    fn client(&self, bucket: &str) -> Result<Arc<AmazonS3>, ComponentError> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(client) = buckets.get(bucket) {
            return Ok(client.clone());
        }
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(bucket)
            .with_region(&self.keys.region);
        if let (Some(id), Some(secret)) = (&self.keys.access_key_id, &self.keys.access_key_secret) {
            builder = builder.with_access_key_id(id).with_secret_access_key(secret);
        }
        if let Some(endpoint) = &self.endpoint {
            builder = builder
                .with_endpoint(endpoint)
                .with_allow_http(endpoint.starts_with("http://"))
                .with_virtual_hosted_style_request(false);
        }
        let client = Arc::new(builder.build().map_err(|e| {
            ComponentError::InvalidArgument(format!("file store '{}': bucket '{bucket}': {e}", self.component))
        })?);
        buckets.insert(bucket.to_owned(), client.clone());
        Ok(client)
    }

    /// The bucket's client and the object's path of a name.
    fn locate(&self, name: &str) -> Result<(Arc<AmazonS3>, Path), ComponentError> {
        let (bucket, key) = match &self.keys.bucket {
            Some(bucket) => (bucket.as_str(), name),
            None => match name.split_once('/') {
                Some((bucket, key)) if !bucket.is_empty() && !key.is_empty() => (bucket, key),
                _ => {
                    return Err(ComponentError::InvalidArgument(format!(
                        "name '{name}' is not '<bucket>/<key>'"
                    )));
                }
            },
        };
        let path = Path::parse(key).map_err(|e| ComponentError::InvalidArgument(format!("name '{name}': {e}")))?;
        Ok((self.client(bucket)?, path))
    }

    /// The bucket's client and the folder of a listing.
    fn locate_folder(&self, name: &str) -> Result<(Arc<AmazonS3>, Option<Path>), ComponentError> {
        let (bucket, folder) = match &self.keys.bucket {
            Some(bucket) => (bucket.as_str(), name),
            None => match name.split_once('/') {
                Some((bucket, folder)) => (bucket, folder),
                None => (name, ""),
            },
        };
        if bucket.is_empty() {
            return Err(ComponentError::InvalidArgument(format!(
                "name '{name}' names no bucket; list '<bucket>' or '<bucket>/<folder>'"
            )));
        }
        let folder = folder.trim_end_matches('/');
        let folder = if folder.is_empty() {
            None
        } else {
            Some(Path::parse(folder).map_err(|e| ComponentError::InvalidArgument(format!("name '{name}': {e}")))?)
        };
        Ok((self.client(bucket)?, folder))
    }
}

#[async_trait::async_trait]
impl Component for S3Files {
    /// The service answers HTTP (any status: it is up).
    async fn health_check(&self) -> Result<(), ComponentError> {
        let url = self
            .endpoint
            .clone()
            .unwrap_or_else(|| format!("https://s3.{}.amazonaws.com", self.keys.region));
        self.http
            .head(&url)
            .send()
            .await
            .map(drop)
            .map_err(|e| ComponentError::Unavailable(format!("{url}: {e}")))
    }
}

#[async_trait::async_trait]
impl FileStore for S3Files {
    async fn put(&self, name: &str, mut data: ByteStream, _metadata: &FileMetadata) -> Result<(), ComponentError> {
        let (client, path) = self.locate(name)?;
        let mut writer = BufWriter::with_capacity(client, path, PART_BYTES).with_max_concurrency(2);
        let written = async {
            while let Some(chunk) = data.next().await {
                writer
                    .write_all(&chunk?)
                    .await
                    .map_err(|e| ComponentError::Unavailable(format!("uploading '{name}': {e}")))?;
            }
            writer
                .shutdown()
                .await
                .map_err(|e| ComponentError::Unavailable(format!("uploading '{name}': {e}")))
        }
        .await;
        if written.is_err() {
            let _ = writer.abort().await;
        }
        written
    }

    async fn get(&self, name: &str, _metadata: &FileMetadata) -> Result<ByteStream, ComponentError> {
        let (client, path) = self.locate(name)?;
        let result = client.get(&path).await.map_err(|e| store_error(name, e))?;
        let name = name.to_owned();
        Ok(result.into_stream().map_err(move |e| store_error(&name, e)).boxed())
    }

    async fn list(&self, request: &ListFiles) -> Result<FileListing, ComponentError> {
        let (client, folder) = self.locate_folder(&request.prefix)?;
        let offset = Path::from(request.marker.as_str());
        let mut listing = if request.marker.is_empty() {
            client.list(folder.as_ref())
        } else {
            client.list_with_offset(folder.as_ref(), &offset)
        };
        let mut files = Vec::new();
        let mut is_truncated = false;
        while let Some(object) = listing.next().await {
            let object = object.map_err(|e| store_error(&request.prefix, e))?;
            if files.len() == request.page_size {
                is_truncated = true;
                break;
            }
            files.push(FileInfo {
                name: object.location.to_string(),
                size: i64::try_from(object.size).unwrap_or(i64::MAX),
                last_modified: rfc3339(object.last_modified.into()),
                metadata: BTreeMap::new(),
            });
        }
        // object_store lists in key order on S3; keep it so for any service.
        files.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(FileListing {
            marker: files.last().map(|f| f.name.clone()).unwrap_or_default(),
            files,
            is_truncated,
        })
    }

    async fn delete(&self, name: &str, _metadata: &FileMetadata) -> Result<(), ComponentError> {
        let (client, path) = self.locate(name)?;
        // S3 deletes a missing key without complaint; Layotto's callers
        // expect to hear of it.
        client.head(&path).await.map_err(|e| store_error(name, e))?;
        client.delete(&path).await.map_err(|e| store_error(name, e))
    }

    async fn stat(&self, name: &str, _metadata: &FileMetadata) -> Result<FileMeta, ComponentError> {
        let (client, path) = self.locate(name)?;
        let head = client
            .get_opts(
                &path,
                GetOptions {
                    head: true,
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| store_error(name, e))?;
        let mut metadata = BTreeMap::new();
        if let Some(etag) = &head.meta.e_tag {
            metadata.insert(ETAG.to_owned(), vec![etag.clone()]);
        }
        for (attribute, value) in head.attributes.iter() {
            if let Attribute::Metadata(key) = attribute {
                metadata.insert(key.to_string(), vec![value.to_string()]);
            }
        }
        Ok(FileMeta {
            size: i64::try_from(head.meta.size).unwrap_or(i64::MAX),
            last_modified: rfc3339(head.meta.last_modified.into()),
            metadata,
        })
    }
}
