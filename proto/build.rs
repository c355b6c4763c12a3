//! Generates the CRI runtime.v1 messages and gRPC client/server from `runtime/v1/api.proto`.
//!
//! `protoc` is taken from `$PROTOC` when set, else from `$PATH` (Debian: `protobuf-compiler`).

use std::env;
use std::path::{Path, PathBuf};

const PROTO: &str = "runtime/v1/api.proto";
/// minilet's own node service (pods as v1.Pod, events, interactive exec).
const NODE_PROTO: &str = "minilet/v1/node.proto";
/// The gRPC health protocol, for grpc probes (and servers in tests).
const HEALTH_PROTO: &str = "grpc/health/v1/health.proto";

fn main() {
    println!("cargo:rerun-if-changed={PROTO}");
    println!("cargo:rerun-if-changed={NODE_PROTO}");
    println!("cargo:rerun-if-changed={HEALTH_PROTO}");
    println!("cargo:rerun-if-env-changed=PROTOC");

    let protoc = find_protoc().unwrap_or_else(|why| {
        panic!(
            "\n\nminilet-proto: cannot find `protoc` ({why}).\n\
             Install the Protocol Buffers compiler, e.g. `sudo apt-get install protobuf-compiler` \
             (or run hack/setup), or set PROTOC=/path/to/protoc.\n\n"
        )
    });

    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR is set by cargo"));
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(&protoc);

    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .file_descriptor_set_path(out_dir.join("runtime_v1_descriptor.bin"))
        .compile_with_config(config, &[PROTO, NODE_PROTO], &["."])
        .unwrap_or_else(|e| panic!("minilet-proto: compiling {PROTO} and {NODE_PROTO} failed: {e}"));

    // Apart, so that the descriptor set above stays the CRI's and minilet's.
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(&protoc);
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_with_config(config, &[HEALTH_PROTO], &["."])
        .unwrap_or_else(|e| panic!("minilet-proto: compiling {HEALTH_PROTO} failed: {e}"));
}

/// `$PROTOC` if set (it must exist), else the first executable `protoc` on `$PATH`.
fn find_protoc() -> Result<PathBuf, String> {
    if let Some(p) = env::var_os("PROTOC") {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(format!("PROTOC={} does not exist", p.display()))
        };
    }
    let path = env::var_os("PATH").unwrap_or_default();
    env::split_paths(&path)
        .map(|dir| dir.join("protoc"))
        .find(|p| is_executable(p))
        .ok_or_else(|| "PROTOC is not set and no `protoc` on PATH".to_string())
}

#[cfg(unix)]
fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

#[cfg(not(unix))]
fn is_executable(p: &Path) -> bool {
    p.is_file()
}
