//! Git workspaces: a fresh checkout of the task's `target.repo` at `target.ref` for
//! the program to work in, and the diff of what it changed.
//!
//! Git runs as the worker (outside the sandbox) with a controlled environment: no
//! system or global configuration, no prompts, only the `file`, `git`, `http`,
//! `https` and `ssh` transports, and every client-supplied string after `--` or in a
//! position where it cannot be read as an option. Every git command runs under the
//! task's deadline and cancellation, and credentials in the git base never reach a
//! command line or an environment: a credential helper reads them from a 0600
//! file of the worker's.

use std::ffi::OsStr;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The time a task has left and its cancellation: git obeys both.
#[derive(Debug, Clone, Default)]
pub struct Budget {
    pub deadline: Option<Instant>,
    pub cancel: CancellationToken,
}

/// What [`capture_diff`] kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiffCapture {
    pub bytes: u64,
    /// The diff was longer than the limit and was cut there.
    pub truncated: bool,
}

/// How much of git's stderr goes into an error.
const STDERR_SNIPPET_BYTES: usize = 2000;
const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";
/// The configuration `git init` writes; restored before git runs in a workspace the
/// program had access to (see [`capture_diff`]).
const PLAIN_CONFIG: &str = "[core]\n\
    \trepositoryformatversion = 0\n\
    \tfilemode = true\n\
    \tbare = false\n\
    \tlogallrefupdates = true\n";
/// Variables passed through to git for fetching over a proxy or with custom CAs.
const PASSED_VARS: &[&str] = &[
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "all_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "ALL_PROXY",
    "GIT_SSL_CAINFO",
    "GIT_SSL_CAPATH",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
];

/// A checked-out workspace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workspace {
    pub dir: PathBuf,
    /// The commit checked out by [`prepare`]; diffs are taken against it.
    pub base_commit: String,
}

#[derive(Debug, thiserror::Error)]
pub enum WorkspaceError {
    #[error("invalid {what} {value:?}: {why}")]
    Invalid {
        what: &'static str,
        value: String,
        why: String,
    },
    #[error("workspace directory {} exists and is not empty", .0.display())]
    NotEmpty(PathBuf),
    #[error("cannot fetch {ref_name:?} of {repo:?} from {git_base}: {stderr}")]
    Fetch {
        git_base: String,
        repo: String,
        ref_name: String,
        stderr: String,
    },
    #[error("git {command} failed ({status}): {stderr}")]
    Git {
        command: String,
        status: String,
        stderr: String,
    },
    #[error("the workspace's .git was replaced or removed ({})", .0.display())]
    Tampered(PathBuf),
    #[error("git {0} ran out of the task's time budget and was killed")]
    DeadlineExceeded(String),
    #[error("git {0} was stopped: the task was cancelled")]
    Cancelled(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
}

impl WorkspaceError {
    fn io(context: impl Into<String>, source: io::Error) -> Self {
        WorkspaceError::Io {
            context: context.into(),
            source,
        }
    }
}

/// Clones `<git_base>/<repo>` at `ref_name` into `dir` (which must not exist or be
/// empty) and returns the workspace with the checked-out commit.
///
/// `git_base` is a directory of bare repositories (`/srv/git` holding
/// `/srv/git/myorg/service.git`) or a base URL; `<git_base>/<repo>.git` is tried
/// first, then `<git_base>/<repo>`. Only the one commit is fetched (`--depth=1`).
/// On failure nothing is left in `dir`.
pub async fn prepare(
    git_base: &str,
    repo: &str,
    ref_name: &str,
    dir: &Path,
    budget: &Budget,
) -> Result<Workspace, WorkspaceError> {
    check_repo(repo)?;
    check_ref(ref_name)?;
    let (git_base, userinfo) = split_credentials(git_base);
    let git_base = git_base.as_str();
    let credentials = userinfo
        .map(|userinfo| CredentialFile::write(&userinfo))
        .transpose()?;
    let candidates = source_candidates(git_base, repo)?;
    if candidates.is_empty() {
        return Err(no_such_repository(git_base, repo, ref_name));
    }

    let created = match tokio::fs::read_dir(dir).await {
        Ok(mut entries) => {
            let first = entries
                .next_entry()
                .await
                .map_err(|e| WorkspaceError::io(format!("cannot read {}", dir.display()), e))?;
            if first.is_some() {
                return Err(WorkspaceError::NotEmpty(dir.to_path_buf()));
            }
            false
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            tokio::fs::create_dir_all(dir)
                .await
                .map_err(|e| WorkspaceError::io(format!("cannot create {}", dir.display()), e))?;
            true
        }
        Err(e) => {
            return Err(WorkspaceError::io(
                format!("cannot read {}", dir.display()),
                e,
            ));
        }
    };

    let source = Source {
        candidates: &candidates,
        git_base,
        credentials: credentials.as_ref(),
    };
    match checkout(&source, repo, ref_name, dir, budget).await {
        Ok(base_commit) => Ok(Workspace {
            dir: dir.to_path_buf(),
            base_commit,
        }),
        Err(err) => {
            let cleanup = if created {
                tokio::fs::remove_dir_all(dir).await
            } else {
                empty_dir(dir).await
            };
            if let Err(e) = cleanup {
                tracing::warn!(dir = %dir.display(), error = %e, "cleaning up a failed workspace failed");
            }
            Err(err)
        }
    }
}

/// Where a checkout comes from: URLs without credentials, and the file that
/// carries them.
struct Source<'a> {
    candidates: &'a [String],
    git_base: &'a str,
    credentials: Option<&'a CredentialFile>,
}

