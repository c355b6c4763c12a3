//! Kubernetes resource quantities: `100m`, `0.5`, `64Mi`, `1Gi`, `1e3`, `129M`.
//!
//! The value is kept exactly, in units of 10⁻⁹ (rounded up below that, as Kubernetes rounds
//! up), so `MilliValue()` and `Value()` come out as the API server computes them.

use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Quantity {
    nanos: i128,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$': {input:?} ({reason})"
)]
pub struct QuantityError {
    pub input: String,
    pub reason: &'static str,
}

const NANO: i128 = 1_000_000_000;

enum Scale {
    /// A power of ten.
    Decimal(i32),
    /// A power of two.
    Binary(u32),
}

fn suffix_scale(suffix: &str) -> Option<Scale> {
    Some(match suffix {
        "" => Scale::Decimal(0),
        "n" => Scale::Decimal(-9),
        "u" => Scale::Decimal(-6),
        "m" => Scale::Decimal(-3),
        "k" => Scale::Decimal(3),
        "M" => Scale::Decimal(6),
        "G" => Scale::Decimal(9),
        "T" => Scale::Decimal(12),
        "P" => Scale::Decimal(15),
        "E" => Scale::Decimal(18),
        "Ki" => Scale::Binary(10),
        "Mi" => Scale::Binary(20),
        "Gi" => Scale::Binary(30),
        "Ti" => Scale::Binary(40),
        "Pi" => Scale::Binary(50),
        "Ei" => Scale::Binary(60),
        _ => {
            // Decimal exponent: e3, E-2, e+6.
            let exp = suffix.strip_prefix(['e', 'E'])?;
            let digits = exp.strip_prefix(['+', '-']).unwrap_or(exp);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) || digits.len() > 3 {
                return None;
            }
            Scale::Decimal(exp.parse().ok()?)
        }
    })
}

/// Integer division rounding toward +∞.
fn div_ceil(a: i128, b: i128) -> i128 {
    let q = a / b;
    if a % b != 0 && (a > 0) == (b > 0) { q + 1 } else { q }
}

impl Quantity {
    pub fn parse(input: &str) -> Result<Self, QuantityError> {
        let err = |reason| QuantityError {
            input: input.to_string(),
            reason,
        };
        let (negative, rest) = match input.as_bytes().first() {
            Some(b'-') => (true, &input[1..]),
            Some(b'+') => (false, &input[1..]),
            Some(_) => (false, input),
            None => return Err(err("empty")),
        };
        let number_len = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(rest.len());
        let (number, suffix) = rest.split_at(number_len);
        let (int, frac) = number.split_once('.').unwrap_or((number, ""));
        if int.is_empty() && frac.is_empty() {
            return Err(err("no digits"));
        }
        if frac.contains('.') {
            return Err(err("more than one decimal point"));
        }
        let scale = suffix_scale(suffix).ok_or_else(|| err("unknown suffix"))?;
        let digits = format!("{int}{frac}");
        let digits = digits.trim_start_matches('0');
        if digits.len() > 30 {
            return Err(err("too large"));
        }
        let mantissa: i128 = if digits.is_empty() {
            0
        } else {
            digits.parse().map_err(|_| err("not a number"))?
        };
        let frac_len = frac.len() as u32;
        if frac_len > 30 {
            return Err(err("too precise"));
        }
        let too_large = || err("too large");
        let nanos = match scale {
            Scale::Decimal(exp) => {
                let shift = exp + 9 - frac_len as i32;
                if shift >= 0 {
                    let f = 10i128.checked_pow(shift as u32).ok_or_else(too_large)?;
                    mantissa.checked_mul(f).ok_or_else(too_large)?
                } else if -shift > 38 {
                    i128::from(mantissa != 0)
                } else {
                    div_ceil(mantissa, 10i128.pow((-shift) as u32))
                }
            }
            Scale::Binary(pow) => {
                let scaled = mantissa
                    .checked_mul(1i128 << pow)
                    .and_then(|v| v.checked_mul(NANO))
                    .ok_or_else(too_large)?;
                div_ceil(scaled, 10i128.pow(frac_len))
            }
        };
        Ok(Quantity {
            nanos: if negative { -nanos } else { nanos },
        })
    }

    /// The value in thousandths, rounded up (Kubernetes' `MilliValue()`), e.g. CPU millicores.
    pub fn milli_value(&self) -> i64 {
        saturate(div_ceil(self.nanos, 1_000_000))
    }

    /// The value rounded up to an integer (Kubernetes' `Value()`), e.g. bytes.
    pub fn value(&self) -> i64 {
        saturate(div_ceil(self.nanos, NANO))
    }

    pub fn is_zero(&self) -> bool {
        self.nanos == 0
    }
}

fn saturate(v: i128) -> i64 {
    v.clamp(i64::MIN as i128, i64::MAX as i128) as i64
}

impl FromStr for Quantity {
    type Err = QuantityError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Quantity::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> Quantity {
        Quantity::parse(s).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn kubernetes_values() {
        assert_eq!(q("100m").milli_value(), 100);
        assert_eq!(q("0.5").milli_value(), 500);
        assert_eq!(q(".5").milli_value(), 500);
        assert_eq!(q("1").milli_value(), 1000);
        assert_eq!(q("2").value(), 2);
        assert_eq!(q("64Mi").value(), 67_108_864);
        assert_eq!(q("1Gi").value(), 1 << 30);
        assert_eq!(q("1G").value(), 1_000_000_000);
        assert_eq!(q("1e3").value(), 1000);
        assert_eq!(q("1E3").value(), 1000);
        assert_eq!(q("1.5Gi").value(), 1_610_612_736);
        assert_eq!(q("128974848").value(), 128_974_848);
        assert_eq!(q("129e6").value(), 129_000_000);
        assert_eq!(q("129M").value(), 129_000_000);
        assert_eq!(q("123Mi").value(), 128_974_848);
        assert_eq!(q("-1").value(), -1);
        assert_eq!(q("+5k").value(), 5000);
        assert_eq!(q("1u").milli_value(), 1, "rounded up");
        assert_eq!(q("1m").value(), 1, "rounded up");
        assert_eq!(q("0").milli_value(), 0);
        assert!(q("0Mi").is_zero());
        assert!(q("1Ki") > q("1k"));
        assert_eq!(q("8Ei").value(), i64::MAX, "saturates");
    }

    #[test]
    fn rejects_what_kubernetes_rejects() {
        for bad in [
            "",
            "Mi",
            "1.2.3",
            "10 Mi",
            "1mi",
            "1KiB",
            "abc",
            "1e",
            "--1",
            "1Mi ",
            "999999999999999999999999999999999999999Ei",
        ] {
            assert!(Quantity::parse(bad).is_err(), "{bad:?} should be rejected");
        }
        let e = Quantity::parse("12x").unwrap_err();
        assert!(e.to_string().contains("\"12x\""), "{e}");
    }
}
