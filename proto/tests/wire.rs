//! Wire-contract tests: the compiled descriptor of `runtime/v1/api.proto` must carry the
//! CRI runtime.v1 names, field numbers and types, and messages must round-trip.

use std::collections::{BTreeMap, HashMap};

use minilet_proto::FILE_DESCRIPTOR_SET;
use minilet_proto::runtime::v1::{
    Container, ContainerMetadata, ContainerState, ImageSpec, ListContainersResponse, PodSandboxState,
    image_service_server, runtime_service_server,
};
use prost::Message;
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{DescriptorProto, FieldDescriptorProto, FileDescriptorProto, FileDescriptorSet};

fn api_file() -> FileDescriptorProto {
    let set = FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).expect("descriptor set decodes");
    let mut files: Vec<_> = set
        .file
        .into_iter()
        .filter(|f| f.name() == "runtime/v1/api.proto")
        .collect();
    assert_eq!(files.len(), 1, "exactly one runtime/v1/api.proto");
    let file = files.pop().unwrap();
    assert_eq!(file.package(), "runtime.v1");
    assert_eq!(file.syntax(), "proto3");
    file
}

/// All messages of the file by fully qualified name (".runtime.v1.Foo", ".runtime.v1.Foo.Bar").
fn messages(file: &FileDescriptorProto) -> HashMap<String, DescriptorProto> {
    fn walk(prefix: &str, msgs: &[DescriptorProto], out: &mut HashMap<String, DescriptorProto>) {
        for m in msgs {
            let name = format!("{prefix}.{}", m.name());
            walk(&name, &m.nested_type, out);
            out.insert(name, m.clone());
        }
    }
    let mut out = HashMap::new();
    walk(".runtime.v1", &file.message_type, &mut out);
    out
}

/// Renders a field's type the way the contract table writes it:
/// `string`, `repeated int64`, `map<string,string>`, `ContainerState`, `repeated Mount`.
fn render(f: &FieldDescriptorProto, all: &HashMap<String, DescriptorProto>) -> String {
    let scalar = |t: Type| -> &'static str {
        match t {
            Type::Double => "double",
            Type::Float => "float",
            Type::Int64 => "int64",
            Type::Uint64 => "uint64",
            Type::Int32 => "int32",
            Type::Fixed64 => "fixed64",
            Type::Fixed32 => "fixed32",
            Type::Bool => "bool",
            Type::String => "string",
            Type::Bytes => "bytes",
            Type::Uint32 => "uint32",
            Type::Sfixed32 => "sfixed32",
            Type::Sfixed64 => "sfixed64",
            Type::Sint32 => "sint32",
            Type::Sint64 => "sint64",
            Type::Group | Type::Message | Type::Enum => unreachable!(),
        }
    };
    let simple = |type_name: &str| type_name.rsplit('.').next().unwrap().to_string();
    let base = |f: &FieldDescriptorProto| match f.r#type() {
        Type::Message | Type::Enum => simple(f.type_name()),
        t => scalar(t).to_string(),
    };
    if f.r#type() == Type::Message {
        let target = &all[f.type_name()];
        if target.options.as_ref().is_some_and(|o| o.map_entry()) {
            let (k, v) = (&target.field[0], &target.field[1]);
            assert_eq!((k.name(), k.number(), v.name(), v.number()), ("key", 1, "value", 2));
            return format!("map<{},{}>", base(k), base(v));
        }
    }
    match f.label() {
        Label::Repeated => format!("repeated {}", base(f)),
        _ => base(f),
    }
}

/// Asserts that message `name` has exactly `fields` (name, number, rendered type).
fn check_message(all: &HashMap<String, DescriptorProto>, name: &str, fields: &[(&str, i32, &str)]) {
    let msg = all
        .get(&format!(".runtime.v1.{name}"))
        .unwrap_or_else(|| panic!("message {name} missing"));
    let got: BTreeMap<String, (i32, String)> = msg
        .field
        .iter()
        .map(|f| {
            assert!(f.oneof_index.is_none(), "{name}.{}: unexpected oneof", f.name());
            (f.name().to_string(), (f.number(), render(f, all)))
        })
        .collect();
    let want: BTreeMap<String, (i32, String)> = fields
        .iter()
        .map(|(n, num, t)| (n.to_string(), (*num, t.to_string())))
        .collect();
    assert_eq!(got, want, "message {name}");
}

