//! Devices: which device nodes a container may create (mknod) and open.
//!
//! A container keeps CAP_MKNOD, so without device control it could make a node for any host
//! device (a disk, /dev/kmsg, /dev/mem) and open it. The container runtimes' answer, used
//! here too: deny every device, then allow creating any node but opening only the few that
//! every container gets in its /dev ([`DEFAULT_ALLOWED`], runc's and containerd's default
//! list). A privileged container may use every device ([`DevicePolicy::AllowAll`]), as in
//! Kubernetes.
//!
//! - cgroup v1: the `devices` controller: `a` to `devices.deny`, then one line per allowed
//!   rule to `devices.allow` ([`apply_v1`]).
//! - cgroup v2 has no devices file: the kernel asks a `BPF_PROG_TYPE_CGROUP_DEVICE` program
//!   attached to the cgroup. [`program`] compiles the rules into one (first matching rule
//!   allows, nothing matching denies), [`attach_v2`] loads and attaches it with `bpf(2)`.
//!   The attachment holds the program; it goes when the cgroup is removed.

use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use super::{CgroupError, write_file};

/// What a rule is about: character devices, block devices, or both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceKind {
    Char,
    Block,
    All,
}

/// Kinds of access, as the kernel names them (`r`, `w`, `m`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Access {
    pub read: bool,
    pub write: bool,
    pub mknod: bool,
}

impl Access {
    pub const RWM: Access = Access {
        read: true,
        write: true,
        mknod: true,
    };
    pub const MKNOD: Access = Access {
        read: false,
        write: false,
        mknod: true,
    };

    /// The kernel's `BPF_DEVCG_ACC_*` bits: mknod 1, read 2, write 4.
    fn bpf_bits(self) -> i32 {
        i32::from(self.mknod) | i32::from(self.read) << 1 | i32::from(self.write) << 2
    }
}

impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (on, c) in [(self.read, "r"), (self.write, "w"), (self.mknod, "m")] {
            if on {
                f.write_str(c)?;
            }
        }
        Ok(())
    }
}

/// One allow rule; `None` major or minor means any (`*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceRule {
    pub kind: DeviceKind,
    pub major: Option<u32>,
    pub minor: Option<u32>,
    pub access: Access,
}

impl fmt::Display for DeviceRule {
    /// The v1 `devices.allow` / `devices.list` line: `c 1:3 rwm`, `b *:* m`, `a *:* rwm`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            DeviceKind::Char => "c",
            DeviceKind::Block => "b",
            DeviceKind::All => "a",
        };
        let num = |n: Option<u32>| n.map_or_else(|| "*".to_string(), |n| n.to_string());
        write!(f, "{kind} {}:{} {}", num(self.major), num(self.minor), self.access)
    }
}

const fn char_dev(major: u32, minor: Option<u32>) -> DeviceRule {
    DeviceRule {
        kind: DeviceKind::Char,
        major: Some(major),
        minor,
        access: Access::RWM,
    }
}

/// What every non-privileged container may do: create any node, open only these (runc's
/// `AllowedDevices`, with containerd's tun/tap).
pub const DEFAULT_ALLOWED: &[DeviceRule] = &[
    DeviceRule {
        kind: DeviceKind::Char,
        major: None,
        minor: None,
        access: Access::MKNOD,
    },
    DeviceRule {
        kind: DeviceKind::Block,
        major: None,
        minor: None,
        access: Access::MKNOD,
    },
    char_dev(1, Some(3)),    // /dev/null
    char_dev(1, Some(5)),    // /dev/zero
    char_dev(1, Some(7)),    // /dev/full
    char_dev(1, Some(8)),    // /dev/random
    char_dev(1, Some(9)),    // /dev/urandom
    char_dev(5, Some(0)),    // /dev/tty
    char_dev(5, Some(1)),    // /dev/console
    char_dev(5, Some(2)),    // /dev/ptmx
    char_dev(136, None),     // /dev/pts/*
    char_dev(10, Some(200)), // /dev/net/tun
];

/// Device access of one container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DevicePolicy {
    /// [`DEFAULT_ALLOWED`] only.
    #[default]
    Default,
    /// Every device (`privileged: true`).
    AllowAll,
}

