//! The raw schema: serde structs that mirror the TOML file key for key.
//!
//! Nothing here is checked beyond TOML types and unknown keys; [`crate::validate`]
//! turns a [`RawConfig`] into a typed [`crate::Config`]. The admin API round-trips
//! these structs as JSON and writes them back as TOML, so every struct is
//! `Serialize + Deserialize + Clone + PartialEq`, unset optional keys are skipped
//! when serialising, and values that must be checked with a helpful, path-carrying
//! message (enums, names, addresses) are plain strings here.
//!
//! Fields that are required but would otherwise stop parsing at the first missing
//! one (`gateway.unit`, names, `service`, `rate`) default to an empty string and are
//! reported by validation, so one pass shows every mistake.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The whole configuration file.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub gateway: RawGateway,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin: Option<RawAdmin>,
    /// Absent = `kind = "file"` with every default (and nothing written back).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<RawStore>,
    /// `[tls]`: certificates of the TLS listeners. Per process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<RawTls>,
    /// `[tracing]`: OTLP span export. Per process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracing: Option<RawTracing>,
    #[serde(default)]
    pub routing: RawRouting,
    #[serde(default)]
    pub units: Vec<RawUnit>,
    #[serde(default)]
    pub services: Vec<RawService>,
    #[serde(default)]
    pub routes: Vec<RawRoute>,
    #[serde(default)]
    pub jwt: BTreeMap<String, RawJwt>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis: Option<RawRedis>,
}

/// `[gateway]`: this process.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawGateway {
    /// Required; empty means "not given".
    #[serde(default)]
    pub unit: String,
    #[serde(default = "default_listen")]
    pub listen: Vec<String>,
    /// TLS listeners (ALPN h2 and http/1.1); certificates from `[tls]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub listen_tls: Vec<String>,
    /// Plain listeners also accept prior-knowledge HTTP/2. Default true.
    #[serde(default = "default_true")]
    pub h2c: bool,
    /// `None` = `std::thread::available_parallelism()`, resolved at validation so
    /// writing the file back does not pin this machine's core count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threads: Option<usize>,
    #[serde(default = "default_grace_period_secs")]
    pub grace_period_secs: u64,
    #[serde(default)]
    pub trusted_peers: Vec<String>,
    #[serde(default)]
    pub expose_unit_headers: bool,
    /// The whole request head must arrive within this (slowloris). Default 10000.
    #[serde(default = "default_client_header_timeout_ms")]
    pub client_header_timeout_ms: u64,
    /// Idle keep-alive client connections are closed after this. Default 60000.
    #[serde(default = "default_client_idle_timeout_ms")]
    pub client_idle_timeout_ms: u64,
    /// A larger request head is refused (431). Default 65536, 1024..=1048576.
    #[serde(default = "default_max_header_bytes")]
    pub max_header_bytes: u64,
    /// 0 (default) = unlimited; over it new connections wait in the backlog.
    #[serde(default)]
    pub max_connections: u32,
}

impl Default for RawGateway {
    fn default() -> Self {
        Self {
            unit: String::new(),
            listen: default_listen(),
            listen_tls: Vec::new(),
            h2c: true,
            threads: None,
            grace_period_secs: default_grace_period_secs(),
            trusted_peers: Vec::new(),
            expose_unit_headers: false,
            client_header_timeout_ms: default_client_header_timeout_ms(),
            client_idle_timeout_ms: default_client_idle_timeout_ms(),
            max_header_bytes: default_max_header_bytes(),
            max_connections: 0,
        }
    }
}

/// `[admin]`: absent = no admin listener.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    #[serde(default = "default_admin_listen")]
    pub listen: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_env: Option<String>,
}

