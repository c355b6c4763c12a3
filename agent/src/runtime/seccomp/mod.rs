//! seccomp profiles: the runtime's default (containerd's and Docker's), `Localhost` files,
//! and the filter a container process loads before it execs.
//!
//! Profiles are data in the Docker seccomp format, a superset of the OCI runtime spec's
//! `linux.seccomp` (`defaultAction`, `architectures` or `archMap`, `flags`, `syscalls` with
//! `names`, `action`, `errnoRet`, `args` and Docker's `includes`/`excludes` by capability,
//! architecture and kernel version). The default profile is one such file, embedded, so the
//! same code loads it and a node's own profiles. A profile is first *resolved* for one
//! container (its capabilities, this host's architecture and kernel): the result is plain
//! OCI. The agent compiles it with libseccomp, as runc does, once per distinct profile (a
//! compile costs milliseconds, and every pod's pause has the default profile), and the
//! container's spec carries the BPF program the helper loads with seccomp(2).

use std::collections::BTreeMap;
use std::io::{Read, Seek};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use libseccomp::{ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall};
use serde::{Deserialize, Serialize};

/// The runtime's default profile (containerd's `contrib/seccomp` default, as data).
const DEFAULT_PROFILE: &str = include_str!("default.json");

/// The kubelet's seccomp flags.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct SeccompArgs {
    /// Give containers that set no seccompProfile the runtime's default profile
    /// (RuntimeDefault) instead of running them Unconfined (the kubelet's flag).
    #[arg(long)]
    pub seccomp_default: bool,

    /// Where `Localhost` seccomp profiles live: `localhostProfile` is a path under it.
    #[arg(long, default_value = DEFAULT_PROFILE_ROOT)]
    pub seccomp_profile_root: PathBuf,
}

/// The kubelet's `<root-dir>/seccomp`.
pub const DEFAULT_PROFILE_ROOT: &str = "/var/lib/kubelet/seccomp";

impl Default for SeccompArgs {
    fn default() -> Self {
        SeccompArgs {
            seccomp_default: false,
            seccomp_profile_root: PathBuf::from(DEFAULT_PROFILE_ROOT),
        }
    }
}

/// Which profile a container asked for, as the CRI's `SecurityProfile` says it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Unconfined,
    RuntimeDefault,
    /// A JSON profile on this node (already joined to the profile root).
    Localhost(PathBuf),
}

#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("cannot load seccomp profile {path:?}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("decoding seccomp profile failed {origin}: {source}")]
    Decode { origin: String, source: serde_json::Error },
    #[error("seccomp profile {origin}: {problem}")]
    Invalid { origin: String, problem: String },
}

/// Actions, by their libseccomp names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Action {
    #[serde(rename = "SCMP_ACT_KILL")]
    Kill,
    #[serde(rename = "SCMP_ACT_KILL_PROCESS")]
    KillProcess,
    #[serde(rename = "SCMP_ACT_KILL_THREAD")]
    KillThread,
    #[serde(rename = "SCMP_ACT_TRAP")]
    Trap,
    #[serde(rename = "SCMP_ACT_ERRNO")]
    Errno,
    #[serde(rename = "SCMP_ACT_TRACE")]
    Trace,
    #[serde(rename = "SCMP_ACT_ALLOW")]
    Allow,
    #[serde(rename = "SCMP_ACT_LOG")]
    Log,
    #[serde(rename = "SCMP_ACT_NOTIFY")]
    Notify,
}

/// Argument comparisons, by their libseccomp names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    #[serde(rename = "SCMP_CMP_NE")]
    NotEqual,
    #[serde(rename = "SCMP_CMP_LT")]
    Less,
    #[serde(rename = "SCMP_CMP_LE")]
    LessOrEqual,
    #[serde(rename = "SCMP_CMP_EQ")]
    Equal,
    #[serde(rename = "SCMP_CMP_GE")]
    GreaterOrEqual,
    #[serde(rename = "SCMP_CMP_GT")]
    Greater,
    /// `(arg & value) == valueTwo`.
    #[serde(rename = "SCMP_CMP_MASKED_EQ")]
    MaskedEqual,
}

/// A profile (Docker's format; after [`resolve`], plain OCI).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Profile {
    pub default_action: Action,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_errno_ret: Option<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty", deserialize_with = "null_as_empty")]
    pub architectures: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty", deserialize_with = "null_as_empty")]
    pub arch_map: Vec<ArchMap>,
    #[serde(default, skip_serializing_if = "Vec::is_empty", deserialize_with = "null_as_empty")]
    pub flags: Vec<String>,
    /// seccomp user notification: minilet has no agent to hand the listener to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listener_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listener_metadata: Option<String>,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub syscalls: Vec<Syscall>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ArchMap {
    pub architecture: String,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub sub_architectures: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Syscall {
    #[serde(default, skip_serializing_if = "Vec::is_empty", deserialize_with = "null_as_empty")]
    pub names: Vec<String>,
    /// Docker's older single-name form.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub action: Action,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errno_ret: Option<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty", deserialize_with = "null_as_empty")]
    pub args: Vec<Arg>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub includes: Option<Filter>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub excludes: Option<Filter>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Arg {
    pub index: u32,
    pub value: u64,
    #[serde(default)]
    pub value_two: u64,
    pub op: Op,
}

/// When a rule applies (Docker's `includes`) or does not (`excludes`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Filter {
    #[serde(default, deserialize_with = "null_as_empty")]
    pub caps: Vec<String>,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub arches: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_kernel: Option<String>,
}

