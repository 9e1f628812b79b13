//! The typed configuration the runtime uses, produced only by [`crate::validate`].
//!
//! Everything here has been checked: addresses parsed, names resolved to indices
//! ([`UnitId`] etc. index into `Config::units` and friends), secrets read from the
//! environment, files read from disk. Durations are [`Duration`]s.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use crate::rate::Rate;
use crate::raw::RawConfig;

/// Index into [`Config::units`].
pub type UnitId = usize;
/// Index into [`Config::services`].
pub type ServiceId = usize;
/// Index into [`Config::routes`].
pub type RouteId = usize;
/// Index into [`Config::jwt`].
pub type JwtId = usize;

/// A validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub gateway: Gateway,
    pub admin: Option<Admin>,
    pub store: Store,
    pub routing: Routing,
    pub units: Vec<Unit>,
    pub services: Vec<Service>,
    pub routes: Vec<Route>,
    /// Verifiers in name order (the `[jwt.<name>]` tables sorted).
    pub jwt: Vec<JwtVerifier>,
    pub redis: Option<Redis>,
    /// `[tls]`; `None` when absent (then `gateway.listen_tls` must be empty).
    pub tls: Option<Tls>,
    /// `[tracing]`; `None` when absent (no spans are exported).
    pub tracing: Option<Tracing>,
    /// The file this was validated from, for the admin API to edit and write back.
    pub raw: RawConfig,
}

impl Config {
    pub fn unit_id(&self, name: &str) -> Option<UnitId> {
        self.units.iter().position(|u| u.name == name)
    }

    pub fn service_id(&self, name: &str) -> Option<ServiceId> {
        self.services.iter().position(|s| s.name == name)
    }

    pub fn route_id(&self, name: &str) -> Option<RouteId> {
        self.routes.iter().position(|r| r.name == name)
    }

    pub fn jwt_id(&self, name: &str) -> Option<JwtId> {
        self.jwt.iter().position(|j| j.name == name)
    }

