//! The build context of an image: the files `docker build` would send to the engine, read once,
//! digested, and sent as a tar.
//!
//! berth decides whether an image must be built from a digest of its inputs, so the digest
//! covers exactly what the engine's classic builder would receive. [`read_context`] walks the
//! context folder, applies `.dockerignore` by Docker's own rules ([`DockerIgnore`]) and records
//! each entry's path, mode, size and SHA-256 — no mtimes, owners or inode numbers, so touching a
//! file changes nothing. [`Context::input_digest`] hashes that with the Dockerfile's path, build
//! args, target and platform; [`Context::tar`] streams the same entries to the engine and checks
//! each file against what was read.
//!
//! What is sent, as the docker CLI sends it: every entry under the folder (not the folder
//! itself) that `.dockerignore` does not exclude; an excluded folder's contents only where an
//! exception reaches into it (the folder itself is then not sent); the Dockerfile and
//! `.dockerignore` always, even when ignored; symbolic links as links, never followed; owners
//! as 0:0. The ignore file is `<context>/.dockerignore` only: `<Dockerfile>.dockerignore` is
//! BuildKit's, and berth builds with the classic builder. Where berth differs: sockets are
//! skipped silently (Docker logs and skips them);
//! FIFOs and devices are refused rather than sent; hard links are sent as separate files;
//! extended attributes are not sent; names must be UTF-8.
//!
//! # The input digest, format v1
//!
//! A public contract like the revision hashes: images are tagged with it, so a change to the
//! format rebuilds every image. Change it only by adding a new version (the golden test in this
//! module pins v1). The digest is `sha256:` and the lowercase hex SHA-256 of this text, where
//! `⟨s⟩` is a string as its length in bytes, `:`, and its bytes (`10:Dockerfile`), and each line
//! ends in `\n`:
//!
//! ```text
//! berth-build-input v1
//! dockerfile ⟨path of the Dockerfile in the context⟩
//! target ⟨target⟩                      or  target -      when there is none
//! platform ⟨platform⟩                  or  platform -
//! args ⟨count⟩
//! arg ⟨name⟩ ⟨value⟩                   one per build arg, by name (byte order)
//! entries ⟨count⟩
//! dir ⟨path⟩ ⟨mode⟩                    one per entry, by path (byte order)
//! file ⟨path⟩ ⟨mode⟩ ⟨size⟩ ⟨sha256⟩
//! symlink ⟨path⟩ ⟨mode⟩ ⟨target⟩
//! ```
//!
//! Paths are relative to the context, `/`-separated; a mode is the permission bits with setuid,
//! setgid and sticky, four octal digits (`0644`); a size is decimal bytes; a SHA-256 is 64
//! lowercase hex digits.

mod dockerignore;

pub use dockerignore::{DockerIgnore, IgnoreError};

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use sha2::{Digest, Sha256};

/// The name of the ignore file at the top of a context.
const DOCKERIGNORE: &str = ".dockerignore";
/// The first line of the digested text; a new format is a new version.
const FORMAT: &str = "berth-build-input v1";
/// Permission bits with setuid, setgid and sticky: what a tar header carries.
const MODE_BITS: u32 = 0o7777;
/// Files a hashing thread takes at a time; also the fewest files worth a thread of their own.
const CHUNK: usize = 32;
/// Hashing threads at most, whatever the number of cores: a small file not in the page cache
/// waits on the disk, so more reads in flight than cores is what makes a cold context quick
/// (10,000 files on 2 cores: ~0.5 s with 2 threads, ~0.2 s with 16, no better with 32).
const READS_IN_FLIGHT: usize = 16;

/// One thing sent in a context.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Relative to the context folder, `/`-separated.
    pub path: String,
    /// Permission bits with setuid, setgid and sticky.
    pub mode: u32,
    pub kind: EntryKind,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EntryKind {
    File {
        size: u64,
        sha256: [u8; 32],
    },
    Dir,
    /// A symbolic link, sent as one (not followed).
    Symlink {
        target: String,
    },
}

/// What `docker build` would send from a folder, as read by [`read_context`].
#[derive(Clone, Debug)]
pub struct Context {
    root: PathBuf,
    dockerfile: String,
    /// By path (byte order).
    entries: Vec<Entry>,
}