#[test]
fn sampled_messages_match_the_contract() {
    let file = api_file();
    let all = messages(&file);

    check_message(
        &all,
        "ContainerStatus",
        &[
            ("id", 1, "string"),
            ("metadata", 2, "ContainerMetadata"),
            ("state", 3, "ContainerState"),
            ("created_at", 4, "int64"),
            ("started_at", 5, "int64"),
            ("finished_at", 6, "int64"),
            ("exit_code", 7, "int32"),
            ("image", 8, "ImageSpec"),
            ("image_ref", 9, "string"),
            ("reason", 10, "string"),
            ("message", 11, "string"),
            ("labels", 12, "map<string,string>"),
            ("annotations", 13, "map<string,string>"),
            ("mounts", 14, "repeated Mount"),
            ("log_path", 15, "string"),
            ("resources", 16, "ContainerResources"),
            ("image_id", 17, "string"),
            ("user", 18, "ContainerUser"),
        ],
    );
    check_message(
        &all,
        "PodSandboxStatus",
        &[
            ("id", 1, "string"),
            ("metadata", 2, "PodSandboxMetadata"),
            ("state", 3, "PodSandboxState"),
            ("created_at", 4, "int64"),
            ("network", 5, "PodSandboxNetworkStatus"),
            ("linux", 6, "LinuxPodSandboxStatus"),
            ("labels", 7, "map<string,string>"),
            ("annotations", 8, "map<string,string>"),
            ("runtime_handler", 9, "string"),
        ],
    );
    check_message(
        &all,
        "PodSandboxStatusResponse",
        &[
            ("status", 1, "PodSandboxStatus"),
            ("info", 2, "map<string,string>"),
            ("containers_statuses", 3, "repeated ContainerStatus"),
            ("timestamp", 4, "int64"),
        ],
    );
    check_message(
        &all,
        "ExecSyncRequest",
        &[
            ("container_id", 1, "string"),
            ("cmd", 2, "repeated string"),
            ("timeout", 3, "int64"),
        ],
    );
    check_message(
        &all,
        "ExecSyncResponse",
        &[
            ("stdout", 1, "bytes"),
            ("stderr", 2, "bytes"),
            ("exit_code", 3, "int32"),
        ],
    );
    check_message(
        &all,
        "ContainerStats",
        &[
            ("attributes", 1, "ContainerAttributes"),
            ("cpu", 2, "CpuUsage"),
            ("memory", 3, "MemoryUsage"),
            ("writable_layer", 4, "FilesystemUsage"),
            ("swap", 5, "SwapUsage"),
        ],
    );
    check_message(
        &all,
        "ImageSpec",
        &[
            ("image", 1, "string"),
            ("annotations", 2, "map<string,string>"),
            ("user_specified_image", 18, "string"),
            ("runtime_handler", 19, "string"),
        ],
    );
    check_message(
        &all,
        "VersionResponse",
        &[
            ("version", 1, "string"),
            ("runtime_name", 2, "string"),
            ("runtime_version", 3, "string"),
            ("runtime_api_version", 4, "string"),
        ],
    );
    check_message(
        &all,
        "Mount",
        &[
            ("container_path", 1, "string"),
            ("host_path", 2, "string"),
            ("readonly", 3, "bool"),
            ("selinux_relabel", 4, "bool"),
            ("propagation", 5, "MountPropagation"),
            ("uidMappings", 6, "repeated IDMapping"),
            ("gidMappings", 7, "repeated IDMapping"),
            ("recursive_read_only", 8, "bool"),
            ("image", 9, "ImageSpec"),
        ],
    );
    check_message(
        &all,
        "LinuxContainerSecurityContext",
        &[
            ("capabilities", 1, "Capability"),
            ("privileged", 2, "bool"),
            ("namespace_options", 3, "NamespaceOption"),
            ("selinux_options", 4, "SELinuxOption"),
            ("run_as_user", 5, "Int64Value"),
            ("run_as_group", 12, "Int64Value"),
            ("run_as_username", 6, "string"),
            ("readonly_rootfs", 7, "bool"),
            ("supplemental_groups", 8, "repeated int64"),
            ("supplemental_groups_policy", 17, "SupplementalGroupsPolicy"),
            ("no_new_privs", 11, "bool"),
            ("masked_paths", 13, "repeated string"),
            ("readonly_paths", 14, "repeated string"),
            ("seccomp", 15, "SecurityProfile"),
            ("apparmor", 16, "SecurityProfile"),
            ("apparmor_profile", 9, "string"),
            ("seccomp_profile_path", 10, "string"),
        ],
    );
    check_message(
        &all,
        "Container",
        &[
            ("id", 1, "string"),
            ("pod_sandbox_id", 2, "string"),
            ("metadata", 3, "ContainerMetadata"),
            ("image", 4, "ImageSpec"),
            ("image_ref", 5, "string"),
            ("state", 6, "ContainerState"),
            ("created_at", 7, "int64"),
            ("labels", 8, "map<string,string>"),
            ("annotations", 9, "map<string,string>"),
            ("image_id", 10, "string"),
        ],
    );
    check_message(
        &all,
        "StatusResponse",
        &[
            ("status", 1, "RuntimeStatus"),
            ("info", 2, "map<string,string>"),
            ("runtime_handlers", 3, "repeated RuntimeHandler"),
            ("features", 4, "RuntimeFeatures"),
        ],
    );
    check_message(&all, "StopContainerResponse", &[]);
}

