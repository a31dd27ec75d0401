//! `local`: files in a directory of the sidecar's host.
//!
//! Every name is a path relative to the store's root (`rootPath`; by
//! default the sidecar's working directory, where Layotto resolves the
//! names it is given), or an absolute path inside it. A name with a `..`
//! component, an absolute path outside the root, or a path that leaves the
//! root through a symbolic link is refused with INVALID_ARGUMENT before
//! anything is touched.
//!
//! Writing honours Layotto's request metadata: `FileMode` (permission bits;
//! `0644` and `0o644` are octal, plain digits decimal as Layotto parses
//! them) and `FileFlag` (the OS's open flags as a decimal number, e.g.
//! `66` for `O_CREAT|O_RDWR`, as Layotto passes them to `open`). Without
//! `FileFlag` a put replaces the file atomically: the data goes to a
//! temporary file beside it, renamed over the name once complete, so a
//! broken upload leaves the old file (or none) in place. Parent
//! directories are created as needed.
//!
//! A listing names a directory (empty: the root) and pages through its
//! entries in name order, after `marker`. GetFileMeta answers Layotto's
//! metadata: `FileMode` (the mode bits in decimal, with Go's directory bit)
//! and `IsDir`.
//!
//! Metadata: [`LocalKeys`].

use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component as PathPart, Path, PathBuf};
use std::sync::Arc;

use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt, TryStreamExt};
use tokio::io::AsyncWriteExt;

use super::{ByteStream, FileInfo, FileListing, FileMeta, FileMetadata, FileStore, ListFiles, rfc3339};
use crate::components::meta::Section;
use crate::components::{BuildContext, BuildError, Component, ComponentError, ComponentType, TypeEntry};

pub const TYPE: TypeEntry<dyn FileStore> = TypeEntry::of::<LocalType>();

/// The size of the chunks a download is sent in (Layotto's 100 KB).
pub const CHUNK_BYTES: usize = 102_400;

/// Layotto's request metadata keys.
pub const FILE_MODE: &str = "FileMode";
pub const FILE_FLAG: &str = "FileFlag";
pub const IS_DIR: &str = "IsDir";

/// Go's `os.ModeDir`, which Layotto's `FileMode` answer carries for a
/// directory.
const GO_MODE_DIR: u64 = 1 << 31;

pub struct LocalType;

impl ComponentType<dyn FileStore> for LocalType {
    const NAME: &'static str = "local";
    type Metadata = LocalKeys;

    fn build(ctx: BuildContext, keys: LocalKeys) -> BoxFuture<'static, Result<Arc<dyn FileStore>, BuildError>> {
        async move {
            let root = Root::open(&format!("file store '{}'", ctx.spec.name), &keys.root_path).await?;
            Ok(Arc::new(LocalFiles { root }) as Arc<dyn FileStore>)
        }
        .boxed()
    }
}

/// What `local` reads from its metadata.
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LocalKeys {
    /// The directory names are relative to, created if missing. Default
    /// `.`: the sidecar's working directory.
    #[serde(default = "default_root")]
    pub root_path: String,
}

fn default_root() -> String {
    ".".to_owned()
}

impl Section for LocalKeys {}

pub struct LocalFiles {
    root: Root,
}

fn io_error(what: &str, name: &str, e: std::io::Error) -> ComponentError {
    match e.kind() {
        ErrorKind::NotFound => ComponentError::NotFound(format!("file '{name}' does not exist")),
        ErrorKind::AlreadyExists => ComponentError::Conflict(format!("file '{name}' already exists")),
        ErrorKind::PermissionDenied => ComponentError::InvalidArgument(format!("{what} '{name}': permission denied")),
        ErrorKind::IsADirectory => ComponentError::InvalidArgument(format!("'{name}' is a directory")),
        ErrorKind::NotADirectory => ComponentError::InvalidArgument(format!("a parent of '{name}' is not a directory")),
        _ => ComponentError::Internal(format!("{what} '{name}': {e}")),
    }
}

/// The directory a store of files on the sidecar's disk lives under
/// (`local` here, the `localstorage` binding), with the one rule for
/// names: they stay inside it.
#[derive(Clone, Debug)]
pub struct Root(PathBuf);

