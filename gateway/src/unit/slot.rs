//! Routing key -> slot -> home unit, with every table precomputed at load.

use unitgate_config::{Config, UnitId};

/// The slot of a routing key, as DESIGN.md defines it so backends can
/// recompute it: an all-digit key that fits u64 is taken modulo `slots`;
/// anything else is CRC-32/ISO-HDLC (zlib's) of its UTF-8 bytes modulo `slots`.
pub fn slot_of(key: &str, slots: u32) -> u32 {
    let slots = slots.max(1);
    if !key.is_empty() && key.bytes().all(|b| b.is_ascii_digit()) {
        if let Ok(n) = key.parse::<u64>() {
            return (n % u64::from(slots)) as u32;
        }
    }
    crc32fast::hash(key.as_bytes()) % slots
}

/// Slot-indexed tables: owner unit and write freeze, one lookup per request.
#[derive(Debug)]
pub struct SlotTable {
    owner: Box<[u32]>,
    frozen: Box<[u64]>,
}

impl SlotTable {
    pub fn new(config: &Config) -> Self {
        let slots = config.routing.slots as usize;
        let mut owner = vec![0u32; slots];
        for (unit, u) in config.units.iter().enumerate() {
            for r in &u.slots {
                for s in r.start..=r.end.min(config.routing.slots.saturating_sub(1)) {
                    owner[s as usize] = unit as u32;
                }
            }
        }
        let mut frozen = vec![0u64; slots.div_ceil(64)];
        for r in &config.routing.forbidden_writes {
            for s in r.start..=r.end.min(config.routing.slots.saturating_sub(1)) {
                frozen[s as usize / 64] |= 1 << (s % 64);
            }
        }
        SlotTable {
            owner: owner.into_boxed_slice(),
            frozen: frozen.into_boxed_slice(),
        }
    }

    /// The unit that owns `slot` in the shard map (validation guarantees full coverage).
    pub fn owner(&self, slot: u32) -> UnitId {
        self.owner.get(slot as usize).copied().unwrap_or(0) as UnitId
    }

    /// Whether writes to `slot` are refused (a migration is under way).
    pub fn write_frozen(&self, slot: u32) -> bool {
        self.frozen
            .get(slot as usize / 64)
            .is_some_and(|w| w & (1 << (slot % 64)) != 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_keys_are_taken_modulo() {
        assert_eq!(slot_of("42", 10000), 42);
        assert_eq!(slot_of("123456789", 10000), 6789);
        assert_eq!(slot_of("0", 10000), 0);
        assert_eq!(slot_of("00017", 10000), 17);
        // u64::MAX = 18446744073709551615 -> 1615
        assert_eq!(slot_of("18446744073709551615", 10000), 1615);
    }

    #[test]
    fn other_keys_use_zlib_crc32() {
        // crc32("123456789") = 0xCBF43926 is the CRC-32/ISO-HDLC check value;
        // "u-123456789" style keys go through the same function.
        assert_eq!(crc32fast::hash(b"123456789"), 0xCBF4_3926);
        assert_eq!(slot_of("alice", 10000), crc32fast::hash(b"alice") % 10000);
        // Too big for u64: not numeric any more.
        let big = "184467440737095516150";
        assert_eq!(slot_of(big, 10000), crc32fast::hash(big.as_bytes()) % 10000);
        assert_eq!(slot_of("-5", 10000), crc32fast::hash(b"-5") % 10000);
    }
}
