//! `unitgate fleet init` and `unitgate fleet status`: seeding a store and
//! looking at the fleet from a shell, with the same local file a gateway runs.

use super::list_gateways;
use std::path::Path;
use unitgate_config::fleet::{fleet_document, fleet_hash, parse_fleet, parse_local};
use unitgate_config::RawConfig;
use unitgate_store::{EtcdStore, Expect, Options, StoreError};

fn errors(e: unitgate_config::ConfigErrors, file: &Path) -> String {
    e.iter()
        .map(|e| format!("{}: {e}", file.display()))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The local file and the store it names (etcd mode only).
fn open(config: &Path) -> Result<(RawConfig, EtcdStore, String), String> {
    let text = std::fs::read_to_string(config)
        .map_err(|e| format!("cannot read {}: {e}", config.display()))?;
    let local = parse_local(&text).map_err(|e| errors(e, config))?;
    let store = local.store.clone().unwrap_or_default();
    if store.kind != "etcd" {
        return Err(format!(
            "{}: store.kind is {:?}: `unitgate fleet` needs [store] kind = \"etcd\"",
            config.display(),
            store.kind
        ));
    }
    let prefix = store.prefix.clone();
    let etcd = EtcdStore::new(store.endpoints.clone(), &prefix, Options::default());
    Ok((local, etcd, prefix))
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a runtime: {e}"))
}

/// Validates `from` as the fleet document for `config`'s gateway and writes
/// it under the prefix; refuses to replace an existing one unless `force`.
pub fn init(config: &Path, from: &Path, force: bool) -> Result<String, String> {
    let (local, store, prefix) = open(config)?;
    let text = std::fs::read_to_string(from)
        .map_err(|e| format!("cannot read {}: {e}", from.display()))?;
    let fleet = parse_fleet(&text).map_err(|e| errors(e, from))?;
    let base_dir = unitgate_config::base_dir_of(config);
    let composed = unitgate_config::validate(&local.with_fleet(&fleet), base_dir)
        .map_err(|e| errors(e, from))?;
    if let Err(errs) = crate::snapshot::verifiers(&composed) {
        return Err(errs
            .iter()
            .map(|e| format!("{}: {e}", from.display()))
            .collect::<Vec<_>>()
            .join("\n"));
    }
    let doc = fleet_document(&fleet).map_err(|e| errors(e, from))?;
    let expect = if force { Expect::Any } else { Expect::Absent };
    let written = runtime()?.block_on(store.write_config(&doc, expect));
    match written {
        Ok(revision) => Ok(format!(
            "{}: fleet config written under {prefix} (revision {revision}, epoch {}, hash {})",
            from.display(),
            fleet.routing.epoch,
            fleet_hash(&fleet)
        )),
        Err(StoreError::Conflict { current }) => Err(format!(
            "a fleet config is already stored under {prefix} (revision {}); use --force to replace it",
            current.unwrap_or_default()
        )),
        Err(e) => Err(format!("{e}")),
    }
}

/// One line per live gateway: id, unit, applied epoch, in sync or not.
pub fn status(config: &Path) -> Result<String, String> {
    let (_, store, prefix) = open(config)?;
    let rt = runtime()?;
    let (doc, gateways) = rt
        .block_on(async {
            let doc = store.read_config().await?;
            let gateways = list_gateways(&store).await?;
            Ok::<_, StoreError>((doc, gateways))
        })
        .map_err(|e| format!("{e}"))?;
    let Some(doc) = doc.0 else {
        return Ok(format!(
            "no fleet config under {prefix}: seed it with `unitgate fleet init`"
        ));
    };
    let fleet = parse_fleet(&doc.text).map_err(|e| errors(e, Path::new("<store>")))?;
    let hash = fleet_hash(&fleet);
    let epoch = fleet.routing.epoch;
    let mut out = format!(
        "store {prefix}: revision {}, epoch {epoch}, hash {hash}, {} gateway(s)\n",
        doc.mod_revision,
        gateways.len()
    );
    for g in gateways {
        let state = if g.in_sync(&hash, epoch) {
            "in_sync"
        } else {
            "lagging"
        };
        out.push_str(&format!(
            "{}\tunit {}\tepoch {}\t{state}\n",
            g.id, g.unit, g.epoch
        ));
    }
    Ok(out.trim_end().to_owned())
}