/// The git base's credentials in a 0600 file of a 0700 directory of the worker's,
/// handed to git by a credential helper that reads it: never on a command line,
/// never in an environment. Removed when dropped.
struct CredentialFile {
    dir: tempfile::TempDir,
}

impl CredentialFile {
    fn write(userinfo: &[u8]) -> Result<CredentialFile, WorkspaceError> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let invalid = || WorkspaceError::Invalid {
            what: "git base credentials",
            value: "***".into(),
            why: "a line break or NUL in the user or password".into(),
        };
        if userinfo.iter().any(|b| matches!(b, b'\n' | b'\r' | 0)) {
            return Err(invalid());
        }
        let (user, password) = match userinfo.iter().position(|b| *b == b':') {
            Some(at) => (&userinfo[..at], &userinfo[at + 1..]),
            None => (userinfo, &b""[..]),
        };
        let fail = |e| WorkspaceError::io("cannot write the git credentials file", e);
        let dir = tempfile::Builder::new()
            .prefix("jct-git-credentials")
            .tempdir()
            .map_err(fail)?;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(dir.path().join("credentials"))
            .map_err(fail)?;
        let mut text = b"username=".to_vec();
        text.extend_from_slice(user);
        text.extend_from_slice(b"\npassword=");
        text.extend_from_slice(password);
        text.push(b'\n');
        file.write_all(&text).map_err(fail)?;
        Ok(CredentialFile { dir })
    }

    /// git's `credential.helper` value: prints the file for `get`, ignores the rest.
    fn helper(&self) -> String {
        let path = self.dir.path().join("credentials");
        format!(
            "!f() {{ test \"$1\" = get && cat '{}'; }}; f",
            path.display().to_string().replace('\'', "")
        )
    }
}

