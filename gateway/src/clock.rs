//! Monotonic milliseconds since process start: the time base of breakers and
//! ejections (wall-clock jumps must not open or close circuits).

use std::sync::OnceLock;
use std::time::Instant;

static START: OnceLock<Instant> = OnceLock::new();

pub fn now_ms() -> u64 {
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}