#[test]
fn enums_match_the_contract() {
    let file = api_file();
    let values = |name: &str| -> Vec<(String, i32)> {
        let e = file
            .enum_type
            .iter()
            .find(|e| e.name() == name)
            .unwrap_or_else(|| panic!("enum {name} missing"));
        e.value.iter().map(|v| (v.name().to_string(), v.number())).collect()
    };
    let owned = |v: &[(&str, i32)]| -> Vec<(String, i32)> { v.iter().map(|(n, i)| (n.to_string(), *i)).collect() };
    assert_eq!(
        values("ContainerState"),
        owned(&[
            ("CONTAINER_CREATED", 0),
            ("CONTAINER_RUNNING", 1),
            ("CONTAINER_EXITED", 2),
            ("CONTAINER_UNKNOWN", 3),
        ])
    );
    assert_eq!(
        values("PodSandboxState"),
        owned(&[("SANDBOX_READY", 0), ("SANDBOX_NOTREADY", 1)])
    );
    assert_eq!(
        values("NamespaceMode"),
        owned(&[("POD", 0), ("CONTAINER", 1), ("NODE", 2), ("TARGET", 3)])
    );

    // ProfileType is nested in SecurityProfile, as upstream has it.
    let profile = &messages(&file)[".runtime.v1.SecurityProfile"];
    let nested: Vec<(String, i32)> = profile.enum_type[0]
        .value
        .iter()
        .map(|v| (v.name().to_string(), v.number()))
        .collect();
    assert_eq!(profile.enum_type[0].name(), "ProfileType");
    assert_eq!(
        nested,
        owned(&[("RuntimeDefault", 0), ("Unconfined", 1), ("Localhost", 2)])
    );

    // Generated Rust enums carry the same numbers and proto names.
    assert_eq!(ContainerState::ContainerExited as i32, 2);
    assert_eq!(ContainerState::ContainerUnknown.as_str_name(), "CONTAINER_UNKNOWN");
    assert_eq!(PodSandboxState::SandboxNotready as i32, 1);
    assert_eq!(
        PodSandboxState::from_str_name("SANDBOX_READY"),
        Some(PodSandboxState::SandboxReady)
    );
}