/// Go's encoder writes `null` for empty lists; read it as empty.
fn null_as_empty<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Option::<Vec<T>>::deserialize(d)?.unwrap_or_default())
}

/// What a profile is resolved against.
#[derive(Debug, Clone)]
pub struct Host {
    /// The architecture's short name as Docker profiles use it (`x86_64`, `aarch64`, ...).
    pub arch: &'static str,
    /// Kernel (major, minor).
    pub kernel: (u32, u32),
}

impl Host {
    pub fn detect() -> Self {
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        Host {
            arch: native_arch(),
            kernel: parse_kernel(&release).unwrap_or((0, 0)),
        }
    }
}

/// This build's architecture, named as Docker profiles and libseccomp name it.
fn native_arch() -> &'static str {
    match std::env::consts::ARCH {
        "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
        "powerpc64" => "ppc64",
        other => other,
    }
}

/// The `SCMP_ARCH_*` name of a short architecture name.
fn scmp_arch_name(arch: &str) -> String {
    format!("SCMP_ARCH_{}", arch.to_ascii_uppercase())
}

/// `major.minor[.patch][-extra]` → (major, minor).
fn parse_kernel(s: &str) -> Option<(u32, u32)> {
    let mut parts = s.trim().split(['.', '-', '+']);
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next().and_then(|m| m.parse().ok()).unwrap_or(0);
    Some((major, minor))
}

/// The filter for a container that keeps `capabilities` (`None`: privileged, all of them),
/// resolved, checked and compiled; `None` when it runs without one. A privileged container is
/// never filtered, whatever it asks for (containerd's rule).
pub fn for_container(request: &Request, capabilities: Option<&[String]>) -> Result<Option<BpfFilter>, SeccompError> {
    let Some(caps) = capabilities else {
        return Ok(None);
    };
    let (text, origin) = match request {
        Request::Unconfined => return Ok(None),
        Request::RuntimeDefault => (None, "RuntimeDefault".to_string()),
        // Read on every start: the node's file may have changed.
        Request::Localhost(path) => (
            Some(std::fs::read_to_string(path).map_err(|source| SeccompError::Read {
                path: path.clone(),
                source,
            })?),
            format!("{:?}", path.display().to_string()),
        ),
    };
    let key = format!("{caps:?}\n{}", text.as_deref().unwrap_or("RuntimeDefault"));
    if let Some(f) = compiled_filters().get(&key) {
        return Ok(Some(f.clone()));
    }
    let profile = parse(text.as_deref().unwrap_or(DEFAULT_PROFILE), &origin)?;
    let invalid = |problem| SeccompError::Invalid {
        origin: origin.clone(),
        problem,
    };
    let resolved = resolve(&profile, &Host::detect(), caps).map_err(invalid)?;
    let mut compiled = compile(&resolved).map_err(invalid)?;
    if !compiled.skipped.is_empty() {
        tracing::debug!(skipped = ?compiled.skipped, "seccomp: syscalls unknown to libseccomp on this architecture are left to the default action");
    }
    let filter = compiled.to_filter().map_err(invalid)?;
    let mut cache = compiled_filters();
    if cache.len() >= FILTER_CACHE_SIZE {
        cache.clear();
    }
    cache.insert(key, filter.clone());
    Ok(Some(filter))
}

/// Distinct filters kept compiled: one per profile and capability set in use, so a handful.
const FILTER_CACHE_SIZE: usize = 32;

/// Compiled filters by capability set and profile text.
fn compiled_filters() -> std::sync::MutexGuard<'static, BTreeMap<String, BpfFilter>> {
    static CACHE: Mutex<BTreeMap<String, BpfFilter>> = Mutex::new(BTreeMap::new());
    // Entries are whole values: a panic elsewhere cannot leave one half-written.
    CACHE.lock().unwrap_or_else(|p| p.into_inner())
}

/// The runtime's default profile, unresolved.
pub fn default_profile() -> Result<Profile, SeccompError> {
    parse(DEFAULT_PROFILE, "RuntimeDefault")
}