impl Root {
    /// Creates the directory when missing and resolves it (symbolic links
    /// included); `owner` names the component in errors.
    pub async fn open(owner: &str, path: &str) -> Result<Root, BuildError> {
        let fail = |e: std::io::Error| BuildError(format!("{owner}: rootPath '{path}': {e}"));
        tokio::fs::create_dir_all(path).await.map_err(fail)?;
        let root = tokio::fs::canonicalize(path).await.map_err(fail)?;
        if !tokio::fs::metadata(&root).await.map_err(fail)?.is_dir() {
            return Err(BuildError(format!(
                "{owner}: rootPath '{path}' is a file and not a directory"
            )));
        }
        Ok(Root(root))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// The health check: the directory is still there.
    pub async fn check(&self) -> Result<(), ComponentError> {
        tokio::fs::metadata(&self.0)
            .await
            .map(drop)
            .map_err(|e| ComponentError::Unavailable(format!("root {}: {e}", self.0.display())))
    }

    /// Where `name` lives, refused with INVALID_ARGUMENT when it would
    /// leave the root: a `..` component, an absolute path elsewhere, or a
    /// symbolic link pointing out.
    pub async fn resolve(&self, name: &str) -> Result<PathBuf, ComponentError> {
        let given = Path::new(name);
        let mut path = if given.is_absolute() {
            PathBuf::new()
        } else {
            self.0.clone()
        };
        for part in given.components() {
            match part {
                PathPart::ParentDir => {
                    return Err(ComponentError::InvalidArgument(format!(
                        "name '{name}' contains '..'; names stay inside the store's root"
                    )));
                }
                PathPart::CurDir => {}
                other => path.push(other.as_os_str()),
            }
        }
        if !path.starts_with(&self.0) {
            return Err(ComponentError::InvalidArgument(format!(
                "name '{name}' is outside the store's root"
            )));
        }
        // A symbolic link inside the root may point out of it: the
        // deepest part of the path that exists must resolve inside.
        let mut existing = path.as_path();
        loop {
            match tokio::fs::canonicalize(existing).await {
                Ok(real) if real.starts_with(&self.0) => break,
                Ok(_) => {
                    return Err(ComponentError::InvalidArgument(format!(
                        "name '{name}' leads outside the store's root through a symbolic link"
                    )));
                }
                Err(_) => match existing.parent() {
                    Some(parent) if parent.starts_with(&self.0) => existing = parent,
                    _ => break,
                },
            }
        }
        Ok(path)
    }
}

/// Layotto's `FileMode`: octal with a leading `0` (or `0o`), else decimal.
fn parse_mode(text: &str) -> Result<u32, ComponentError> {
    let text = text.trim();
    let parsed = if let Some(octal) = text.strip_prefix("0o") {
        u32::from_str_radix(octal, 8)
    } else if text.len() > 1 && text.starts_with('0') {
        u32::from_str_radix(&text[1..], 8)
    } else {
        text.parse::<u32>()
    };
    match parsed {
        Ok(mode) if mode <= 0o7777 => Ok(mode),
        _ => Err(ComponentError::InvalidArgument(format!(
            "wrong {FILE_MODE} value '{text}' in metadata: permission bits, e.g. 0644"
        ))),
    }
}

/// The open flags of Linux that a write can use.
mod flags {
    pub const WRONLY: u32 = 0o1;
    pub const RDWR: u32 = 0o2;
    pub const CREAT: u32 = 0o100;
    pub const EXCL: u32 = 0o200;
    pub const TRUNC: u32 = 0o1000;
    pub const APPEND: u32 = 0o2000;
}

fn parse_flags(text: &str) -> Result<u32, ComponentError> {
    let flags: u32 = text.trim().parse().map_err(|_| {
        ComponentError::InvalidArgument(format!(
            "wrong {FILE_FLAG} value '{text}' in metadata: the open flags as a decimal number, e.g. 66 for O_CREAT|O_RDWR"
        ))
    })?;
    if flags & (flags::WRONLY | flags::RDWR) == 0 {
        return Err(ComponentError::InvalidArgument(format!(
            "{FILE_FLAG} {flags} opens the file read-only; add O_WRONLY (1) or O_RDWR (2)"
        )));
    }
    Ok(flags)
}

async fn write_all(file: &mut tokio::fs::File, mut data: ByteStream) -> Result<(), ComponentError> {
    while let Some(chunk) = data.next().await {
        let chunk = chunk?;
        file.write_all(&chunk)
            .await
            .map_err(|e| ComponentError::Internal(format!("writing the file: {e}")))?;
    }
    file.flush()
        .await
        .map_err(|e| ComponentError::Internal(format!("writing the file: {e}")))
}

#[async_trait::async_trait]
impl Component for LocalFiles {
    async fn health_check(&self) -> Result<(), ComponentError> {
        self.root.check().await
    }
}

#[async_trait::async_trait]
impl FileStore for LocalFiles {
    async fn put(&self, name: &str, data: ByteStream, metadata: &FileMetadata) -> Result<(), ComponentError> {
        let path = self.root.resolve(name).await?;
        let mode = metadata.get(FILE_MODE).map(|m| parse_mode(m)).transpose()?;
        let flags = metadata.get(FILE_FLAG).map(|f| parse_flags(f)).transpose()?;
        if let Some(parent) = path.parent() {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(|e| io_error("creating the directory of", name, e))?;
        }
        match flags {
            // Layotto's way: open the name itself with the caller's flags.
            Some(flags) => {
                let mut options = std::fs::OpenOptions::new();
                options
                    .read(flags & flags::RDWR != 0)
                    .write(true)
                    .append(flags & flags::APPEND != 0)
                    .truncate(flags & flags::TRUNC != 0)
                    .mode(mode.unwrap_or(0o644));
                if flags & flags::CREAT != 0 && flags & flags::EXCL != 0 {
                    options.create_new(true);
                } else {
                    options.create(flags & flags::CREAT != 0);
                }
                let mut file = tokio::fs::OpenOptions::from(options)
                    .open(&path)
                    .await
                    .map_err(|e| io_error("opening", name, e))?;
                write_all(&mut file, data).await
            }
            // Replace atomically: a temporary file beside it, renamed over.
            None => {
                let file_name = path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let temporary = path.with_file_name(format!(".{file_name}.{}.part", uuid::Uuid::new_v4().simple()));
                let mut options = tokio::fs::OpenOptions::new();
                options.write(true).create_new(true).mode(mode.unwrap_or(0o644));
                let mut file = options
                    .open(&temporary)
                    .await
                    .map_err(|e| io_error("creating", name, e))?;
                let written = match write_all(&mut file, data).await {
                    Ok(()) => file
                        .sync_all()
                        .await
                        .map_err(|e| ComponentError::Internal(format!("writing '{name}': {e}"))),
                    Err(e) => Err(e),
                };
                drop(file);
                let renamed = match written {
                    Ok(()) => tokio::fs::rename(&temporary, &path)
                        .await
                        .map_err(|e| io_error("replacing", name, e)),
                    Err(e) => Err(e),
                };
                if renamed.is_err() {
                    let _ = tokio::fs::remove_file(&temporary).await;
                }
                renamed
            }
        }
    }