/// (method, request, response, client_streaming, server_streaming)
type Rpc = (&'static str, &'static str, &'static str, bool, bool);

const RUNTIME_SERVICE: &[Rpc] = &[
    ("Version", "VersionRequest", "VersionResponse", false, false),
    (
        "RunPodSandbox",
        "RunPodSandboxRequest",
        "RunPodSandboxResponse",
        false,
        false,
    ),
    (
        "StopPodSandbox",
        "StopPodSandboxRequest",
        "StopPodSandboxResponse",
        false,
        false,
    ),
    (
        "RemovePodSandbox",
        "RemovePodSandboxRequest",
        "RemovePodSandboxResponse",
        false,
        false,
    ),
    (
        "PodSandboxStatus",
        "PodSandboxStatusRequest",
        "PodSandboxStatusResponse",
        false,
        false,
    ),
    (
        "ListPodSandbox",
        "ListPodSandboxRequest",
        "ListPodSandboxResponse",
        false,
        false,
    ),
    (
        "CreateContainer",
        "CreateContainerRequest",
        "CreateContainerResponse",
        false,
        false,
    ),
    (
        "StartContainer",
        "StartContainerRequest",
        "StartContainerResponse",
        false,
        false,
    ),
    (
        "StopContainer",
        "StopContainerRequest",
        "StopContainerResponse",
        false,
        false,
    ),
    (
        "RemoveContainer",
        "RemoveContainerRequest",
        "RemoveContainerResponse",
        false,
        false,
    ),
    (
        "ListContainers",
        "ListContainersRequest",
        "ListContainersResponse",
        false,
        false,
    ),
    (
        "ContainerStatus",
        "ContainerStatusRequest",
        "ContainerStatusResponse",
        false,
        false,
    ),
    (
        "UpdateContainerResources",
        "UpdateContainerResourcesRequest",
        "UpdateContainerResourcesResponse",
        false,
        false,
    ),
    (
        "ReopenContainerLog",
        "ReopenContainerLogRequest",
        "ReopenContainerLogResponse",
        false,
        false,
    ),
    ("ExecSync", "ExecSyncRequest", "ExecSyncResponse", false, false),
    ("Exec", "ExecRequest", "ExecResponse", false, false),
    ("Attach", "AttachRequest", "AttachResponse", false, false),
    ("PortForward", "PortForwardRequest", "PortForwardResponse", false, false),
    (
        "ContainerStats",
        "ContainerStatsRequest",
        "ContainerStatsResponse",
        false,
        false,
    ),
    (
        "ListContainerStats",
        "ListContainerStatsRequest",
        "ListContainerStatsResponse",
        false,
        false,
    ),
    (
        "PodSandboxStats",
        "PodSandboxStatsRequest",
        "PodSandboxStatsResponse",
        false,
        false,
    ),
    (
        "ListPodSandboxStats",
        "ListPodSandboxStatsRequest",
        "ListPodSandboxStatsResponse",
        false,
        false,
    ),
    (
        "UpdateRuntimeConfig",
        "UpdateRuntimeConfigRequest",
        "UpdateRuntimeConfigResponse",
        false,
        false,
    ),
    ("Status", "StatusRequest", "StatusResponse", false, false),
    (
        "CheckpointContainer",
        "CheckpointContainerRequest",
        "CheckpointContainerResponse",
        false,
        false,
    ),
    (
        "GetContainerEvents",
        "GetEventsRequest",
        "ContainerEventResponse",
        false,
        true,
    ),
    (
        "ListMetricDescriptors",
        "ListMetricDescriptorsRequest",
        "ListMetricDescriptorsResponse",
        false,
        false,
    ),
    (
        "ListPodSandboxMetrics",
        "ListPodSandboxMetricsRequest",
        "ListPodSandboxMetricsResponse",
        false,
        false,
    ),
    (
        "RuntimeConfig",
        "RuntimeConfigRequest",
        "RuntimeConfigResponse",
        false,
        false,
    ),
];

const IMAGE_SERVICE: &[Rpc] = &[
    ("ListImages", "ListImagesRequest", "ListImagesResponse", false, false),
    ("ImageStatus", "ImageStatusRequest", "ImageStatusResponse", false, false),
    ("PullImage", "PullImageRequest", "PullImageResponse", false, false),
    ("RemoveImage", "RemoveImageRequest", "RemoveImageResponse", false, false),
    ("ImageFsInfo", "ImageFsInfoRequest", "ImageFsInfoResponse", false, false),
];

#[test]
fn services_match_the_contract() {
    let file = api_file();
    let all = messages(&file);
    let names: Vec<_> = file.service.iter().map(|s| s.name()).collect();
    assert_eq!(names, ["RuntimeService", "ImageService"]);

    for (service, want) in [("RuntimeService", RUNTIME_SERVICE), ("ImageService", IMAGE_SERVICE)] {
        let svc = file.service.iter().find(|s| s.name() == service).unwrap();
        let got: Vec<(String, String, String, bool, bool)> = svc
            .method
            .iter()
            .map(|m| {
                // Request/response types are messages of this package.
                for t in [m.input_type(), m.output_type()] {
                    assert!(all.contains_key(t), "{service}.{}: unknown type {t}", m.name());
                }
                let strip = |t: &str| t.strip_prefix(".runtime.v1.").unwrap_or(t).to_string();
                (
                    m.name().to_string(),
                    strip(m.input_type()),
                    strip(m.output_type()),
                    m.client_streaming(),
                    m.server_streaming(),
                )
            })
            .collect();
        let want: Vec<(String, String, String, bool, bool)> = want
            .iter()
            .map(|(n, i, o, cs, ss)| (n.to_string(), i.to_string(), o.to_string(), *cs, *ss))
            .collect();
        assert_eq!(got, want, "service {service}");
    }

    assert_eq!(runtime_service_server::SERVICE_NAME, "runtime.v1.RuntimeService");
    assert_eq!(image_service_server::SERVICE_NAME, "runtime.v1.ImageService");
}

#[test]
fn list_containers_response_round_trips() {
    let container = Container {
        id: "c0ffee".into(),
        pod_sandbox_id: "pod-1".into(),
        metadata: Some(ContainerMetadata {
            name: "nginx".into(),
            attempt: 2,
        }),
        image: Some(ImageSpec {
            image: "docker.io/library/nginx:1.27".into(),
            user_specified_image: "nginx:1.27".into(),
            ..Default::default()
        }),
        image_ref: "sha256:abcd".into(),
        state: ContainerState::ContainerRunning as i32,
        created_at: 1_700_000_000_123_456_789,
        labels: HashMap::from([
            ("io.kubernetes.container.name".to_string(), "nginx".to_string()),
            ("io.kubernetes.pod.namespace".to_string(), "default".to_string()),
        ]),
        annotations: HashMap::from([("a".to_string(), String::new())]),
        image_id: "sha256:abcd".into(),
    };
    let resp = ListContainersResponse {
        containers: vec![container],
    };

    let bytes = resp.encode_to_vec();
    let back = ListContainersResponse::decode(bytes.as_slice()).expect("decodes");
    assert_eq!(back, resp);
    assert_eq!(back.containers[0].state(), ContainerState::ContainerRunning);
    assert_eq!(back.containers[0].labels["io.kubernetes.pod.namespace"], "default");

    // Spot-check the wire bytes: Container.id is field 1 and pod_sandbox_id field 2 (both
    // length-delimited: tags 0x0a, 0x12); ListContainersResponse.containers is field 1 (0x0a).
    let small = ListContainersResponse {
        containers: vec![Container {
            id: "c0ffee".into(),
            pod_sandbox_id: "pod-1".into(),
            state: ContainerState::ContainerExited as i32,
            ..Default::default()
        }],
    };
    assert_eq!(
        small.encode_to_vec(),
        b"\x0a\x11\x0a\x06c0ffee\x12\x05pod-1\x30\x02".to_vec()
    );

    // An unknown field (as a newer kubelet may send) is skipped, not an error.
    let mut with_unknown = bytes.clone();
    with_unknown.extend_from_slice(&[0xf8, 0x06, 0x01]); // field 111, varint 1
    assert_eq!(ListContainersResponse::decode(with_unknown.as_slice()).unwrap(), resp);
}