    /// The unit owning `slot` by the shard map (ignores `overrides`, which key on
    /// the routing key, not the slot). `None` only if `slot >= routing.slots`.
    pub fn unit_for_slot(&self, slot: u32) -> Option<UnitId> {
        self.units
            .iter()
            .position(|u| u.slots.iter().any(|r| r.contains(slot)))
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Gateway {
    /// The unit this gateway runs in.
    pub unit: UnitId,
    pub listen: Vec<SocketAddr>,
    /// TLS listeners (certificates from `[tls]`).
    pub listen_tls: Vec<SocketAddr>,
    /// Plain listeners also accept prior-knowledge HTTP/2.
    pub h2c: bool,
    pub threads: usize,
    pub grace_period: Duration,
    /// Peers whose inbound `x-unit-*` headers are honoured.
    pub trusted_peers: Vec<ipnet::IpNet>,
    pub expose_unit_headers: bool,
    /// The whole request head must arrive within this (default 10 s).
    pub client_header_timeout: Duration,
    /// Idle keep-alive client connections are closed after this (default 60 s).
    pub client_idle_timeout: Duration,
    /// Larger request heads are refused with 431 (default 65536; 1024..=1048576).
    pub max_header_bytes: usize,
    /// 0 (default) = unlimited; over it new connections wait in the backlog.
    pub max_connections: u32,
}

/// `[store]`: where the fleet-wide part of the config comes from.
#[derive(Debug, Clone, PartialEq)]
pub struct Store {
    pub kind: StoreKind,
    /// Unique in the fleet; never empty, never contains `/` (it is an etcd key
    /// segment). Default `<hostname>:<port of the first gateway.listen>`.
    pub gateway_id: String,
    /// A gateway's status entry expires this long after it stops (2..=300, default 10).
    pub lease_secs: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub enum StoreKind {
    /// The `--config` file is the source; the fleet is this one gateway.
    File,
    /// The fleet-wide sections live in etcd under `prefix`.
    Etcd {
        /// `http://host:port` client URLs, as given; never empty.
        endpoints: Vec<String>,
        /// Starts with `/`, no trailing `/`.
        prefix: String,
        /// The last applied fleet config, resolved against the config file's folder.
        cache_file: PathBuf,
    },
}

/// A per-process local file validated on its own: the `store.kind = "etcd"`
/// case, where `[gateway]`, `[admin]` and `[store]` are all the file holds and
/// the units arrive later with the fleet config.
#[derive(Debug, Clone, PartialEq)]
pub struct LocalConfig {
    /// `gateway.unit` by name (non-empty, a valid name). Whether it names a
    /// unit can only be checked once the fleet config is composed.
    pub unit: String,
    /// `[gateway]` as validated, **except `unit`**: that index is 0 and
    /// meaningless until the fleet config is composed; read [`LocalConfig::unit`].
    pub gateway: Gateway,
    pub admin: Option<Admin>,
    pub store: Store,
    pub tls: Option<Tls>,
    pub tracing: Option<Tracing>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Admin {
    pub listen: SocketAddr,
    /// Bearer token; never empty.
    pub token: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Routing {
    pub slots: u32,
    pub epoch: u64,
    /// Routing-key sources, first that yields a non-empty value wins.
    pub key: Vec<KeySource>,
    /// Routing cookie name.
    pub cookie: String,
    pub cookie_ttl: Duration,
    pub cookie_secure: bool,
    /// kid -> secret. Empty = no routing cookie is stamped.
    pub signing_keys: BTreeMap<String, Vec<u8>>,
    /// Signs new cookies; `Some` (and a key of `signing_keys`) iff `signing_keys` is non-empty.
    pub active_key: Option<String>,
    pub max_hops: u32,
    pub forbidden_writes: Vec<SlotRange>,
    /// routing key -> home unit.
    pub overrides: HashMap<String, UnitId>,
    /// An empty route table was asked for (else it is refused).
    pub allow_empty_routes: bool,
}

impl Routing {
    /// Whether writes to `slot` are refused (migration in progress).
    pub fn write_forbidden(&self, slot: u32) -> bool {
        self.forbidden_writes.iter().any(|r| r.contains(slot))
    }
}

/// Where the routing key comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// A claim of the verified JWT.
    Jwt(String),
    /// A request header; name lowercased.
    Header(String),
    Cookie(String),
    Query(String),
}

/// Inclusive range of slots.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct SlotRange {
    pub start: u32,
    pub end: u32,
}

impl SlotRange {
    pub fn contains(&self, slot: u32) -> bool {
        self.start <= slot && slot <= self.end
    }

    /// Number of slots in the range (never zero).
    pub fn len(&self) -> u64 {
        u64::from(self.end) - u64::from(self.start) + 1
    }

    /// Always false: a range holds at least one slot.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Parses `"a-b"` or `"a"`, requiring `a <= b < slots`.
    pub fn parse(s: &str, slots: u32) -> Result<SlotRange, String> {
        let bad = || format!("invalid slot range {s:?}: expected \"a-b\" or \"a\"");
        let num = |t: &str| -> Result<u32, String> {
            let t = t.trim();
            if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            t.parse()
                .map_err(|_| format!("invalid slot range {s:?}: number too large"))
        };
        let (start, end) = match s.split_once('-') {
            Some((a, b)) => (num(a)?, num(b)?),
            None => {
                let a = num(s)?;
                (a, a)
            }
        };
        if start > end {
            return Err(format!(
                "invalid slot range {s:?}: start is greater than end"
            ));
        }
        if end >= slots {
            return Err(format!(
                "slot range {s:?} is out of bounds: slots are 0-{} (routing.slots = {slots})",
                slots.saturating_sub(1)
            ));
        }
        Ok(SlotRange { start, end })
    }
}

impl fmt::Display for SlotRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.start == self.end {
            write!(f, "{}", self.start)
        } else {
            write!(f, "{}-{}", self.start, self.end)
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Unit {
    pub name: String,
    pub slots: Vec<SlotRange>,
    /// Siblings, in order; never contains the unit itself or duplicates.
    pub failover: Vec<UnitId>,
    pub state: UnitState,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum UnitState {
    Active,
    Draining,
    Down,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Service {
    pub name: String,
    pub lb: LbPolicy,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    /// Only units with at least one instance, in unit order.
    pub instances: Vec<UnitInstances>,
    /// `kind: None` when no `[services.health]` is given.
    pub health: HealthCheck,
    pub outlier: Option<Outlier>,
    pub circuit_breaker: Option<CircuitBreaker>,
    /// Instances given by host name are re-resolved this often (default 5 s, >= 100 ms).
    pub dns_refresh: Duration,
    pub protocol: Protocol,
    /// `Some` when the instances are reached over TLS.
    pub tls: Option<UpstreamTls>,
    /// Upgraded (WebSocket) streams are closed after this long idle.
    pub idle_timeout: Duration,
}

/// `services.protocol`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Protocol {
    Http1,
    /// HTTP/2 over TLS (ALPN).
    H2,
    /// Cleartext HTTP/2 with prior knowledge (gRPC backends).
    H2c,
}

/// TLS to a service's instances.
#[derive(Clone, Debug, PartialEq)]
pub struct UpstreamTls {
    /// Empty: each instance's IP address is the name sent and verified.
    pub sni: String,
    /// DER certificates of `ca_file`; `None` = the system roots.
    pub ca: Option<Vec<Vec<u8>>>,
}

/// `[tracing]`, validated.
#[derive(Clone, Debug, PartialEq)]
pub struct Tracing {
    /// Where spans are POSTed: the configured URL, with `/v1/traces` when it had no path.
    pub traces_url: String,
    /// Compared with a trace id's low 64 bits: `ratio × 2^64`, saturating.
    pub sample_threshold: u64,
    pub service_name: String,
    pub queue_size: usize,
}

/// `[tls]`, validated: every certificate read, parsed and matched to its key.
#[derive(Clone, Debug, PartialEq)]
pub struct Tls {
    pub min_version: TlsVersion,
    pub certificates: Vec<Certificate>,
    /// DER certificates of `trusted_peer_ca`.
    pub trusted_peer_ca: Option<Vec<Vec<u8>>>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum TlsVersion {
    V1_2,
    V1_3,
}

/// One certificate with its key, ready for the handshake.
#[derive(Clone, Debug)]
pub struct Certificate {
    pub cert_file: String,
    pub key_file: String,
    /// Lowercase SNI names, exact or `*.suffix`; empty = the default.
    pub hosts: Vec<String>,
    pub key: std::sync::Arc<rustls::sign::CertifiedKey>,
    /// The leaf's notAfter, in seconds since the Unix epoch.
    pub not_after: i64,
}

impl PartialEq for Certificate {
    fn eq(&self, other: &Self) -> bool {
        self.cert_file == other.cert_file
            && self.key_file == other.key_file
            && self.hosts == other.hosts
            && self.key.cert == other.key.cert
    }
}

impl Service {
    /// The instances of this service in `unit` (empty if none).
    pub fn instances_in(&self, unit: UnitId) -> &[Instance] {
        self.instances
            .iter()
            .find(|i| i.unit == unit)
            .map_or(&[], |i| &i.instances)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct UnitInstances {
    pub unit: UnitId,
    /// The instances given by IP, in file order; the gateway adds those its
    /// resolver found for `named` (with `resolved = true`). Together with
    /// `named` never empty, at least one non-backup; no duplicate address.
    pub instances: Vec<Instance>,
    /// Instances given by host name, resolved by the gateway at load and
    /// every `dns_refresh`: each A/AAAA record is an instance.
    pub named: Vec<NamedInstance>,
}

/// An instance given as `host:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedInstance {
    pub host: String,
    pub port: u16,
    pub weight: u32,
    pub backup: bool,
}

impl UnitInstances {
    pub fn addrs(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        self.instances.iter().map(|i| i.addr)
    }
}

/// One instance of a service in one unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Instance {
    pub addr: SocketAddr,
    /// Relative share of the unit's traffic, 1..=100.
    pub weight: u32,
    /// Serves only while no non-backup instance of the unit is available.
    pub backup: bool,
    /// An address of a [`NamedInstance`], found by the gateway's resolver.
    pub resolved: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum LbPolicy {
    /// Smooth weighted round robin (nginx's).
    RoundRobin,
    /// Weighted random.
    Random,
    /// By routing key; a weight-w instance owns w times the ring share.
    ConsistentHash,
    /// Fewest requests in flight per weight; ties broken at random.
    LeastConn,
}

#[derive(Debug, Clone, PartialEq)]
pub struct HealthCheck {
    pub kind: HealthKind,
    pub interval: Duration,
    pub timeout: Duration,
    pub unhealthy_after: u32,
    pub healthy_after: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthKind {
    Http { path: String },
    Tcp,
    None,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Outlier {
    pub consecutive_failures: u32,
    /// Base ejection time (the runtime may grow it on re-ejection).
    pub eject: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CircuitBreaker {
    /// In (0, 1].
    pub failure_ratio: f64,
    pub min_requests: u32,
    pub window: Duration,
    pub open: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    pub name: String,
    /// Empty = any host.
    pub hosts: Vec<HostMatch>,
    /// Starts with `/`; no trailing `/` except for the root `/` itself.
    pub path_prefix: String,
    /// Uppercase; empty = any method.
    pub methods: Vec<String>,
    pub service: ServiceId,
    pub placement: Placement,
    pub strip_prefix: bool,
    pub timeout: Duration,
    pub retries: u32,
    pub jwt: Option<JwtId>,
    /// 0 = unlimited.
    pub max_inflight: u32,
    /// 0 (default) = unlimited; a larger request body is refused with 413.
    pub max_body_bytes: u64,
    pub rate_limits: Vec<RateLimit>,
    pub fallback: Option<Fallback>,
    /// Gray release, in listed order; weights sum to at most 100.
    pub splits: Vec<Split>,
}

/// One split of a route: which users (or requests) go to `service` instead
/// of the route's own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    /// Never the route's own service; no two splits of a route share one.
    pub service: ServiceId,
    /// Percent of users, 0..=100.
    pub weight: u8,
    /// Lowercase header name: a request carrying it comes here, whatever the weight.
    pub match_header: Option<String>,
    /// Placement units this split applies in; empty = all. No duplicates.
    pub units: Vec<UnitId>,
}

impl Split {
    /// Whether the split applies to a request whose placement unit is `unit`.
    pub fn applies_in(&self, unit: UnitId) -> bool {
        self.units.is_empty() || self.units.contains(&unit)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum HostMatch {
    /// Lowercase host name.
    Exact(String),
    /// `*.example.com` stored as `.example.com`, lowercase.
    Suffix(String),
}

impl HostMatch {
    /// `host` must already be lowercase and without port.
    pub fn matches(&self, host: &str) -> bool {
        match self {
            HostMatch::Exact(h) => h == host,
            HostMatch::Suffix(s) => host.len() > s.len() && host.ends_with(s.as_str()),
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Placement {
    /// The home unit of the request's slot.
    Sharded,
    /// This gateway's unit.
    Local,
    /// A pinned unit.
    Unit(UnitId),
}

#[derive(Debug, Clone, PartialEq)]
pub struct RateLimit {
    pub key: LimitKey,
    pub rate: Rate,
    pub burst: u32,
    pub scope: LimitScope,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LimitKey {
    /// The routing key, else the client IP.
    User,
    Ip,
    Route,
    /// Lowercase header name.
    Header(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LimitScope {
    Local,
    Global,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Fallback {
    pub status: u16,
    pub content_type: String,
    pub body: Vec<u8>,
    /// Lowercase names, values checked to be valid header values.
    pub headers: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct JwtVerifier {
    pub name: String,
    /// Non-empty, no duplicates, all HMAC or all asymmetric.
    pub algorithms: Vec<JwtAlgorithm>,
    pub key: JwtKey,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    pub leeway: Duration,
    /// (claim, lowercase upstream header).
    pub forward_claims: Vec<(String, String)>,
}

#[allow(clippy::upper_case_acronyms)]
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub enum JwtAlgorithm {
    HS256,
    HS384,
    HS512,
    RS256,
    RS384,
    RS512,
    ES256,
    ES384,
    EdDSA,
}

impl JwtAlgorithm {
    pub const ALL: [JwtAlgorithm; 9] = [
        JwtAlgorithm::HS256,
        JwtAlgorithm::HS384,
        JwtAlgorithm::HS512,
        JwtAlgorithm::RS256,
        JwtAlgorithm::RS384,
        JwtAlgorithm::RS512,
        JwtAlgorithm::ES256,
        JwtAlgorithm::ES384,
        JwtAlgorithm::EdDSA,
    ];

    /// The name used in the config file and in a token's `alg` header.
    pub fn as_str(self) -> &'static str {
        match self {
            JwtAlgorithm::HS256 => "HS256",
            JwtAlgorithm::HS384 => "HS384",
            JwtAlgorithm::HS512 => "HS512",
            JwtAlgorithm::RS256 => "RS256",
            JwtAlgorithm::RS384 => "RS384",
            JwtAlgorithm::RS512 => "RS512",
            JwtAlgorithm::ES256 => "ES256",
            JwtAlgorithm::ES384 => "ES384",
            JwtAlgorithm::EdDSA => "EdDSA",
        }
    }

    /// HMAC (shared secret) rather than a public key.
    pub fn is_hmac(self) -> bool {
        matches!(
            self,
            JwtAlgorithm::HS256 | JwtAlgorithm::HS384 | JwtAlgorithm::HS512
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwtKey {
    Secret(Vec<u8>),
    /// Contents of `public_key_file` (not yet parsed).
    PublicKeyPem(Vec<u8>),
    /// Contents of `jwks_file` (not yet parsed).
    Jwks(Vec<u8>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Redis {
    pub url: String,
    pub timeout: Duration,
    pub on_failure: OnFailure,
    /// Gateways sharing global limits; `on_failure = local` enforces rate / fleet_size.
    pub fleet_size: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnFailure {
    Local,
    Open,
    Closed,
}
