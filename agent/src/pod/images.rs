//! The image step of starting a container, as the kubelet's image manager does it:
//! `imagePullPolicy` (Always / IfNotPresent / Never), pulls in the background (the pod
//! worker keeps answering while a pull runs), and the per-image pull back-off with its
//! waiting reasons `ErrImagePull` → `ImagePullBackOff`, plus `ErrImageNeverPull` and
//! `InvalidImageName`. Event reasons and messages are the kubelet's.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use minilet_proto::runtime::v1 as cri;

use super::backoff::BackoffConfig;
use super::status::WaitingReason;
use super::worker::{Event, Next, Worker};
use crate::cri::service::ImageService;
use crate::images::ImageError;
use crate::runtime::RuntimeError;
use crate::runtime::spec::now_nanos;

/// An image as ImageStatus reports it to the worker: what a container's configuration
/// takes from it (the kubelet's getImageUser).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageFacts {
    pub id: String,
    /// The user its config runs as: a uid (ImageStatus's `uid`) or a name (`username`);
    /// empty for none.
    pub user: String,
}

impl ImageFacts {
    pub fn of(image: &cri::Image) -> Self {
        ImageFacts {
            id: image.id.clone(),
            user: image
                .uid
                .as_ref()
                .map_or_else(|| image.username.clone(), |uid| uid.value.to_string()),
        }
    }
}

#[cfg(test)]
impl ImageFacts {
    /// What ImageStatus reports of an image of the store (its user without the group).
    pub fn of_store_image(image: &crate::images::Image) -> Self {
        ImageFacts {
            id: image.summary.id.clone(),
            user: image.config.user.split(':').next().unwrap_or("").to_string(),
        }
    }
}

/// ImageStatus of `reference` (`None`: not present).
async fn image_status(images: &dyn ImageService, reference: &str) -> Result<Option<cri::Image>, RuntimeError> {
    let req = cri::ImageStatusRequest {
        image: Some(cri::ImageSpec {
            image: reference.to_string(),
            ..Default::default()
        }),
        verbose: false,
    };
    Ok(images.image_status(req).await?.image)
}

/// PullImage, as the kubelet asks its runtime; then the pulled image's size (ImageStatus).
async fn pull(images: &dyn ImageService, reference: &str) -> Result<u64, RuntimeError> {
    let req = cri::PullImageRequest {
        image: Some(cri::ImageSpec {
            image: reference.to_string(),
            ..Default::default()
        }),
        auth: None,
        sandbox_config: None,
    };
    let pulled = images.pull_image(req).await?.image_ref;
    Ok(image_status(images, &pulled).await?.map_or(0, |i| i.size))
}

/// Back-off per image after failed pulls: initial, doubling, capped (kubelet: 10s to 300s).
#[derive(Debug, Default)]
pub struct PullBackoff {
    entries: HashMap<String, (Duration, i64)>,
}

impl PullBackoff {
    /// The time (Unix ns) until which pulls of `image` wait, if they do.
    pub fn until(&self, image: &str, now: i64) -> Option<i64> {
        self.entries.get(image).map(|&(_, until)| until).filter(|&u| u > now)
    }

    /// Record a failure; returns when the next pull may run.
    pub fn failed(&mut self, image: &str, cfg: BackoffConfig, now: i64) -> i64 {
        let next = match self.entries.get(image) {
            Some(&(d, _)) => (d * 2).min(cfg.max),
            None => cfg.initial,
        };
        let until = now + next.as_nanos() as i64;
        self.entries.insert(image.to_owned(), (next, until));
        until
    }

    pub fn succeeded(&mut self, image: &str) {
        self.entries.remove(image);
    }
}

impl Worker {
    /// The image for slot `i` when it can start now. Otherwise the slot is left waiting
    /// (a pull in flight, back-off, a missing image under `Never`) and `None` is returned.
    pub(super) async fn ensure_image(&mut self, i: usize) -> Option<ImageFacts> {
        let image_ref = self.slots[i].spec.image.clone().unwrap_or_default();
        let policy = self.slots[i]
            .spec
            .image_pull_policy
            .clone()
            .unwrap_or_else(|| crate::source::default_pull_policy(&image_ref).to_owned());
        let cobj = self.obj.container(&self.slots[i].spec.name, self.slots[i].init);
        let present = match image_status(&*self.ctx.cri, &image_ref).await {
            Ok(found) => found.as_ref().map(ImageFacts::of),
            Err(RuntimeError::Image(e @ ImageError::InvalidReference { .. })) => {
                let msg = format!("Failed to apply default image tag \"{image_ref}\": {e}");
                self.ctx.events.warning(&cobj, "InspectFailed", msg.clone());
                self.wait_error(i, WaitingReason::InvalidImageName, msg);
                return None;
            }
            Err(e) => {
                self.wait_error(
                    i,
                    WaitingReason::ErrImageInspect,
                    format!("Failed to inspect image \"{image_ref}\": {e}"),
                );
                return None;
            }
        };
        let fresh = std::mem::take(&mut self.slots[i].fresh_pull);
        match (policy.as_str(), present) {
            // Just pulled for this start: no second pull, no "already present" event.
            (_, Some(img)) if fresh => return Some(img),
            ("IfNotPresent" | "Never", Some(img)) => {
                self.ctx.events.normal(
                    &cobj,
                    "Pulled",
                    format!("Container image \"{image_ref}\" already present on machine"),
                );
                return Some(img);
            }
            ("Never", None) => {
                let msg = format!("Container image \"{image_ref}\" is not present with pull policy of Never");
                let reason = WaitingReason::ErrImageNeverPull;
                if self.slots[i].waiting.as_ref().map(|w| w.0) != Some(reason) {
                    self.ctx.events.warning(&cobj, reason.as_str(), msg.clone());
                    self.ctx.events.warning(&cobj, "Failed", format!("Error: {reason}"));
                }
                self.slots[i].waiting = Some((reason, msg));
                // Retried when the store changes (`minilet image import`, a pull).
                self.slots[i].next = Next::WaitImage;
                return None;
            }
            _ => {}
        }
        self.begin_pull(i, image_ref);
        None
    }