/// Why a context could not be read or sent; each names the file concerned.
#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    #[error("{}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("{}: {source}", path.display())]
    Ignore { path: PathBuf, source: IgnoreError },
    #[error("{}: the build context must be a folder", path.display())]
    NotAFolder { path: PathBuf },
    #[error("{}: the Dockerfile must be a relative path inside the build context", path.display())]
    DockerfileOutside { path: PathBuf },
    #[error("{}: no such Dockerfile in the build context", path.display())]
    DockerfileMissing { path: PathBuf },
    #[error("{}: the Dockerfile must be a regular file", path.display())]
    DockerfileNotAFile { path: PathBuf },
    #[error("{}: the name is not UTF-8, which berth cannot send", path.display())]
    NotUtf8 { path: PathBuf },
    #[error("{}: a {kind} cannot be sent in a build context; exclude it in .dockerignore", path.display())]
    Unsupported { path: PathBuf, kind: &'static str },
    #[error("{}: changed while the build context was read or sent ({what}); try again", path.display())]
    Changed { path: PathBuf, what: &'static str },
    #[error("writing the build context: {0}")]
    Write(io::Error),
}

/// Reads the context in `dir` as Docker would send it with the Dockerfile at `dockerfile`
/// (relative to `dir`) and the patterns `ignore` (normally [`DockerIgnore::read`] of `dir`).
pub fn read_context(dir: &Path, dockerfile: &Path, ignore: &DockerIgnore) -> Result<Context, ContextError> {
    let meta = fs::metadata(dir).map_err(read_error(dir))?;
    if !meta.is_dir() {
        return Err(ContextError::NotAFolder { path: dir.to_path_buf() });
    }
    let dockerfile = dockerfile_in_context(dir, dockerfile)?;
    let always_sent = [DOCKERIGNORE, dockerfile.as_str()];
    let ignore = ignore.keeping(&always_sent);

    let mut entries = Vec::new();
    // Indices in `entries` of the files still to hash.
    let mut files = Vec::new();
    // Folders to read, each with the patterns that matched it.
    let mut folders: Vec<(String, Option<Vec<bool>>)> = vec![(String::new(), None)];
    while let Some((folder, matched)) = folders.pop() {
        let abs = dir.join(&folder);
        for item in fs::read_dir(&abs).map_err(read_error(&abs))? {
            let item = item.map_err(read_error(&abs))?;
            let name = item.file_name();
            let Some(name) = name.to_str() else { return Err(ContextError::NotUtf8 { path: item.path() }) };
            let path = if folder.is_empty() { name.to_owned() } else { format!("{folder}/{name}") };
            let file_type = item.file_type().map_err(read_error(&item.path()))?;
            let (excluded, matched_here) = ignore.matches_under(&path, matched.as_deref());
            let excluded = excluded && !always_sent.contains(&path.as_str());
            if file_type.is_dir() {
                if excluded {
                    let reaches_in = ignore.may_reinclude_under(&path)
                        || dockerfile.strip_prefix(path.as_str()).is_some_and(|rest| rest.starts_with('/'));
                    if reaches_in {
                        folders.push((path, Some(matched_here)));
                    }
                    continue;
                }
                let meta = item.metadata().map_err(read_error(&item.path()))?;
                entries.push(Entry { path: path.clone(), mode: meta.mode() & MODE_BITS, kind: EntryKind::Dir });
                folders.push((path, Some(matched_here)));
            } else if excluded || file_type.is_socket() {
                // A socket cannot go in a tar; Docker skips it too.
                continue;
            } else if file_type.is_file() {
                files.push(entries.len());
                entries.push(Entry { path, mode: 0, kind: EntryKind::File { size: 0, sha256: [0; 32] } });
            } else if file_type.is_symlink() {
                let abs = item.path();
                let meta = fs::symlink_metadata(&abs).map_err(read_error(&abs))?;
                let target = fs::read_link(&abs).map_err(read_error(&abs))?;
                let Some(target) = target.to_str() else { return Err(ContextError::NotUtf8 { path: abs }) };
                let kind = EntryKind::Symlink { target: target.to_owned() };
                entries.push(Entry { path, mode: meta.mode() & MODE_BITS, kind });
            } else {
                let kind = if file_type.is_fifo() { "named pipe" } else { "device" };
                return Err(ContextError::Unsupported { path: item.path(), kind });
            }
        }
    }
    hash_files(dir, &mut entries, &files)?;
    entries.sort_unstable_by(|a, b| a.path.cmp(&b.path));

    let path = dir.join(&dockerfile);
    match entries.binary_search_by(|e| e.path.as_str().cmp(&dockerfile)) {
        Err(_) => return Err(ContextError::DockerfileMissing { path }),
        Ok(i) if !matches!(entries[i].kind, EntryKind::File { .. }) => {
            return Err(ContextError::DockerfileNotAFile { path });
        }
        Ok(_) => {}
    }
    Ok(Context { root: dir.to_path_buf(), dockerfile, entries })
}

/// The Dockerfile's path in the context, cleaned and `/`-separated.
fn dockerfile_in_context(dir: &Path, dockerfile: &Path) -> Result<String, ContextError> {
    let outside = || ContextError::DockerfileOutside { path: dir.join(dockerfile) };
    let Some(text) = dockerfile.to_str() else { return Err(ContextError::NotUtf8 { path: dir.join(dockerfile) }) };
    let cleaned = dockerignore::clean(text);
    if dockerfile.is_absolute() || cleaned == "." || cleaned == ".." || cleaned.starts_with("../") {
        return Err(outside());
    }
    Ok(cleaned)
}

fn read_error(path: &Path) -> impl Fn(io::Error) -> ContextError + '_ {
    move |source| ContextError::Read { path: path.to_path_buf(), source }
}