async fn checkout(
    source: &Source<'_>,
    repo: &str,
    ref_name: &str,
    dir: &Path,
    budget: &Budget,
) -> Result<String, WorkspaceError> {
    let (candidates, git_base) = (source.candidates, source.git_base);
    git(dir, ["init", "--quiet"], budget).await?;
    let mut failures = Vec::new();
    for url in candidates {
        let mut cmd = git_command(dir);
        if let Some(credentials) = source.credentials {
            cmd.env("GIT_CONFIG_COUNT", "1")
                .env("GIT_CONFIG_KEY_0", "credential.helper")
                .env("GIT_CONFIG_VALUE_0", credentials.helper());
        }
        cmd.args([
            "fetch",
            "--quiet",
            "--no-tags",
            "--no-recurse-submodules",
            "--depth=1",
            "--",
            url.as_str(),
            ref_name,
        ]);
        let output = run(cmd, "fetch", budget).await?;
        if output.status.success() {
            failures.clear();
            break;
        }
        failures.push(format!("{}: {}", redact(url), snippet(&output.stderr)));
    }
    if candidates.is_empty() {
        return Err(no_such_repository(git_base, repo, ref_name));
    }
    if !failures.is_empty() {
        return Err(WorkspaceError::Fetch {
            git_base: redact(git_base),
            repo: repo.to_string(),
            ref_name: ref_name.to_string(),
            stderr: failures.join("; "),
        });
    }
    git(
        dir,
        ["checkout", "--quiet", "--detach", "FETCH_HEAD"],
        budget,
    )
    .await?;
    let head = git(dir, ["rev-parse", "--verify", "HEAD^{commit}"], budget).await?;
    let sha = String::from_utf8_lossy(&head).trim().to_string();
    if sha.is_empty() || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(WorkspaceError::Git {
            command: "rev-parse".to_string(),
            status: "unexpected output".to_string(),
            stderr: sha,
        });
    }
    Ok(sha)
}

/// Writes the changes of the working tree against `base_commit`, new (untracked,
/// not ignored) files included, as a binary-safe patch to `out`, cut at `limit`
/// bytes.
///
/// The program had write access to the workspace, `.git` included; so first the
/// repository's configuration is reset to a plain one (no fsmonitor, filters, hooks
/// or external diff drivers of the program's choosing run in the worker) and
/// `.git` must still be a real directory. `git add` and `git diff` run under the
/// task's budget: a workspace of huge or sparse files cannot hold the worker.
pub async fn capture_diff(
    workspace: &Workspace,
    out: std::fs::File,
    limit: u64,
    budget: &Budget,
) -> Result<DiffCapture, WorkspaceError> {
    let dot_git = workspace.dir.join(".git");
    let is_dir = tokio::fs::symlink_metadata(&dot_git)
        .await
        .is_ok_and(|m| m.is_dir());
    if !is_dir {
        return Err(WorkspaceError::Tampered(dot_git));
    }
    for file in ["commondir", "gitdir", "config"] {
        let meta = tokio::fs::symlink_metadata(dot_git.join(file)).await;
        let planted = match file {
            "config" => meta.is_ok_and(|m| !m.is_file()),
            _ => meta.is_ok(),
        };
        if planted {
            return Err(WorkspaceError::Tampered(dot_git.join(file)));
        }
    }
    let config = dot_git.join("config");
    tokio::fs::write(&config, PLAIN_CONFIG)
        .await
        .map_err(|e| WorkspaceError::io(format!("cannot reset {}", config.display()), e))?;

    // the outputs folder is copied into the trace, not part of the change
    let outputs = format!(":(exclude){}", crate::outputs::WORKSPACE_DIR);
    git(
        &workspace.dir,
        ["add", "--all", "--", ".", outputs.as_str()],
        budget,
    )
    .await?;

    let mut cmd = git_command(&workspace.dir);
    cmd.args([
        "diff",
        "--cached",
        "--binary",
        "--no-color",
        "--no-ext-diff",
        "--no-textconv",
        "--no-renames",
        workspace.base_commit.as_str(),
        "--",
    ]);
    let mut out = tokio::fs::File::from_std(out);
    let copy = async {
        let fail = |e| WorkspaceError::io("cannot run git diff", e);
        let mut child = cmd.spawn().map_err(fail)?;
        let mut stdout = child.stdout.take();
        let mut kept = 0u64;
        let mut truncated = false;
        if let Some(pipe) = stdout.as_mut() {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = pipe.read(&mut buf).await.map_err(fail)?;
                if n == 0 {
                    break;
                }
                let room = usize::try_from(limit.saturating_sub(kept)).unwrap_or(usize::MAX);
                let keep = n.min(room);
                out.write_all(&buf[..keep])
                    .await
                    .map_err(|e| WorkspaceError::io("cannot write diff.patch", e))?;
                kept += keep as u64;
                if keep < n {
                    // the rest is not kept: stop git instead of reading it all
                    truncated = true;
                    let _ = child.start_kill();
                    break;
                }
            }
        }
        drop(stdout);
        let output = child.wait_with_output().await.map_err(fail)?;
        if !truncated {
            check_status("diff", &output)?;
        }
        out.flush()
            .await
            .map_err(|e| WorkspaceError::io("cannot write diff.patch", e))?;
        Ok(DiffCapture {
            bytes: kept,
            truncated,
        })
    };
    within(budget, "diff", copy).await
}

