/*!
The lake's object store: opening it from a URL, naming objects, uploading, listing.
*/

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt as _;
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt as _, PutPayload, RetryConfig, WriteMultipart};

use super::{LakeConfig, LakeError};

/// The object store's own retries per request: few and short, because the lake writer retries
/// whole uploads with its own backoff and reports the outage meanwhile.
fn client_retry() -> RetryConfig {
    RetryConfig { max_retries: 2, retry_timeout: Duration::from_secs(20), ..RetryConfig::default() }
}

/// An open lake: the store, the root every name is under, and a description for messages.
#[derive(Debug, Clone)]
pub struct Lake {
    store: Arc<dyn ObjectStore>,
    root: Path,
    /// Set for a local directory, whose objects are fsynced after upload.
    local_dir: Option<PathBuf>,
    description: String,
}

impl Lake {
    /// Opens the lake `config` points at, or the directory `default_dir` when it has no URL.
    /// Builds the client only: nothing is sent until the first request.
    pub fn open(config: &LakeConfig, default_dir: &std::path::Path) -> Result<Lake, LakeError> {
        let url = config.url.as_deref().unwrap_or_default();
        let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
        if matches!(scheme, "" | "file") {
            let dir = if rest.is_empty() { default_dir.to_owned() } else { PathBuf::from(rest) };
            return Self::local(&dir);
        }
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let root = Path::parse(prefix.trim_end_matches('/'))
            .map_err(|e| LakeError::Config(format!("lake.url `{url}` has an invalid prefix: {e}")))?;
        let bucket_url = format!("{scheme}://{bucket}");
        let config_error = |e: object_store::Error| {
            LakeError::Config(format!(
                "cannot set up the lake at `{url}`: {e}; check lake.url, lake.options and the credentials in the environment"
            ))
        };
        let unknown_option = |key: &str| {
            LakeError::Config(format!("lake.options: `{key}` is not an object_store setting for {scheme}:// URLs"))
        };
        let store: Arc<dyn ObjectStore> = match scheme {
            "s3" | "s3a" => {
                use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
                let mut builder = AmazonS3Builder::from_env()
                    .with_url(bucket_url)
                    .with_retry(client_retry())
                    .with_virtual_hosted_style_request(!config.path_style);
                if let Some(endpoint) = &config.endpoint {
                    builder = builder.with_endpoint(endpoint).with_allow_http(endpoint.starts_with("http://"));
                }
                for (key, value) in &config.options {
                    let key: AmazonS3ConfigKey = key.parse().map_err(|_| unknown_option(key))?;
                    builder = builder.with_config(key, value);
                }
                Arc::new(builder.build().map_err(config_error)?)
            }
            "gs" => {
                use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
                let mut builder = GoogleCloudStorageBuilder::from_env().with_url(bucket_url).with_retry(client_retry());
                for (key, value) in &config.options {
                    let key: GoogleConfigKey = key.parse().map_err(|_| unknown_option(key))?;
                    builder = builder.with_config(key, value);
                }
                Arc::new(builder.build().map_err(config_error)?)
            }
            "az" | "abfs" | "abfss" => {
                use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
                let mut builder = MicrosoftAzureBuilder::from_env().with_url(bucket_url).with_retry(client_retry());
                for (key, value) in &config.options {
                    let key: AzureConfigKey = key.parse().map_err(|_| unknown_option(key))?;
                    builder = builder.with_config(key, value);
                }
                Arc::new(builder.build().map_err(config_error)?)
            }
            other => {
                return Err(LakeError::Config(format!(
                    "lake.url `{url}`: `{other}://` is not supported; use s3://, gs://, az://, file:// or a directory"
                )));
            }
        };
        Ok(Lake { store, root, local_dir: None, description: url.to_owned() })
    }

