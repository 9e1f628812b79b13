//! Starting a gateway whose fleet config lives in etcd: from the store when
//! it answers, else from `cache_file` (the last config this gateway
//! applied), else from a placeholder that serves nothing and is not ready
//! until the store answers (APISIX users' complaint: a gateway that cannot
//! start while etcd is down).

use crate::control::etcd::compose_doc;
use crate::control::{lines, EtcdSource, Source};
use std::path::Path;
use std::time::Duration;
use unitgate_config::fleet::{parse_local, RawFleet};
use unitgate_config::raw::RawUnit;
use unitgate_config::{Config, RawConfig, StoreKind};
use unitgate_store::{EtcdStore, Options};

/// How long a starting gateway waits for the store before using its cache.
const BOOT_READ: Duration = Duration::from_secs(3);

/// What a gateway starts with.
pub struct Boot {
    pub config: Config,
    pub source: Source,
    /// The store revision `config` was built from (0: none).
    pub revision: i64,
    /// `store`, `cache` or `none` (placeholder, not ready).
    pub origin: &'static str,
}

fn store_options() -> Options {
    Options::default()
}

/// A fleet part that lets the local sections validate: this gateway's unit
/// owning every slot, no services, no routes. Serves 404s; never ready.
fn placeholder(local: &RawConfig) -> RawFleet {
    let mut raw = local.clone();
    raw.units = vec![RawUnit {
        name: local.gateway.unit.clone(),
        slots: vec![format!("0-{}", raw.routing.slots.saturating_sub(1))],
        failover: vec![],
        state: "active".into(),
    }];
    let secret: String = (0..32).map(|_| fastrand::alphanumeric()).collect();
    raw.routing.signing_keys = [("placeholder".to_owned(), secret)].into();
    raw.routing.active_key = Some("placeholder".into());
    raw.routing.allow_empty_routes = true;
    RawFleet::from_config(&raw)
}

/// The revision recorded in a cache file's first line (0 when absent).
fn cached_revision(text: &str) -> i64 {
    text.lines()
        .next()
        .and_then(|l| l.split("store revision ").nth(1))
        .and_then(|r| r.split(',').next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

/// Reads the local file and decides what this gateway starts with. Errors
/// are the local file's own (printed by `unitgate run`, exit 1).
pub fn boot(text: &str, base_dir: &Path) -> Result<Boot, Vec<String>> {
    let errors = |e: unitgate_config::ConfigErrors| lines(&e);
    let local = parse_local(text).map_err(errors)?;
    let first = unitgate_config::validate(&local.with_fleet(&placeholder(&local)), base_dir)
        .map_err(errors)?;
    let StoreKind::Etcd {
        endpoints,
        prefix,
        cache_file,
    } = first.store.kind.clone()
    else {
        return Err(vec!["internal: boot() is for store.kind = \"etcd\"".into()]);
    };
    let read = {
        // A store of its own for this read: its connection belongs to this
        // short-lived runtime, not to the server's.
        let store = EtcdStore::new(endpoints.clone(), &prefix, store_options());
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| vec![format!("cannot start a runtime: {e}")])?
            .block_on(async { tokio::time::timeout(BOOT_READ, store.read_config()).await })
    };
    let (gateway_id, lease_secs) = (first.store.gateway_id.clone(), first.store.lease_secs);
    // `has_config`: booted from the store or the cache (ready), or from the
    // placeholder (not ready until the store answers).
    let source = |cache_file, has_config: bool| {
        let src = EtcdSource::new(
            EtcdStore::new(endpoints.clone(), &prefix, store_options()),
            cache_file,
            gateway_id.clone(),
            lease_secs,
        );
        src.has_config
            .store(has_config, std::sync::atomic::Ordering::Relaxed);
        Source::Etcd(src)
    };
    match read {
        Ok(Ok((Some(doc), _))) => match compose_doc(&doc.text, &local, base_dir) {
            Ok(config) => {
                tracing::info!(
                    revision = doc.mod_revision,
                    prefix,
                    "fleet config read from the store"
                );
                return Ok(Boot {
                    config,
                    source: source(cache_file, true),
                    revision: doc.mod_revision,
                    origin: "store",
                });
            }
            Err(e) => {
                tracing::error!(errors = ?errors(e), "the store's fleet config is invalid; trying the cache")
            }
        },
        Ok(Ok((None, _))) => {
            tracing::warn!(prefix, "the store holds no fleet config yet (seed it with `unitgate fleet init`); trying the cache")
        }
        Ok(Err(e)) => tracing::warn!("config store unreachable ({e}); trying the cache"),
        Err(_) => tracing::warn!("config store did not answer in {BOOT_READ:?}; trying the cache"),
    }
    if let Ok(cached) = std::fs::read_to_string(&cache_file) {
        match compose_doc(&cached, &local, base_dir) {
            Ok(config) => {
                tracing::info!(file = %cache_file.display(), "booting from the fleet cache");
                return Ok(Boot {
                    config,
                    source: source(cache_file, true),
                    revision: cached_revision(&cached),
                    origin: "cache",
                });
            }
            Err(e) => {
                tracing::error!(file = %cache_file.display(), errors = ?errors(e), "the fleet cache is invalid")
            }
        }
    }
    tracing::warn!("no fleet config (store unreachable or empty, no usable cache): not ready until the store answers");
    Ok(Boot {
        config: first,
        source: source(cache_file, false),
        revision: 0,
        origin: "none",
    })
}

#[cfg(test)]
mod tests {
    use super::cached_revision;

    #[test]
    fn cache_header_gives_the_revision() {
        assert_eq!(
            cached_revision("# unitgate fleet cache: store revision 42, written at 7\n[routing]\n"),
            42
        );
        assert_eq!(cached_revision("[routing]\n"), 0);
    }
}
