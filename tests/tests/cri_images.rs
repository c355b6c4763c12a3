//! Images as the CRI defines them, over the agent's socket with the generated client: one
//! entry per image ID with all its names, status by ID/tag/digest, removal by tag and by ID,
//! the error codes a CRI client acts on, and `minilet image` as a client of the agent (its
//! store, its registry mirror). What the agent says is cross-checked in its store on disk.

use std::path::Path;

use minilet_e2e::grpc::{connect, rt};
use minilet_e2e::registry::{Compression, Registry};
use minilet_e2e::*;
use minilet_proto::runtime::v1 as cri;
use tonic::Code;

fn spec(image: &str) -> Option<cri::ImageSpec> {
    Some(cri::ImageSpec {
        image: image.into(),
        ..Default::default()
    })
}

fn status_req(image: &str) -> cri::ImageStatusRequest {
    cri::ImageStatusRequest {
        image: spec(image),
        verbose: false,
    }
}

/// Give the imported busybox image one more name (the same content: the same image ID).
fn import_as(env: &Env, name: &str) {
    let archive = workspace().join("hack/.images/busybox.tar");
    let out = std::process::Command::new(minilet())
        .args(["image", "import", "--name", name, "--root"])
        .arg(&env.root)
        .arg(&archive)
        .output()
        .expect("run minilet image import");
    assert!(out.status.success(), "import --name {name}: {}", stderr(&out));
}

/// The config blob of image `id` in the agent's store.
fn config_blob(root: &Path, id: &str) -> std::path::PathBuf {
    root.join("images/blobs/sha256").join(id.trim_start_matches("sha256:"))
}

/// `minilet ARGS` with nothing from the environment choosing the store.
fn minilet_cmd(args: &[&str]) -> std::process::Output {
    std::process::Command::new(minilet())
        .args(args)
        .env_remove("MINILET_SOCKET")
        .env_remove("MINILET_ROOT")
        .output()
        .expect("run minilet")
}