/// v1: set the `devices` files of `dir` (a cgroup without children: the kernel refuses to
/// change the default of one that has some).
pub(crate) fn apply_v1(dir: &Path, policy: DevicePolicy) -> Result<(), CgroupError> {
    match policy {
        DevicePolicy::AllowAll => write_file(dir, "devices.allow", "a"),
        DevicePolicy::Default => {
            write_file(dir, "devices.deny", "a")?;
            for rule in DEFAULT_ALLOWED {
                write_file(dir, "devices.allow", &rule.to_string())?;
            }
            Ok(())
        }
    }
}

/// v2: attach the program of `policy` to the cgroup at `dir`. Everything is allowed without
/// a program, so [`DevicePolicy::AllowAll`] attaches none.
pub(crate) fn attach_v2(dir: &Path, policy: DevicePolicy) -> Result<(), CgroupError> {
    match policy {
        DevicePolicy::AllowAll => Ok(()),
        DevicePolicy::Default => bpf::attach(dir, &program(DEFAULT_ALLOWED)),
    }
}

// ---------------------------------------------------------------------------------------------
// The BPF program.

/// One eBPF instruction as the kernel reads it (`struct bpf_insn`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub(crate) struct Insn {
    code: u8,
    /// dst register in the low nibble, src in the high one.
    regs: u8,
    off: i16,
    imm: i32,
}

// Opcodes (linux/bpf_common.h, linux/bpf.h).
const LDX_MEM_W: u8 = 0x61; // BPF_LDX | BPF_MEM | BPF_W
const ALU32_AND_K: u8 = 0x54; // BPF_ALU | BPF_AND | BPF_K
const ALU32_RSH_K: u8 = 0x74; // BPF_ALU | BPF_RSH | BPF_K
const ALU32_MOV_K: u8 = 0xb4; // BPF_ALU | BPF_MOV | BPF_K
const ALU32_MOV_X: u8 = 0xbc; // BPF_ALU | BPF_MOV | BPF_X
const JMP_JNE_K: u8 = 0x55; // BPF_JMP | BPF_JNE | BPF_K
const JMP_JNE_X: u8 = 0x5d; // BPF_JMP | BPF_JNE | BPF_X
const JMP_EXIT: u8 = 0x95; // BPF_JMP | BPF_EXIT

// `struct bpf_cgroup_dev_ctx { u32 access_type; u32 major; u32 minor; }`; access_type is
// `access << 16 | type`.
const DEVCG_DEV_BLOCK: i32 = 1;
const DEVCG_DEV_CHAR: i32 = 2;

// Registers: r1 the context on entry, then scratch; r2 type, r3 access, r4 major, r5 minor.
const R0: u8 = 0;
const R1: u8 = 1;
const R2: u8 = 2;
const R3: u8 = 3;
const R4: u8 = 4;
const R5: u8 = 5;

const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: dst | src << 4,
        off,
        imm,
    }
}

/// The instructions of one rule: jumps to the next rule on any mismatch, else returns 1.
fn rule_block(rule: &DeviceRule) -> Vec<Insn> {
    // Conditions first, with their jump offsets left to fix once the block's length is known.
    let mut conds: Vec<Insn> = Vec::new();
    match rule.kind {
        DeviceKind::Char => conds.push(insn(JMP_JNE_K, R2, 0, 0, DEVCG_DEV_CHAR)),
        DeviceKind::Block => conds.push(insn(JMP_JNE_K, R2, 0, 0, DEVCG_DEV_BLOCK)),
        DeviceKind::All => {}
    }
    let bits = rule.access.bpf_bits();
    if bits != Access::RWM.bpf_bits() {
        // Allowed only if every requested kind is in the rule: (access & bits) == access.
        conds.push(insn(ALU32_MOV_X, R1, R3, 0, 0));
        conds.push(insn(ALU32_AND_K, R1, 0, 0, bits));
        conds.push(insn(JMP_JNE_X, R1, R3, 0, 0));
    }
    if let Some(major) = rule.major {
        conds.push(insn(JMP_JNE_K, R4, 0, 0, major as i32));
    }
    if let Some(minor) = rule.minor {
        conds.push(insn(JMP_JNE_K, R5, 0, 0, minor as i32));
    }
    conds.push(insn(ALU32_MOV_K, R0, 0, 0, 1));
    conds.push(insn(JMP_EXIT, 0, 0, 0, 0));
    let len = conds.len();
    for (i, c) in conds.iter_mut().enumerate() {
        if c.code == JMP_JNE_K || c.code == JMP_JNE_X {
            // Offsets count from the next instruction: land just past this block.
            c.off = (len - i - 1) as i16;
        }
    }
    conds
}

