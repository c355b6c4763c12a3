//! CRI `runtime.v1.ImageService` over the local image store and the agent's puller (the same
//! one pods use, so a CRI pull and a pod's pull of one image are one pull): the one
//! implementation of [`ImageService`], for in-process callers and (through [`super::grpc`])
//! CRI clients.

use minilet_proto::runtime::v1 as cri;

use super::Cri;
use super::service::ImageService;
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

impl Cri {
    /// Run store work (index and config reads) on a blocking thread.
    async fn blocking_images<T: Send + 'static>(
        &self,
        f: impl FnOnce(&ImageStore) -> Result<T, ImageError> + Send + 'static,
    ) -> Result<T, RuntimeError> {
        let store = self.runtime.images.clone();
        crate::runtime::blocking("image store", move || Ok(f(&store)?)).await
    }
}

#[tonic::async_trait]
impl ImageService for Cri {
    async fn list_images(&self, req: cri::ListImagesRequest) -> Result<cri::ListImagesResponse, RuntimeError> {
        let wanted = req
            .filter
            .and_then(|f| f.image)
            .map(|i| i.image)
            .filter(|i| !i.is_empty());
        let images = self
            .blocking_images(move |store| match wanted {
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
        Ok(cri::ListImagesResponse { images })
    }

    async fn image_status(&self, req: cri::ImageStatusRequest) -> Result<cri::ImageStatusResponse, RuntimeError> {
        let reference = req.image.map(|i| i.image).unwrap_or_default();
        if reference.is_empty() {
            return Err(RuntimeError::InvalidArgument(
                "image.image: an image reference is required".into(),
            ));
        }
        let verbose = req.verbose;
        // CRI: an absent image is not an error, just no image.
        let found = self
            .blocking_images(move |store| status(store, &reference, verbose))
            .await?;
        let mut info = std::collections::HashMap::new();
        let image = found.map(|(image, verbose_info)| {
            if verbose {
                info.insert(super::service::VERBOSE_INFO.to_string(), verbose_info);
            }
            image
        });
        Ok(cri::ImageStatusResponse { image, info })
    }

    async fn pull_image(&self, req: cri::PullImageRequest) -> Result<cri::PullImageResponse, RuntimeError> {
        let image = req.image.map(|i| i.image).unwrap_or_default();
        let creds = req.auth.map(credentials).transpose()?.flatten();
        // The image ref is the image ID, as containerd answers.
        let summary = self.puller.pull(&image, creds, None).await?;
        Ok(cri::PullImageResponse { image_ref: summary.id })
    }

    async fn remove_image(&self, req: cri::RemoveImageRequest) -> Result<cri::RemoveImageResponse, RuntimeError> {
        let reference = req.image.map(|i| i.image).unwrap_or_default();
        if reference.is_empty() {
            return Err(RuntimeError::InvalidArgument(
                "image.image: an image reference is required".into(),
            ));
        }
        let layout = self.runtime.layout.clone();
        let turn = self.image_gc.sweep_turn().await;
        // By ID: the image with all its names; by name: that name, and the content once no
        // name is left. Removing an image that is not there is not an error (CRI).
        self.blocking_images(move |store| {
            let _turn = turn;
            let in_use = crate::runtime::state::images_in_use(&layout);
            store.remove(&reference, &in_use)?;
            let keep = in_use.into_keys().collect();
            store.sweep(&keep)?;
            Ok(())
        })
        .await?;
        Ok(cri::RemoveImageResponse {})
    }

    async fn image_fs_info(&self, _: cri::ImageFsInfoRequest) -> Result<cri::ImageFsInfoResponse, RuntimeError> {
        let dir = self.runtime.images.layers_dir();
        let images = dir.parent().map(std::path::Path::to_path_buf).unwrap_or(dir);
        let pods = self.runtime.layout.pods_dir();
        Ok(cri::ImageFsInfoResponse {
            image_filesystems: vec![super::stats::writable_layer(&images)],
            container_filesystems: vec![super::stats::writable_layer(&pods)],
        })
    }
}