/// A profile file.
pub fn read_profile(path: &Path) -> Result<Profile, SeccompError> {
    let text = std::fs::read_to_string(path).map_err(|source| SeccompError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(&text, &format!("{:?}", path.display().to_string()))
}

pub fn parse(text: &str, origin: &str) -> Result<Profile, SeccompError> {
    serde_json::from_str(text).map_err(|source| SeccompError::Decode {
        origin: origin.to_string(),
        source,
    })
}

/// Docker's profile semantics for one container: architectures from `archMap` for this
/// host, rules kept or dropped by `includes`/`excludes`; the result has neither.
pub fn resolve(p: &Profile, host: &Host, caps: &[String]) -> Result<Profile, String> {
    if p.listener_path.as_deref().is_some_and(|l| !l.is_empty()) {
        return Err("listenerPath: seccomp notify listeners are not supported".into());
    }
    if !p.architectures.is_empty() && !p.arch_map.is_empty() {
        return Err("use either 'architectures' or 'archMap', not both".into());
    }
    let native = scmp_arch_name(host.arch);
    let architectures = if p.arch_map.is_empty() {
        p.architectures.clone()
    } else {
        p.arch_map
            .iter()
            .filter(|m| m.architecture == native)
            .flat_map(|m| std::iter::once(m.architecture.clone()).chain(m.sub_architectures.iter().cloned()))
            .collect()
    };
    let has_cap = |c: &String| caps.iter().any(|k| k.eq_ignore_ascii_case(c));
    let mut syscalls = Vec::new();
    for (i, s) in p.syscalls.iter().enumerate() {
        if let Some(inc) = &s.includes {
            if !inc.caps.iter().all(has_cap) {
                continue;
            }
            if !inc.arches.is_empty() && !inc.arches.iter().any(|a| a == host.arch) {
                continue;
            }
            if let Some(min) = &inc.min_kernel {
                let want = parse_kernel(min)
                    .ok_or_else(|| format!("syscalls[{i}].includes.minKernel: {min:?} is not a kernel version"))?;
                if host.kernel < want {
                    continue;
                }
            }
        }
        if let Some(exc) = &s.excludes {
            if exc.min_kernel.is_some() {
                return Err(format!("syscalls[{i}].excludes.minKernel: not supported"));
            }
            if exc.caps.iter().any(has_cap) || exc.arches.iter().any(|a| a == host.arch) {
                continue;
            }
        }
        let names: Vec<String> = s.name.iter().chain(s.names.iter()).cloned().collect();
        if names.is_empty() {
            return Err(format!("syscalls[{i}]: no syscall names (names)"));
        }
        syscalls.push(Syscall {
            names,
            name: None,
            action: s.action,
            errno_ret: s.errno_ret,
            args: s.args.clone(),
            comment: None,
            includes: None,
            excludes: None,
        });
    }
    Ok(Profile {
        default_action: p.default_action,
        default_errno_ret: p.default_errno_ret,
        architectures,
        arch_map: Vec::new(),
        flags: p.flags.clone(),
        listener_path: None,
        listener_metadata: None,
        syscalls,
    })
}

/// A filter ready to export, the `SECCOMP_FILTER_FLAG_*` bits of the profile's flags, and the
/// syscall names libseccomp does not know on this architecture (left to the default action,
/// as runc leaves them).
pub struct Compiled {
    pub filter: ScmpFilterContext,
    pub flags: libc::c_ulong,
    pub skipped: Vec<String>,
}

/// The kernel's limit on a classic BPF program (`BPF_MAXINSNS`).
const MAX_INSTRUCTIONS: usize = 4096;

impl Compiled {
    /// The program as the kernel takes it, with its flags for seccomp(2).
    ///
    /// Syscall numbers are laid out as a binary tree (libseccomp's optimize level 2) rather
    /// than a list: the program decides the same, but the kernel's work on every load (checking,
    /// converting and JIT-compiling it, then running it for each syscall number of each
    /// architecture to build its cache of always-allowed calls) is about a third, and that
    /// load is on every pod start (the pause has RuntimeDefault). The tree is ~25% longer, so
    /// a profile that would pass the kernel's limit only as a list stays one.
    pub fn to_filter(&mut self) -> Result<BpfFilter, String> {
        let tree = self.filter.set_ctl_optimize(2).is_ok();
        let mut bpf = self.export()?;
        if tree && bpf.len() / INSTRUCTION > MAX_INSTRUCTIONS {
            self.filter
                .set_ctl_optimize(1)
                .map_err(|e| format!("lay the program out as a list: {e}"))?;
            bpf = self.export()?;
        }
        BpfFilter::new(self.flags, bpf)
    }

    /// The program as libseccomp generates it with the filter's current attributes.
    fn export(&self) -> Result<Vec<u8>, String> {
        let mut out = tempfile::tempfile().map_err(|e| format!("a file for the BPF program: {e}"))?;
        self.filter
            .export_bpf(&out)
            .map_err(|e| format!("export the BPF program: {e}"))?;
        let mut bpf = Vec::new();
        out.rewind()
            .and_then(|()| out.read_to_end(&mut bpf))
            .map_err(|e| format!("read the BPF program back: {e}"))?;
        Ok(bpf)
    }
}

/// `SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV` (Linux 5.19), which the libc crate lacks.
const WAIT_KILLABLE_RECV: libc::c_ulong = 1 << 5;

/// A compiled filter as seccomp(2) takes it: classic BPF instructions (`struct sock_filter`,
/// this machine's byte order) and `SECCOMP_FILTER_FLAG_*` bits. The spec carries it, so the
/// helper that loads it does no compiling.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BpfFilter {
    flags: libc::c_ulong,
    #[serde(with = "bpf_base64")]
    bpf: Vec<u8>,
}