    /// A lake in a local directory, created if missing.
    fn local(dir: &std::path::Path) -> Result<Lake, LakeError> {
        crate::files::create_dir_all(dir).map_err(|e| {
            LakeError::Config(format!("cannot create the lake directory {}: {e}; set lake.url", dir.display()))
        })?;
        let dir = dir.canonicalize().map_err(|e| {
            LakeError::Config(format!("cannot resolve the lake directory {}: {e}; set lake.url", dir.display()))
        })?;
        let store = object_store::local::LocalFileSystem::new_with_prefix(&dir).map_err(|e| {
            LakeError::Config(format!("cannot open the lake directory {}: {e}; set lake.url", dir.display()))
        })?;
        let description = dir.display().to_string();
        Ok(Lake { store: Arc::new(store), root: Path::default(), local_dir: Some(dir), description })
    }

    /// The lake as configured (URL or directory), for messages and the checkpoint.
    pub fn description(&self) -> &str {
        &self.description
    }

    /// The full path of an object `name` (relative to the root, `/`-separated).
    pub fn path(&self, name: &str) -> Path {
        let mut path = self.root.clone();
        for part in name.split('/').filter(|p| !p.is_empty()) {
            path = path.join(part);
        }
        path
    }

    /// Uploads `bytes` to `path`, in parts of `part_bytes` when larger than one part.
    /// Overwrites: a retried upload rewrites the same contents under the same name.
    pub async fn put(&self, path: &Path, bytes: Bytes, part_bytes: usize) -> Result<(), LakeError> {
        let failed = |source| self.error("PUT", path, source);
        if bytes.len() <= part_bytes {
            self.store.put(path, PutPayload::from(bytes)).await.map_err(failed)?;
        } else {
            let upload = self.store.put_multipart(path).await.map_err(failed)?;
            let mut parts = WriteMultipart::new_with_chunk_size(upload, part_bytes);
            parts.put(bytes);
            parts.finish().await.map_err(failed)?;
        }
        if let Some(dir) = &self.local_dir {
            // The local store renames a complete file into place but does not fsync it; the
            // writer's checkpoint will say these records are archived, so make that true. The
            // upload may have created partition directories on the way (`dt=…/hour=…/`): a new
            // directory's entry is durable only once its own parent is synced, so every
            // directory from the object's up to the lake's root is.
            let file = dir.join(path.as_ref());
            for target in synced_on_upload(dir, &file) {
                std::fs::File::open(target)
                    .and_then(|f| f.sync_all())
                    .map_err(|source| LakeError::Sync { path: target.to_owned(), source })?;
            }
        }
        Ok(())
    }

    /// Deletes the upload staging files a killed process left in a local lake: the local store
    /// writes `<object>#<n>` and renames it into place when complete, so a SIGKILL mid-upload
    /// leaves the half-written file behind. Only files under the lake's directory named after
    /// one of our objects plus `#<digits>` are touched. Returns how many were deleted; does
    /// nothing for remote stores, where an unfinished upload is never visible.
    pub fn remove_staging_files(&self) -> Result<u64, LakeError> {
        fn walk(dir: &std::path::Path, removed: &mut u64) -> std::io::Result<()> {
            for entry in std::fs::read_dir(dir)? {
                let entry = entry?;
                let path = entry.path();
                if entry.file_type()?.is_dir() {
                    walk(&path, removed)?;
                } else if entry.file_name().to_str().is_some_and(is_staging_file) {
                    std::fs::remove_file(&path)?;
                    *removed += 1;
                }
            }
            Ok(())
        }
        let Some(dir) = &self.local_dir else { return Ok(0) };
        let mut removed = 0;
        walk(dir, &mut removed).map_err(|source| LakeError::Cleanup { dir: dir.clone(), source })?;
        Ok(removed)
    }

    /// The highest last offset among the objects directly in folder `name`, if any.
    pub async fn watermark(&self, name: &str) -> Result<Option<u64>, LakeError> {
        let dir = self.path(name);
        let listing = self.store.list_with_delimiter(Some(&dir)).await.map_err(|e| self.error("LIST", &dir, e))?;
        Ok(listing.objects.iter().filter_map(|o| offsets(o.location.filename()?).map(|(_, last)| last)).max())
    }