#[test]
fn images_listed_once_per_id_with_all_names_and_removed_by_tag_or_id() {
    if !is_root() {
        return;
    }
    let env = Env::new("cri-images");
    env.import_image("busybox");
    env.import_image("nginx");
    import_as(&env, "localhost/busybox:v2");
    let mut agent = Agent::start(&env, &[]);
    let sock = env.socket.to_str().expect("utf-8 socket path").to_owned();
    rt().block_on(async {
        let mut c = connect(&env.socket).await;

        // One entry per image ID, with both tags.
        let images = c
            .image
            .list_images(cri::ListImagesRequest::default())
            .await
            .expect("ListImages")
            .into_inner()
            .images;
        let mut ids: Vec<&str> = images.iter().map(|i| i.id.as_str()).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), images.len(), "one entry per image ID: {images:?}");
        let busybox: Vec<&cri::Image> = images
            .iter()
            .filter(|i| i.repo_tags.iter().any(|t| t.starts_with("localhost/busybox:")))
            .collect();
        assert_eq!(busybox.len(), 1, "{images:?}");
        let bb = busybox[0].clone();
        assert_eq!(
            bb.repo_tags,
            ["localhost/busybox:latest", "localhost/busybox:v2"],
            "{bb:?}"
        );
        assert_eq!(bb.repo_digests.len(), 1, "one repository, one manifest: {bb:?}");
        assert!(bb.repo_digests[0].starts_with("localhost/busybox@sha256:"), "{bb:?}");
        assert!(bb.size > 0 && bb.id.starts_with("sha256:"), "{bb:?}");
        assert!(
            images.iter().any(|i| i.repo_tags == ["localhost/nginx:latest"]),
            "{images:?}"
        );

        // ImageStatus by ID, by tag, by digest reference: the same image, every tag.
        let digest_ref = bb.repo_digests[0].clone();
        for reference in [bb.id.as_str(), "localhost/busybox:v2", "localhost/busybox", &digest_ref] {
            let got = c
                .image
                .image_status(status_req(reference))
                .await
                .unwrap_or_else(|e| panic!("ImageStatus {reference}: {e}"))
                .into_inner()
                .image
                .unwrap_or_else(|| panic!("ImageStatus {reference}: no image"));
            assert_eq!(got.id, bb.id, "{reference}");
            assert_eq!(got.repo_tags, bb.repo_tags, "{reference}");
            assert_eq!(got.repo_digests, bb.repo_digests, "{reference}");
        }
        let verbose = c
            .image
            .image_status(cri::ImageStatusRequest {
                image: spec(&bb.id),
                verbose: true,
            })
            .await
            .expect("verbose ImageStatus")
            .into_inner();
        let info: serde_json::Value = serde_json::from_str(&verbose.info["info"]).expect("info is JSON");
        assert!(info["layers"].as_array().is_some_and(|l| !l.is_empty()), "{info}");

        // Errors as a CRI client expects them.
        let absent = c
            .image
            .image_status(status_req("localhost/nope:1"))
            .await
            .expect("an unknown image is not an error")
            .into_inner();
        assert!(absent.image.is_none(), "{absent:?}");
        let bad = c
            .image
            .image_status(status_req("Not A Reference::"))
            .await
            .expect_err("a malformed reference is refused");
        assert_eq!(bad.code(), Code::InvalidArgument, "{bad:?}");
        assert!(
            bad.message().contains("Not A Reference::"),
            "names the reference: {bad:?}"
        );
        let bad = c
            .image
            .pull_image(cri::PullImageRequest {
                image: spec("bad reference::"),
                ..Default::default()
            })
            .await
            .expect_err("a malformed reference is not pulled");
        assert_eq!(bad.code(), Code::InvalidArgument, "{bad:?}");
        let gone = c
            .runtime
            .container_status(cri::ContainerStatusRequest {
                container_id: "0123456789abcdef".into(),
                verbose: false,
            })
            .await
            .expect_err("no such container");
        assert_eq!(gone.code(), Code::NotFound, "{gone:?}");
        assert!(gone.message().contains("0123456789abcdef"), "{gone:?}");
        let refused = c
            .runtime
            .container_status(cri::ContainerStatusRequest::default())
            .await
            .expect_err("an empty container ID");
        assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
        let sandbox = c
            .runtime
            .pod_sandbox_status(cri::PodSandboxStatusRequest {
                pod_sandbox_id: "feedface".into(),
                verbose: false,
            })
            .await
            .expect_err("no such sandbox");
        assert_eq!(sandbox.code(), Code::NotFound, "{sandbox:?}");

        // The CLI through the agent: `image ls --socket` lists what the agent has.
        let ls = minilet_cmd(&["image", "ls", "--socket", &sock]);
        assert!(ls.status.success(), "{}", stderr(&ls));
        let ls = stdout(&ls);
        let short = &bb.id["sha256:".len().."sha256:".len() + 13];
        for tag in ["latest", "v2"] {
            assert!(
                ls.lines()
                    .any(|l| l.split_whitespace().collect::<Vec<_>>()[..3] == ["localhost/busybox", tag, short]),
                "row for busybox:{tag}:\n{ls}"
            );
        }
        let quiet = minilet_cmd(&["image", "ls", "-q", "--socket", &sock]);
        assert_eq!(
            stdout(&quiet).lines().filter(|l| *l == bb.id).count(),
            1,
            "one ID per image:\n{}",
            stdout(&quiet)
        );
        let inspect = minilet_cmd(&["image", "inspect", "localhost/busybox:v2", "--socket", &sock]);
        assert!(inspect.status.success(), "{}", stderr(&inspect));
        let inspect: serde_json::Value = serde_json::from_slice(&inspect.stdout).expect("inspect JSON");
        assert_eq!(inspect["status"]["id"], bb.id.as_str(), "{inspect}");
        assert_eq!(
            inspect["status"]["repoTags"].as_array().map(Vec::len),
            Some(2),
            "{inspect}"
        );
        assert!(
            inspect["info"]["layers"].as_array().is_some_and(|l| !l.is_empty()),
            "{inspect}"
        );

        // Remove by tag (through the CLI and the agent): the other tag and the content stay.
        let rm = minilet_cmd(&["image", "rm", "localhost/busybox:v2", "--socket", &sock]);
        assert!(rm.status.success(), "{}", stderr(&rm));
        assert_eq!(stdout(&rm), "Deleted: localhost/busybox:v2\n");
        let after = c
            .image
            .image_status(status_req(&bb.id))
            .await
            .expect("ImageStatus")
            .into_inner()
            .image
            .expect("the image stays while a tag is left");
        assert_eq!(after.repo_tags, ["localhost/busybox:latest"]);
        let v2 = c
            .image
            .image_status(status_req("localhost/busybox:v2"))
            .await
            .expect("status");
        assert!(v2.into_inner().image.is_none(), "the removed tag is gone");
        assert!(
            config_blob(&env.root, &bb.id).is_file(),
            "content stays with a tag left"
        );

        // Remove by ID: every name and, once swept, the content.
        import_as(&env, "localhost/busybox:v3");
        // The agent reads the store's index on each call: an import is seen at once.
        let again = c
            .image
            .image_status(status_req(&bb.id))
            .await
            .expect("ImageStatus")
            .into_inner()
            .image
            .expect("the image");
        assert_eq!(again.repo_tags, ["localhost/busybox:latest", "localhost/busybox:v3"]);
        c.image
            .remove_image(cri::RemoveImageRequest { image: spec(&bb.id) })
            .await
            .expect("RemoveImage by ID");
        for reference in [bb.id.as_str(), "localhost/busybox:latest", "localhost/busybox:v3"] {
            let s = c.image.image_status(status_req(reference)).await.expect("status");
            assert!(s.into_inner().image.is_none(), "{reference} is gone");
        }
        let images = c
            .image
            .list_images(cri::ListImagesRequest::default())
            .await
            .expect("ListImages")
            .into_inner()
            .images;
        assert!(images.iter().all(|i| i.id != bb.id), "{images:?}");
        assert!(!config_blob(&env.root, &bb.id).exists(), "the content is swept");
        // CRI: removing what is not there succeeds.
        c.image
            .remove_image(cri::RemoveImageRequest { image: spec(&bb.id) })
            .await
            .expect("removing an absent image succeeds");
        let ls = stdout(&minilet_cmd(&["image", "ls", "--socket", &sock]));
        assert!(
            !ls.contains("localhost/busybox") && ls.contains("localhost/nginx"),
            "{ls}"
        );
    });

    // An explicit --socket nobody serves is an error, never another store.
    agent.stop();
    let o = minilet_cmd(&["image", "ls", "--socket", &sock]);
    assert!(!o.status.success(), "{}", stdout(&o));
    assert!(stderr(&o).contains("no agent answers on"), "{}", stderr(&o));
    // --root works on the store directly, agent or not.
    let o = minilet_cmd(&["image", "ls", "--root", env.root.to_str().expect("utf-8")]);
    assert!(
        o.status.success() && stdout(&o).contains("localhost/nginx"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn image_pull_with_an_agent_uses_the_agents_mirror_and_store() {
    if !is_root() {
        return;
    }
    let env = Env::new("cri-images-pull");
    let reg = Registry::start(&env.dir.join("registry"), None);
    // Upstream spelling "mbox:1" = docker.io/library/mbox:1: only the agent's mirror has it
    // (this host reaches no docker.io).
    reg.push_demo("busybox", "library/mbox:1", Compression::AsIs);
    let mirror = format!("docker.io=http://{}", reg.host());
    let _agent = Agent::start(&env, &["--registry-mirror", &mirror]);
    let sock = env.socket.to_str().expect("utf-8 socket path").to_owned();

    let o = minilet_cmd(&["image", "pull", "mbox:1", "--socket", &sock]);
    assert!(o.status.success(), "pull through the agent: {}", stderr(&o));
    let out = stdout(&o);
    let id = out
        .trim()
        .strip_prefix("Image is up to date for ")
        .unwrap_or_else(|| panic!("crictl's pull line: {out}"))
        .to_owned();
    assert!(
        reg.gets("/v2/library/mbox/manifests/1") >= 1,
        "the agent asked its mirror:\n{}",
        reg.log()
    );
    assert!(
        config_blob(&env.root, &id).is_file(),
        "the image is in the agent's store"
    );

    rt().block_on(async {
        let mut c = connect(&env.socket).await;
        let img = c
            .image
            .image_status(status_req("docker.io/library/mbox:1"))
            .await
            .expect("ImageStatus")
            .into_inner()
            .image
            .expect("the agent has the image the CLI pulled");
        assert_eq!(img.id, id);
        assert_eq!(img.repo_tags, ["docker.io/library/mbox:1"]);
        // PullImage answers the image ID, as containerd does.
        let pulled = c
            .image
            .pull_image(cri::PullImageRequest {
                image: spec("mbox:1"),
                ..Default::default()
            })
            .await
            .expect("PullImage")
            .into_inner();
        assert_eq!(pulled.image_ref, id);
    });

    // The CLI's own registry flags cannot steer the agent's pull: refused, not ignored.
    let o = minilet_cmd(&[
        "image",
        "pull",
        "mbox:1",
        "--socket",
        &sock,
        "--registry-mirror",
        &mirror,
    ]);
    assert!(!o.status.success(), "{}", stdout(&o));
    assert!(stderr(&o).contains("--registry-mirror"), "{}", stderr(&o));
}
