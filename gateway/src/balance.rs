//! Weighted choice of one instance inside a group: the primaries, or the
//! backups, of one (service, unit) pool (DESIGN.md "Load balancing additions").
//!
//! Everything a pick reads is built at config load: the smooth round-robin
//! schedule, the cumulative weights, the hash ring. A pick allocates nothing
//! and takes no lock; the only shared writes are the round-robin position and
//! (in the pool) the in-flight counters.
//!
//! A group knows nothing of health, ejection or in-flight counts: the pool
//! passes `usable(member)` (healthy, not ejected, not yet tried by this
//! request) and `load(member)` (requests in flight). Members are positions in
//! the pool's instance list.

use std::sync::atomic::{AtomicUsize, Ordering};

use unitgate_config::LbPolicy;

/// Above this many members, `least_conn` compares two random picks (Envoy's
/// LEAST_REQUEST) instead of scanning them all.
const P2C_ABOVE: usize = 8;

/// Ring points per unit of weight (ketama's 160) while the ring stays under
/// [`MAX_RING_POINTS`]; fewer per unit beyond.
const POINTS_PER_WEIGHT: u32 = 160;
const MAX_RING_POINTS: u32 = 1 << 16;

/// The exact nginx schedule costs members x total weight to build; past this
/// it is approximated by earliest-deadline-first (same shares, also smooth).
const MAX_EXACT_SCHEDULE_WORK: usize = 1 << 22;

pub(crate) struct Group {
    /// Pool positions of the members, in config order.
    members: Box<[usize]>,
    /// Weight per member.
    weights: Box<[u32]>,
    policy: Policy,
}

enum Policy {
    /// The smooth weighted round-robin order over one period (member
    /// positions), and where the next pick starts in it.
    RoundRobin {
        schedule: Box<[u32]>,
        next: AtomicUsize,
    },
    /// `cumulative[i]`: the weights of members 0..=i; the last is the total.
    Random {
        cumulative: Box<[u32]>,
    },
    /// (point, member), sorted by point.
    Consistent {
        ring: Box<[(u32, u32)]>,
    },
    LeastConn,
}

impl Group {
    /// A group of `(pool position, weight, address)`; `None` when empty.
    pub(crate) fn new(
        lb: LbPolicy,
        members: &[(usize, u32, std::net::SocketAddr)],
    ) -> Option<Self> {
        if members.is_empty() {
            return None;
        }
        let weights: Box<[u32]> = members.iter().map(|m| m.1.max(1)).collect();
        let policy = match lb {
            LbPolicy::RoundRobin => Policy::RoundRobin {
                schedule: smooth_schedule(&weights),
                next: AtomicUsize::new(0),
            },
            LbPolicy::Random => Policy::Random {
                cumulative: weights
                    .iter()
                    .scan(0u32, |sum, w| {
                        *sum += w;
                        Some(*sum)
                    })
                    .collect(),
            },
            LbPolicy::ConsistentHash => Policy::Consistent {
                ring: ring(members),
            },
            LbPolicy::LeastConn => Policy::LeastConn,
        };
        Some(Group {
            members: members.iter().map(|m| m.0).collect(),
            weights,
            policy,
        })
    }

    /// A usable member by the group's policy, as a pool position.
    pub(crate) fn pick(
        &self,
        key: &[u8],
        load: impl Fn(usize) -> u32,
        usable: impl Fn(usize) -> bool,
    ) -> Option<usize> {
        let n = self.members.len();
        let ok = |m: usize| usable(self.members[m]);
        let found = match &self.policy {
            Policy::RoundRobin { schedule, next } => {
                let start = next.fetch_add(1, Ordering::Relaxed);
                // The next entries of the schedule; a member that cannot serve
                // passes its turn to the one after it.
                (0..n.min(schedule.len()))
                    .map(|i| schedule[start.wrapping_add(i) % schedule.len()] as usize)
                    .find(|&m| ok(m))
                    .or_else(|| self.scan(start, &ok))
            }
            Policy::Random { cumulative } => {
                let total = cumulative.last().copied().unwrap_or(0).max(1);
                let r = fastrand::u32(..total);
                let m = cumulative.partition_point(|&c| c <= r).min(n - 1);
                if ok(m) {
                    Some(m)
                } else {
                    self.scan(m, &ok)
                }
            }
            Policy::Consistent { ring } => consistent(ring, n, key, &ok),
            Policy::LeastConn => self.least_conn(&|m| load(self.members[m]), &ok),
        };
        found.map(|m| self.members[m])
    }

    /// The first usable member from `start` on, in member order.
    fn scan(&self, start: usize, ok: &impl Fn(usize) -> bool) -> Option<usize> {
        let n = self.members.len();
        let start = start % n;
        (0..n).map(|i| (start + i) % n).find(|&m| ok(m))
    }