    async fn get(&self, name: &str, _metadata: &FileMetadata) -> Result<ByteStream, ComponentError> {
        let path = self.root.resolve(name).await?;
        let file = tokio::fs::File::open(&path)
            .await
            .map_err(|e| io_error("opening", name, e))?;
        let is_dir = file.metadata().await.map(|m| m.is_dir()).unwrap_or(false);
        if is_dir {
            return Err(ComponentError::InvalidArgument(format!("'{name}' is a directory")));
        }
        let name = name.to_owned();
        Ok(tokio_util::io::ReaderStream::with_capacity(file, CHUNK_BYTES)
            .map_err(move |e| io_error("reading", &name, e))
            .boxed())
    }

    async fn list(&self, request: &ListFiles) -> Result<FileListing, ComponentError> {
        let shown = if request.prefix.is_empty() {
            "."
        } else {
            request.prefix.as_str()
        };
        let dir = self.root.resolve(shown).await?;
        let mut entries = tokio::fs::read_dir(&dir)
            .await
            .map_err(|e| io_error("listing", shown, e))?;
        let mut names = Vec::new();
        while let Some(entry) = entries.next_entry().await.map_err(|e| io_error("listing", shown, e))? {
            let name = entry.file_name().to_string_lossy().into_owned();
            if request.marker.is_empty() || name.as_str() > request.marker.as_str() {
                names.push(entry);
            }
        }
        names.sort_by_key(|e| e.file_name());
        let is_truncated = names.len() > request.page_size;
        names.truncate(request.page_size);
        let mut files = Vec::with_capacity(names.len());
        for entry in names {
            let name = entry.file_name().to_string_lossy().into_owned();
            let meta = entry.metadata().await.map_err(|e| io_error("listing", &name, e))?;
            files.push(FileInfo {
                size: i64::try_from(meta.len()).unwrap_or(i64::MAX),
                last_modified: meta.modified().map(rfc3339).unwrap_or_default(),
                metadata: BTreeMap::new(),
                name,
            });
        }
        Ok(FileListing {
            marker: files.last().map(|f| f.name.clone()).unwrap_or_default(),
            files,
            is_truncated,
        })
    }

