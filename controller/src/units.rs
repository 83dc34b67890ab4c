//! Byte quantities: Kubernetes quantities read as bytes, and bytes written for people.

/// Why a quantity is not a number of bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    #[error("{0:?} is not a whole number of bytes with an optional suffix such as 16Mi")]
    NotANumber(String),
    #[error("{quantity:?} has unknown suffix {suffix:?}; use one of k, M, G, T, Ki, Mi, Gi, Ti")]
    UnknownSuffix { quantity: String, suffix: String },
    #[error("{0:?} is too large")]
    TooLarge(String),
}

/// Parses a Kubernetes quantity of bytes (`16Mi`, `1G`, `1048576`, `0`).
pub fn quantity_bytes(q: &str) -> Result<u64, QuantityError> {
    let q = q.trim();
    let split = q.find(|c: char| !c.is_ascii_digit()).unwrap_or(q.len());
    let (num, suffix) = q.split_at(split);
    let n: u64 = num.parse().map_err(|_| QuantityError::NotANumber(q.into()))?;
    let mult: u64 = match suffix {
        "" => 1,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        _ => return Err(QuantityError::UnknownSuffix { quantity: q.into(), suffix: suffix.into() }),
    };
    n.checked_mul(mult).ok_or_else(|| QuantityError::TooLarge(q.into()))
}

/// Bytes in a human unit for messages (`40.0 MiB`).
pub fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut i = 0;
    while v >= 1024.0 && i < UNITS.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_parse_or_say_why_not() {
        assert_eq!(quantity_bytes("16Mi"), Ok(16 << 20));
        assert_eq!(quantity_bytes("0"), Ok(0));
        assert_eq!(quantity_bytes("1G"), Ok(1_000_000_000));
        assert!(quantity_bytes("16MB").expect_err("unknown suffix").to_string().contains("unknown suffix"));
        assert!(quantity_bytes("lots").is_err());
        assert!(quantity_bytes("99999999999Ti").expect_err("overflow").to_string().contains("too large"));
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(3 << 30), "3.0 GiB");
    }
}
