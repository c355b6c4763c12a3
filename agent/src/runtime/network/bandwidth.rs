//! A pod's traffic limits from its `kubernetes.io/ingress-bandwidth` and
//! `kubernetes.io/egress-bandwidth` annotations, for CNI's `bandwidth` capability: read as
//! the kubelet's bandwidth package reads them and handed over as containerd hands them, the
//! same for static pods and CRI sandboxes.

use super::Bandwidth;
use crate::quantity::Quantity;

pub const INGRESS: &str = "kubernetes.io/ingress-bandwidth";
pub const EGRESS: &str = "kubernetes.io/egress-bandwidth";

/// The burst containerd gives a rate (none is asked for): the largest the plugin takes.
const UNLIMITED_BURST: u64 = u32::MAX as u64;

/// The kubelet's bounds for a rate, in bits per second: 1k to 1P.
const MIN_RATE: i64 = 1_000;
const MAX_RATE: i64 = 1_000_000_000_000_000;

/// The limits `annotation` (a pod's or a sandbox's annotations, by name) asks for; `None`
/// without either annotation. A value that is not a quantity or is out of the kubelet's
/// bounds is an error naming the annotation, as containerd fails the sandbox for it.
pub fn from_annotations<'a>(annotation: impl Fn(&str) -> Option<&'a str>) -> Result<Option<Bandwidth>, String> {
    let rate = |key: &str| -> Result<Option<u64>, String> {
        let Some(text) = annotation(key) else {
            return Ok(None);
        };
        let bad = |why: String| format!("annotation {key}: {text:?} {why}");
        let bits = Quantity::parse(text)
            .map_err(|e| bad(format!("is not a quantity ({e})")))?
            .value();
        if bits < MIN_RATE {
            return Err(bad("is unreasonably small (< 1kbit)".into()));
        }
        if bits > MAX_RATE {
            return Err(bad("is unreasonably large (> 1Pbit)".into()));
        }
        Ok(u64::try_from(bits).ok())
    };
    let (ingress, egress) = (rate(INGRESS)?, rate(EGRESS)?);
    let burst = |r: Option<u64>| r.map(|_| UNLIMITED_BURST);
    Ok((ingress.is_some() || egress.is_some()).then(|| Bandwidth {
        ingress_rate: ingress,
        ingress_burst: burst(ingress),
        egress_rate: egress,
        egress_burst: burst(egress),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn read(pairs: &[(&str, &str)]) -> Result<Option<Bandwidth>, String> {
        let m: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        from_annotations(|k| m.get(k).map(String::as_str))
    }

    #[test]
    fn rates_in_bits_with_containerds_burst() {
        let b = read(&[(INGRESS, "10M"), (EGRESS, "1Mi"), ("other", "x")])
            .expect("valid")
            .expect("limits");
        assert_eq!(
            b,
            Bandwidth {
                ingress_rate: Some(10_000_000),
                ingress_burst: Some(u32::MAX as u64),
                egress_rate: Some(1 << 20),
                egress_burst: Some(u32::MAX as u64),
            }
        );
        let only_egress = read(&[(EGRESS, "1k")]).expect("valid").expect("limits");
        assert_eq!((only_egress.ingress_rate, only_egress.ingress_burst), (None, None));
        assert_eq!(read(&[("other", "1M")]), Ok(None));
    }

    #[test]
    fn bad_values_name_the_annotation() {
        for (value, why) in [
            ("fast", "is not a quantity"),
            ("999", "unreasonably small"),
            ("2P", "unreasonably large"),
        ] {
            let err = read(&[(INGRESS, value)]).expect_err(value);
            assert!(err.starts_with(&format!("annotation {INGRESS}: {value:?}")), "{err}");
            assert!(err.contains(why), "{err}");
        }
    }
}