/// Fills in mode, size and SHA-256 of the files at `files` (indices in `entries`), on several
/// threads when there are many: a context of small files is bound by the disk and syscalls, not
/// by hashing.
fn hash_files(root: &Path, entries: &mut [Entry], files: &[usize]) -> Result<(), ContextError> {
    let threads = files.len().div_ceil(CHUNK).clamp(1, READS_IN_FLIGHT);
    let next = AtomicUsize::new(0);
    let shared: &[Entry] = entries;
    let work = || {
        let mut buf = vec![0; 64 * 1024];
        let mut done = Vec::new();
        loop {
            let start = next.fetch_add(CHUNK, Ordering::Relaxed);
            if start >= files.len() {
                return done;
            }
            for &i in &files[start..files.len().min(start + CHUNK)] {
                done.push((i, hash_file(&root.join(&shared[i].path), &mut buf)));
            }
        }
    };
    let hashed: Vec<_> = std::thread::scope(|scope| {
        let helpers: Vec<_> = (1..threads).map(|_| scope.spawn(work)).collect();
        let mut hashed = work();
        for helper in helpers {
            hashed.extend(helper.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)));
        }
        hashed
    });
    // The first error by path, so the same broken context always reports the same file.
    let mut first_error: Option<(usize, ContextError)> = None;
    for (i, result) in hashed {
        match result {
            Ok((mode, size, sha256)) => {
                entries[i].mode = mode;
                entries[i].kind = EntryKind::File { size, sha256 };
            }
            Err(e) => {
                if first_error.as_ref().is_none_or(|(j, _)| entries[i].path < entries[*j].path) {
                    first_error = Some((i, e));
                }
            }
        }
    }
    match first_error {
        Some((_, e)) => Err(e),
        None => Ok(()),
    }
}

/// Mode, size and SHA-256 of the regular file at `path`.
fn hash_file(path: &Path, buf: &mut [u8]) -> Result<(u32, u64, [u8; 32]), ContextError> {
    let (mut file, meta) = open_regular(path)?;
    let size = meta.len();
    let mut hasher = Sha256::new();
    let mut left = size;
    while left > 0 {
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = file.read(&mut buf[..want]).map_err(read_error(path))?;
        if n == 0 {
            return Err(ContextError::Changed { path: path.to_path_buf(), what: "shorter than its size" });
        }
        hasher.update(&buf[..n]);
        left -= n as u64;
    }
    Ok((meta.mode() & MODE_BITS, size, hasher.finalize().into()))
}

/// Opens `path` for reading without following a symbolic link, and checks that it is still a
/// regular file.
fn open_regular(path: &Path) -> Result<(File, fs::Metadata), ContextError> {
    let file = OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW).open(path).map_err(read_error(path))?;
    let meta = file.metadata().map_err(read_error(path))?;
    if !meta.is_file() {
        return Err(ContextError::Changed { path: path.to_path_buf(), what: "no longer a regular file" });
    }
    Ok((file, meta))
}

impl Context {
    /// The entries sent, by path.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The folder the context was read from.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The Dockerfile's path in the context, `/`-separated: what the engine's `dockerfile`
    /// parameter and [`Self::input_digest`] take.
    pub fn dockerfile(&self) -> &str {
        &self.dockerfile
    }

    /// `sha256:<64 hex>` over the context and the build's parameters (format v1, in the module
    /// documentation). `dockerfile` is normally [`Self::dockerfile`].
    pub fn input_digest(
        &self,
        dockerfile: &str,
        build_args: &BTreeMap<String, String>,
        target: Option<&str>,
        platform: Option<&str>,
    ) -> String {
        let mut hasher = Sha256::new();
        self.write_input(&mut hasher, dockerfile, build_args, target, platform)
            .expect("hashing does not fail to write");
        format!("sha256:{}", hex::encode(hasher.finalize()))
    }

    /// The text [`Self::input_digest`] hashes.
    fn write_input(
        &self,
        out: &mut impl Write,
        dockerfile: &str,
        build_args: &BTreeMap<String, String>,
        target: Option<&str>,
        platform: Option<&str>,
    ) -> io::Result<()> {
        writeln!(out, "{FORMAT}")?;
        writeln!(out, "dockerfile {}", Field(dockerfile))?;
        writeln!(out, "target {}", OptionalField(target))?;
        writeln!(out, "platform {}", OptionalField(platform))?;
        writeln!(out, "args {}", build_args.len())?;
        for (name, value) in build_args {
            writeln!(out, "arg {} {}", Field(name), Field(value))?;
        }
        writeln!(out, "entries {}", self.entries.len())?;
        for e in &self.entries {
            let (path, mode) = (Field(&e.path), e.mode);
            match &e.kind {
                EntryKind::Dir => writeln!(out, "dir {path} {mode:04o}")?,
                EntryKind::File { size, sha256 } => {
                    writeln!(out, "file {path} {mode:04o} {size} {}", hex::encode(sha256))?;
                }
                EntryKind::Symlink { target } => writeln!(out, "symlink {path} {mode:04o} {}", Field(target))?,
            }
        }
        Ok(())
    }

