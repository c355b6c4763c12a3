//! minilet-pause: PID 1 of a pod.
//!
//! It exists so that a pod's network, IPC, UTS and PID namespaces have an owner that never
//! exits on its own: containers come and go and join these namespaces with setns. As PID 1 of
//! the pod's PID namespace it also inherits every orphan of the containers, so it must reap.
//!
//! The whole program, in the spirit of kubernetes' pause.c and tini:
//! block every signal, wait for them synchronously, reap all children on SIGCHLD,
//! exit 0 on SIGTERM or SIGINT, ignore the rest. Nothing else.
//!
//! It is `no_std` with its own `_start` and raw syscalls, so the static binary is a few
//! kilobytes and its resident set a handful of pages (figures in the README).
#![no_std]
#![no_main]

mod sys;

const VERSION: &[u8] = concat!("minilet-pause ", env!("CARGO_PKG_VERSION"), "\n").as_bytes();

/// Called by `_start` (in `sys`) with the initial stack pointer: argc, argv[0], argv[1], ...
extern "C" fn main(stack: *const usize) -> ! {
    if wants_version(stack) {
        sys::write(1, VERSION);
        sys::exit(0);
    }
    if sys::getpid() != 1 {
        // Same warning as pause.c: useful when someone runs it by hand; keep going anyway.
        sys::write(
            2,
            b"minilet-pause: warning: not PID 1, orphans will not be reaped here\n",
        );
    }

    // Block everything so that signals are only ever consumed by sigtimedwait below:
    // no handlers, no async-signal-safety concerns, no lost SIGCHLD.
    let all = sys::SigSet::full();
    sys::block_signals(&all);

    loop {
        match sys::wait_signal(&all) {
            sys::SIGCHLD => reap_children(),
            sys::SIGTERM | sys::SIGINT => sys::exit(0),
            // Anything else (or EINTR): ignored, as PID 1 ignores signals it does not handle.
            _ => {}
        }
    }
}

/// Reap every child that has exited. Standard signals coalesce, so one SIGCHLD may stand
/// for many exits: loop until the kernel says there is nothing left to collect.
fn reap_children() {
    while sys::reap_one() > 0 {}
}

/// `minilet-pause -v` prints the version, like pause.c.
fn wants_version(stack: *const usize) -> bool {
    sys::arg_is(stack, 1, b"-v") || sys::arg_is(stack, 1, b"--version")
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    // Nothing in this program panics (no indexing, no allocation); if it ever did, leaving
    // with a distinctive status is the only sane thing PID 1 can do.
    sys::exit(2)
}

/// The precompiled `core` refers to the unwinding personality routine even though this
/// binary aborts on panic; unoptimised builds keep that reference alive. It is never called.
#[cfg(debug_assertions)]
#[unsafe(no_mangle)]
extern "C" fn rust_eh_personality() {}