    async fn delete(&self, name: &str, _metadata: &FileMetadata) -> Result<(), ComponentError> {
        let path = self.root.resolve(name).await?;
        if path == self.root.path() {
            return Err(ComponentError::InvalidArgument(
                "the store's root cannot be deleted".into(),
            ));
        }
        let meta = tokio::fs::symlink_metadata(&path)
            .await
            .map_err(|e| io_error("deleting", name, e))?;
        let removed = if meta.is_dir() {
            tokio::fs::remove_dir(&path).await
        } else {
            tokio::fs::remove_file(&path).await
        };
        removed.map_err(|e| io_error("deleting", name, e))
    }

    async fn stat(&self, name: &str, _metadata: &FileMetadata) -> Result<FileMeta, ComponentError> {
        let path = self.root.resolve(name).await?;
        let meta = tokio::fs::metadata(&path)
            .await
            .map_err(|e| io_error("reading", name, e))?;
        let mut mode = u64::from(meta.permissions().mode() & 0o777);
        if meta.is_dir() {
            mode |= GO_MODE_DIR;
        }
        Ok(FileMeta {
            size: i64::try_from(meta.len()).unwrap_or(i64::MAX),
            last_modified: meta.modified().map(rfc3339).unwrap_or_default(),
            metadata: BTreeMap::from([
                (FILE_MODE.to_owned(), vec![mode.to_string()]),
                (IS_DIR.to_owned(), vec![meta.is_dir().to_string()]),
            ]),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_are_octal_with_a_leading_zero_and_decimal_without() {
        assert_eq!(parse_mode("0644").ok(), Some(0o644));
        assert_eq!(parse_mode("0o600").ok(), Some(0o600));
        assert_eq!(parse_mode("420").ok(), Some(420));
        assert!(parse_mode("0999").is_err());
        assert!(parse_mode("99999").is_err());
        assert!(parse_mode("rw").is_err());
    }

    #[test]
    fn flags_must_open_for_writing() {
        assert_eq!(parse_flags("66").ok(), Some(flags::CREAT | flags::RDWR));
        assert!(parse_flags("64").is_err(), "O_CREAT alone is read-only");
        assert!(parse_flags("x").is_err());
    }

    #[tokio::test]
    async fn names_stay_inside_the_root() {
        let dir = tempfile::tempdir().expect("tempdir");
        let outside = tempfile::tempdir().expect("tempdir");
        let store = Root::open("t", &dir.path().to_string_lossy()).await.expect("open");
        let root = store.path().to_path_buf();
        assert_eq!(store.resolve("a/b.txt").await.ok(), Some(root.join("a/b.txt")));
        assert_eq!(
            store.resolve(&root.join("c").to_string_lossy()).await.ok(),
            Some(root.join("c")),
            "an absolute path inside the root"
        );
        for bad in ["../x", "a/../../x", "/etc/passwd"] {
            let e = store.resolve(bad).await.expect_err(bad);
            assert!(matches!(e, ComponentError::InvalidArgument(_)), "{bad}: {e}");
        }
        std::os::unix::fs::symlink(outside.path(), root.join("link")).expect("symlink");
        let e = store.resolve("link/secret").await.expect_err("through a link");
        assert!(e.to_string().contains("symbolic link"), "{e}");
    }
}