    /// True when the lake holds no object under its root but the writer's mark.
    pub async fn is_empty(&self) -> Result<bool, LakeError> {
        let mut objects = std::pin::pin!(self.list(""));
        match objects.next().await {
            None => Ok(true),
            Some(Ok(_)) => Ok(false),
            Some(Err(e)) => Err(e),
        }
    }

    /// Every object under folder `name` (all of them for ""), in no particular order; the
    /// writer's mark ([`WRITER_MARK`]) is not one of the lake's records and is left out.
    pub fn list(&self, name: &str) -> impl futures_util::Stream<Item = Result<ObjectMeta, LakeError>> + '_ {
        let dir = self.path(name);
        let mark = self.path(WRITER_MARK);
        self.store
            .list(Some(&dir))
            .filter(move |item| std::future::ready(!matches!(item, Ok(meta) if meta.location == mark)))
            .map(move |item| item.map_err(|e| self.error("LIST", &dir, e)))
    }

    /// The contents of object `name`, or `None` when there is none.
    pub async fn read(&self, name: &str) -> Result<Option<Bytes>, LakeError> {
        let path = self.path(name);
        let got = match self.store.get(&path).await {
            Ok(got) => got,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(self.error("GET", &path, e)),
        };
        got.bytes().await.map(Some).map_err(|e| self.error("GET", &path, e))
    }

    /// An object's name relative to the root, for display.
    pub fn relative(&self, path: &Path) -> String {
        match path.prefix_match(&self.root) {
            Some(parts) => parts.map(|p| p.as_ref().to_owned()).collect::<Vec<_>>().join("/"),
            None => path.to_string(),
        }
    }

    fn error(&self, operation: &'static str, path: &Path, source: object_store::Error) -> LakeError {
        LakeError::Store {
            operation,
            location: path.to_string(),
            lake: self.description.clone(),
            source: Box::new(source),
        }
    }
}

/// What an upload to the local lake at `dir` fsyncs: the object `file`, then each directory from
/// its own up to `dir` itself.
fn synced_on_upload<'p>(dir: &'p std::path::Path, file: &'p std::path::Path) -> Vec<&'p std::path::Path> {
    let mut synced = vec![file];
    synced.extend(file.ancestors().skip(1).take_while(|d| d.starts_with(dir)));
    synced
}

/// The object in which the lake writer marks how far its journal's offsets reach in the lake
/// (see [`crate::consumers::lake_writer`]); `_`-prefixed, so dataset readers skip it.
pub const WRITER_MARK: &str = "_sluice-writer.json";

/// The object name of records `first..=last` in folder `dir`.
pub fn object_name(dir: &str, first: u64, last: u64, extension: &str) -> String {
    format!("{dir}/{first:020}-{last:020}.{extension}")
}

/// True for the local store's staging file of one of our objects: `<first>-<last>.<ext>#<n>`.
fn is_staging_file(file_name: &str) -> bool {
    file_name
        .rsplit_once('#')
        .is_some_and(|(object, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) && offsets(object).is_some())
}