    /// Writes the context as an uncompressed tar to `out`, the body of the engine's `/build`:
    /// the entries in path order, owners 0:0 without names, mtimes 0, so the same context is
    /// the same bytes. One file is in memory at a time, in pieces. A file that no longer has
    /// the size and content it was read with fails the whole tar (`Changed`): what is sent is
    /// what was digested. On an error, what was written so far is no valid tar.
    pub fn tar<W: Write>(&self, out: W) -> Result<W, ContextError> {
        let mut tar = tar::Builder::new(out);
        for e in &self.entries {
            let mut header = tar::Header::new_gnu();
            header.set_mode(e.mode);
            header.set_uid(0);
            header.set_gid(0);
            header.set_mtime(0);
            header.set_size(0);
            match &e.kind {
                EntryKind::Dir => {
                    header.set_entry_type(tar::EntryType::Directory);
                    tar.append_data(&mut header, format!("{}/", e.path), io::empty()).map_err(ContextError::Write)?;
                }
                EntryKind::Symlink { target } => {
                    header.set_entry_type(tar::EntryType::Symlink);
                    tar.append_link(&mut header, &e.path, target).map_err(ContextError::Write)?;
                }
                EntryKind::File { size, sha256 } => {
                    let path = self.root.join(&e.path);
                    let (file, meta) = open_regular(&path)?;
                    if meta.len() != *size {
                        return Err(ContextError::Changed { path, what: "its size differs" });
                    }
                    header.set_entry_type(tar::EntryType::Regular);
                    header.set_size(*size);
                    let mut reader = CheckedFile { file, path, left: *size, hasher: Sha256::new(), error: None };
                    if let Err(e) = tar.append_data(&mut header, &e.path, &mut reader) {
                        return Err(reader.error.take().unwrap_or(ContextError::Write(e)));
                    }
                    if <[u8; 32]>::from(reader.hasher.finalize()) != *sha256 {
                        return Err(ContextError::Changed { path: reader.path, what: "its content differs" });
                    }
                }
            }
        }
        tar.into_inner().map_err(ContextError::Write)
    }
}

/// A file's content for the tar: exactly its recorded size, hashed on the way.
struct CheckedFile {
    file: File,
    path: PathBuf,
    left: u64,
    hasher: Sha256,
    /// Why reading failed, for the caller (the tar builder only passes an `io::Error` on).
    error: Option<ContextError>,
}

impl Read for CheckedFile {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let want = buf.len().min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = match self.file.read(&mut buf[..want]) {
            Ok(0) => {
                self.error = Some(ContextError::Changed { path: self.path.clone(), what: "shorter than its size" });
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            Ok(n) => n,
            Err(e) => {
                let kind = e.kind();
                self.error = Some(ContextError::Read { path: self.path.clone(), source: e });
                return Err(kind.into());
            }
        };
        self.hasher.update(&buf[..n]);
        self.left -= n as u64;
        Ok(n)
    }
}

/// A string in the digested text: its length in bytes, `:`, itself.
struct Field<'a>(&'a str);

impl fmt::Display for Field<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.0.len(), self.0)
    }
}

/// An optional string in the digested text: `-` when absent.
struct OptionalField<'a>(Option<&'a str>);

