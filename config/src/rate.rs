//! Rates for rate limits: `N/s`, `N/m`, `N/h`.

use std::fmt;
use std::time::Duration;

/// `count` requests per `per`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Rate {
    pub count: u64,
    pub per: Duration,
}

impl Rate {
    /// Requests per second (for token-bucket refill arithmetic).
    pub fn per_second(&self) -> f64 {
        self.count as f64 / self.per.as_secs_f64()
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = match self.per.as_secs() {
            1 => "s",
            60 => "m",
            3600 => "h",
            _ => return write!(f, "{}/{}ms", self.count, self.per.as_millis()),
        };
        write!(f, "{}/{unit}", self.count)
    }
}

/// Parses `"N/s"`, `"N/m"` or `"N/h"` with `N >= 1` (ASCII digits, no spaces).
pub fn parse_rate(s: &str) -> Result<Rate, String> {
    let bad = || format!("invalid rate {s:?}: expected N/s, N/m or N/h with N >= 1");
    let (n, unit) = s.split_once('/').ok_or_else(bad)?;
    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let count: u64 = n.parse().map_err(|_| bad())?;
    if count == 0 {
        return Err(format!("invalid rate {s:?}: N must be at least 1"));
    }
    let per = match unit {
        "s" => Duration::from_secs(1),
        "m" => Duration::from_secs(60),
        "h" => Duration::from_secs(3600),
        _ => return Err(format!("invalid rate {s:?}: unit must be s, m or h")),
    };
    Ok(Rate { count, per })
}
