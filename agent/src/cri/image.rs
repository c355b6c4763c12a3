//! CRI `runtime.v1.ImageService` over the local image store. Pulls and removals come with
//! registry support; until then they say so.

use minilet_proto::runtime::v1 as cri;
use tonic::{Request, Response, Status};

use super::Cri;
use crate::images::ImageSummary;

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
        let image = req.into_inner().image.map(|i| i.image).unwrap_or_default();
        match self.lookup(&image)? {
            Some(found) => Ok(Response::new(cri::PullImageResponse { image_ref: found.id })),
            None => Err(Status::unimplemented(format!(
                "pulling {image:?} from a registry is not supported yet; import it with `minilet image import`"
            ))),
        }
    }

    async fn remove_image(&self, _: Request<cri::RemoveImageRequest>) -> R<cri::RemoveImageResponse> {
        Err(Status::unimplemented("RemoveImage is not supported yet"))
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