/// `[store]`: where this gateway's fleet-wide config comes from. Per process.
///
/// With `kind = "file"` the `--config` file holds everything and the etcd-only
/// keys (`endpoints`, `prefix`, `cache_file`) are ignored, not checked: a file
/// can be prepared for etcd before it is switched over. `gateway_id` and
/// `lease_secs` apply in both kinds (with a file the fleet is this gateway).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawStore {
    /// `file` (default) | `etcd`.
    #[serde(default = "default_store_kind")]
    pub kind: String,
    /// etcd only: `http://host:port` client URLs. Default `["http://127.0.0.1:2379"]`.
    #[serde(default = "default_store_endpoints")]
    pub endpoints: Vec<String>,
    /// etcd only: every key of this fleet lives under it. Default `/unitgate`.
    #[serde(default = "default_store_prefix")]
    pub prefix: String,
    /// Unique in the fleet. Default `<hostname>:<port of the first gateway.listen>`,
    /// resolved at validation so writing the file back does not pin it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway_id: Option<String>,
    /// etcd only: the last applied fleet config, relative to the config file's
    /// folder. Default `last-good.toml`.
    #[serde(default = "default_cache_file")]
    pub cache_file: String,
    /// A gateway's status entry expires this long after it stops. Default 10, 2..=300.
    #[serde(default = "default_lease_secs")]
    pub lease_secs: u64,
}

impl Default for RawStore {
    fn default() -> Self {
        Self {
            kind: default_store_kind(),
            endpoints: default_store_endpoints(),
            prefix: default_store_prefix(),
            gateway_id: None,
            cache_file: default_cache_file(),
            lease_secs: default_lease_secs(),
        }
    }
}

/// `[routing]`: slots, routing key, routing cookie, shard-map extras.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawRouting {
    #[serde(default = "default_slots")]
    pub slots: u64,
    #[serde(default = "default_epoch")]
    pub epoch: u64,
    #[serde(default = "default_key")]
    pub key: Vec<String>,
    #[serde(default = "default_cookie")]
    pub cookie: String,
    #[serde(default = "default_cookie_ttl_secs")]
    pub cookie_ttl_secs: u64,
    #[serde(default)]
    pub cookie_secure: bool,
    /// kid -> secret.
    #[serde(default)]
    pub signing_keys: BTreeMap<String, String>,
    /// kid -> name of the environment variable holding the secret.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub signing_keys_env: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_key: Option<String>,
    #[serde(default = "default_max_hops")]
    pub max_hops: u32,
    #[serde(default)]
    pub forbidden_writes: Vec<String>,
    /// routing key -> unit name.
    #[serde(default)]
    pub overrides: BTreeMap<String, String>,
    /// A config without routes is refused (every request would get 404)
    /// unless this is set. Default false.
    #[serde(default)]
    pub allow_empty_routes: bool,
}

impl Default for RawRouting {
    fn default() -> Self {
        Self {
            slots: default_slots(),
            epoch: default_epoch(),
            key: default_key(),
            cookie: default_cookie(),
            cookie_ttl_secs: default_cookie_ttl_secs(),
            cookie_secure: false,
            signing_keys: BTreeMap::new(),
            signing_keys_env: BTreeMap::new(),
            active_key: None,
            max_hops: default_max_hops(),
            forbidden_writes: Vec::new(),
            overrides: BTreeMap::new(),
            allow_empty_routes: false,
        }
    }
}

/// `[[units]]`: one datacenter / cell.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawUnit {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub slots: Vec<String>,
    #[serde(default)]
    pub failover: Vec<String>,
    #[serde(default = "default_unit_state")]
    pub state: String,
}

/// `[[services]]`: one backend application, deployed in several units.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawService {
    #[serde(default)]
    pub name: String,
    #[serde(default = "default_lb")]
    pub lb: String,
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    #[serde(default = "default_read_timeout_ms")]
    pub read_timeout_ms: u64,
    /// unit name -> instances, each `"IP:port"` or `{ addr, weight, backup }`.
    #[serde(default)]
    pub instances: BTreeMap<String, Vec<RawInstance>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<RawHealth>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlier: Option<RawOutlier>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub circuit_breaker: Option<RawCircuitBreaker>,
    /// Instances given by host name are re-resolved this often. Default 5000, >= 100.
    #[serde(default = "default_dns_refresh_ms")]
    pub dns_refresh_ms: u64,
    /// `http1` (default) | `h2` (TLS with ALPN h2) | `h2c` (cleartext HTTP/2).
    #[serde(default = "default_protocol")]
    pub protocol: String,
    /// TLS to the instances (implied by `protocol = "h2"`).
    #[serde(default)]
    pub tls: bool,
    /// Server name sent and verified; default the instance's address.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub tls_sni: String,
    /// Verify instances against this CA (PEM); default the system roots.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ca_file: String,
    /// Upgraded (WebSocket) streams are closed after this long idle. Default 300000.
    #[serde(default = "default_idle_timeout_ms")]
    pub idle_timeout_ms: u64,
}