/// Creates the attempt's workspace `<root>/<name>` afresh: mode 0700, whatever was
/// at that name (a planted directory, a link) removed first and never followed,
/// the root made 0711 if the worker creates it. With `git`, (base, repo, ref) is
/// checked out into it. With `owner`, everything in it is handed to that uid (the
/// sandbox's, when the worker is root). On failure nothing is left.
pub async fn fresh(
    root: &Path,
    name: &str,
    git: Option<(&str, &str, &str)>,
    owner: Option<u32>,
    budget: &Budget,
) -> Result<(PathBuf, Option<Workspace>), WorkspaceError> {
    use std::os::unix::fs::DirBuilderExt;
    if tokio::fs::symlink_metadata(root).await.is_err() {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true).mode(0o711);
        builder
            .create(root)
            .map_err(|e| WorkspaceError::io(format!("cannot create {}", root.display()), e))?;
    }
    let dir = root.join(name);
    remove_dir(&dir).await?;
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .map_err(|e| WorkspaceError::io(format!("cannot create {}", dir.display()), e))?;
    let checkout = match git {
        Some((base, repo, ref_name)) => match prepare(base, repo, ref_name, &dir, budget).await {
            Ok(checkout) => Some(checkout),
            Err(error) => {
                let _ = remove_dir(&dir).await;
                return Err(error);
            }
        },
        None => None,
    };
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(dir.join(crate::outputs::WORKSPACE_DIR))
        .map_err(|e| WorkspaceError::io("cannot create the outputs folder", e))?;
    if let Some(uid) = owner {
        let owned = dir.clone();
        let given = tokio::task::spawn_blocking(move || give_to(&owned, uid))
            .await
            .map_err(|e| WorkspaceError::io("cannot hand over the workspace", io::Error::other(e)))
            .and_then(|r| {
                r.map_err(|e| WorkspaceError::io(format!("cannot hand over {}", dir.display()), e))
            });
        if let Err(error) = given {
            let _ = remove_dir(&dir).await;
            return Err(error);
        }
    }
    Ok((dir, checkout))
}

/// Makes `uid` (and the group of the same number) the owner of `dir` and all in
/// it, links themselves and not their targets.
fn give_to(dir: &Path, uid: u32) -> io::Result<()> {
    std::os::unix::fs::lchown(dir, Some(uid), Some(uid))?;
    if std::fs::symlink_metadata(dir)?.is_dir() {
        for entry in std::fs::read_dir(dir)? {
            give_to(&entry?.path(), uid)?;
        }
    }
    Ok(())
}

/// Removes the workspace directory (gone already is fine).
pub async fn remove(workspace: &Workspace) -> Result<(), WorkspaceError> {
    remove_dir(&workspace.dir).await
}

/// Removes `dir`, or the file or link at that name (gone already is fine).
pub async fn remove_dir(dir: &Path) -> Result<(), WorkspaceError> {
    let dir = dir.to_path_buf();
    let fail = |e| WorkspaceError::io(format!("cannot remove {}", dir.display()), e);
    match tokio::fs::symlink_metadata(&dir).await {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(fail(e)),
        Ok(meta) if !meta.is_dir() => return tokio::fs::remove_file(&dir).await.map_err(fail),
        Ok(_) => {}
    }
    match tokio::fs::remove_dir_all(&dir).await {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            // The program may have made directories read-only: make them writable
            // (without following symlinks) and try again.
            let owned = dir.clone();
            let _ = tokio::task::spawn_blocking(move || make_writable(&owned)).await;
            tokio::fs::remove_dir_all(&dir).await.map_err(fail)
        }
        Err(e) => Err(fail(e)),
    }
}

