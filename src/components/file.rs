//! The `file` building block: named files in a store (a directory on the
//! sidecar's disk, an S3-compatible bucket), written and read as streams
//! of chunks so that a file of any size passes through without being held
//! in memory.

pub mod local;
pub mod s3;

use std::collections::BTreeMap;

use bytes::Bytes;
use futures::stream::BoxStream;

use super::{Component, ComponentError};

/// A file's bytes, chunk by chunk. An error ends it.
pub type ByteStream = BoxStream<'static, Result<Bytes, ComponentError>>;

/// Per-request metadata: Layotto's `FileMode`/`FileFlag`, a bucket, ...
pub type FileMetadata = BTreeMap<String, String>;

/// A page of a store's files.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FileListing {
    pub files: Vec<FileInfo>,
    /// Where the next page starts: pass it back as the marker.
    pub marker: String,
    /// Whether there are more files after this page.
    pub is_truncated: bool,
}

/// One file of a listing.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FileInfo {
    pub name: String,
    pub size: i64,
    /// RFC 3339, UTC.
    pub last_modified: String,
    pub metadata: BTreeMap<String, String>,
}

/// What GetFileMeta answers.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FileMeta {
    pub size: i64,
    /// RFC 3339, UTC.
    pub last_modified: String,
    pub metadata: BTreeMap<String, Vec<String>>,
}

/// A listing request: the files whose names start with `prefix`, in name
/// order, after `marker`, at most `page_size`.
#[derive(Clone, Debug, PartialEq)]
pub struct ListFiles {
    pub prefix: String,
    pub marker: String,
    pub page_size: usize,
    pub metadata: FileMetadata,
}

/// A file store.
#[async_trait::async_trait]
pub trait FileStore: Component {
    /// Writes `name` from `data`, replacing what was there. A stream that
    /// ends in an error leaves no partial file behind where the store can
    /// avoid it.
    async fn put(&self, name: &str, data: ByteStream, metadata: &FileMetadata) -> Result<(), ComponentError>;

    /// The bytes of `name`; NotFound when there is no such file.
    async fn get(&self, name: &str, metadata: &FileMetadata) -> Result<ByteStream, ComponentError>;

    /// A page of files.
    async fn list(&self, request: &ListFiles) -> Result<FileListing, ComponentError>;

    /// Removes `name`; NotFound when there is no such file.
    async fn delete(&self, name: &str, metadata: &FileMetadata) -> Result<(), ComponentError>;

    /// Size, modification time and metadata of `name`; NotFound when there
    /// is no such file.
    async fn stat(&self, name: &str, metadata: &FileMetadata) -> Result<FileMeta, ComponentError>;
}

/// The RFC 3339 (UTC, seconds) form of a modification time.
pub fn rfc3339(time: std::time::SystemTime) -> String {
    humantime::format_rfc3339_seconds(time).to_string()
}