/// Compile allow rules into a `BPF_PROG_TYPE_CGROUP_DEVICE` program: the first matching
/// rule allows (returns 1); when none matches, access is denied (returns 0).
pub(crate) fn program(rules: &[DeviceRule]) -> Vec<Insn> {
    let mut prog = vec![
        insn(LDX_MEM_W, R2, R1, 0, 0),
        insn(ALU32_AND_K, R2, 0, 0, 0xffff),
        insn(LDX_MEM_W, R3, R1, 0, 0),
        insn(ALU32_RSH_K, R3, 0, 0, 16),
        insn(LDX_MEM_W, R4, R1, 4, 0),
        insn(LDX_MEM_W, R5, R1, 8, 0),
    ];
    for rule in rules {
        prog.extend(rule_block(rule));
    }
    prog.push(insn(ALU32_MOV_K, R0, 0, 0, 0));
    prog.push(insn(JMP_EXIT, 0, 0, 0, 0));
    prog
}

/// The `bpf(2)` calls: load a program, attach it to a cgroup directory.
pub(crate) mod bpf {
    use super::*;

    const BPF_PROG_LOAD: libc::c_long = 5;
    const BPF_PROG_ATTACH: libc::c_long = 8;
    const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
    const BPF_CGROUP_DEVICE: u32 = 6;
    /// Programs of parent cgroups (systemd's device policy, say) keep running too; every one
    /// must allow an access.
    const BPF_F_ALLOW_MULTI: u32 = 2;
    const LICENSE: &[u8] = b"Apache-2.0\0";

    /// The leading fields of `union bpf_attr` for BPF_PROG_LOAD; the kernel accepts a shorter
    /// struct and treats the rest as zero.
    #[repr(C)]
    #[derive(Default)]
    struct ProgLoadAttr {
        prog_type: u32,
        insn_cnt: u32,
        insns: u64,
        license: u64,
        log_level: u32,
        log_size: u32,
        log_buf: u64,
        kern_version: u32,
        prog_flags: u32,
        prog_name: [u8; 16],
        prog_ifindex: u32,
        expected_attach_type: u32,
    }

    /// `union bpf_attr` for BPF_PROG_ATTACH.
    #[repr(C)]
    #[derive(Default)]
    struct ProgAttachAttr {
        target_fd: u32,
        attach_bpf_fd: u32,
        attach_type: u32,
        attach_flags: u32,
        replace_bpf_fd: u32,
    }

