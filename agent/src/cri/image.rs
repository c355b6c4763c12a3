//! CRI `runtime.v1.ImageService` over the local image store and the agent's puller (the same
//! one pods use, so a CRI pull and a pod's pull of one image are one pull).

use minilet_proto::runtime::v1 as cri;
use tonic::{Request, Response, Status};

use super::Cri;
use super::errors::join_error;
use crate::images::registry::Credentials;
use crate::images::{ImageError, ImageRecord, ImageStore};
use crate::runtime::RuntimeError;

/// CRI `AuthConfig` → credentials: username/password, `auth` (base64 "user:password"), or a
/// registry token.
fn credentials(a: cri::AuthConfig) -> Result<Option<Credentials>, RuntimeError> {
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
        let not_basic = || RuntimeError::InvalidArgument("auth.auth: not base64 of \"user:password\"".into());
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(a.auth.trim())
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(not_basic)?;
        let (username, password) = decoded.split_once(':').ok_or_else(not_basic)?;
        return Ok(Some(Credentials::Basic {
            username: username.to_owned(),
            password: password.to_owned(),
        }));
    }
    Ok(None)
}

pub struct ImageSvc(pub std::sync::Arc<Cri>);

type R<T> = Result<Response<T>, Status>;

/// The CRI image: the record's names, and the user the image's config runs as (a numeric
/// uid, or a user name).
fn image(r: ImageRecord, user: &str) -> cri::Image {
    let user = user.split(':').next().unwrap_or("");
    let (uid, username) = match user.parse::<i64>() {
        Ok(uid) => (Some(cri::Int64Value { value: uid }), String::new()),
        Err(_) => (None, user.to_string()),
    };
    cri::Image {
        spec: Some(cri::ImageSpec {
            image: r.id.clone(),
            ..Default::default()
        }),
        id: r.id,
        repo_tags: r.repo_tags,
        repo_digests: r.repo_digests,
        size: r.size,
        uid,
        username,
        pinned: false,
    }
}

/// The image `reference` means, with its names and, with `verbose`, its config and layers.
fn status(store: &ImageStore, reference: &str, verbose: bool) -> Result<Option<(cri::Image, String)>, ImageError> {
    Ok(store.status(reference)?.map(|(img, record)| {
        let info = if verbose { img.info().to_string() } else { String::new() };
        (image(record, &img.config.user), info)
    }))
}

impl ImageSvc {
    /// Run store work (index and config reads) on a blocking thread.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&ImageStore) -> Result<T, ImageError> + Send + 'static,
    ) -> Result<T, Status> {
        let store = self.0.ctx.runtime.images.clone();
        Ok(tokio::task::spawn_blocking(move || f(&store))
            .await
            .map_err(join_error)??)
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
        let images = self
            .blocking(move |store| match wanted {
                Some(reference) => Ok(status(store, &reference, false)?.map(|(i, _)| i).into_iter().collect()),
                None => store
                    .records()?
                    .into_iter()
                    .map(|r| {
                        // An image whose config cannot be read is still listed (without a user).
                        let user = match store.get(&r.id) {
                            Ok(Some(img)) => img.config.user,
                            _ => String::new(),
                        };
                        Ok(image(r, &user))
                    })
                    .collect(),
            })
            .await?;
        Ok(Response::new(cri::ListImagesResponse { images }))
    }

    async fn image_status(&self, req: Request<cri::ImageStatusRequest>) -> R<cri::ImageStatusResponse> {
        let req = req.into_inner();
        let reference = req.image.map(|i| i.image).unwrap_or_default();
        if reference.is_empty() {
            return Err(RuntimeError::InvalidArgument("image.image: an image reference is required".into()).into());
        }
        let verbose = req.verbose;
        // CRI: an absent image is not an error, just no image.
        let found = self.blocking(move |store| status(store, &reference, verbose)).await?;
        let mut info = std::collections::HashMap::new();
        let image = found.map(|(image, verbose_info)| {
            if verbose {
                info.insert("info".to_string(), verbose_info);
            }
            image
        });
        Ok(Response::new(cri::ImageStatusResponse { image, info }))
    }

    async fn pull_image(&self, req: Request<cri::PullImageRequest>) -> R<cri::PullImageResponse> {
        let req = req.into_inner();
        let image = req.image.map(|i| i.image).unwrap_or_default();
        let creds = req.auth.map(credentials).transpose()?.flatten();
        // The image ref is the image ID, as containerd answers.
        let summary = self.0.ctx.puller.pull(&image, creds, None).await?;
        Ok(Response::new(cri::PullImageResponse { image_ref: summary.id }))
    }

    async fn remove_image(&self, req: Request<cri::RemoveImageRequest>) -> R<cri::RemoveImageResponse> {
        let reference = req.into_inner().image.map(|i| i.image).unwrap_or_default();
        if reference.is_empty() {
            return Err(RuntimeError::InvalidArgument("image.image: an image reference is required".into()).into());
        }
        let layout = self.0.ctx.runtime.layout.clone();
        // By ID: the image with all its names; by name: that name, and the content once no
        // name is left. Removing an image that is not there is not an error (CRI).
        self.blocking(move |store| {
            let in_use = crate::runtime::state::images_in_use(&layout);
            store.remove(&reference, &in_use)?;
            let keep = in_use.into_keys().collect();
            store.sweep(&keep)?;
            Ok(())
        })
        .await?;
        Ok(Response::new(cri::RemoveImageResponse {}))
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