    /// Pull in the background (or wait out the back-off first).
    fn begin_pull(&mut self, i: usize, image_ref: String) {
        let cobj = self.obj.container(&self.slots[i].spec.name, self.slots[i].init);
        let now = now_nanos();
        if let Some(until) = self.pull_backoff.until(&image_ref, now) {
            let message = match self.slots[i].waiting.take() {
                Some((WaitingReason::ErrImagePull, msg)) => {
                    format!("Back-off pulling image \"{image_ref}\": ErrImagePull: {msg}")
                }
                Some((WaitingReason::ImagePullBackOff, msg)) => msg,
                _ => format!("Back-off pulling image \"{image_ref}\""),
            };
            self.ctx
                .events
                .normal(&cobj, "BackOff", format!("Back-off pulling image \"{image_ref}\""));
            self.ctx.events.warning(&cobj, "Failed", "Error: ImagePullBackOff");
            self.slots[i].waiting = Some((WaitingReason::ImagePullBackOff, message));
            self.slots[i].next = Next::StartAt(until);
            return;
        }
        self.ctx
            .events
            .normal(&cobj, "Pulling", format!("Pulling image \"{image_ref}\""));
        if self.slots[i].waiting.is_none() {
            self.slots[i].waiting = Some((self.default_waiting(), String::new()));
        }
        self.slots[i].next = Next::Pulling;
        let cri = self.ctx.cri.clone();
        let tx = self.events_tx.clone();
        let name = self.slots[i].spec.name.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            // When the worker is gone (the pod removed), so is this wait: the pull stops
            // unless something else still waits for it.
            let result = tokio::select! {
                r = pull(&*cri, &image_ref) => r.map_err(|e| e.to_string()),
                () = tx.closed() => return,
            };
            let _ = tx.send(Event::Pulled {
                container: name,
                image: image_ref,
                result,
                elapsed: started.elapsed(),
            });
        });
    }

    /// A background pull finished.
    pub(super) fn on_pulled(&mut self, container: &str, image: &str, result: Result<u64, String>, elapsed: Duration) {
        let Some(i) = self
            .slots
            .iter()
            .position(|s| s.spec.name == container && s.next == Next::Pulling)
        else {
            return;
        };
        let cobj = self.obj.container(container, self.slots[i].init);
        match result {
            Ok(size) => {
                self.pull_backoff.succeeded(image);
                let secs = elapsed.as_secs_f64();
                self.ctx.events.normal(
                    &cobj,
                    "Pulled",
                    format!(
                        "Successfully pulled image \"{image}\" in {secs:.3}s ({secs:.3}s including waiting). Image size: {size} bytes."
                    ),
                );
                self.slots[i].fresh_pull = true;
                self.slots[i].next = Next::Start;
            }
            Err(msg) => {
                self.ctx
                    .events
                    .warning(&cobj, "Failed", format!("Failed to pull image \"{image}\": {msg}"));
                self.ctx.events.warning(&cobj, "Failed", "Error: ErrImagePull");
                self.pull_backoff.failed(image, self.ctx.backoff, now_nanos());
                self.slots[i].waiting = Some((WaitingReason::ErrImagePull, msg));
                // Look again soon: that look reports ImagePullBackOff until the back-off ends.
                self.slots[i].next = Next::StartAt(now_nanos() + (self.ctx.backoff.initial / 4).as_nanos() as i64);
            }
        }
    }

    /// The container cannot start for a reason a later sync may clear.
    fn wait_error(&mut self, i: usize, reason: WaitingReason, msg: String) {
        let cobj = self.obj.container(&self.slots[i].spec.name, self.slots[i].init);
        if self.slots[i].waiting.as_ref().map(|w| w.0) != Some(reason) {
            self.ctx.events.warning(&cobj, "Failed", format!("Error: {reason}"));
        }
        self.retry_later(i, reason, msg);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pull_backoff_doubles_to_the_cap_and_resets() {
        let cfg = BackoffConfig {
            initial: Duration::from_secs(10),
            max: Duration::from_secs(30),
        };
        let mut b = PullBackoff::default();
        let s = 1_000_000_000i64;
        assert_eq!(b.until("img", 0), None);
        assert_eq!(b.failed("img", cfg, 0), 10 * s);
        assert_eq!(b.until("img", 5 * s), Some(10 * s));
        assert_eq!(b.until("img", 10 * s), None);
        assert_eq!(b.failed("img", cfg, 10 * s), 30 * s);
        assert_eq!(b.failed("img", cfg, 30 * s), 60 * s, "capped at 30s");
        assert_eq!(b.until("other", 0), None);
        b.succeeded("img");
        assert_eq!(b.failed("img", cfg, 0), 10 * s);
    }
}