/// One `struct sock_filter`: code (2 bytes), jt, jf, k (4 bytes).
const INSTRUCTION: usize = 8;

impl BpfFilter {
    /// A program of whole instructions, as many as `struct sock_fprog` can count.
    pub fn new(flags: libc::c_ulong, bpf: Vec<u8>) -> Result<BpfFilter, String> {
        let n = bpf.len() / INSTRUCTION;
        if !bpf.len().is_multiple_of(INSTRUCTION) || n == 0 || n > usize::from(u16::MAX) {
            return Err(format!(
                "a BPF program of {} bytes is not 1-65535 instructions",
                bpf.len()
            ));
        }
        Ok(BpfFilter { flags, bpf })
    }

    pub fn instructions(&self) -> usize {
        self.bpf.len() / INSTRUCTION
    }

    pub fn flags(&self) -> libc::c_ulong {
        self.flags
    }

    /// Load into the calling thread (the container's process, single-threaded, just before it
    /// execs). Without no_new_privs the caller must still hold CAP_SYS_ADMIN.
    pub fn load(&self) -> std::io::Result<()> {
        let mut program: Vec<libc::sock_filter> = self
            .bpf
            .chunks_exact(INSTRUCTION)
            .map(|c| libc::sock_filter {
                code: u16::from_ne_bytes([c[0], c[1]]),
                jt: c[2],
                jf: c[3],
                k: u32::from_ne_bytes([c[4], c[5], c[6], c[7]]),
            })
            .collect();
        // A spec's program is checked here too: it was read from a file, not made by new().
        let len = u16::try_from(program.len())
            .ok()
            .filter(|&n| n > 0 && self.bpf.len().is_multiple_of(INSTRUCTION))
            .ok_or_else(|| std::io::Error::from_raw_os_error(libc::EINVAL))?;
        let fprog = libc::sock_fprog {
            len,
            filter: program.as_mut_ptr(),
        };
        // SAFETY: `fprog` points at `program`, `len` instructions that outlive the call; the
        // kernel copies the program and keeps no pointer into our memory.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                self.flags,
                &fprog as *const libc::sock_fprog,
            )
        };
        if ret < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }
}

/// The program as base64 in the spec's JSON (a number array would be 4x the size).
mod bpf_base64 {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bpf: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(bpf))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        STANDARD.decode(text).map_err(serde::de::Error::custom)
    }
}

/// What a process spec says to load: the compiled filter, or, in specs written by agents
/// before filters were compiled in the agent, the resolved profile (compiled when loaded).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Seccomp {
    Filter(BpfFilter),
    Profile(Profile),
}

impl Seccomp {
    /// The filter to load, compiling an older spec's profile here.
    pub fn filter(&self) -> Result<std::borrow::Cow<'_, BpfFilter>, String> {
        match self {
            Seccomp::Filter(f) => Ok(std::borrow::Cow::Borrowed(f)),
            Seccomp::Profile(p) => compile(p)?.to_filter().map(std::borrow::Cow::Owned),
        }
    }
}

/// libseccomp action of a rule (`errno` applies to ERRNO and TRACE; EPERM without one).
fn scmp_action(action: Action, errno: Option<u32>) -> Result<ScmpAction, String> {
    let ret = errno.unwrap_or(libc::EPERM as u32);
    Ok(match action {
        Action::Kill | Action::KillThread => ScmpAction::KillThread,
        Action::KillProcess => ScmpAction::KillProcess,
        Action::Trap => ScmpAction::Trap,
        Action::Errno => ScmpAction::Errno(i32::try_from(ret.min(u16::MAX as u32)).unwrap_or(libc::EPERM)),
        Action::Trace => ScmpAction::Trace(u16::try_from(ret).map_err(|_| format!("trace value {ret} out of range"))?),
        Action::Allow => ScmpAction::Allow,
        Action::Log => ScmpAction::Log,
        Action::Notify => return Err("SCMP_ACT_NOTIFY: seccomp notify listeners are not supported".into()),
    })
}