fn make_writable(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let Ok(meta) = std::fs::symlink_metadata(dir) else {
        return;
    };
    if !meta.is_dir() {
        return;
    }
    let mut perms = meta.permissions();
    perms.set_mode(perms.mode() | 0o700);
    let _ = std::fs::set_permissions(dir, perms);
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                make_writable(&entry.path());
            }
        }
    }
}

async fn empty_dir(dir: &Path) -> io::Result<()> {
    let mut entries = tokio::fs::read_dir(dir).await?;
    while let Some(entry) = entries.next_entry().await? {
        if entry.file_type().await?.is_dir() {
            tokio::fs::remove_dir_all(entry.path()).await?;
        } else {
            tokio::fs::remove_file(entry.path()).await?;
        }
    }
    Ok(())
}

/// The same rules the intake's gate applies (`jct::names`), checked again here:
/// the worker does not rely on the intake alone.
fn check_repo(repo: &str) -> Result<(), WorkspaceError> {
    jct::names::check_repo(repo).map_err(|problem| WorkspaceError::Invalid {
        what: "repository",
        value: repo.to_string(),
        why: problem.to_string(),
    })
}

fn check_ref(ref_name: &str) -> Result<(), WorkspaceError> {
    jct::names::check_ref(ref_name).map_err(|problem| WorkspaceError::Invalid {
        what: "ref",
        value: ref_name.to_string(),
        why: problem.to_string(),
    })
}

/// `<base>/<repo>.git` then `<base>/<repo>`; for a local base only those that exist,
/// made absolute so that git never reads them as `host:path`.
fn source_candidates(git_base: &str, repo: &str) -> Result<Vec<String>, WorkspaceError> {
    let base = git_base.trim_end_matches('/');
    if base.is_empty() {
        return Err(WorkspaceError::Invalid {
            what: "git base",
            value: git_base.to_string(),
            why: "empty".to_string(),
        });
    }
    if base.contains("://") {
        return Ok(vec![format!("{base}/{repo}.git"), format!("{base}/{repo}")]);
    }
    let absolute = std::path::absolute(base)
        .map_err(|e| WorkspaceError::io(format!("cannot resolve the git base {git_base:?}"), e))?;
    Ok([format!("{repo}.git"), repo.to_string()]
        .iter()
        .map(|candidate| absolute.join(candidate))
        .filter(|path| path.is_dir())
        .map(|path| path.to_string_lossy().into_owned())
        .collect())
}

fn no_such_repository(git_base: &str, repo: &str, ref_name: &str) -> WorkspaceError {
    WorkspaceError::Fetch {
        git_base: redact(git_base),
        repo: repo.to_string(),
        ref_name: ref_name.to_string(),
        stderr: format!("no repository {repo}.git or {repo} in {git_base}"),
    }
}

/// `url` without credentials (`https://user:token@host/…` → `https://***@host/…`).
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://***{}", &rest[at..]),
        None => url.to_string(),
    }
}

/// `url` without its user information, and that information (percent-decoded).
fn split_credentials(url: &str) -> (String, Option<Vec<u8>>) {
    let Some((scheme, rest)) = url.split_once("://") else {
        return (url.to_string(), None);
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return (url.to_string(), None);
    };
    (
        format!("{scheme}://{}", &rest[at + 1..]),
        Some(percent_decode(&rest[..at])),
    )
}

fn percent_decode(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    out
}

