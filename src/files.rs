/*!
Files: every directory sluice creates under its data directory is `0700` and every file `0600`,
readable by sluice's own user only: they hold people's ids, events and addresses.

sluice's own files are created here with those modes. What libraries create is covered by the
process umask `sluice serve` sets (`0o077`): SQLite's `-wal` and `-shm` files (SQLite gives them
the database file's mode, and [`create_private`] makes that file first) and a local lake's objects
(object_store's `LocalFileSystem` takes no mode). A data directory an older sluice created, or a
copy of one, may be looser: [`tighten`] restricts what is there when sluice starts.
*/

use std::fs::{DirBuilder, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

/// The mode of every directory sluice creates.
pub const DIR_MODE: u32 = 0o700;
/// The mode of every file sluice creates.
pub const FILE_MODE: u32 = 0o600;
/// The umask `sluice serve` runs under: nothing for the group or others.
pub const UMASK: u32 = 0o077;

/// Creates `dir` and its missing parents, each `0700`.
pub fn create_dir_all(dir: &Path) -> io::Result<()> {
    DirBuilder::new().recursive(true).mode(DIR_MODE).create(dir)
}

/// Open options that create a file `0600`; the caller adds how it opens it.
pub fn options() -> OpenOptions {
    let mut options = OpenOptions::new();
    options.mode(FILE_MODE);
    options
}

/// Creates (or truncates) `path` for writing, as [`File::create`] does, but `0600`.
pub fn create(path: &Path) -> io::Result<File> {
    options().write(true).create(true).truncate(true).open(path)
}

/// Creates `path`, empty and `0600`, unless it exists: for files another library then opens and
/// fills (SQLite), which would create it with its own mode.
pub fn create_private(path: &Path) -> io::Result<()> {
    match options().write(true).create_new(true).open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// Replaces `path` with `bytes` atomically: a temporary file beside it (`0600`), fsynced, renamed
/// over it, and the directory fsynced, so a crash leaves either the old or the new contents, never
/// a mix, and a replaced file survives power loss.
pub fn replace(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push(".tmp");
    let tmp = path.with_file_name(name);
    let mut file = create(&tmp)?;
    io::Write::write_all(&mut file, bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    File::open(dir)?.sync_all()
}

/// The contents of `path`, or `None` when it does not exist.
pub fn read_if_exists(path: &Path) -> io::Result<Option<Vec<u8>>> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// What [`tighten`] changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Tightened {
    /// How many directories and files had group or other permissions.
    pub count: u64,
    /// The first of them, with its mode before.
    pub first: Option<(PathBuf, u32)>,
}

/// Takes the group's and others' permissions away from directory `dir` itself and from each of
/// `owned` and everything under it (directories to `0700`, files to `0600`; a permission is never
/// added). Only those: a data directory may be shared with files that are not sluice's (`.`, say).
/// Symbolic links and what they point at are left alone (a lake directory linked to another disk
/// is the operator's to set); paths that do not exist are skipped.
pub fn tighten(dir: &Path, owned: &[PathBuf]) -> io::Result<Tightened> {
    let mut tightened = Tightened::default();
    tighten_one(dir, &mut tightened, &mut Vec::new())?;
    let mut pending = owned.to_vec();
    while let Some(path) = pending.pop() {
        tighten_one(&path, &mut tightened, &mut pending)?;
    }
    Ok(tightened)
}

/// Tightens `path`, adding a directory's entries to `pending`.
fn tighten_one(path: &Path, tightened: &mut Tightened, pending: &mut Vec<PathBuf>) -> io::Result<()> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        // Never created, or deleted meanwhile (a rotated file, say): nothing to tighten.
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let mode = meta.permissions().mode() & 0o7777;
    let wanted = if meta.is_dir() {
        pending.extend(std::fs::read_dir(path)?.filter_map(Result::ok).map(|entry| entry.path()));
        DIR_MODE
    } else if meta.is_file() {
        FILE_MODE
    } else {
        return Ok(());
    };
    if mode & !wanted != 0 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode & wanted))?;
        tightened.count += 1;
        tightened.first.get_or_insert((path.to_owned(), mode));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn created_directories_and_files_are_private() {
        let dir = tempfile::tempdir().unwrap();
        let nested = dir.path().join("a/b");
        create_dir_all(&nested).unwrap();
        create(&nested.join("f")).unwrap();
        create_private(&nested.join("g")).unwrap();
        std::fs::write(nested.join("g"), "kept").unwrap();
        create_private(&nested.join("g")).unwrap();
        assert_eq!(std::fs::read_to_string(nested.join("g")).unwrap(), "kept", "an existing file is left as it is");
        for (path, expected) in [
            (dir.path().join("a"), DIR_MODE),
            (nested.clone(), DIR_MODE),
            (nested.join("f"), FILE_MODE),
            (nested.join("g"), FILE_MODE),
        ] {
            assert_eq!(mode(&path), expected, "{}", path.display());
        }
    }

    #[test]
    fn tighten_takes_group_and_other_permissions_from_sluices_own_paths_only() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("data");
        std::fs::create_dir_all(root.join("journal")).unwrap();
        std::fs::create_dir_all(root.join("notes")).unwrap();
        std::fs::write(root.join("journal/0.seg"), "x").unwrap();
        std::fs::write(root.join("store.sqlite"), "x").unwrap();
        std::fs::write(root.join("notes/todo.txt"), "x").unwrap();
        std::fs::write(root.join("private"), "x").unwrap();
        let set =
            |path: &Path, mode: u32| std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
        set(&root, 0o755);
        set(&root.join("journal"), 0o775);
        set(&root.join("journal/0.seg"), 0o644);
        set(&root.join("store.sqlite"), 0o666);
        set(&root.join("notes/todo.txt"), 0o644);
        set(&root.join("private"), 0o400);
        std::os::unix::fs::symlink("/etc/hostname", root.join("journal/link")).unwrap();
        let owned: Vec<PathBuf> =
            ["journal", "store.sqlite", "private", "store.sqlite-wal"].iter().map(|name| root.join(name)).collect();

        let tightened = tighten(&root, &owned).unwrap();
        assert_eq!(tightened.count, 4);
        assert_eq!(tightened.first, Some((root.clone(), 0o755)));
        assert_eq!(mode(&root), 0o700);
        assert_eq!(mode(&root.join("journal")), 0o700);
        assert_eq!(mode(&root.join("journal/0.seg")), 0o600);
        assert_eq!(mode(&root.join("store.sqlite")), 0o600);
        assert_eq!(mode(&root.join("private")), 0o400, "tightening never adds a permission");
        assert_eq!(mode(&root.join("notes/todo.txt")), 0o644, "what is not sluice's is left alone");
        assert_eq!(tighten(&root, &owned).unwrap(), Tightened::default(), "a second pass finds nothing");
    }
}
