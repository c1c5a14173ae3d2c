//! The system-call filter bubblewrap installs right before the program runs
//! (`--seccomp FD`): a deny-list of what the namespaces and dropped
//! capabilities leave reachable and the program has no business using. Denied
//! calls fail with EPERM (as under Docker's default profile), so ordinary
//! tools see an error, not a crash. System calls of another ABI than the
//! worker's (32-bit x86 on x86_64) kill the process: a deny-list written for
//! one syscall table cannot vouch for another.
//!
//! What is not here, and why: ptrace of non-children and `kill` of other
//! processes are contained by the pid namespace; `mount`, `pivot_root`,
//! `setns`, module loading without the capability and the like need
//! capabilities the program never has; nested user namespaces are refused by
//! bubblewrap's `--disable-userns`. Compare Flatpak's filter (flatpak-run.c)
//! and Docker's default profile, which both deny each entry below.

use std::collections::BTreeMap;
use std::io;
use std::os::fd::OwnedFd;
use std::sync::OnceLock;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

/// For the manifest.
pub const DESCRIPTION: &str = "seccomp deny-list (terminal input injection TIOCSTI/TIOCLINUX, \
    kernel keyrings, bpf, perf_event_open, userfaultfd, io_uring, kexec and module loading, \
    syslog; EPERM), other ABIs killed";

/// Calls denied whatever their arguments. Each entry says why.
fn denied() -> Vec<(&'static str, i64)> {
    vec![
        // kernel keyrings are not namespaced: keys of other users and services
        // (Docker, Flatpak)
        ("keyctl", libc::SYS_keyctl),
        ("add_key", libc::SYS_add_key),
        ("request_key", libc::SYS_request_key),
        // the in-kernel VM: a large attack surface; unprivileged use is a sysctl
        // away (Docker; Flatpak)
        ("bpf", libc::SYS_bpf),
        // performance counters: side channels and kernel address leaks (Docker,
        // Flatpak)
        ("perf_event_open", libc::SYS_perf_event_open),
        // a classic primitive for winning kernel races (Docker; unprivileged
        // use is a sysctl away)
        ("userfaultfd", libc::SYS_userfaultfd),
        // io_uring: a second system-call interface seccomp cannot see into, and
        // a long list of kernel CVEs (Docker's default since 25.0; ChromeOS,
        // Android)
        ("io_uring_setup", libc::SYS_io_uring_setup),
        ("io_uring_enter", libc::SYS_io_uring_enter),
        ("io_uring_register", libc::SYS_io_uring_register),
        // replacing or extending the kernel: need capabilities the program never
        // has; denied anyway, as by Docker
        ("kexec_load", libc::SYS_kexec_load),
        ("kexec_file_load", libc::SYS_kexec_file_load),
        ("init_module", libc::SYS_init_module),
        ("finit_module", libc::SYS_finit_module),
        ("delete_module", libc::SYS_delete_module),
        // the kernel log (addresses, other tenants' messages) where
        // dmesg_restrict is off (Docker)
        ("syslog", libc::SYS_syslog),
    ]
}

/// ioctl requests denied: pushing characters into the input of a terminal the
/// program shares with its starter (CVE-2017-5226 against bubblewrap itself;
/// `--new-session` already cuts the controlling terminal). Flatpak denies both.
const DENIED_IOCTLS: &[(&str, u64)] = &[("TIOCSTI", 0x5412), ("TIOCLINUX", 0x541C)];

/// x86_64's x32 ABI reaches the same calls with this bit set in the number,
/// under the same audit arch: each entry is denied under both numbers, and
/// under x32's own numbers where it has them.
#[cfg(target_arch = "x86_64")]
const X32_SYSCALL_BIT: i64 = 0x4000_0000;
/// x32's numbers for `ioctl` and `kexec_load` (arch/x86/entry/syscalls/syscall_64.tbl).
#[cfg(target_arch = "x86_64")]
const X32_IOCTL: i64 = 514;
#[cfg(target_arch = "x86_64")]
const X32_KEXEC_LOAD: i64 = 528;

/// The compiled filter, as bubblewrap reads it (an array of `sock_filter`).
pub fn program() -> Result<&'static [u8], String> {
    static PROGRAM: OnceLock<Result<Vec<u8>, String>> = OnceLock::new();
    PROGRAM
        .get_or_init(compile)
        .as_ref()
        .map(Vec::as_slice)
        .map_err(Clone::clone)
}

fn compile() -> Result<Vec<u8>, String> {
    let arch = TargetArch::try_from(std::env::consts::ARCH)
        .map_err(|e| format!("no seccomp filter for this architecture: {e}"))?;
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for (_, nr) in denied() {
        rules.insert(nr, Vec::new());
    }
    let mut ioctl_rules = Vec::new();
    for (_, request) in DENIED_IOCTLS {
        // the request is an int: compare the low 32 bits only, so garbage in
        // the upper half cannot slip past
        let request = SeccompCondition::new(1, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, *request)
            .and_then(|c| SeccompRule::new(vec![c]))
            .map_err(|e| e.to_string())?;
        ioctl_rules.push(request);
    }
    rules.insert(libc::SYS_ioctl, ioctl_rules);
    #[cfg(target_arch = "x86_64")]
    {
        let x32: Vec<(i64, Vec<SeccompRule>)> = rules
            .iter()
            .map(|(nr, chain)| (nr | X32_SYSCALL_BIT, chain.clone()))
            .collect();
        rules.extend(x32);
        // x32 gives ioctl and kexec_load numbers of their own (their x86_64
        // numbers are not implemented there): deny those too
        let ioctl = rules.get(&libc::SYS_ioctl).cloned().unwrap_or_default();
        rules.insert(X32_IOCTL | X32_SYSCALL_BIT, ioctl);
        rules.insert(X32_KEXEC_LOAD | X32_SYSCALL_BIT, Vec::new());
    }
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM.unsigned_abs()),
        arch,
    )
    .map_err(|e| e.to_string())?;
    let program = BpfProgram::try_from(filter).map_err(|e| e.to_string())?;
    let mut bytes = Vec::with_capacity(program.len() * 8);
    for insn in &program {
        bytes.extend_from_slice(&insn.code.to_ne_bytes());
        bytes.push(insn.jt);
        bytes.push(insn.jf);
        bytes.extend_from_slice(&insn.k.to_ne_bytes());
    }
    Ok(bytes)
}

/// A sealed memory file holding the filter (no further writes, growth or
/// shrinking), read from its start by bubblewrap (close-on-exec: the child keeps
/// it open for bubblewrap only).
pub fn memfd() -> io::Result<OwnedFd> {
    use rustix::fs::{MemfdFlags, SealFlags, SeekFrom};
    let program = program().map_err(io::Error::other)?;
    let fd = rustix::fs::memfd_create(
        c"jct-seccomp",
        MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
    )?;
    let mut written = 0;
    while written < program.len() {
        written += rustix::io::write(&fd, &program[written..])?;
    }
    rustix::fs::fcntl_add_seals(
        &fd,
        SealFlags::WRITE | SealFlags::GROW | SealFlags::SHRINK | SealFlags::SEAL,
    )?;
    rustix::fs::seek(&fd, SeekFrom::Start(0))?;
    Ok(fd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_filter_compiles_to_whole_instructions() {
        let program = program().expect("filter");
        assert_eq!(program.len() % 8, 0);
        // arch check, then at least one comparison per denied call
        assert!(program.len() / 8 > denied().len() + DENIED_IOCTLS.len());
    }
}