fn compare(a: &Arg) -> ScmpArgCompare {
    let op = match a.op {
        Op::NotEqual => ScmpCompareOp::NotEqual,
        Op::Less => ScmpCompareOp::Less,
        Op::LessOrEqual => ScmpCompareOp::LessOrEqual,
        Op::Equal => ScmpCompareOp::Equal,
        Op::GreaterOrEqual => ScmpCompareOp::GreaterEqual,
        Op::Greater => ScmpCompareOp::Greater,
        Op::MaskedEqual => ScmpCompareOp::MaskedEqual(a.value),
    };
    let datum = if a.op == Op::MaskedEqual { a.value_two } else { a.value };
    ScmpArgCompare::new(a.index, op, datum)
}

/// Build the libseccomp filter of a resolved profile, the way runc builds it: the no_new_privs
/// bit left to the caller, rules with the default action skipped, conditions on the same
/// argument split into separate rules (so they are alternatives, as the OCI spec reads them).
pub fn compile(p: &Profile) -> Result<Compiled, String> {
    let err = |what: String| move |e: libseccomp::error::SeccompError| format!("{what}: {e}");
    let default = scmp_action(p.default_action, p.default_errno_ret).map_err(|e| format!("defaultAction: {e}"))?;
    let mut filter = ScmpFilterContext::new(default).map_err(err("create the filter".into()))?;
    filter
        .set_ctl_nnp(false)
        .map_err(err("leave no_new_privs to the caller".into()))?;
    for (i, arch) in p.architectures.iter().enumerate() {
        let a: ScmpArch = arch
            .parse()
            .map_err(|_| format!("architectures[{i}]: unknown architecture {arch:?}"))?;
        if !filter.is_arch_present(a).map_err(err(format!("architectures[{i}]")))? {
            filter.add_arch(a).map_err(err(format!("architectures[{i}] {arch}")))?;
        }
    }
    // The flags go to seccomp(2) with the exported program (BpfFilter::load), not through
    // libseccomp's own load.
    let mut flags = 0;
    for (i, flag) in p.flags.iter().enumerate() {
        flags |= match flag.as_str() {
            "SECCOMP_FILTER_FLAG_TSYNC" => libc::SECCOMP_FILTER_FLAG_TSYNC,
            "SECCOMP_FILTER_FLAG_LOG" => libc::SECCOMP_FILTER_FLAG_LOG,
            "SECCOMP_FILTER_FLAG_SPEC_ALLOW" => libc::SECCOMP_FILTER_FLAG_SPEC_ALLOW,
            "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV" => WAIT_KILLABLE_RECV,
            other => return Err(format!("flags[{i}]: unknown flag {other:?}")),
        };
    }
    let mut skipped = Vec::new();
    for (i, s) in p.syscalls.iter().enumerate() {
        let action = scmp_action(s.action, s.errno_ret).map_err(|e| format!("syscalls[{i}].action: {e}"))?;
        if action == default {
            continue;
        }
        for a in &s.args {
            if a.index > 5 {
                return Err(format!(
                    "syscalls[{i}].args: index {} (a syscall has 6 arguments)",
                    a.index
                ));
            }
        }
        let mut indexes: Vec<u32> = s.args.iter().map(|a| a.index).collect();
        indexes.sort_unstable();
        indexes.dedup();
        let rules: Vec<Vec<ScmpArgCompare>> = if indexes.len() == s.args.len() {
            vec![s.args.iter().map(compare).collect()]
        } else {
            s.args.iter().map(|a| vec![compare(a)]).collect()
        };
        for name in s.names.iter().chain(s.name.iter()) {
            let Ok(nr) = ScmpSyscall::from_name(name) else {
                skipped.push(name.clone());
                continue;
            };
            for conditions in &rules {
                let added = if conditions.is_empty() {
                    filter.add_rule(action, nr)
                } else {
                    filter.add_rule_conditional(action, nr, conditions)
                };
                added.map_err(err(format!("syscalls[{i}] {name}")))?;
            }
        }
    }
    Ok(Compiled { filter, flags, skipped })
}

#[cfg(test)]
mod bpf_eval;

#[cfg(test)]
mod tests {
    use super::*;

    fn host() -> Host {
        Host {
            arch: native_arch(),
            kernel: (6, 1),
        }
    }

    fn caps(v: &[&str]) -> Vec<String> {
        v.iter().map(|c| c.to_string()).collect()
    }

    fn names_with(p: &Profile, action: Action) -> Vec<String> {
        p.syscalls
            .iter()
            .filter(|s| s.action == action)
            .flat_map(|s| s.names.clone())
            .collect()
    }