/// `[tls]`: the TLS listeners' certificates, chosen by SNI.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    /// `"1.2"` (default) or `"1.3"`.
    #[serde(default = "default_tls_min_version")]
    pub min_version: String,
    #[serde(default)]
    pub certificates: Vec<RawCertificate>,
    /// Clients presenting a certificate from this CA (PEM) are trusted peers
    /// (other units' gateways), as `gateway.trusted_peers` trusts by address.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub trusted_peer_ca: String,
}

/// `[tracing]`: one span per sampled request, exported over OTLP/HTTP.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawTracing {
    /// `http(s)://host:port` of an OTLP/HTTP receiver (protobuf); `/v1/traces`
    /// is appended when the URL has no path. Required.
    #[serde(default)]
    pub otlp_endpoint: String,
    /// Share of the traces this gateway starts that are recorded, 0.0..=1.0
    /// (default 0.01). An inbound `traceparent`'s sampled flag is followed.
    #[serde(default = "default_sample_ratio")]
    pub sample_ratio: f64,
    /// `service.name` of the exported spans (default `unitgate`).
    #[serde(default = "default_service_name")]
    pub service_name: String,
    /// Spans waiting for export; over it new spans are dropped and counted
    /// (default 2048; 1..=1000000).
    #[serde(default = "default_span_queue")]
    pub queue_size: usize,
}

/// One `[[tls.certificates]]` entry.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawCertificate {
    #[serde(default)]
    pub cert_file: String,
    #[serde(default)]
    pub key_file: String,
    /// SNI names (exact or `*.suffix`); empty = the default certificate.
    #[serde(default)]
    pub hosts: Vec<String>,
}

/// One instance of `[services.instances]`: a string `"IP:port"` or a table
/// `{ addr, weight = 1, backup = false }`. Both forms read into this struct;
/// it is written back (TOML and the admin API's JSON) as the plain string
/// when weight and backup are the defaults, as the table otherwise.
#[derive(Clone, Debug, PartialEq)]
pub struct RawInstance {
    pub addr: String,
    /// Relative share of the unit's traffic, 1..=100 (checked by validation).
    pub weight: u32,
    /// Serves only while no other instance of the unit can.
    pub backup: bool,
}

impl RawInstance {
    pub const DEFAULT_WEIGHT: u32 = 1;

    /// A plain instance: weight 1, not a backup.
    pub fn plain(addr: impl Into<String>) -> Self {
        RawInstance {
            addr: addr.into(),
            weight: Self::DEFAULT_WEIGHT,
            backup: false,
        }
    }

    fn is_plain(&self) -> bool {
        self.weight == Self::DEFAULT_WEIGHT && !self.backup
    }
}

impl From<&str> for RawInstance {
    fn from(addr: &str) -> Self {
        RawInstance::plain(addr)
    }
}

impl From<String> for RawInstance {
    fn from(addr: String) -> Self {
        RawInstance::plain(addr)
    }
}

/// The table form, strict like every other table of the file.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInstanceTable {
    /// Required; empty means "not given" (reported by validation).
    #[serde(default)]
    addr: String,
    #[serde(default = "default_instance_weight")]
    weight: u32,
    #[serde(default)]
    backup: bool,
}

fn default_instance_weight() -> u32 {
    RawInstance::DEFAULT_WEIGHT
}

impl Serialize for RawInstance {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.is_plain() {
            s.serialize_str(&self.addr)
        } else {
            RawInstanceTable {
                addr: self.addr.clone(),
                weight: self.weight,
                backup: self.backup,
            }
            .serialize(s)
        }
    }
}