fn git_command(dir: &Path) -> Command {
    let mut cmd = Command::new("git");
    cmd.env_clear()
        .env(
            "PATH",
            std::env::var_os("PATH")
                .filter(|p| !p.is_empty())
                .unwrap_or_else(|| DEFAULT_PATH.into()),
        )
        .env("HOME", std::env::temp_dir())
        .env("LC_ALL", "C")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_ATTR_NOSYSTEM", "1")
        .env("GIT_ALLOW_PROTOCOL", "file:git:http:https:ssh")
        .env("GIT_SSH_COMMAND", "ssh -o BatchMode=yes");
    for name in PASSED_VARS {
        if let Some(value) = std::env::var_os(name) {
            cmd.env(name, value);
        }
    }
    cmd.current_dir(dir)
        .args([
            "-c",
            "safe.directory=*",
            "-c",
            "user.name=jct",
            "-c",
            "user.email=jct@localhost",
            "-c",
            "init.defaultBranch=main",
            "-c",
            "advice.detachedHead=false",
            "-c",
            "core.hooksPath=/dev/null",
            "-c",
            "core.fsmonitor=false",
            "-c",
            "core.autocrlf=false",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // its own group, so helpers (git-remote-https, …) die with it
        .process_group(0)
        .kill_on_drop(true);
    cmd
}

/// Runs `work` (which owns a git child) until the budget's deadline or its
/// cancellation; dropping it kills git (kill_on_drop).
async fn within<T>(
    budget: &Budget,
    what: &str,
    work: impl Future<Output = Result<T, WorkspaceError>>,
) -> Result<T, WorkspaceError> {
    let deadline = async {
        match budget.deadline {
            Some(deadline) => tokio::time::sleep_until(deadline).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        result = work => result,
        () = budget.cancel.cancelled() => Err(WorkspaceError::Cancelled(what.to_string())),
        () = deadline => Err(WorkspaceError::DeadlineExceeded(what.to_string())),
    }
}

/// Runs git to completion within the budget.
async fn run(
    mut cmd: Command,
    what: &str,
    budget: &Budget,
) -> Result<std::process::Output, WorkspaceError> {
    let fail = |e| WorkspaceError::io(format!("cannot run git {what}"), e);
    let child = cmd.spawn().map_err(fail)?;
    within(budget, what, async {
        child.wait_with_output().await.map_err(fail)
    })
    .await
}

/// Runs git and returns its stdout, or the failure with a stderr snippet.
async fn git<I, S>(dir: &Path, args: I, budget: &Budget) -> Result<Vec<u8>, WorkspaceError>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let args: Vec<S> = args.into_iter().collect();
    let what = args
        .first()
        .map(|a| a.as_ref().to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut cmd = git_command(dir);
    cmd.args(args);
    let output = run(cmd, &what, budget).await?;
    check_status(&what, &output)?;
    Ok(output.stdout)
}

fn check_status(what: &str, output: &std::process::Output) -> Result<(), WorkspaceError> {
    if output.status.success() {
        return Ok(());
    }
    Err(WorkspaceError::Git {
        command: what.to_string(),
        status: output.status.to_string(),
        stderr: snippet(&output.stderr),
    })
}

/// The end of git's stderr (where the reason is), trimmed.
fn snippet(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let text = text.trim();
    let mut start = text.len().saturating_sub(STDERR_SNIPPET_BYTES);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    text[start..].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs git in the tests' own controlled environment.
    fn git_sync(dir: &Path, args: &[&str]) -> String {
        let out = std::process::Command::new("git")
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", dir)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .args([
                "-c",
                "user.name=test",
                "-c",
                "user.email=test@localhost",
                "-c",
                "init.defaultBranch=main",
            ])
            .args(args)
            .current_dir(dir)
            .output()
            .expect("git");
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// A base directory holding the bare repo `myorg/service.git` with one commit on
    /// `main`; returns (tempdir, base, commit sha).
    fn bare_repo() -> (tempfile::TempDir, PathBuf, String) {
        let tmp = tempfile::tempdir().expect("tempdir");
        let base = tmp.path().join("git");
        let bare = base.join("myorg/service.git");
        std::fs::create_dir_all(&bare).expect("mkdir");
        git_sync(&bare, &["init", "--quiet", "--bare"]);
        let scratch = tmp.path().join("scratch");
        std::fs::create_dir(&scratch).expect("mkdir");
        git_sync(&scratch, &["init", "--quiet"]);
        std::fs::write(scratch.join("README.md"), "hello\n").expect("write");
        std::fs::write(scratch.join("keep.txt"), "unchanged\n").expect("write");
        git_sync(&scratch, &["add", "--all"]);
        git_sync(&scratch, &["commit", "--quiet", "-m", "first"]);
        let sha = git_sync(&scratch, &["rev-parse", "HEAD"]);
        git_sync(
            &scratch,
            &["push", "--quiet", bare.to_str().expect("utf-8"), "main"],
        );
        (tmp, base, sha)
    }

    #[tokio::test]
    async fn prepare_modify_and_capture_diff() {
        let (tmp, base, sha) = bare_repo();
        let dir = tmp.path().join("work/task-1");
        let ws = prepare(
            base.to_str().expect("utf-8"),
            "myorg/service",
            "main",
            &dir,
            &Budget::default(),
        )
        .await
        .expect("prepare");
        assert_eq!(ws.base_commit, sha);
        assert_eq!(ws.dir, dir);
        assert_eq!(
            std::fs::read_to_string(dir.join("README.md")).expect("read"),
            "hello\n"
        );

        std::fs::write(dir.join("README.md"), "hello, world\n").expect("write");
        std::fs::create_dir(dir.join("src")).expect("mkdir");
        std::fs::write(dir.join("src/new.rs"), "fn main() {}\n").expect("write");
        let patch = tmp.path().join("diff.patch");
        let len = capture_diff(
            &ws,
            std::fs::File::create(&patch).expect("patch"),
            u64::MAX,
            &Budget::default(),
        )
        .await
        .expect("diff")
        .bytes;
        let text = std::fs::read_to_string(&patch).expect("read");
        assert_eq!(len, text.len() as u64);
        assert!(
            text.contains("diff --git a/README.md b/README.md"),
            "{text}"
        );
        assert!(text.contains("+hello, world"), "{text}");
        assert!(
            text.contains("diff --git a/src/new.rs b/src/new.rs"),
            "{text}"
        );
        assert!(text.contains("new file mode"), "{text}");
        assert!(text.contains("+fn main() {}"), "{text}");
        assert!(!text.contains("keep.txt"), "{text}");

        // The patch applies to the base commit.
        let check = tmp.path().join("check");
        std::fs::create_dir(&check).expect("mkdir");
        git_sync(&check, &["init", "--quiet"]);
        git_sync(
            &check,
            &[
                "fetch",
                "--quiet",
                base.join("myorg/service.git").to_str().expect("utf-8"),
                "main",
            ],
        );
        git_sync(&check, &["checkout", "--quiet", "FETCH_HEAD"]);
        git_sync(
            &check,
            &["apply", "--check", patch.to_str().expect("utf-8")],
        );

        remove(&ws).await.expect("remove");
        assert!(!dir.exists());
        remove(&ws).await.expect("removing twice is fine");
    }

    #[tokio::test]
    async fn unchanged_workspace_has_an_empty_diff() {
        let (tmp, base, _) = bare_repo();
        let dir = tmp.path().join("ws");
        let ws = prepare(
            base.to_str().expect("utf-8"),
            "myorg/service",
            "main",
            &dir,
            &Budget::default(),
        )
        .await
        .expect("prepare");
        let patch = tmp.path().join("diff.patch");
        assert_eq!(
            capture_diff(
                &ws,
                std::fs::File::create(&patch).expect("patch"),
                u64::MAX,
                &Budget::default()
            )
            .await
            .expect("diff")
            .bytes,
            0
        );
    }

    #[tokio::test]
    async fn repo_without_dot_git_suffix_and_by_commit() {
        let (tmp, base, sha) = bare_repo();
        std::fs::rename(base.join("myorg/service.git"), base.join("myorg/plain")).expect("rename");
        let dir = tmp.path().join("ws");
        let ws = prepare(
            base.to_str().expect("utf-8"),
            "myorg/plain",
            &sha,
            &dir,
            &Budget::default(),
        )
        .await
        .expect("prepare");
        assert_eq!(ws.base_commit, sha);
    }

    #[tokio::test]
    async fn unknown_ref_fails_and_cleans_up() {
        let (tmp, base, _) = bare_repo();
        let dir = tmp.path().join("ws");
        let err = prepare(
            base.to_str().expect("utf-8"),
            "myorg/service",
            "no-such-branch",
            &dir,
            &Budget::default(),
        )
        .await
        .expect_err("unknown ref");
        assert!(matches!(err, WorkspaceError::Fetch { .. }), "{err:?}");
        assert!(err.to_string().contains("no-such-branch"), "{err}");
        assert!(
            err.to_string().contains("couldn't find remote ref"),
            "{err}"
        );
        assert!(!dir.exists());

        let err = prepare(
            base.to_str().expect("utf-8"),
            "myorg/missing",
            "main",
            &dir,
            &Budget::default(),
        )
        .await
        .expect_err("unknown repo");
        assert!(matches!(err, WorkspaceError::Fetch { .. }), "{err:?}");
        assert!(err.to_string().contains("no repository"), "{err}");
        assert!(!dir.exists());
    }

    #[tokio::test]
    async fn rejects_option_like_and_invalid_input() {
        let (tmp, base, _) = bare_repo();
        let base = base.to_str().expect("utf-8");
        let dir = tmp.path().join("ws");
        for (repo, ref_name) in [
            ("myorg/service", "--upload-pack=touch /tmp/x"),
            ("myorg/service", "main:other"),
            ("myorg/service", "a..b"),
            ("-x/service", "main"),
            ("myorg/../etc", "main"),
            ("", "main"),
            ("myorg/service", ""),
        ] {
            let err = prepare(base, repo, ref_name, &dir, &Budget::default())
                .await
                .expect_err("invalid");
            assert!(matches!(err, WorkspaceError::Invalid { .. }), "{err:?}");
        }
        assert!(!dir.exists());
    }

    #[test]
    fn credentials_are_redacted() {
        assert_eq!(
            redact("https://user:token@git.example.com/org"),
            "https://***@git.example.com/org"
        );
        assert_eq!(
            redact("https://git.example.com/a@b"),
            "https://git.example.com/a@b"
        );
        assert_eq!(redact("/srv/git"), "/srv/git");
    }

    #[tokio::test]
    async fn non_empty_dir_is_refused() {
        let (tmp, base, _) = bare_repo();
        let dir = tmp.path().join("ws");
        std::fs::create_dir(&dir).expect("mkdir");
        std::fs::write(dir.join("x"), "x").expect("write");
        let err = prepare(
            base.to_str().expect("utf-8"),
            "myorg/service",
            "main",
            &dir,
            &Budget::default(),
        )
        .await
        .expect_err("not empty");
        assert!(matches!(err, WorkspaceError::NotEmpty(_)), "{err:?}");
        assert!(dir.join("x").exists());
    }

    #[tokio::test]
    async fn program_config_does_not_run_in_the_worker() {
        let (tmp, base, _) = bare_repo();
        let dir = tmp.path().join("ws");
        let ws = prepare(
            base.to_str().expect("utf-8"),
            "myorg/service",
            "main",
            &dir,
            &Budget::default(),
        )
        .await
        .expect("prepare");
        let marker = tmp.path().join("pwned");
        let config = dir.join(".git/config");
        let mut text = std::fs::read_to_string(&config).expect("config");
        text.push_str(&format!(
            "[core]\n\tfsmonitor = \"touch {0}; false\"\n[filter \"x\"]\n\tclean = \"touch {0}; cat\"\n",
            marker.display()
        ));
        std::fs::write(&config, text).expect("write");
        std::fs::write(dir.join(".gitattributes"), "* filter=x\n").expect("write");
        std::fs::write(dir.join("README.md"), "changed\n").expect("write");
        let patch = tmp.path().join("diff.patch");
        let _ = capture_diff(
            &ws,
            std::fs::File::create(&patch).expect("patch"),
            u64::MAX,
            &Budget::default(),
        )
        .await
        .expect("diff")
        .bytes;
        assert!(!marker.exists(), "the program's git config ran a command");
        let text = std::fs::read_to_string(&patch).expect("read");
        assert!(text.contains("+changed"), "{text}");
    }
}