    #[test]
    fn default_profile_parses_and_compiles_for_this_host() {
        let p = default_profile().unwrap();
        assert_eq!(p.default_action, Action::Errno);
        assert_eq!(p.default_errno_ret, Some(libc::EPERM as u32));
        let defaults: Vec<String> = crate::runtime::capabilities::effective_set(&[], &[]);
        let r = resolve(&p, &host(), &defaults).unwrap();
        // archMap picked this host's family.
        assert!(
            r.architectures.contains(&scmp_arch_name(native_arch())),
            "{:?}",
            r.architectures
        );
        if native_arch() == "x86_64" {
            assert_eq!(r.architectures, ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]);
        }
        let compiled = compile(&r).unwrap();
        // The BPF program exists and is not trivial.
        let out = tempfile::tempfile().unwrap();
        compiled.filter.export_bpf(&out).unwrap();
        let bpf = out.metadata().unwrap().len() as usize;
        assert!(bpf / 8 > 100, "{} instructions", bpf / 8);
        // libseccomp of this host knows the everyday calls.
        for common in ["read", "write", "openat", "execve", "clone", "mmap"] {
            assert!(!compiled.skipped.contains(&common.to_string()));
        }
    }

    #[test]
    fn capability_dependent_rules() {
        let p = default_profile().unwrap();
        let defaults = crate::runtime::capabilities::effective_set(&[], &[]);
        let r = resolve(&p, &host(), &defaults).unwrap();
        let allowed = names_with(&r, Action::Allow);
        // Default caps: chroot (CAP_SYS_CHROOT) yes; mount, unshare, reboot, ptrace-by-cap no.
        assert!(allowed.contains(&"chroot".into()));
        for denied in [
            "mount",
            "unshare",
            "setns",
            "reboot",
            "acct",
            "bpf",
            "init_module",
            "kcmp",
        ] {
            assert!(
                !allowed.contains(&denied.to_string()),
                "{denied} allowed with default caps"
            );
        }
        // clone only without namespace flags; clone3 → ENOSYS.
        let clone = r.syscalls.iter().find(|s| s.names == ["clone"]).unwrap();
        assert_eq!(clone.args.len(), 1);
        assert_eq!(clone.args[0].op, Op::MaskedEqual);
        assert_eq!(clone.args[0].value, 0x7E02_0000);
        let clone3 = r.syscalls.iter().find(|s| s.names == ["clone3"]).unwrap();
        assert_eq!(
            (clone3.action, clone3.errno_ret),
            (Action::Errno, Some(libc::ENOSYS as u32))
        );
        // ptrace comes with kernel 4.8+ only.
        assert!(allowed.contains(&"ptrace".into()));
        let old = resolve(
            &p,
            &Host {
                kernel: (4, 4),
                ..host()
            },
            &defaults,
        )
        .unwrap();
        assert!(!names_with(&old, Action::Allow).contains(&"ptrace".into()));

        // CAP_SYS_ADMIN: the namespace calls are allowed outright, no clone rule, no clone3 errno.
        let admin = crate::runtime::capabilities::effective_set(&caps(&["SYS_ADMIN", "SYS_BOOT"]), &[]);
        let r = resolve(&p, &host(), &admin).unwrap();
        let allowed = names_with(&r, Action::Allow);
        for ok in ["mount", "unshare", "setns", "clone", "clone3", "reboot"] {
            assert!(allowed.contains(&ok.to_string()), "{ok} with CAP_SYS_ADMIN");
        }
        assert!(r.syscalls.iter().all(|s| s.args.is_empty() || s.names != ["clone"]));
        assert!(r.syscalls.iter().all(|s| s.action != Action::Errno));
        compile(&r).unwrap();
        // Dropping CHROOT drops chroot.
        let nochroot = crate::runtime::capabilities::effective_set(&[], &caps(&["SYS_CHROOT"]));
        let r = resolve(&p, &host(), &nochroot).unwrap();
        assert!(!names_with(&r, Action::Allow).contains(&"chroot".into()));
    }

    #[test]
    fn docker_and_oci_forms_parse() {
        let oci = r#"{"defaultAction":"SCMP_ACT_ALLOW","architectures":["SCMP_ARCH_X86_64"],
            "syscalls":[{"names":["mkdir","mkdirat"],"action":"SCMP_ACT_ERRNO","errnoRet":13},
                        {"names":["personality"],"action":"SCMP_ACT_KILL","args":[{"index":0,"value":8,"op":"SCMP_CMP_EQ"}]}]}"#;
        let p = parse(oci, "x").unwrap();
        assert_eq!(p.syscalls[0].errno_ret, Some(13));
        assert_eq!(p.syscalls[1].args[0].value_two, 0);
        let r = resolve(&p, &host(), &[]).unwrap();
        compile(&r).unwrap();
        // Go's nulls, Docker's single name, includes/excludes.
        let docker = r#"{"defaultAction":"SCMP_ACT_ERRNO","archMap":null,"syscalls":[
            {"name":"reboot","names":null,"action":"SCMP_ACT_ALLOW","args":null,"comment":"x","includes":{"caps":["CAP_SYS_BOOT"]},"excludes":{}}]}"#;
        let p = parse(docker, "x").unwrap();
        assert!(resolve(&p, &host(), &[]).unwrap().syscalls.is_empty());
        let r = resolve(&p, &host(), &caps(&["CAP_SYS_BOOT"])).unwrap();
        assert_eq!(r.syscalls[0].names, ["reboot"]);
    }

    #[test]
    fn bad_profiles_are_explained() {
        let e = parse(r#"{"defaultAction":"SCMP_ACT_ALLOW","syscals":[]}"#, "\"/p.json\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("/p.json") && e.contains("unknown field `syscals`"), "{e}");
        let e = parse(r#"{"defaultAction":"SCMP_ACT_MAYBE"}"#, "f")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown variant `SCMP_ACT_MAYBE`"), "{e}");
        let e = parse("{", "f").unwrap_err().to_string();
        assert!(e.contains("EOF"), "{e}");

        let p = parse(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","architectures":["SCMP_ARCH_VAX"],"syscalls":[]}"#,
            "f",
        )
        .unwrap();
        let e = compile(&resolve(&p, &host(), &[]).unwrap()).err().unwrap();
        assert!(e.contains("architectures[0]") && e.contains("SCMP_ARCH_VAX"), "{e}");
        let p = parse(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["read"],"action":"SCMP_ACT_NOTIFY"}]}"#,
            "f",
        )
        .unwrap();
        let e = compile(&p).err().unwrap();
        assert!(e.contains("syscalls[0].action") && e.contains("notify"), "{e}");
        let p = parse(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["read"],"action":"SCMP_ACT_ERRNO","args":[{"index":7,"value":1,"op":"SCMP_CMP_EQ"}]}]}"#,
            "f",
        )
        .unwrap();
        assert!(compile(&p).err().unwrap().contains("index 7"));
        let p = parse(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","listenerPath":"/run/x.sock"}"#,
            "f",
        )
        .unwrap();
        assert!(resolve(&p, &host(), &[]).unwrap_err().contains("listenerPath"));

        let missing = read_profile(Path::new("/nonexistent/minilet/p.json"))
            .unwrap_err()
            .to_string();
        assert!(
            missing.contains("cannot load seccomp profile \"/nonexistent/minilet/p.json\""),
            "{missing}"
        );
    }

    #[test]
    fn privileged_and_unconfined_get_no_filter() {
        assert!(for_container(&Request::RuntimeDefault, None).unwrap().is_none());
        let defaults = crate::runtime::capabilities::effective_set(&[], &[]);
        assert!(for_container(&Request::Unconfined, Some(&defaults)).unwrap().is_none());
        assert!(
            for_container(&Request::RuntimeDefault, Some(&defaults))
                .unwrap()
                .is_some()
        );
        let e = for_container(&Request::Localhost("/nonexistent/p.json".into()), Some(&defaults)).unwrap_err();
        assert!(matches!(e, SeccompError::Read { .. }));
    }

    #[test]
    fn filters_are_compiled_once_and_older_specs_still_load() {
        let defaults = crate::runtime::capabilities::effective_set(&[], &[]);
        let first = for_container(&Request::RuntimeDefault, Some(&defaults))
            .unwrap()
            .unwrap();
        assert!(first.instructions() > 100, "{} instructions", first.instructions());
        assert_eq!(
            for_container(&Request::RuntimeDefault, Some(&defaults))
                .unwrap()
                .unwrap(),
            first
        );
        // Fewer capabilities, fewer allowed calls: another program.
        let fewer = for_container(&Request::RuntimeDefault, Some(&[])).unwrap().unwrap();
        assert_ne!(fewer, first);

        // What a spec carries reads back as the same program.
        let json = serde_json::to_string(&Seccomp::Filter(first.clone())).unwrap();
        let back: Seccomp = serde_json::from_str(&json).unwrap();
        assert_eq!(back.filter().unwrap().into_owned(), first);
        // A spec written before filters were compiled in the agent holds the resolved
        // profile: it compiles to the same program when loaded.
        let resolved = resolve(&default_profile().unwrap(), &Host::detect(), &defaults).unwrap();
        let old: Seccomp = serde_json::from_str(&serde_json::to_string(&resolved).unwrap()).unwrap();
        assert!(matches!(old, Seccomp::Profile(_)));
        assert_eq!(old.filter().unwrap().into_owned(), first);
    }

    #[test]
    fn the_tree_program_decides_every_call_as_the_list_does() {
        use super::bpf_eval::{Program, SeccompData};
        let defaults = crate::runtime::capabilities::effective_set(&[], &[]);
        let r = resolve(&default_profile().unwrap(), &host(), &defaults).unwrap();
        let mut compiled = compile(&r).unwrap();
        let tree = compiled.to_filter().unwrap();
        compiled.filter.set_ctl_optimize(1).unwrap();
        let list = compiled.export().unwrap();
        assert_ne!(tree.bpf, list, "libseccomp laid both out the same");
        let (tree_program, list) = (Program::new(&tree.bpf), Program::new(&list));
        assert!(tree.instructions() <= MAX_INSTRUCTIONS);
        // x86_64, i386, aarch64, arm (audit values) and one no filter names; x32 numbers
        // have bit 30 set. Arguments: the values the default profile's rules compare with
        // (clone's namespace flags, personality's, socket's AF_VSOCK) and their neighbours.
        let arches = [0xc000_003e, 0x4000_0003, 0xc000_00b7, 0x4000_0028, 0];
        let values = [
            0,
            1,
            8,
            40,
            0x7e02_0000,
            0x2000_0000,
            0x20008,
            0xffff_ffff,
            0x1_0000_0000,
            u64::MAX,
        ];
        let numbers = (0..1100).chain(0x4000_0000..0x4000_0000 + 600);
        for nr in numbers {
            for arch in arches {
                for v in values {
                    for args in [[v; 6], [0, v, v, 0, 0, 0]] {
                        let data = SeccompData::new(nr, arch, args);
                        let what = format!("syscall {nr:#x}, arch {arch:#x}, args {args:x?}");
                        let expected = list.run(&data).unwrap_or_else(|e| panic!("{what}: list: {e}"));
                        let got = tree_program.run(&data).unwrap_or_else(|e| panic!("{what}: tree: {e}"));
                        assert_eq!(got, expected, "{what}");
                    }
                }
            }
        }
    }

    #[test]
    fn a_tree_past_the_kernels_limit_is_laid_out_as_a_list() {
        // `rules` conditional rules (all six arguments compared with 64-bit values) spread
        // over the default profile's calls: the program grows with them, the tree a little
        // faster.
        let defaults = crate::runtime::capabilities::effective_set(&[], &[]);
        let r = resolve(&default_profile().unwrap(), &host(), &defaults).unwrap();
        let names = names_with(&r, Action::Allow);
        let profile = |rules: usize| {
            let syscalls: Vec<String> = (0..rules)
                .map(|i| {
                    let args: Vec<String> = (0..6)
                        .map(|a| {
                            let value = ((i as u64) << 32) | a;
                            format!(r#"{{"index":{a},"value":{value},"op":"SCMP_CMP_EQ"}}"#)
                        })
                        .collect();
                    format!(
                        r#"{{"names":["{}"],"action":"SCMP_ACT_ALLOW","args":[{}]}}"#,
                        names[i % names.len()],
                        args.join(",")
                    )
                })
                .collect();
            let text = format!(
                r#"{{"defaultAction":"SCMP_ACT_ERRNO","architectures":["SCMP_ARCH_X86_64"],"syscalls":[{}]}}"#,
                syscalls.join(",")
            );
            compile(&resolve(&parse(&text, "test").unwrap(), &host(), &[]).unwrap()).unwrap()
        };
        let tree_len = |rules: usize| {
            let mut c = profile(rules);
            c.filter.set_ctl_optimize(2).unwrap();
            c.export().unwrap().len() / INSTRUCTION
        };
        // The fewest rules whose tree passes the limit (doubling, then halving: compiles of
        // many rules are slow, so none much past the limit).
        let (mut fits, mut over) = (0, 16);
        while tree_len(over) <= MAX_INSTRUCTIONS {
            (fits, over) = (over, over * 2);
            assert!(over <= 1 << 16, "no tree past the limit");
        }
        while over - fits > 1 {
            let mid = (fits + over) / 2;
            if tree_len(mid) > MAX_INSTRUCTIONS {
                over = mid;
            } else {
                fits = mid;
            }
        }
        let mut c = profile(over);
        let filter = c.to_filter().unwrap();
        c.filter.set_ctl_optimize(1).unwrap();
        let list = c.export().unwrap();
        assert!(list.len() / INSTRUCTION <= MAX_INSTRUCTIONS, "no list fits either");
        assert_eq!(filter.bpf, list, "{over} rules: not the list");
        // One rule fewer: the tree, within the limit.
        let mut c = profile(fits);
        let filter = c.to_filter().unwrap();
        c.filter.set_ctl_optimize(2).unwrap();
        assert_eq!(filter.bpf, c.export().unwrap(), "{fits} rules: not the tree");
    }

    #[test]
    fn a_program_of_partial_instructions_is_refused() {
        assert!(BpfFilter::new(0, vec![0; 12]).is_err());
        assert!(BpfFilter::new(0, Vec::new()).is_err());
        // One read from a damaged spec is refused by the load, not handed to the kernel.
        let damaged: BpfFilter = serde_json::from_str(r#"{"flags":0,"bpf":"AAAA"}"#).unwrap();
        assert_eq!(damaged.load().unwrap_err().raw_os_error(), Some(libc::EINVAL));
    }

    #[test]
    fn kernel_versions() {
        assert_eq!(parse_kernel("6.18.44-fc-v657\n"), Some((6, 18)));
        assert_eq!(parse_kernel("4.8"), Some((4, 8)));
        assert_eq!(parse_kernel("5"), Some((5, 0)));
        assert_eq!(parse_kernel("x"), None);
    }
}
