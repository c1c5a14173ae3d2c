//! bubblewrap's command line for one run: every namespace unshared (the network
//! only kept when the task and the worker both allow it), no capabilities, no
//! nested user namespaces, a new session, death with the worker, and a
//! filesystem of the system directories read-only, the program and the
//! operator's read-only paths, a private /tmp, /proc and /dev, and the
//! workspace read-write.

use std::ffi::OsString;
use std::os::fd::RawFd;
use std::path::{Path, PathBuf};

use super::init;

/// What the program needs from the host to run ordinary tools.
const SYSTEM_DIRS: &[&str] = &[
    "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc",
];

/// One sandboxed run.
pub struct Plan<'a> {
    pub share_net: bool,
    pub workspace: &'a Path,
    /// The resolved program and its arguments.
    pub program: &'a Path,
    pub args: &'a [String],
    pub readonly: &'a [PathBuf],
    /// Where bubblewrap writes `{"child-pid": N}` (the pid namespace's init).
    pub info_fd: RawFd,
    /// The seccomp filter bubblewrap installs before exec, if any.
    pub seccomp_fd: Option<RawFd>,
}

/// The options every run shares (the probe runs `true` with them).
fn common(args: &mut Vec<OsString>, share_net: bool) {
    for flag in [
        "--unshare-all",
        // explicit, so --disable-userns applies even where bwrap is setuid
        "--unshare-user",
        "--disable-userns",
        "--die-with-parent",
        "--new-session",
        "--cap-drop",
        "ALL",
    ] {
        args.push(flag.into());
    }
    if share_net {
        args.push("--share-net".into());
    }
    for dir in SYSTEM_DIRS {
        let path = Path::new(dir);
        match std::fs::symlink_metadata(path) {
            // merged /usr: /bin -> usr/bin and the like
            Ok(meta) if meta.file_type().is_symlink() => {
                if let Ok(target) = std::fs::read_link(path) {
                    push_all(args, ["--symlink".into(), target.into(), path.into()]);
                }
            }
            Ok(meta) if meta.is_dir() => {
                push_all(args, ["--ro-bind".into(), path.into(), path.into()])
            }
            _ => {}
        }
    }
    for flag in ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"] {
        args.push(flag.into());
    }
}

pub fn probe_args() -> Vec<OsString> {
    let mut args = Vec::new();
    common(&mut args, false);
    args.extend(["--".into(), "true".into()]);
    args
}

pub fn args(plan: &Plan<'_>) -> Vec<OsString> {
    let mut args = Vec::new();
    common(&mut args, plan.share_net);
    if !under_system_dirs(plan.program) {
        push_all(
            &mut args,
            ["--ro-bind".into(), plan.program.into(), plan.program.into()],
        );
    }
    for path in plan.readonly {
        push_all(&mut args, ["--ro-bind".into(), path.into(), path.into()]);
    }
    // after --tmpfs /tmp, so a workspace under /tmp is bound on top of it
    push_all(
        &mut args,
        [
            "--bind".into(),
            plan.workspace.into(),
            plan.workspace.into(),
            "--chdir".into(),
            plan.workspace.into(),
            "--info-fd".into(),
            plan.info_fd.to_string().into(),
        ],
    );
    if let Some(fd) = plan.seccomp_fd {
        push_all(&mut args, ["--seccomp".into(), fd.to_string().into()]);
    }
    push_all(
        &mut args,
        [
            // the program starts once the worker opens the gate (see `init`)
            "--".into(),
            init::GATE_SHELL.into(),
            "-c".into(),
            init::GATE_SCRIPT.into(),
            init::GATE_NAME.into(),
            plan.program.into(),
        ],
    );
    args.extend(plan.args.iter().map(OsString::from));
    args
}

fn under_system_dirs(path: &Path) -> bool {
    let real = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    SYSTEM_DIRS.iter().any(|dir| {
        let dir = Path::new(dir);
        real.starts_with(dir) || dir.canonicalize().is_ok_and(|d| real.starts_with(d))
    })
}

fn push_all<const N: usize>(args: &mut Vec<OsString>, items: [OsString; N]) {
    args.extend(items);
}

/// The init's pid from bubblewrap's info JSON.
pub fn child_pid(info: &[u8]) -> Option<i32> {
    let json: serde_json::Value = serde_json::from_slice(info).ok()?;
    json.get("child-pid")?.as_i64()?.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_program_is_bound_only_outside_the_system_directories() {
        let plan = |program: &'static str| Plan {
            share_net: false,
            workspace: Path::new("/tmp/ws"),
            program: Path::new(program),
            args: &[],
            readonly: &[],
            info_fd: 3,
            seccomp_fd: None,
        };
        let system = args(&plan("/usr/bin/true"));
        assert!(
            !system.contains(&OsString::from("/usr/bin/true"))
                || system.ends_with(&["/usr/bin/true".into()])
        );
        let own = args(&plan("/opt/agent/run"));
        let binds = own.iter().filter(|a| *a == "/opt/agent/run").count();
        assert_eq!(binds, 3, "bound read-only at its path, then run: {own:?}");
        assert!(!own.contains(&OsString::from("--share-net")));
    }

    #[test]
    fn the_info_pid_is_read() {
        assert_eq!(child_pid(br#"{ "child-pid": 4242 }"#), Some(4242));
        assert_eq!(child_pid(b""), None);
    }
}
