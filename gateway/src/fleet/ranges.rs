//! Sets of slots as sorted, disjoint, inclusive ranges: what a migration
//! moves, freezes and takes away from the units that owned it.

use unitgate_config::SlotRange;

/// A set of slots, kept sorted, merged and disjoint.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SlotSet(Vec<(u32, u32)>);

impl SlotSet {
    /// Parses `["0-99", "500"]`; every range must lie in `0..slots`.
    pub fn parse(list: &[String], slots: u32) -> Result<SlotSet, String> {
        let mut ranges = Vec::with_capacity(list.len());
        for s in list {
            let r = SlotRange::parse(s, slots)?;
            ranges.push((r.start, r.end));
        }
        Ok(SlotSet::from_ranges(ranges))
    }

    fn from_ranges(mut ranges: Vec<(u32, u32)>) -> SlotSet {
        ranges.sort_unstable();
        let mut out: Vec<(u32, u32)> = Vec::with_capacity(ranges.len());
        for (a, b) in ranges {
            match out.last_mut() {
                Some(last) if u64::from(a) <= u64::from(last.1) + 1 => last.1 = last.1.max(b),
                _ => out.push((a, b)),
            }
        }
        SlotSet(out)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> u64 {
        self.0
            .iter()
            .map(|(a, b)| u64::from(*b) - u64::from(*a) + 1)
            .sum()
    }

    pub fn union(&self, other: &SlotSet) -> SlotSet {
        SlotSet::from_ranges(self.0.iter().chain(&other.0).copied().collect())
    }

    /// The slots of `self` that are not in `other`.
    pub fn minus(&self, other: &SlotSet) -> SlotSet {
        let mut out = Vec::new();
        for &(a, b) in &self.0 {
            let mut start = a;
            let mut done = false;
            for &(c, d) in &other.0 {
                if d < start || c > b {
                    continue;
                }
                if c > start {
                    out.push((start, c - 1));
                }
                if d >= b {
                    done = true;
                    break;
                }
                start = d + 1;
            }
            if !done {
                out.push((start, b));
            }
        }
        SlotSet(out)
    }

    pub fn intersect(&self, other: &SlotSet) -> SlotSet {
        self.minus(&self.minus(other))
    }

    /// Whether every slot of `other` is in `self`.
    pub fn covers(&self, other: &SlotSet) -> bool {
        other.minus(self).is_empty()
    }

    /// As config strings: `"a-b"`, or `"a"` for a single slot.
    pub fn to_strings(&self) -> Vec<String> {
        self.0
            .iter()
            .map(|&(start, end)| SlotRange { start, end }.to_string())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(list: &[&str]) -> SlotSet {
        let list: Vec<String> = list.iter().map(|s| s.to_string()).collect();
        SlotSet::parse(&list, 10_000).expect("valid ranges")
    }

    #[test]
    fn parse_merges_adjacent_and_overlapping_ranges() {
        assert_eq!(
            set(&["5-9", "0-4", "7-12", "20"]).to_strings(),
            ["0-12", "20"]
        );
        assert!(SlotSet::parse(&["9-10000".into()], 10_000).is_err());
    }

    #[test]
    fn minus_splits_and_trims() {
        let all = set(&["0-4999"]);
        assert_eq!(
            all.minus(&set(&["2000-2999"])).to_strings(),
            ["0-1999", "3000-4999"]
        );
        assert_eq!(
            all.minus(&set(&["0-10", "4990-4999"])).to_strings(),
            ["11-4989"]
        );
        assert!(all.minus(&set(&["0-9999"])).is_empty());
        assert_eq!(
            set(&["0-9"]).minus(&set(&["100-200"])).to_strings(),
            ["0-9"]
        );
        assert_eq!(
            set(&["0-9", "20-29"]).minus(&set(&["5-24"])).to_strings(),
            ["0-4", "25-29"]
        );
    }

    #[test]
    fn union_intersect_covers_len() {
        let a = set(&["0-9", "20-29"]);
        let b = set(&["5-24"]);
        assert_eq!(a.union(&b).to_strings(), ["0-29"]);
        assert_eq!(a.intersect(&b).to_strings(), ["5-9", "20-24"]);
        assert!(a.union(&b).covers(&a));
        assert!(!a.covers(&b));
        assert_eq!(a.len(), 20);
    }
}
