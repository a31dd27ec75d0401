//! `localstorage`: Dapr's local storage output binding, files under a root
//! directory. `create` writes the data to `fileName` (a new random name
//! when none) and answers `{"fileName": ...}`; `get` answers a file's
//! bytes; `list` answers the absolute paths of the files under `fileName`
//! (the root when none), as a JSON array; `delete` removes a file.
//!
//! Names that leave the root (`..`, an absolute path elsewhere, a symbolic
//! link out) are refused, as by the `local` file store (Dapr clamps them
//! into the root instead). As in Dapr, `create` writes a quoted JSON
//! string's text, and base64 text decoded.
//!
//! Metadata: [`LocalStorageKeys`].

use std::path::Path;
use std::sync::Arc;

use base64::Engine;
use futures::FutureExt;
use futures::future::BoxFuture;

use super::{Binding, BindingCommon, BindingRequest, BindingResponse, ops};
use crate::components::file::local::Root;
use crate::components::meta::{self, Section};
use crate::components::{BuildContext, BuildError, Component, ComponentError, ComponentType, TypeEntry};

pub const TYPE: TypeEntry<dyn Binding> = TypeEntry::of::<LocalStorageType>();

/// The request metadata key of the file's name.
pub const FILE_NAME: &str = "fileName";

pub struct LocalStorageType;

impl ComponentType<dyn Binding> for LocalStorageType {
    const NAME: &'static str = "localstorage";
    type Metadata = (LocalStorageKeys, BindingCommon);

    fn build(
        ctx: BuildContext,
        (keys, _): (LocalStorageKeys, BindingCommon),
    ) -> BoxFuture<'static, Result<Arc<dyn Binding>, BuildError>> {
        async move {
            let root = Root::open(&format!("binding '{}'", ctx.spec.name), &keys.root_path).await?;
            Ok(Arc::new(LocalStorage { root }) as Arc<dyn Binding>)
        }
        .boxed()
    }
}

/// What `localstorage` reads from its metadata.
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LocalStorageKeys {
    /// The directory the files live under; created if missing. Required.
    #[serde(deserialize_with = "meta::non_empty")]
    pub root_path: String,
}

impl Section for LocalStorageKeys {}

pub struct LocalStorage {
    root: Root,
}

fn io_error(name: &str, e: std::io::Error) -> ComponentError {
    match e.kind() {
        std::io::ErrorKind::NotFound => ComponentError::NotFound(format!("file not found: {name}")),
        _ => ComponentError::Internal(format!("{name}: {e}")),
    }
}

/// Dapr's decoding of the data a `create` writes.
fn decoded(data: &[u8]) -> Vec<u8> {
    let text = std::str::from_utf8(data).ok();
    let unquoted = text.and_then(|t| serde_json::from_str::<String>(t).ok());
    let bytes = match &unquoted {
        Some(s) => s.as_bytes(),
        None => data,
    };
    match base64::engine::general_purpose::STANDARD.decode(bytes) {
        Ok(raw) if !bytes.is_empty() => raw,
        _ => bytes.to_vec(),
    }
}

async fn walk(dir: &Path, out: &mut Vec<String>) -> Result<(), ComponentError> {
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let shown = dir.display().to_string();
        let mut entries = tokio::fs::read_dir(&dir).await.map_err(|e| io_error(&shown, e))?;
        while let Some(entry) = entries.next_entry().await.map_err(|e| io_error(&shown, e))? {
            let kind = entry.file_type().await.map_err(|e| io_error(&shown, e))?;
            if kind.is_dir() {
                pending.push(entry.path());
            } else {
                out.push(entry.path().display().to_string());
            }
        }
    }
    out.sort();
    Ok(())
}

#[async_trait::async_trait]
impl Component for LocalStorage {
    async fn health_check(&self) -> Result<(), ComponentError> {
        self.root.check().await
    }
}

#[async_trait::async_trait]
impl Binding for LocalStorage {
    fn operations(&self) -> Vec<&str> {
        vec![ops::CREATE, ops::GET, ops::LIST, ops::DELETE]
    }

    async fn invoke(&self, request: BindingRequest) -> Result<BindingResponse, ComponentError> {
        let name = request.metadata.get(FILE_NAME).cloned().unwrap_or_default();
        match request.operation.as_str() {
            ops::CREATE => {
                let name = if name.is_empty() {
                    uuid::Uuid::new_v4().to_string()
                } else {
                    name
                };
                let path = self.root.resolve(&name).await?;
                if let Some(parent) = path.parent() {
                    tokio::fs::create_dir_all(parent)
                        .await
                        .map_err(|e| io_error(&name, e))?;
                }
                tokio::fs::write(&path, decoded(&request.data))
                    .await
                    .map_err(|e| io_error(&name, e))?;
                let relative = path
                    .strip_prefix(self.root.path())
                    .unwrap_or(&path)
                    .display()
                    .to_string();
                Ok(BindingResponse::data(
                    serde_json::json!({ "fileName": relative }).to_string().into_bytes(),
                ))
            }
            ops::GET => {
                if name.is_empty() {
                    return Err(ComponentError::InvalidArgument(
                        "required metadata not set: fileName".into(),
                    ));
                }
                let path = self.root.resolve(&name).await?;
                let data = tokio::fs::read(&path)
                    .await
                    .map_err(|e| io_error(&path.display().to_string(), e))?;
                Ok(BindingResponse::data(data))
            }
            ops::LIST => {
                let path = self.root.resolve(if name.is_empty() { "." } else { &name }).await?;
                let meta = tokio::fs::metadata(&path)
                    .await
                    .map_err(|e| io_error(&path.display().to_string(), e))?;
                if !meta.is_dir() {
                    return Err(ComponentError::InvalidArgument(format!(
                        "unable to list files as the file specified is not a directory: {}",
                        path.display()
                    )));
                }
                let mut files = Vec::new();
                walk(&path, &mut files).await?;
                let json = if files.is_empty() {
                    serde_json::Value::Null
                } else {
                    serde_json::json!(files)
                };
                Ok(BindingResponse::data(json.to_string().into_bytes()))
            }
            ops::DELETE => {
                if name.is_empty() {
                    return Err(ComponentError::InvalidArgument(
                        "required metadata not set: fileName".into(),
                    ));
                }
                let path = self.root.resolve(&name).await?;
                tokio::fs::remove_file(&path)
                    .await
                    .map_err(|e| io_error(&path.display().to_string(), e))?;
                Ok(BindingResponse::none())
            }
            other => Err(ComponentError::InvalidArgument(format!(
                "invalid operation type: {other}"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_data_is_decoded_as_dapr_does() {
        assert_eq!(decoded(b"\"hello\""), b"hello");
        assert_eq!(decoded(b"aGVsbG8="), b"hello");
        assert_eq!(decoded(b"\"aGVsbG8=\""), b"hello");
        assert_eq!(decoded(b"plain text!"), b"plain text!");
        assert_eq!(decoded(b""), b"");
    }
}
