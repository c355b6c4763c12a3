//! The few Linux syscalls the pause needs, made directly (there is no libc in this binary).
//! Supported: x86_64 and aarch64.

use core::arch::{asm, global_asm};

pub const SIGINT: isize = 2;
pub const SIGTERM: isize = 15;
pub const SIGCHLD: isize = 17;

const SIG_BLOCK: usize = 0;
const WNOHANG: usize = 1;
/// The kernel's sigset_t is 64 bits on both supported architectures.
const SIGSET_SIZE: usize = 8;

#[cfg(target_arch = "x86_64")]
mod nr {
    pub const WRITE: usize = 1;
    pub const RT_SIGPROCMASK: usize = 14;
    pub const GETPID: usize = 39;
    pub const WAIT4: usize = 61;
    pub const RT_SIGTIMEDWAIT: usize = 128;
    pub const EXIT_GROUP: usize = 231;
}

#[cfg(target_arch = "aarch64")]
mod nr {
    pub const WRITE: usize = 64;
    pub const EXIT_GROUP: usize = 94;
    pub const RT_SIGPROCMASK: usize = 135;
    pub const RT_SIGTIMEDWAIT: usize = 137;
    pub const GETPID: usize = 172;
    pub const WAIT4: usize = 260;
}

// The process entry point. The kernel leaves argc/argv/envp on the stack; pass that pointer to
// `main` and keep the ABI's 16-byte stack alignment for the call.
#[cfg(target_arch = "x86_64")]
global_asm!(
    ".globl _start",
    "_start:",
    "xor ebp, ebp",
    "mov rdi, rsp",
    "and rsp, -16",
    "call {main}",
    "ud2",
    main = sym crate::main,
);

#[cfg(target_arch = "aarch64")]
global_asm!(
    ".globl _start",
    "_start:",
    "mov x29, xzr",
    "mov x30, xzr",
    "mov x0, sp",
    "bl {main}",
    "brk #0",
    main = sym crate::main,
);

#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn syscall4(n: usize, a: usize, b: usize, c: usize, d: usize) -> isize {
    let ret: isize;
    // SAFETY: a raw syscall; every caller passes arguments valid for that syscall number
    // (pointers to live, correctly sized buffers or null where the kernel accepts null).
    unsafe {
        asm!("syscall", inlateout("rax") n as isize => ret, in("rdi") a, in("rsi") b,
             in("rdx") c, in("r10") d, lateout("rcx") _, lateout("r11") _, options(nostack));
    }
    ret
}

#[cfg(target_arch = "aarch64")]
#[inline(always)]
fn syscall4(n: usize, a: usize, b: usize, c: usize, d: usize) -> isize {
    let ret: isize;
    // SAFETY: as above: a raw syscall with arguments valid for that syscall number.
    unsafe {
        asm!("svc 0", in("x8") n, inlateout("x0") a as isize => ret, in("x1") b, in("x2") c,
             in("x3") d, options(nostack));
    }
    ret
}

/// A full signal set: every bit set. SIGKILL and SIGSTOP are silently left out by the kernel.
#[repr(transparent)]
pub struct SigSet(u64);

impl SigSet {
    pub const fn full() -> Self {
        SigSet(u64::MAX)
    }
}

pub fn write(fd: usize, msg: &[u8]) {
    // Best effort: a pause that cannot print a warning still does its job.
    let _ = syscall4(nr::WRITE, fd, msg.as_ptr() as usize, msg.len(), 0);
}

pub fn getpid() -> isize {
    syscall4(nr::GETPID, 0, 0, 0, 0)
}

pub fn exit(code: usize) -> ! {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: exit_group takes one integer and never returns.
    unsafe {
        asm!("syscall", in("rax") nr::EXIT_GROUP, in("rdi") code, options(noreturn, nostack));
    }
    #[cfg(target_arch = "aarch64")]
    // SAFETY: exit_group takes one integer and never returns.
    unsafe {
        asm!("svc 0", in("x8") nr::EXIT_GROUP, in("x0") code, options(noreturn, nostack));
    }
}

pub fn block_signals(set: &SigSet) {
    syscall4(
        nr::RT_SIGPROCMASK,
        SIG_BLOCK,
        set as *const SigSet as usize,
        0,
        SIGSET_SIZE,
    );
}

/// Wait, without a timeout, for one of the (blocked) signals in `set`; returns its number,
/// or a negative errno (EINTR when a debugger attaches, for instance).
pub fn wait_signal(set: &SigSet) -> isize {
    syscall4(nr::RT_SIGTIMEDWAIT, set as *const SigSet as usize, 0, 0, SIGSET_SIZE)
}

/// Reap one exited child without blocking: >0 is its pid, 0 means none ready, <0 an errno
/// (ECHILD once there are no children at all).
pub fn reap_one() -> isize {
    syscall4(nr::WAIT4, usize::MAX /* -1: any child */, 0, WNOHANG, 0)
}

/// Whether argv[index] exists and equals `want`. `stack` is the pointer the kernel gave
/// `_start`. (Compares in place: computing a length first would make LLVM call strlen, and
/// there is no libc to provide it.)
pub fn arg_is(stack: *const usize, index: usize, want: &[u8]) -> bool {
    // SAFETY: at process entry the stack holds argc followed by argc pointers to
    // NUL-terminated strings that live for the whole process; we only read within argc and
    // stop at the first byte that differs, which is at the latest the terminating NUL.
    unsafe {
        let argc = *stack;
        if index >= argc {
            return false;
        }
        let ptr = *stack.add(1 + index) as *const u8;
        for (i, &b) in want.iter().enumerate() {
            if *ptr.add(i) != b {
                return false;
            }
        }
        *ptr.add(want.len()) == 0
    }
}