    fn sys_bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<libc::c_long> {
        // SAFETY: `attr` is a properly laid out, zero-padded `union bpf_attr` prefix that lives
        // for the call; its size is passed so the kernel reads no further.
        let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *mut T, std::mem::size_of::<T>()) };
        if rc < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(rc)
        }
    }

    /// Load `insns` as a cgroup device program. A rejected program is loaded once more with
    /// the verifier's log, which goes into the error.
    pub(crate) fn load(insns: &[Insn]) -> io::Result<OwnedFd> {
        let mut name = [0u8; 16];
        name[..13].copy_from_slice(b"minilet_devcg");
        let mut attr = ProgLoadAttr {
            prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
            insn_cnt: u32::try_from(insns.len()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?,
            insns: insns.as_ptr() as u64,
            license: LICENSE.as_ptr() as u64,
            prog_name: name,
            expected_attach_type: BPF_CGROUP_DEVICE,
            ..Default::default()
        };
        let mut first = sys_bpf(BPF_PROG_LOAD, &mut attr);
        if matches!(&first, Err(e) if e.raw_os_error() == Some(libc::EPERM)) {
            // Kernels before 5.11 charge programs to RLIMIT_MEMLOCK (often 64 KiB); runc's
            // loader lifts it too. Root may; the agent's other memory is not locked by it.
            use nix::sys::resource::{RLIM_INFINITY, Resource, setrlimit};
            if setrlimit(Resource::RLIMIT_MEMLOCK, RLIM_INFINITY, RLIM_INFINITY).is_ok() {
                first = sys_bpf(BPF_PROG_LOAD, &mut attr);
            }
        }
        match first {
            // SAFETY: a successful BPF_PROG_LOAD returns a new descriptor that we own.
            Ok(fd) => Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) }),
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::EACCES)) => {
                let mut log = vec![0u8; 64 * 1024];
                attr.log_level = 1;
                attr.log_size = log.len() as u32;
                attr.log_buf = log.as_mut_ptr() as u64;
                let again = sys_bpf(BPF_PROG_LOAD, &mut attr);
                if let Ok(fd) = again {
                    // SAFETY: as above.
                    return Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) });
                }
                let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
                let text = String::from_utf8_lossy(&log[..end]);
                Err(io::Error::new(e.kind(), format!("{e}; verifier log: {}", text.trim())))
            }
            Err(e) => Err(e),
        }
    }

    /// Load `insns` and attach the program to the cgroup directory `dir`.
    pub(crate) fn attach(dir: &Path, insns: &[Insn]) -> Result<(), CgroupError> {
        let err = |step: &'static str, source: io::Error| CgroupError::DeviceProgram {
            path: dir.to_path_buf(),
            step,
            source,
        };
        let prog = load(insns).map_err(|e| err("BPF_PROG_LOAD", e))?;
        let cgroup = std::fs::File::open(dir).map_err(|e| err("open cgroup directory", e))?;
        let mut attr = ProgAttachAttr {
            target_fd: cgroup.as_raw_fd() as u32,
            attach_bpf_fd: prog.as_raw_fd() as u32,
            attach_type: BPF_CGROUP_DEVICE,
            attach_flags: BPF_F_ALLOW_MULTI,
            ..Default::default()
        };
        sys_bpf(BPF_PROG_ATTACH, &mut attr).map_err(|e| err("BPF_PROG_ATTACH BPF_CGROUP_DEVICE", e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn rules_as_v1_lines() {
        let lines: Vec<String> = DEFAULT_ALLOWED.iter().map(ToString::to_string).collect();
        assert_eq!(
            lines,
            [
                "c *:* m",
                "b *:* m",
                "c 1:3 rwm",
                "c 1:5 rwm",
                "c 1:7 rwm",
                "c 1:8 rwm",
                "c 1:9 rwm",
                "c 5:0 rwm",
                "c 5:1 rwm",
                "c 5:2 rwm",
                "c 136:* rwm",
                "c 10:200 rwm",
            ]
        );
        let all = DeviceRule {
            kind: DeviceKind::All,
            major: None,
            minor: Some(3),
            access: Access {
                read: true,
                write: false,
                mknod: false,
            },
        };
        assert_eq!(all.to_string(), "a *:3 r");
    }

    #[test]
    fn apply_v1_denies_all_then_allows_the_list() {
        let d = tempfile::tempdir().unwrap();
        // A fixture cannot show the kernel's list; the order of writes is what matters, and
        // the last write to each file stays in it.
        fs::write(d.path().join("devices.deny"), "").unwrap();
        fs::write(d.path().join("devices.allow"), "").unwrap();
        apply_v1(d.path(), DevicePolicy::Default).unwrap();
        assert_eq!(fs::read_to_string(d.path().join("devices.deny")).unwrap(), "a");
        assert_eq!(
            fs::read_to_string(d.path().join("devices.allow")).unwrap(),
            "c 10:200 rwm"
        );
        apply_v1(d.path(), DevicePolicy::AllowAll).unwrap();
        assert_eq!(fs::read_to_string(d.path().join("devices.allow")).unwrap(), "a");
        let err = apply_v1(&d.path().join("absent"), DevicePolicy::Default).unwrap_err();
        assert!(err.to_string().contains("devices.deny"), "{err}");
    }

    /// Run `prog` on one access in a tiny interpreter of the instructions [`program`] emits,
    /// so the generated code is checked by what it decides, not by its bytes alone.
    fn run(prog: &[Insn], kind: i32, access: i32, major: u32, minor: u32) -> u64 {
        let ctx = [((access << 16) | kind) as u32, major, minor];
        let mut r = [0u64; 11];
        let mut pc = 0usize;
        loop {
            let i = prog[pc];
            let (dst, src) = ((i.regs & 0xf) as usize, (i.regs >> 4) as usize);
            pc += 1;
            match i.code {
                LDX_MEM_W => {
                    assert_eq!(src, 1, "loads only from the context");
                    r[dst] = u64::from(ctx[i.off as usize / 4]);
                }
                ALU32_AND_K => r[dst] = u64::from(r[dst] as u32 & i.imm as u32),
                ALU32_RSH_K => r[dst] = u64::from((r[dst] as u32) >> i.imm),
                ALU32_MOV_K => r[dst] = u64::from(i.imm as u32),
                ALU32_MOV_X => r[dst] = u64::from(r[src] as u32),
                JMP_JNE_K => {
                    if r[dst] != i.imm as i64 as u64 {
                        pc = (pc as i64 + i64::from(i.off)) as usize;
                    }
                }
                JMP_JNE_X => {
                    if r[dst] != r[src] {
                        pc = (pc as i64 + i64::from(i.off)) as usize;
                    }
                }
                JMP_EXIT => return r[0],
                other => panic!("unexpected opcode {other:#x}"),
            }
        }
    }

    const M: i32 = 1;
    const R: i32 = 2;
    const W: i32 = 4;
    const C: i32 = DEVCG_DEV_CHAR;
    const B: i32 = DEVCG_DEV_BLOCK;

    #[test]
    fn program_decides_like_the_rules() {
        let p = program(DEFAULT_ALLOWED);
        assert_eq!(p.last().map(|i| i.code), Some(JMP_EXIT));
        // Allowed nodes, any access.
        for (maj, min) in [
            (1, 3),
            (1, 5),
            (1, 7),
            (1, 8),
            (1, 9),
            (5, 0),
            (5, 1),
            (5, 2),
            (136, 0),
            (136, 77),
            (10, 200),
        ] {
            for acc in [R, W, R | W, M] {
                assert_eq!(run(&p, C, acc, maj, min), 1, "c {maj}:{min} access {acc}");
            }
        }
        // mknod of anything; nothing else.
        assert_eq!(run(&p, B, M, 7, 0), 1);
        assert_eq!(run(&p, C, M, 1, 11), 1);
        for acc in [R, W, R | W, M | R] {
            assert_eq!(run(&p, B, acc, 7, 0), 0, "loop device, access {acc}");
            assert_eq!(run(&p, C, acc, 1, 11), 0, "kmsg, access {acc}");
            assert_eq!(run(&p, C, acc, 1, 1), 0, "mem, access {acc}");
            assert_eq!(run(&p, B, acc, 1, 3), 0, "a block device with null's numbers");
        }
        assert_eq!(run(&p, C, R, 5, 3), 0);
        assert_eq!(run(&p, C, R, 137, 0), 0);
        // No rules: everything is denied.
        assert_eq!(run(&program(&[]), C, R, 1, 3), 0);
    }

    #[test]
    fn rule_blocks_have_exact_shape() {
        let null = rule_block(&char_dev(1, Some(3)));
        assert_eq!(
            null,
            vec![
                insn(JMP_JNE_K, R2, 0, 4, DEVCG_DEV_CHAR),
                insn(JMP_JNE_K, R4, 0, 3, 1),
                insn(JMP_JNE_K, R5, 0, 2, 3),
                insn(ALU32_MOV_K, R0, 0, 0, 1),
                insn(JMP_EXIT, 0, 0, 0, 0),
            ]
        );
        let mknod_block = rule_block(&DEFAULT_ALLOWED[1]);
        assert_eq!(
            mknod_block,
            vec![
                insn(JMP_JNE_K, R2, 0, 5, DEVCG_DEV_BLOCK),
                insn(ALU32_MOV_X, R1, R3, 0, 0),
                insn(ALU32_AND_K, R1, 0, 0, M),
                insn(JMP_JNE_X, R1, R3, 2, 0),
                insn(ALU32_MOV_K, R0, 0, 0, 1),
                insn(JMP_EXIT, 0, 0, 0, 0),
            ]
        );
        // The kernel reads 8-byte instructions, dst in the low nibble.
        assert_eq!(std::mem::size_of::<Insn>(), 8);
        assert_eq!(insn(0, 3, 1, 0, 0).regs, 0x13);
    }

    #[test]
    fn real_bpf_rejections_are_explained() {
        if !nix::unistd::geteuid().is_root() {
            crate::test_skip::skip("needs root");
            return;
        }
        // No exit: the verifier refuses, and its words are in the error.
        let err = bpf::load(&[insn(ALU32_MOV_K, R0, 0, 0, 1)]).unwrap_err();
        assert!(err.to_string().contains("verifier log:"), "{err}");
        let d = tempfile::tempdir().unwrap();
        let err = bpf::attach(&d.path().join("absent"), &program(DEFAULT_ALLOWED)).unwrap_err();
        assert!(
            matches!(
                &err,
                CgroupError::DeviceProgram {
                    step: "open cgroup directory",
                    ..
                }
            ),
            "{err}"
        );
        // A directory that is not a cgroup: the kernel refuses the attach.
        let err = bpf::attach(d.path(), &program(DEFAULT_ALLOWED)).unwrap_err();
        assert!(err.to_string().contains("BPF_PROG_ATTACH"), "{err}");
    }

    /// The loader against the real kernel: the empty cgroup2 hierarchy of a hybrid machine
    /// (or a pure v2 one) runs device programs without any controller enabled.
    #[test]
    fn real_bpf_program_allows_and_denies_opens() {
        use std::os::unix::fs::FileTypeExt;
        if !nix::unistd::geteuid().is_root() {
            crate::test_skip::skip("needs root");
            return;
        }
        let mount = ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"]
            .into_iter()
            .map(Path::new)
            .find(|m| {
                nix::sys::statfs::statfs(*m)
                    .is_ok_and(|st| st.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
            });
        let Some(mount) = mount else {
            crate::test_skip::skip("no cgroup2 mount at /sys/fs/cgroup/unified or /sys/fs/cgroup");
            return;
        };
        /// Removes the test cgroup (after its process is gone) even when an assertion fails.
        struct Cleanup(std::path::PathBuf);
        impl Drop for Cleanup {
            fn drop(&mut self) {
                if let Err(e) = super::super::remove_tree(&self.0) {
                    eprintln!("cleanup: {e}");
                }
            }
        }
        let cg = mount.join(format!(
            "minilet-devtest-{}-{:x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        fs::create_dir(&cg).unwrap();
        let _cleanup = Cleanup(cg.clone());
        let nodes = tempfile::tempdir().unwrap();
        let d = nodes.path();
        let mknod = |name: &str, kind: nix::sys::stat::SFlag, major: u64, minor: u64| {
            nix::sys::stat::mknod(
                &d.join(name),
                kind,
                nix::sys::stat::Mode::from_bits_truncate(0o600),
                nix::sys::stat::makedev(major, minor),
            )
            .unwrap();
        };
        mknod("null", nix::sys::stat::SFlag::S_IFCHR, 1, 3);
        mknod("zero", nix::sys::stat::SFlag::S_IFCHR, 1, 5);
        mknod("loop", nix::sys::stat::SFlag::S_IFBLK, 7, 0);
        // Outside the cgroup the nodes open: any denial below is the program's.
        fs::File::open(d.join("null")).unwrap();
        match fs::File::open(d.join("loop")) {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) => {} // no loop driver: still not EPERM
            Err(e) => panic!("open loop node outside the cgroup: {e}"),
        }

        bpf::attach(&cg, &program(DEFAULT_ALLOWED)).unwrap();

        // A shell moves itself into the cgroup, then tries each node; one line per attempt.
        let script = r#"
            echo 0 > "$1/cgroup.procs" || exit 90
            cd "$2" || exit 91
            head -c 1 null >/dev/null 2>err; echo "null $? $(cat err)"
            head -c 1 zero >/dev/null 2>err; echo "zero $? $(cat err)"
            head -c 1 loop >/dev/null 2>err; echo "read-loop $? $(cat err)"
            mknod kmsg c 1 11 2>err; echo "mknod-kmsg $? $(cat err)"
            (echo x > kmsg) 2>err; echo "write-kmsg $? $(cat err)"
        "#;
        let out = std::process::Command::new("sh")
            .args(["-c", script, "sh"])
            .arg(&cg)
            .arg(d)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
        let line = |name: &str| {
            text.lines()
                .find(|l| l.split(' ').next() == Some(name))
                .unwrap_or_else(|| panic!("no {name} line in {text}"))
                .to_string()
        };
        assert!(line("null").starts_with("null 0"), "{text}");
        assert!(line("zero").starts_with("zero 0"), "{text}");
        // Writes only to kmsg: were the program broken, a line in the kernel log is all it costs
        // (a write to a loop device in use could corrupt it).
        for denied in ["read-loop", "write-kmsg"] {
            let l = line(denied);
            assert!(
                !l.starts_with(&format!("{denied} 0")) && l.contains("Operation not permitted"),
                "{denied} must fail with EPERM: {text}"
            );
        }
        assert!(
            line("mknod-kmsg").starts_with("mknod-kmsg 0"),
            "mknod is allowed: {text}"
        );
        assert!(
            fs::symlink_metadata(d.join("kmsg"))
                .unwrap()
                .file_type()
                .is_char_device()
        );
    }
}