impl fmt::Display for OptionalField<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(s) => Field(s).fmt(f),
            None => f.write_str("-"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{PermissionsExt, symlink};
    use std::time::{Duration, SystemTime};

    /// A context folder with these files (parents made as needed), `"0644"` modes.
    fn folder(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("a temporary folder");
        for (path, content) in files {
            write(dir.path(), path, content);
        }
        dir
    }

    fn write(dir: &Path, path: &str, content: &str) {
        let path = dir.join(path);
        fs::create_dir_all(path.parent().expect("a parent")).expect("parents");
        fs::write(&path, content).expect("a file");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).expect("a mode");
    }

    fn read(dir: &Path, dockerfile: &str) -> Context {
        let ignore = DockerIgnore::read(dir).expect("a readable .dockerignore");
        read_context(dir, Path::new(dockerfile), &ignore).expect("a readable context")
    }

    fn paths(ctx: &Context) -> Vec<&str> {
        ctx.entries().iter().map(|e| e.path.as_str()).collect()
    }

    fn digest(ctx: &Context) -> String {
        ctx.input_digest(ctx.dockerfile(), &BTreeMap::new(), None, None)
    }

    // Contexts of moby's integration-cli build tests (`TestBuildDockerignore*`): the files
    // sent. Those tests check the built image, from which the daemon removes an ignored
    // Dockerfile and .dockerignore after reading them; the CLI sends them.

    #[test]
    fn dockerignore_test_build_dockerignore() {
        let dir = folder(&[
            ("Dockerfile", "FROM busybox"),
            ("Makefile", "all:"),
            (".git/HEAD", "ref: foo"),
            ("src/x.go", "package main"),
            ("src/_vendor/v.go", "package main"),
            ("src/_vendor/v.cc", "package main"),
            ("src/v.cc", "package main"),
            ("v.cc", "package main"),
            ("dir/foo", ""),
            (".gitignore", ""),
            ("README.md", "readme"),
            (".dockerignore", "\n.git\npkg\n.gitignore\nsrc/_vendor\n*.md\n**/*.cc\ndir"),
        ]);
        assert_eq!(
            paths(&read(dir.path(), "Dockerfile")),
            [".dockerignore", "Dockerfile", "Makefile", "src", "src/x.go"]
        );
    }

    #[test]
    fn dockerignore_test_clean_paths() {
        let dir = folder(&[
            ("Dockerfile", ""),
            ("foo", "foo"),
            ("foo2", "foo2"),
            ("dir1/foo", "foo in dir1"),
            (".dockerignore", "./foo\ndir1//foo\n./dir1/../foo2"),
        ]);
        assert_eq!(paths(&read(dir.path(), "Dockerfile")), [".dockerignore", "Dockerfile", "dir1"]);
    }

    #[test]
    fn dockerignore_test_exceptions() {
        let dir = folder(&[
            ("Dockerfile", ""),
            ("Makefile", "all:"),
            (".git/HEAD", "ref: foo"),
            ("src/x.go", "package main"),
            ("src/_vendor/v.go", "package main"),
            ("dir/foo", ""),
            ("dir/foo1", ""),
            ("dir/dir/f1", ""),
            ("dir/dir/foo", ""),
            ("dir/e", ""),
            ("dir/e-dir/foo", ""),
            (".gitignore", ""),
            ("README.md", "readme"),
            ("dir/a.cc", "hello"),
            (
                ".dockerignore",
                "\n.git\npkg\n.gitignore\nsrc/_vendor\n*.md\ndir\n!dir/e*\n!dir/dir/foo\n**/*.cc\n!**/*.cc",
            ),
        ]);
        // `dir` and `dir/dir` are walked for the exceptions but not sent themselves.
        assert_eq!(
            paths(&read(dir.path(), "Dockerfile")),
            [
                ".dockerignore",
                "Dockerfile",
                "Makefile",
                "dir/a.cc",
                "dir/dir/foo",
                "dir/e",
                "dir/e-dir",
                "dir/e-dir/foo",
                "src",
                "src/x.go",
            ]
        );
    }

    #[test]
    fn dockerignore_test_ignoring_the_dockerfile_or_itself() {
        for ignored in ["Dockerfile\n", "./Dockerfile\n", ".dockerignore\n", "*\n", "**\n", "**/\n", "**/**\n"] {
            let dir =
                folder(&[("Dockerfile", "FROM busybox"), ("file1", ""), ("dir/file1", ""), (".dockerignore", ignored)]);
            let ctx = read(dir.path(), "Dockerfile");
            let sent = paths(&ctx);
            assert!(sent.starts_with(&[".dockerignore", "Dockerfile"]), "{ignored:?}: {sent:?}");
        }
        // TestBuildDockerignoringWholeDir and TestBuildDockerignoringWildTopDir: nothing else.
        for everything in ["*", "**", "**/", "**/**"] {
            let dir = folder(&[("Dockerfile", ""), ("file1", ""), ("dir/file1", ""), (".dockerignore", everything)]);
            assert_eq!(paths(&read(dir.path(), "Dockerfile")), [".dockerignore", "Dockerfile"], "{everything:?}");
        }
        // TestBuildDockerignoringRenamedDockerfile.
        for ignored in ["MyDockerfile\n", "./MyDockerfile\n"] {
            let dir = folder(&[
                ("Dockerfile", "Should not use me"),
                ("MyDockerfile", "FROM busybox"),
                (".dockerignore", ignored),
            ]);
            assert_eq!(paths(&read(dir.path(), "MyDockerfile")), [".dockerignore", "Dockerfile", "MyDockerfile"]);
        }
    }

    #[test]
    fn dockerignore_test_only_dotfiles() {
        let dir = folder(&[("Dockerfile", ""), ("Makefile", "all:"), (".gitignore", ""), (".dockerignore", ".*")]);
        assert_eq!(paths(&read(dir.path(), "Dockerfile")), [".dockerignore", "Dockerfile", "Makefile"]);
    }

    #[test]
    fn dockerignore_test_bad_exclusion() {
        let dir = folder(&[("Dockerfile", ""), ("Makefile", "all:"), (".dockerignore", "!\n")]);
        let e = DockerIgnore::read(dir.path()).unwrap_err();
        assert!(matches!(&e, ContextError::Ignore { source, .. } if source.line == 1), "{e:?}");
        assert!(e.to_string().ends_with(".dockerignore: line 1: \"!\": illegal exclusion pattern: \"!\""), "{e}");
    }

    #[test]
    fn dockerignore_test_wild_dirs() {
        let ignore = "\n**/file0\n**/*file1\n**/dir1/file2\ndir1/**/file4\n**/dir2/file5\n**/dir1/dir2/file6\n\
                      dir1/dir3/**\n**/dir4/**\n**/file?A\n**/file\\?B\n**/dir5/file.\n";
        let mut files = vec![("Dockerfile", ""), (".dockerignore", ignore)];
        for f in [
            "dir1/file0",
            "dir1/dir2/file0",
            "file1",
            "dir1/file1",
            "dir1/dir2/file1",
            "dir1/file2",
            "dir1/dir2/file2",
            "dir1/dir2/file4",
            "dir1/dir2/file5",
            "dir1/dir2/file6",
            "dir1/dir3/file7",
            "dir1/dir3/file8",
            "dir1/dir4/file9",
            "dir1/dir5/fileAA",
            "dir1/dir5/fileAB",
            "dir1/dir5/fileB",
        ] {
            files.push((f, ""));
        }
        let dir = folder(&files);
        assert_eq!(
            paths(&read(dir.path(), "Dockerfile")),
            [
                ".dockerignore",
                "Dockerfile",
                "dir1",
                "dir1/dir2",
                "dir1/dir2/file2",
                "dir1/dir3",
                "dir1/dir4",
                "dir1/dir5",
                "dir1/dir5/fileAB",
                "dir1/dir5/fileB",
            ]
        );
    }

    #[test]
    fn a_dockerfile_in_an_ignored_folder_is_sent_alone() {
        let dir =
            folder(&[("docker/Dockerfile", ""), ("docker/other", ""), ("app", ""), (".dockerignore", "docker\n")]);
        let ctx = read(dir.path(), "./docker//Dockerfile");
        assert_eq!(ctx.dockerfile(), "docker/Dockerfile");
        assert_eq!(paths(&ctx), [".dockerignore", "app", "docker/Dockerfile"]);
    }

    #[test]
    fn the_dockerfile_must_be_a_file_inside_the_context() {
        let dir = folder(&[("Dockerfile", ""), ("sub/file", "")]);
        let ignore = DockerIgnore::default();
        let err = |dockerfile: &str| read_context(dir.path(), Path::new(dockerfile), &ignore).unwrap_err();
        assert!(matches!(err("../Dockerfile"), ContextError::DockerfileOutside { .. }));
        assert!(matches!(err("/etc/hostname"), ContextError::DockerfileOutside { .. }));
        assert!(matches!(err("Other"), ContextError::DockerfileMissing { .. }));
        assert!(matches!(err("sub"), ContextError::DockerfileNotAFile { .. }));
        let e = err("Other");
        assert_eq!(
            e.to_string(),
            format!("{}: no such Dockerfile in the build context", dir.path().join("Other").display())
        );
    }

    #[test]
    fn entries_carry_mode_size_content_and_link_targets() {
        let dir = folder(&[("Dockerfile", "FROM scratch\n"), ("bin/run", "#!/bin/sh\n")]);
        fs::set_permissions(dir.path().join("bin/run"), fs::Permissions::from_mode(0o4755)).expect("a mode");
        fs::set_permissions(dir.path().join("bin"), fs::Permissions::from_mode(0o750)).expect("a mode");
        symlink("../../outside/of/the/context", dir.path().join("bin/link")).expect("a link");
        let ctx = read(dir.path(), "Dockerfile");
        let sha = |s: &str| <[u8; 32]>::from(Sha256::digest(s));
        assert_eq!(
            ctx.entries(),
            [
                Entry {
                    path: "Dockerfile".into(),
                    mode: 0o644,
                    kind: EntryKind::File { size: 13, sha256: sha("FROM scratch\n") }
                },
                Entry { path: "bin".into(), mode: 0o750, kind: EntryKind::Dir },
                Entry {
                    path: "bin/link".into(),
                    mode: 0o777,
                    kind: EntryKind::Symlink { target: "../../outside/of/the/context".into() }
                },
                Entry {
                    path: "bin/run".into(),
                    mode: 0o4755,
                    kind: EntryKind::File { size: 10, sha256: sha("#!/bin/sh\n") }
                },
            ]
        );
    }

    #[test]
    fn entries_are_in_path_order_across_folders_and_threads() {
        let mut files = vec![("Dockerfile".to_owned(), String::new())];
        for i in 0..300 {
            files.push((format!("d{}/f{i}", i % 7), format!("content {i}")));
            files.push((format!("d{}.txt", i % 5), String::new()));
        }
        let refs: Vec<(&str, &str)> = files.iter().map(|(p, c)| (p.as_str(), c.as_str())).collect();
        let dir = folder(&refs);
        let ctx = read(dir.path(), "Dockerfile");
        let got = paths(&ctx);
        let mut sorted = got.clone();
        sorted.sort_unstable();
        assert_eq!(got, sorted);
        assert_eq!(got.len(), 1 + 300 + 7 + 5);
        let sha = |s: &str| <[u8; 32]>::from(Sha256::digest(s));
        for e in ctx.entries() {
            if let (Some(n), EntryKind::File { sha256, .. }) = (e.path.rsplit_once("/f").map(|(_, n)| n), &e.kind) {
                assert_eq!(*sha256, sha(&format!("content {n}")), "{}", e.path);
            }
        }
    }

    #[test]
    fn excluded_files_do_not_change_the_digest_and_included_ones_do() {
        let dir = folder(&[
            ("Dockerfile", "FROM scratch"),
            ("app.py", "print(1)"),
            ("debug.log", "a"),
            (".dockerignore", "*.log\n"),
        ]);
        let before = digest(&read(dir.path(), "Dockerfile"));
        write(dir.path(), "debug.log", "b");
        write(dir.path(), "other.log", "new");
        assert_eq!(digest(&read(dir.path(), "Dockerfile")), before);
        write(dir.path(), "app.py", "print(2)");
        let changed = digest(&read(dir.path(), "Dockerfile"));
        assert_ne!(changed, before);
        write(dir.path(), "new.py", "");
        assert_ne!(digest(&read(dir.path(), "Dockerfile")), changed);
    }

    #[test]
    fn touching_a_file_without_changing_it_changes_nothing() {
        let dir = folder(&[("Dockerfile", "FROM scratch"), ("src/app.py", "print(1)")]);
        let before = read(dir.path(), "Dockerfile");
        let touched = SystemTime::now() + Duration::from_secs(3600);
        for path in ["Dockerfile", "src/app.py", "src"] {
            File::open(dir.path().join(path)).and_then(|f| f.set_modified(touched)).expect("touched");
        }
        // Rewriting the same bytes makes a new mtime and ctime too.
        write(dir.path(), "src/app.py", "print(1)");
        let after = read(dir.path(), "Dockerfile");
        assert_eq!(after.entries(), before.entries());
        assert_eq!(digest(&after), digest(&before));
    }

    #[test]
    fn build_args_target_platform_and_dockerfile_change_the_digest() {
        let dir = folder(&[("Dockerfile", "FROM scratch"), ("Other.Dockerfile", "FROM scratch")]);
        let ctx = read(dir.path(), "Dockerfile");
        let args = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
        };
        let none = args(&[]);
        let digests = [
            ctx.input_digest("Dockerfile", &none, None, None),
            ctx.input_digest("Other.Dockerfile", &none, None, None),
            ctx.input_digest("Dockerfile", &args(&[("V", "1")]), None, None),
            ctx.input_digest("Dockerfile", &args(&[("V", "2")]), None, None),
            ctx.input_digest("Dockerfile", &args(&[("V", "1"), ("W", "")]), None, None),
            // The length prefixes keep these apart: `V=1 W=` is not `V="1 1:W 0:"`.
            ctx.input_digest("Dockerfile", &args(&[("V", "1 1:W 0:")]), None, None),
            ctx.input_digest("Dockerfile", &none, Some("build"), None),
            ctx.input_digest("Dockerfile", &none, Some("test"), None),
            ctx.input_digest("Dockerfile", &none, Some(""), None),
            ctx.input_digest("Dockerfile", &none, None, Some("linux/amd64")),
            ctx.input_digest("Dockerfile", &none, None, Some("linux/arm64")),
        ];
        for (i, a) in digests.iter().enumerate() {
            assert!(a.starts_with("sha256:") && a.len() == 7 + 64, "{a}");
            for b in &digests[i + 1..] {
                assert_ne!(a, b);
            }
        }
        assert_eq!(ctx.input_digest("Dockerfile", &args(&[("V", "1")]), None, None), digests[2]);
    }

    #[test]
    fn a_mode_change_changes_the_digest() {
        let dir = folder(&[("Dockerfile", "FROM scratch"), ("run.sh", "echo hi"), ("sub/x", "")]);
        let before = digest(&read(dir.path(), "Dockerfile"));
        fs::set_permissions(dir.path().join("run.sh"), fs::Permissions::from_mode(0o755)).expect("a mode");
        let executable = digest(&read(dir.path(), "Dockerfile"));
        assert_ne!(executable, before);
        fs::set_permissions(dir.path().join("sub"), fs::Permissions::from_mode(0o700)).expect("a mode");
        assert_ne!(digest(&read(dir.path(), "Dockerfile")), executable);
    }

    #[test]
    fn a_symlink_is_recorded_by_its_target_and_not_followed() {
        let dir = folder(&[("Dockerfile", "FROM scratch"), ("a", "one"), ("b", "two")]);
        symlink("a", dir.path().join("link")).expect("a link");
        let to_a = digest(&read(dir.path(), "Dockerfile"));
        write(dir.path(), "a", "changed");
        // The link's own entry is the same; only `a` changed.
        let ctx = read(dir.path(), "Dockerfile");
        assert!(ctx.entries().contains(&Entry {
            path: "link".into(),
            mode: 0o777,
            kind: EntryKind::Symlink { target: "a".into() }
        }));
        fs::remove_file(dir.path().join("link")).expect("removed");
        symlink("b", dir.path().join("link")).expect("a link");
        let to_b = digest(&read(dir.path(), "Dockerfile"));
        assert_ne!(to_a, to_b);
        // A dangling link is sent as it is.
        symlink("nowhere", dir.path().join("dangling")).expect("a link");
        read(dir.path(), "Dockerfile");
    }

    /// The format, pinned: a change here changes every image tag berth has made.
    #[test]
    fn golden_input_digest_v1() {
        let sha = |s: &str| <[u8; 32]>::from(Sha256::digest(s));
        let ctx = Context {
            root: PathBuf::from("/nowhere"),
            dockerfile: "Dockerfile".into(),
            entries: vec![
                Entry {
                    path: ".dockerignore".into(),
                    mode: 0o644,
                    kind: EntryKind::File { size: 6, sha256: sha("*.log\n") },
                },
                Entry {
                    path: "Dockerfile".into(),
                    mode: 0o644,
                    kind: EntryKind::File { size: 13, sha256: sha("FROM scratch\n") },
                },
                Entry { path: "bin".into(), mode: 0o755, kind: EntryKind::Dir },
                Entry { path: "bin/run".into(), mode: 0o4755, kind: EntryKind::File { size: 0, sha256: sha("") } },
                Entry { path: "current".into(), mode: 0o777, kind: EntryKind::Symlink { target: "bin/run".into() } },
            ],
        };
        let args: BTreeMap<String, String> =
            [("VERSION", "1.2"), ("EMPTY", "")].iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let mut text = Vec::new();
        ctx.write_input(&mut text, "Dockerfile", &args, Some("release"), None).expect("written");
        assert_eq!(
            String::from_utf8(text).expect("UTF-8"),
            "berth-build-input v1\n\
             dockerfile 10:Dockerfile\n\
             target 7:release\n\
             platform -\n\
             args 2\n\
             arg 5:EMPTY 0:\n\
             arg 7:VERSION 3:1.2\n\
             entries 5\n\
             file 13:.dockerignore 0644 6 318d9a16533732a69cda7bb7b174ee392fdd15be3d72a114cd8f2d51f3eab510\n\
             file 10:Dockerfile 0644 13 bb57c7da220a8753d7bdabac0d3afdb6efa742e4c736c5bc93ab40dfd5e23b9b\n\
             dir 3:bin 0755\n\
             file 7:bin/run 4755 0 e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\n\
             symlink 7:current 0777 7:bin/run\n"
        );
        assert_eq!(
            ctx.input_digest("Dockerfile", &args, Some("release"), None),
            "sha256:ff502a741c687c044ac266a6061ee775ad3d3204803d1217d9798ccab8da78a4"
        );
    }

    /// The tar, read back: what it holds, and nothing of the machine it was made on.
    fn tar_listing(bytes: &[u8]) -> Vec<Entry> {
        let mut archive = tar::Archive::new(bytes);
        let mut listed = Vec::new();
        for entry in archive.entries().expect("a tar") {
            let mut entry = entry.expect("an entry");
            let header = entry.header().clone();
            assert_eq!((header.uid().ok(), header.gid().ok(), header.mtime().ok()), (Some(0), Some(0), Some(0)));
            assert_eq!(header.username_bytes().unwrap_or_default(), b"");
            assert_eq!(header.groupname_bytes().unwrap_or_default(), b"");
            let path = entry.path().expect("a path").to_str().expect("UTF-8").trim_end_matches('/').to_owned();
            let mode = header.mode().expect("a mode");
            let kind = match header.entry_type() {
                tar::EntryType::Directory => EntryKind::Dir,
                tar::EntryType::Symlink => {
                    let target = entry.link_name().expect("a link").expect("a target");
                    EntryKind::Symlink { target: target.to_str().expect("UTF-8").to_owned() }
                }
                tar::EntryType::Regular => {
                    let mut content = Vec::new();
                    entry.read_to_end(&mut content).expect("content");
                    EntryKind::File { size: content.len() as u64, sha256: Sha256::digest(&content).into() }
                }
                other => panic!("{path}: unexpected {other:?}"),
            };
            listed.push(Entry { path, mode, kind });
        }
        listed
    }

    #[test]
    fn the_tar_holds_exactly_what_the_digest_covers() {
        let long = format!("{}/{}", "deep".repeat(30), "name".repeat(30));
        let dir = folder(&[
            ("Dockerfile", "FROM scratch\nCOPY . /\n"),
            ("app/main.py", &"print('hello')\n".repeat(10_000)),
            ("app/empty", ""),
            ("ignored.log", "x"),
            (".dockerignore", "*.log\n"),
            (&long, "long path"),
        ]);
        fs::set_permissions(dir.path().join("app/main.py"), fs::Permissions::from_mode(0o755)).expect("a mode");
        symlink("t".repeat(150), dir.path().join("app/long-link")).expect("a link");
        let ctx = read(dir.path(), "Dockerfile");
        let bytes = ctx.tar(Vec::new()).expect("a tar");
        assert_eq!(tar_listing(&bytes), ctx.entries());
        assert_eq!(ctx.tar(Vec::new()).expect("a tar"), bytes, "the same context is the same bytes");
    }

    #[test]
    fn a_file_changed_after_reading_fails_the_tar() {
        let dir = folder(&[("Dockerfile", "FROM scratch"), ("app.py", "print(1)")]);
        let ctx = read(dir.path(), "Dockerfile");
        write(dir.path(), "app.py", "print(2)");
        let e = ctx.tar(Vec::new()).unwrap_err();
        assert!(matches!(&e, ContextError::Changed { path, .. } if path.ends_with("app.py")), "{e:?}");
        write(dir.path(), "app.py", "print(10)");
        assert!(matches!(ctx.tar(Vec::new()), Err(ContextError::Changed { .. })));
    }

    #[test]
    fn what_cannot_be_read_or_sent_is_an_error_naming_it() {
        let dir = folder(&[("Dockerfile", "FROM scratch"), ("secret", "s")]);
        fs::set_permissions(dir.path().join("secret"), fs::Permissions::from_mode(0o000)).expect("a mode");
        let readable_anyway = File::open(dir.path().join("secret")).is_ok();
        match read_context(dir.path(), Path::new("Dockerfile"), &DockerIgnore::default()) {
            Err(ContextError::Read { path, .. }) => assert_eq!(path, dir.path().join("secret")),
            // Root reads a file of mode 0000, as Docker run by root does.
            Ok(ctx) if readable_anyway => assert!(paths(&ctx).contains(&"secret")),
            other => panic!("{other:?}"),
        }
        // A link where a regular file was expected is not followed but refused.
        symlink("Dockerfile", dir.path().join("link")).expect("a link");
        let e = hash_file(&dir.path().join("link"), &mut [0; 16]).unwrap_err();
        assert!(matches!(&e, ContextError::Read { path, .. } if path.ends_with("link")), "{e:?}");

        let dir = folder(&[("Dockerfile", "FROM scratch")]);
        let fifo = dir.path().join("pipe");
        let c = std::ffi::CString::new(fifo.to_str().expect("UTF-8")).expect("no NUL");
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
        let e = read_context(dir.path(), Path::new("Dockerfile"), &DockerIgnore::default()).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("{}: a named pipe cannot be sent in a build context; exclude it in .dockerignore", fifo.display())
        );
        // Excluded, it is not looked at.
        read_context(dir.path(), Path::new("Dockerfile"), &DockerIgnore::from_patterns(&["pipe"]).expect("patterns"))
            .expect("a context without the pipe");
    }

    #[test]
    fn the_context_must_be_a_folder() {
        let dir = folder(&[("Dockerfile", "")]);
        let e = read_context(&dir.path().join("Dockerfile"), Path::new("Dockerfile"), &DockerIgnore::default())
            .unwrap_err();
        assert!(matches!(e, ContextError::NotAFolder { .. }), "{e:?}");
        let e =
            read_context(&dir.path().join("missing"), Path::new("Dockerfile"), &DockerIgnore::default()).unwrap_err();
        assert!(matches!(e, ContextError::Read { .. }), "{e:?}");
    }
}