impl<'de> Deserialize<'de> for RawInstance {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = RawInstance;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an instance: \"IP:port\" or { addr, weight, backup }")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RawInstance, E> {
                Ok(RawInstance::plain(v))
            }
            fn visit_map<M: serde::de::MapAccess<'de>>(
                self,
                m: M,
            ) -> Result<RawInstance, M::Error> {
                let t =
                    RawInstanceTable::deserialize(serde::de::value::MapAccessDeserializer::new(m))?;
                Ok(RawInstance {
                    addr: t.addr,
                    weight: t.weight,
                    backup: t.backup,
                })
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// `[services.health]`: active health checks (absent = none).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawHealth {
    #[serde(default = "default_health_kind")]
    pub kind: String,
    #[serde(default = "default_health_path")]
    pub path: String,
    #[serde(default = "default_health_interval_ms")]
    pub interval_ms: u64,
    #[serde(default = "default_health_timeout_ms")]
    pub timeout_ms: u64,
    #[serde(default = "default_unhealthy_after")]
    pub unhealthy_after: u32,
    #[serde(default = "default_healthy_after")]
    pub healthy_after: u32,
}

impl Default for RawHealth {
    fn default() -> Self {
        Self {
            kind: default_health_kind(),
            path: default_health_path(),
            interval_ms: default_health_interval_ms(),
            timeout_ms: default_health_timeout_ms(),
            unhealthy_after: default_unhealthy_after(),
            healthy_after: default_healthy_after(),
        }
    }
}

/// `[services.outlier]`: passive ejection (absent = off).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawOutlier {
    #[serde(default = "default_consecutive_failures")]
    pub consecutive_failures: u32,
    #[serde(default = "default_eject_ms")]
    pub eject_ms: u64,
}

/// `[services.circuit_breaker]`: per (service, unit) breaker (absent = off).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawCircuitBreaker {
    #[serde(default = "default_failure_ratio")]
    pub failure_ratio: f64,
    #[serde(default = "default_min_requests")]
    pub min_requests: u32,
    #[serde(default = "default_window_ms")]
    pub window_ms: u64,
    #[serde(default = "default_open_ms")]
    pub open_ms: u64,
}

/// `[[routes]]`: a host/path/method match and its policies.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub hosts: Vec<String>,
    #[serde(default = "default_path_prefix")]
    pub path_prefix: String,
    #[serde(default)]
    pub methods: Vec<String>,
    #[serde(default)]
    pub service: String,
    #[serde(default = "default_placement")]
    pub placement: String,
    #[serde(default)]
    pub strip_prefix: bool,
    #[serde(default = "default_route_timeout_ms")]
    pub timeout_ms: u64,
    #[serde(default = "default_retries")]
    pub retries: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt: Option<String>,
    #[serde(default)]
    pub max_inflight: u32,
    /// 0 (default) = unlimited; a larger request body is refused (413).
    #[serde(default)]
    pub max_body_bytes: u64,
    #[serde(default)]
    pub rate_limits: Vec<RawRateLimit>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<RawFallback>,
    /// Gray release: part of the route's users go to other services.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub splits: Vec<RawSplit>,
}

/// `[[routes.splits]]`: a share of the route's users, or the requests
/// carrying a header, go to another service (a canary, a blue/green switch).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawSplit {
    /// Required.
    #[serde(default)]
    pub service: String,
    /// Percent of users, 0-100 (a wider type so 250 is reported with its path,
    /// not as a type error). Default 0: only `match_header` sends requests here.
    #[serde(default)]
    pub weight: u32,
    /// Requests carrying this header go here whatever the weight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub match_header: Option<String>,
    /// Only when the placement unit is one of these (empty = every unit).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub units: Vec<String>,
}

/// `[[routes.rate_limits]]`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawRateLimit {
    #[serde(default = "default_limit_key")]
    pub key: String,
    /// Required: `N/s`, `N/m` or `N/h`.
    #[serde(default)]
    pub rate: String,
    #[serde(default)]
    pub burst: u32,
    #[serde(default = "default_limit_scope")]
    pub scope: String,
}

/// `[routes.fallback]`: the degraded response.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawFallback {
    #[serde(default = "default_fallback_status")]
    pub status: u16,
    #[serde(default = "default_content_type")]
    pub content_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// Relative paths resolve against the config file's directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_file: Option<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

