//! Messages for `file` components. Put consumes its data stream inside
//! the operation (the caller's upload is pulled as the store writes);
//! Get answers a stream the caller drains at its own pace.

use std::sync::Arc;

use futures::FutureExt;
use futures::future::BoxFuture;

use super::Operation;
use crate::components::file::{ByteStream, FileListing, FileMeta, FileMetadata, FileStore, ListFiles};
use crate::components::{ComponentError, FileStores};

/// Writes a file from a stream.
pub struct PutFile {
    pub name: String,
    pub data: ByteStream,
    pub metadata: FileMetadata,
}

impl Operation<FileStores> for PutFile {
    type Output = ();

    fn run(self, store: Arc<dyn FileStore>) -> BoxFuture<'static, Result<(), ComponentError>> {
        async move { store.put(&self.name, self.data, &self.metadata).await }.boxed()
    }
}

/// Opens a file for reading.
pub struct GetFile {
    pub name: String,
    pub metadata: FileMetadata,
}

impl Operation<FileStores> for GetFile {
    type Output = ByteStream;

    fn run(self, store: Arc<dyn FileStore>) -> BoxFuture<'static, Result<ByteStream, ComponentError>> {
        async move { store.get(&self.name, &self.metadata).await }.boxed()
    }
}

/// A page of files.
pub struct ListFile(pub ListFiles);

impl Operation<FileStores> for ListFile {
    type Output = FileListing;

    fn run(self, store: Arc<dyn FileStore>) -> BoxFuture<'static, Result<FileListing, ComponentError>> {
        async move { store.list(&self.0).await }.boxed()
    }
}

/// Removes a file.
pub struct DelFile {
    pub name: String,
    pub metadata: FileMetadata,
}

impl Operation<FileStores> for DelFile {
    type Output = ();

    fn run(self, store: Arc<dyn FileStore>) -> BoxFuture<'static, Result<(), ComponentError>> {
        async move { store.delete(&self.name, &self.metadata).await }.boxed()
    }
}

/// A file's size, modification time and metadata.
pub struct StatFile {
    pub name: String,
    pub metadata: FileMetadata,
}

impl Operation<FileStores> for StatFile {
    type Output = FileMeta;

    fn run(self, store: Arc<dyn FileStore>) -> BoxFuture<'static, Result<FileMeta, ComponentError>> {
        async move { store.stat(&self.name, &self.metadata).await }.boxed()
    }
}
