//! The CRI `runtime.v1` API (Kubernetes Container Runtime Interface, cri-api v0.32), as
//! prost messages and tonic gRPC clients/servers generated from `runtime/v1/api.proto`.
//!
//! The `.proto` was written from the wire-contract table; package, service and method names,
//! field numbers and field types match upstream, so stock kubelet and crictl can talk to a
//! server built on [`RuntimeServiceServer`] / [`ImageServiceServer`].
//!
//! ```
//! use minilet_proto::runtime::v1::{ContainerState, VersionResponse};
//! let v = VersionResponse { version: "0.1.0".into(), ..Default::default() };
//! assert_eq!(ContainerState::ContainerRunning as i32, 1);
//! # let _ = v;
//! ```

/// Generated code lives under its proto package path, `runtime.v1`.
pub mod runtime {
    /// Messages, enums, and the `runtime_service_*` / `image_service_*` client and server
    /// modules of package `runtime.v1`.
    pub mod v1 {
        tonic::include_proto!("runtime.v1");
    }
}

/// minilet's own node service: pods as v1.Pod, events, interactive exec (`minilet/v1/node.proto`).
pub mod minilet {
    pub mod v1 {
        tonic::include_proto!("minilet.v1");
    }
}

/// The gRPC health checking protocol (`grpc.health.v1`), which grpc probes call.
pub mod grpc {
    pub mod health {
        pub mod v1 {
            tonic::include_proto!("grpc.health.v1");
        }
    }
}

pub use minilet::v1::node_client::NodeClient;
pub use minilet::v1::node_server::{Node, NodeServer};
pub use runtime::v1::image_service_client::ImageServiceClient;
pub use runtime::v1::image_service_server::{ImageService, ImageServiceServer};
pub use runtime::v1::runtime_service_client::RuntimeServiceClient;
pub use runtime::v1::runtime_service_server::{RuntimeService, RuntimeServiceServer};

/// The serialized `google.protobuf.FileDescriptorSet` of the protos, as protoc
/// produced it. Useful for gRPC reflection and for tests that check field numbers.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/runtime_v1_descriptor.bin"));

/// The CRI API version this crate speaks (`VersionResponse.runtime_api_version`).
pub const CRI_API_VERSION: &str = "v1";
