//! Hidden helper subcommands (being written).

use std::ffi::OsString;
use std::process::ExitCode;

/// Run a helper if `args` name one; `None` means "not a helper invocation".
pub fn dispatch(_args: &[OsString]) -> Option<ExitCode> {
    None
}