/// `[jwt.<name>]`: one token verifier.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawJwt {
    #[serde(default)]
    pub algorithms: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_env: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key_file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
    #[serde(default = "default_leeway_secs")]
    pub leeway_secs: u64,
    /// claim -> upstream header name.
    #[serde(default)]
    pub forward_claims: BTreeMap<String, String>,
}

/// `[redis]`: shared store for global rate limits.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawRedis {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url_env: Option<String>,
    #[serde(default = "default_redis_timeout_ms")]
    pub timeout_ms: u64,
    #[serde(default = "default_on_failure")]
    pub on_failure: String,
    #[serde(default = "default_fleet_size")]
    pub fleet_size: u32,
}

// Defaults. Keep in step with docs/config.md.

fn default_true() -> bool {
    true
}
fn default_protocol() -> String {
    "http1".to_owned()
}
fn default_idle_timeout_ms() -> u64 {
    300_000
}
fn default_sample_ratio() -> f64 {
    0.01
}
fn default_service_name() -> String {
    "unitgate".to_owned()
}
fn default_span_queue() -> usize {
    2048
}
fn default_tls_min_version() -> String {
    "1.2".to_owned()
}
fn default_listen() -> Vec<String> {
    vec!["127.0.0.1:8080".to_owned()]
}
fn default_grace_period_secs() -> u64 {
    10
}
fn default_client_header_timeout_ms() -> u64 {
    10_000
}
fn default_client_idle_timeout_ms() -> u64 {
    60_000
}
fn default_max_header_bytes() -> u64 {
    65_536
}
fn default_store_kind() -> String {
    "file".to_owned()
}
fn default_store_endpoints() -> Vec<String> {
    vec!["http://127.0.0.1:2379".to_owned()]
}
fn default_store_prefix() -> String {
    "/unitgate".to_owned()
}
fn default_cache_file() -> String {
    "last-good.toml".to_owned()
}
fn default_lease_secs() -> u64 {
    10
}
fn default_dns_refresh_ms() -> u64 {
    5000
}
fn default_admin_listen() -> String {
    "127.0.0.1:9900".to_owned()
}
fn default_slots() -> u64 {
    10_000
}
fn default_epoch() -> u64 {
    1
}
fn default_key() -> Vec<String> {
    vec!["header:x-user-id".to_owned()]
}
fn default_cookie() -> String {
    "ug_route".to_owned()
}
fn default_cookie_ttl_secs() -> u64 {
    3600
}
fn default_max_hops() -> u32 {
    1
}
fn default_unit_state() -> String {
    "active".to_owned()
}
fn default_lb() -> String {
    "round_robin".to_owned()
}
fn default_connect_timeout_ms() -> u64 {
    1000
}
fn default_read_timeout_ms() -> u64 {
    30_000
}
fn default_health_kind() -> String {
    "http".to_owned()
}
fn default_health_path() -> String {
    "/healthz".to_owned()
}
fn default_health_interval_ms() -> u64 {
    5000
}
fn default_health_timeout_ms() -> u64 {
    1000
}
fn default_unhealthy_after() -> u32 {
    2
}
fn default_healthy_after() -> u32 {
    1
}
fn default_consecutive_failures() -> u32 {
    5
}
fn default_eject_ms() -> u64 {
    30_000
}
fn default_failure_ratio() -> f64 {
    0.5
}
fn default_min_requests() -> u32 {
    20
}
fn default_window_ms() -> u64 {
    10_000
}
fn default_open_ms() -> u64 {
    5000
}
fn default_path_prefix() -> String {
    "/".to_owned()
}
fn default_placement() -> String {
    "sharded".to_owned()
}
fn default_route_timeout_ms() -> u64 {
    30_000
}
fn default_retries() -> u32 {
    1
}
fn default_limit_key() -> String {
    "user".to_owned()
}
fn default_limit_scope() -> String {
    "local".to_owned()
}
fn default_fallback_status() -> u16 {
    503
}
fn default_content_type() -> String {
    "application/json".to_owned()
}
fn default_leeway_secs() -> u64 {
    30
}
fn default_redis_timeout_ms() -> u64 {
    50
}
fn default_on_failure() -> String {
    "local".to_owned()
}
fn default_fleet_size() -> u32 {
    1
}