    /// Fewest in flight per weight; ties go to one of the tied members with
    /// a chance proportional to its weight (so idle instances still share
    /// traffic by weight).
    fn least_conn(
        &self,
        load: &impl Fn(usize) -> u32,
        ok: &impl Fn(usize) -> bool,
    ) -> Option<usize> {
        let n = self.members.len();
        // a's load per weight against b's: in_flight_a / w_a vs in_flight_b / w_b.
        let cmp = |a: usize, b: usize| {
            let la = u64::from(load(a)) * u64::from(self.weights[b]);
            let lb = u64::from(load(b)) * u64::from(self.weights[a]);
            la.cmp(&lb)
        };
        if n > P2C_ABOVE {
            let a = fastrand::usize(..n);
            let mut b = fastrand::usize(..n - 1);
            if b >= a {
                b += 1;
            }
            match (ok(a), ok(b)) {
                (true, true) => {
                    return Some(match cmp(a, b) {
                        std::cmp::Ordering::Less => a,
                        std::cmp::Ordering::Greater => b,
                        std::cmp::Ordering::Equal => {
                            let (wa, wb) = (self.weights[a], self.weights[b]);
                            if fastrand::u32(..wa + wb) < wa {
                                a
                            } else {
                                b
                            }
                        }
                    })
                }
                (true, false) => return Some(a),
                (false, true) => return Some(b),
                // Both out: look at every member.
                (false, false) => {}
            }
        }
        let mut best: Option<usize> = None;
        let mut tied_weight = 0u32;
        for m in 0..n {
            if !ok(m) {
                continue;
            }
            let w = self.weights[m];
            match best.map(|b| cmp(m, b)) {
                None | Some(std::cmp::Ordering::Less) => {
                    best = Some(m);
                    tied_weight = w;
                }
                Some(std::cmp::Ordering::Equal) => {
                    tied_weight += w;
                    if fastrand::u32(..tied_weight) < w {
                        best = Some(m);
                    }
                }
                Some(std::cmp::Ordering::Greater) => {}
            }
        }
        best
    }
}

/// nginx's smooth weighted round robin, run for one period (the weights'
/// sum, after dividing out their common factor): each step every member's
/// current weight grows by its weight, the largest (first on ties) is picked
/// and loses the total. Weights 3:1 give A A B A.
fn smooth_schedule(weights: &[u32]) -> Box<[u32]> {
    let g = weights.iter().copied().fold(0, gcd).max(1);
    let w: Vec<i64> = weights.iter().map(|&x| i64::from(x / g)).collect();
    let total: i64 = w.iter().sum();
    let period = usize::try_from(total).unwrap_or(0);
    if w.len().saturating_mul(period) > MAX_EXACT_SCHEDULE_WORK {
        return edf_schedule(&w, period);
    }
    let mut current = vec![0i64; w.len()];
    let mut out = Vec::with_capacity(period);
    for _ in 0..period {
        let mut best = 0;
        let mut best_weight = i64::MIN;
        for (i, (c, wi)) in current.iter_mut().zip(&w).enumerate() {
            *c += wi;
            if *c > best_weight {
                best = i;
                best_weight = *c;
            }
        }
        current[best] -= total;
        out.push(best as u32);
    }
    out.into_boxed_slice()
}

/// Earliest deadline first: member i's k-th turn is due at k / w_i.
fn edf_schedule(w: &[i64], period: usize) -> Box<[u32]> {
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;
    // (due as a fraction num/den compared exactly: num_i * den_j), member.
    #[derive(PartialEq, Eq)]
    struct Due(i64, i64, u32);
    impl Ord for Due {
        fn cmp(&self, o: &Self) -> std::cmp::Ordering {
            (i128::from(self.0) * i128::from(o.1))
                .cmp(&(i128::from(o.0) * i128::from(self.1)))
                .then(self.2.cmp(&o.2))
        }
    }
    impl PartialOrd for Due {
        fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
            Some(self.cmp(o))
        }
    }
    let mut heap: BinaryHeap<Reverse<Due>> = w
        .iter()
        .enumerate()
        .map(|(i, &wi)| Reverse(Due(1, wi.max(1), i as u32)))
        .collect();
    let mut out = Vec::with_capacity(period);
    while out.len() < period {
        let Some(Reverse(Due(k, wi, i))) = heap.pop() else {
            break;
        };
        out.push(i);
        heap.push(Reverse(Due(k + 1, wi, i)));
    }
    out.into_boxed_slice()
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// The hash ring: `POINTS_PER_WEIGHT` points per unit of weight, placed by
/// the instance's address (not its position), so adding an instance moves
/// only the keys it takes over, on every gateway alike.
fn ring(members: &[(usize, u32, std::net::SocketAddr)]) -> Box<[(u32, u32)]> {
    let total: u32 = members.iter().map(|m| m.1.max(1)).sum();
    let per_weight = (MAX_RING_POINTS / total.max(1)).clamp(1, POINTS_PER_WEIGHT);
    let mut ring = Vec::with_capacity((total * per_weight) as usize);
    for (m, &(_, weight, addr)) in members.iter().enumerate() {
        let name = addr.to_string();
        for i in 0..weight.max(1) * per_weight {
            ring.push((hash(format!("{name}-{i}").as_bytes()), m as u32));
        }
    }
    ring.sort_unstable();
    ring.into_boxed_slice()
}

/// The first usable member clockwise from the key's point.
fn consistent(
    ring: &[(u32, u32)],
    n: usize,
    key: &[u8],
    ok: &impl Fn(usize) -> bool,
) -> Option<usize> {
    if ring.is_empty() {
        return None;
    }
    let start = ring.partition_point(|p| p.0 < hash(key));
    // Members already refused, for groups of up to 256 (larger ones may ask
    // twice, and fall back to a scan).
    let mut refused = [0u64; 4];
    let mut asked = 0;
    for i in 0..ring.len() {
        let m = ring[(start + i) % ring.len()].1 as usize;
        if m < 256 {
            let (word, bit) = (m / 64, 1u64 << (m % 64));
            if refused[word] & bit != 0 {
                continue;
            }
            refused[word] |= bit;
        }
        if ok(m) {
            return Some(m);
        }
        asked += 1;
        if (n <= 256 && asked >= n) || asked >= 4 * n {
            break;
        }
    }
    (n > 256).then(|| (0..n).find(|&m| ok(m))).flatten()
}

/// CRC-32 (stable across builds and gateways) with murmur3's finaliser to
/// spread similar inputs over the ring.
fn hash(bytes: &[u8]) -> u32 {
    let mut h = crc32fast::hash(bytes);
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

#[cfg(test)]
mod tests;