/// The offsets in an object's file name (`<first>-<last>.<ext>`), if it is one of ours.
pub fn offsets(file_name: &str) -> Option<(u64, u64)> {
    let (stem, _extension) = file_name.split_once('.')?;
    let (first, last) = stem.split_once('-')?;
    let parse = |s: &str| if s.bytes().all(|b| b.is_ascii_digit()) { s.parse().ok() } else { None };
    Some((parse(first)?, parse(last)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_names_carry_zero_padded_offsets_that_parse_back() {
        let name = object_name("split_impression/2019/11/01/18", 7, 1234, "json.gz");
        assert_eq!(name, "split_impression/2019/11/01/18/00000000000000000007-00000000000000001234.json.gz");
        assert_eq!(offsets(name.rsplit('/').next().unwrap()), Some((7, 1234)));
        for foreign in ["notes.txt", "a-b.json.gz", "12-.parquet", "-3.json", "12-34"] {
            assert_eq!(offsets(foreign), None, "{foreign}");
        }
    }

    #[test]
    fn an_upload_syncs_every_directory_it_may_have_created_up_to_the_lake_root() {
        let root = std::path::Path::new("/lake");
        let file = root.join("split_impression/2019/11/01/18/0-9.json.gz");
        let synced: Vec<_> = synced_on_upload(root, &file).into_iter().map(|p| p.to_str().unwrap()).collect();
        assert_eq!(
            synced,
            [
                "/lake/split_impression/2019/11/01/18/0-9.json.gz",
                "/lake/split_impression/2019/11/01/18",
                "/lake/split_impression/2019/11/01",
                "/lake/split_impression/2019/11",
                "/lake/split_impression/2019",
                "/lake/split_impression",
                "/lake",
            ]
        );
    }

    #[tokio::test]
    async fn a_local_lake_lists_the_watermark_of_a_folder_and_syncs_uploads() {
        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::open(&LakeConfig::default(), dir.path()).unwrap();
        assert!(lake.is_empty().await.unwrap());
        assert_eq!(lake.watermark("k/2019").await.unwrap(), None);
        for (first, last) in [(0, 9), (20, 29), (10, 19)] {
            lake.put(&lake.path(&object_name("k/2019", first, last, "json.gz")), Bytes::from_static(&[1; 3]), 1 << 20)
                .await
                .unwrap();
        }
        // A multipart upload: 2.5 parts.
        let big = vec![7u8; (5 << 20) / 2];
        lake.put(&lake.path(&object_name("k/2020", 0, 0, "json.gz")), Bytes::from(big.clone()), 1 << 20).await.unwrap();
        assert_eq!(lake.watermark("k/2019").await.unwrap(), Some(29));
        assert!(!lake.is_empty().await.unwrap());
        let read = std::fs::read(dir.path().join(object_name("k/2020", 0, 0, "json.gz"))).unwrap();
        assert_eq!(read, big);
    }

    #[tokio::test]
    async fn staging_files_of_our_objects_are_removed_and_never_listed() {
        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::open(&LakeConfig::default(), dir.path()).unwrap();
        let object = object_name("k/2019", 0, 9, "json.gz");
        lake.put(&lake.path(&object), Bytes::from_static(b"done"), 1 << 20).await.unwrap();
        let folder = dir.path().join("k/2019");
        let staging = folder.join("00000000000000000010-00000000000000000019.json.gz#3");
        std::fs::write(&staging, b"half").unwrap();
        // Not ours: a name that is not an object's, a suffix that is not a number.
        let foreign = [folder.join("notes.txt#1"), folder.join("00000000000000000000-00000000000000000009.json.gz#x")];
        for path in &foreign {
            std::fs::write(path, b"keep").unwrap();
        }
        let listed: Vec<_> = lake.list("").map(|m| lake.relative(&m.unwrap().location)).collect().await;
        assert!(!listed.iter().any(|n| n.ends_with("#3")), "staging files are not objects: {listed:?}");

        assert_eq!(lake.remove_staging_files().unwrap(), 1);
        assert!(!staging.exists());
        assert!(foreign.iter().all(|p| p.exists()), "only staging files of our objects are deleted");
        assert_eq!(std::fs::read(dir.path().join(&object)).unwrap(), b"done");
    }

    #[test]
    fn unsupported_schemes_and_bad_options_are_named() {
        let cfg = |url: &str| LakeConfig { url: Some(url.into()), ..LakeConfig::default() };
        let err = Lake::open(&cfg("ftp://x/y"), std::path::Path::new(".")).unwrap_err().to_string();
        assert!(err.contains("`ftp://` is not supported"), "{err}");
        let mut bad = cfg("s3://bucket/prefix");
        bad.options.insert("aws_no_such_thing".into(), "1".into());
        let err = Lake::open(&bad, std::path::Path::new(".")).unwrap_err().to_string();
        assert!(err.contains("aws_no_such_thing"), "{err}");
    }
}
