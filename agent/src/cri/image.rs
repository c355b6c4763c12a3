//! CRI `runtime.v1.ImageService` over the local image store and the agent's puller (the same
//! one pods use, so a CRI pull and a pod's pull of one image are one pull).

use minilet_proto::runtime::v1 as cri;
use tonic::{Request, Response, Status};

use super::Cri;
use crate::images::registry::Credentials;
use crate::images::{ImageError, ImageSummary};

/// CRI `AuthConfig` → credentials: username/password, `auth` (base64 "user:password"), or a
/// registry token.
fn credentials(a: cri::AuthConfig) -> Result<Option<Credentials>, Status> {
    use base64::Engine as _;
    if !a.registry_token.is_empty() {
        return Ok(Some(Credentials::Bearer(a.registry_token)));
    }
    if !a.username.is_empty() {
        return Ok(Some(Credentials::Basic {
            username: a.username,
            password: a.password,
        }));
    }
    if !a.auth.is_empty() {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(a.auth.trim())
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| Status::invalid_argument("auth.auth: not base64 of \"user:password\""))?;
        let (username, password) = decoded
            .split_once(':')
            .ok_or_else(|| Status::invalid_argument("auth.auth: not base64 of \"user:password\""))?;
        return Ok(Some(Credentials::Basic {
            username: username.to_owned(),
            password: password.to_owned(),
        }));
    }
    Ok(None)
}

pub struct ImageSvc(pub std::sync::Arc<Cri>);

type R<T> = Result<Response<T>, Status>;

fn image(s: &ImageSummary, user: &str) -> cri::Image {
    let repo = s
        .name
        .rsplit_once(':')
        .filter(|(r, _)| !r.contains('/') || !r.ends_with(']'))
        .map_or(s.name.as_str(), |(r, _)| r);
    let (uid, username) = match user.split(':').next().unwrap_or("").parse::<i64>() {
        Ok(uid) => (Some(cri::Int64Value { value: uid }), String::new()),
        Err(_) => (None, user.split(':').next().unwrap_or("").to_string()),
    };
    cri::Image {
        id: s.id.clone(),
        repo_tags: vec![s.name.clone()],
        repo_digests: vec![format!("{repo}@{}", s.manifest_digest)],
        size: s.size,
        uid,
        username,
        spec: Some(cri::ImageSpec {
            image: s.id.clone(),
            ..Default::default()
        }),
        pinned: false,
    }
}

impl ImageSvc {
    fn lookup(&self, reference: &str) -> Result<Option<cri::Image>, Status> {
        let found = self
            .0
            .ctx
            .runtime
            .images
            .get(reference)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        Ok(found.map(|img| image(&img.summary, &img.config.user)))
    }
}

#[tonic::async_trait]
impl cri::image_service_server::ImageService for ImageSvc {
    async fn list_images(&self, req: Request<cri::ListImagesRequest>) -> R<cri::ListImagesResponse> {
        let wanted = req
            .into_inner()
            .filter
            .and_then(|f| f.image)
            .map(|i| i.image)
            .filter(|i| !i.is_empty());
        let images = match wanted {
            Some(reference) => self.lookup(&reference)?.into_iter().collect(),
            None => {
                let list = self
                    .0
                    .ctx
                    .runtime
                    .images
                    .list()
                    .map_err(|e| Status::internal(e.to_string()))?;
                list.iter()
                    .map(|s| match self.0.ctx.runtime.images.get(&s.id) {
                        Ok(Some(img)) => image(s, &img.config.user),
                        _ => image(s, ""),
                    })
                    .collect()
            }
        };
        Ok(Response::new(cri::ListImagesResponse { images }))
    }

    async fn image_status(&self, req: Request<cri::ImageStatusRequest>) -> R<cri::ImageStatusResponse> {
        let req = req.into_inner();
        let reference = req.image.map(|i| i.image).unwrap_or_default();
        // CRI: an absent image is not an error, just no image.
        let found = self
            .0
            .ctx
            .runtime
            .images
            .get(&reference)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let mut info = std::collections::HashMap::new();
        if req.verbose
            && let Some(img) = &found
        {
            let v = serde_json::json!({"config": img.config, "layers": img.layers, "manifestDigest": img.summary.manifest_digest});
            info.insert("info".to_string(), v.to_string());
        }
        Ok(Response::new(cri::ImageStatusResponse {
            image: found.map(|i| image(&i.summary, &i.config.user)),
            info,
        }))
    }

    async fn pull_image(&self, req: Request<cri::PullImageRequest>) -> R<cri::PullImageResponse> {
        let req = req.into_inner();
        let image = req.image.map(|i| i.image).unwrap_or_default();
        let creds = req.auth.map(credentials).transpose()?.flatten();
        match self.0.ctx.puller.pull(&image, creds, None).await {
            Ok(summary) => Ok(Response::new(cri::PullImageResponse { image_ref: summary.id })),
            Err(e @ ImageError::InvalidReference { .. }) => Err(Status::invalid_argument(e.to_string())),
            Err(e) => Err(Status::unknown(e.to_string())),
        }
    }

    async fn remove_image(&self, req: Request<cri::RemoveImageRequest>) -> R<cri::RemoveImageResponse> {
        let reference = req.into_inner().image.map(|i| i.image).unwrap_or_default();
        let ctx = self.0.ctx.clone();
        let removed = tokio::task::spawn_blocking(move || {
            let in_use = crate::runtime::state::images_in_use(&ctx.runtime.layout);
            let names = ctx.runtime.images.remove(&reference, &in_use)?;
            let keep = in_use.into_keys().collect();
            ctx.runtime.images.sweep(&keep)?;
            Ok::<_, ImageError>(names)
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?;
        match removed {
            // CRI: removing an image that is not there is not an error.
            Ok(_) => Ok(Response::new(cri::RemoveImageResponse {})),
            Err(e @ ImageError::InUse { .. }) => Err(Status::failed_precondition(e.to_string())),
            Err(e @ (ImageError::InvalidReference { .. } | ImageError::AmbiguousReference { .. })) => {
                Err(Status::invalid_argument(e.to_string()))
            }
            Err(e) => Err(Status::internal(e.to_string())),
        }
    }

    async fn image_fs_info(&self, _: Request<cri::ImageFsInfoRequest>) -> R<cri::ImageFsInfoResponse> {
        let dir = self.0.ctx.runtime.images.layers_dir();
        let images = dir.parent().map(std::path::Path::to_path_buf).unwrap_or(dir);
        let pods = self.0.ctx.runtime.layout.pods_dir();
        Ok(Response::new(cri::ImageFsInfoResponse {
            image_filesystems: vec![super::stats::writable_layer(&images)],
            container_filesystems: vec![super::stats::writable_layer(&pods)],
        }))
    }
}
