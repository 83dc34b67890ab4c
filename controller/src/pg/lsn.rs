//! `Lsn`: a PostgreSQL write-ahead-log position (`X/Y` in hex), with the byte arithmetic used for lag
//! and lost-WAL figures.

use std::{fmt, str::FromStr};

/// A WAL position: 64 bits, printed by PostgreSQL as two hex halves `hi/lo`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Lsn(pub u64);

/// An LSN string that is not `X/Y` hex.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid LSN {0:?}: expected two hex numbers separated by '/', such as 0/3000060")]
pub struct ParseLsnError(String);

impl FromStr for Lsn {
    type Err = ParseLsnError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseLsnError(s.chars().take(40).collect());
        let (hi, lo) = s.split_once('/').ok_or_else(err)?;
        if hi.is_empty() || lo.is_empty() || hi.len() > 8 || lo.len() > 8 {
            return Err(err());
        }
        let hi = u32::from_str_radix(hi, 16).map_err(|_| err())?;
        let lo = u32::from_str_radix(lo, 16).map_err(|_| err())?;
        Ok(Lsn((u64::from(hi) << 32) | u64::from(lo)))
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

impl Lsn {
    /// Bytes from `other` up to `self`; zero when `other` is ahead (a standby never reads as ahead of
    /// its primary for lag purposes, and a negative lag would only confuse a guard).
    pub fn bytes_after(self, other: Lsn) -> u64 {
        self.0.saturating_sub(other.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_like_postgres() {
        for s in ["0/0", "0/3000060", "16/B374D848", "FFFFFFFF/FFFFFFFF"] {
            let lsn: Lsn = s.parse().expect(s);
            assert_eq!(lsn.to_string(), s);
        }
        assert_eq!("1/0".parse::<Lsn>().map(|l| l.0), Ok(1 << 32));
    }

    #[test]
    fn rejects_garbage_with_a_clear_message() {
        for s in ["", "0", "/1", "1/", "x/1", "1/2/3", "123456789/0", " 0/1"] {
            let err = s.parse::<Lsn>().expect_err(s);
            assert!(err.to_string().contains("expected two hex numbers"), "{err}");
        }
    }

    #[test]
    fn lag_is_bytes_between_positions_and_never_negative() {
        let primary: Lsn = "0/3000100".parse().expect("lsn");
        let standby: Lsn = "0/3000000".parse().expect("lsn");
        assert_eq!(primary.bytes_after(standby), 256);
        assert_eq!(standby.bytes_after(primary), 0);
        let across: Lsn = "1/10".parse().expect("lsn");
        let before: Lsn = "0/FFFFFFF0".parse().expect("lsn");
        assert_eq!(across.bytes_after(before), 0x20);
    }
}
