//! Reads and compare-and-swap writes of single keys, the fleet document among them.

use etcd_client::{
    Compare, CompareOp, GetOptions, PutOptions, Txn, TxnOp, TxnOpResponse, TxnResponse,
};

use crate::{Doc, EtcdStore, Expect, StoreError};

/// The fleet document's key, relative to the prefix.
pub(crate) const CONFIG_KEY: &str = "config";

impl EtcdStore {
    /// The fleet document at `<prefix>/config` (linearizable read) and the
    /// store's revision at the time of the read: watch from `revision + 1`
    /// to miss nothing after it.
    pub async fn read_config(&self) -> Result<(Option<Doc>, i64), StoreError> {
        let key = self.full_key(CONFIG_KEY);
        let key = key.as_str();
        let mut resp = self
            .call("read config", |mut c| async move { c.get(key, None).await })
            .await?;
        let revision = resp.header().map_or(0, |h| h.revision());
        let doc = match resp.take_kvs().into_iter().next() {
            None => None,
            Some(kv) => Some(Doc {
                mod_revision: kv.mod_revision(),
                text: String::from_utf8(kv.value().to_vec()).map_err(|_| {
                    StoreError::Other(format!("{} is not UTF-8 text", self.full_key(CONFIG_KEY)))
                })?,
            }),
        };
        Ok((doc, revision))
    }

    /// Writes `<prefix>/config` if `expect` holds, in one transaction.
    /// Returns the document's new `mod_revision`.
    pub async fn write_config(&self, text: &str, expect: Expect) -> Result<i64, StoreError> {
        self.put(CONFIG_KEY, text.as_bytes(), expect).await
    }

    /// The value and `mod_revision` of `key` (relative to the prefix).
    pub async fn get(&self, key: &str) -> Result<Option<(Vec<u8>, i64)>, StoreError> {
        let full = self.full_key(key);
        let full = full.as_str();
        let mut resp = self
            .call("get", |mut c| async move { c.get(full, None).await })
            .await?;
        Ok(resp
            .take_kvs()
            .into_iter()
            .next()
            .map(|kv| (kv.value().to_vec(), kv.mod_revision())))
    }

    /// Every key under `dir/` (relative to the prefix), sorted by key, as
    /// `(key relative to dir, value, mod_revision)`.
    pub async fn list(&self, dir: &str) -> Result<Vec<(String, Vec<u8>, i64)>, StoreError> {
        let dir = dir.trim_matches('/');
        let base = if dir.is_empty() {
            self.full_key("")
        } else {
            format!("{}/", self.full_key(dir))
        };
        let range = base.as_str();
        let mut resp = self
            .call("list", |mut c| async move {
                c.get(range, Some(GetOptions::new().with_prefix())).await
            })
            .await?;
        let mut out = Vec::new();
        for kv in resp.take_kvs() {
            let Some(rel) = kv.key().strip_prefix(base.as_bytes()) else {
                continue;
            };
            let rel = String::from_utf8(rel.to_vec())
                .map_err(|_| StoreError::Other(format!("a key under {base} is not UTF-8")))?;
            out.push((rel, kv.value().to_vec(), kv.mod_revision()));
        }
        Ok(out)
    }

    /// Writes `key` (relative to the prefix) if `expect` holds, in one
    /// transaction. Returns the key's new `mod_revision`.
    pub async fn put(&self, key: &str, value: &[u8], expect: Expect) -> Result<i64, StoreError> {
        self.put_full(self.full_key(key), value.to_vec(), expect, None)
            .await
    }

    /// Deletes `key` (relative to the prefix); deleting an absent key is fine.
    pub async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let full = self.full_key(key);
        let full = full.as_str();
        self.call("delete", |mut c| async move { c.delete(full, None).await })
            .await?;
        Ok(())
    }

    /// The compare-and-swap behind every write: `when(expect) put else get`.
    /// The `get` in the failure branch tells the caller what it lost against.
    pub(crate) async fn put_full(
        &self,
        full: String,
        value: Vec<u8>,
        expect: Expect,
        lease: Option<i64>,
    ) -> Result<i64, StoreError> {
        let compare = match expect {
            Expect::Absent => vec![Compare::create_revision(full.clone(), CompareOp::Equal, 0)],
            Expect::Revision(rev) => {
                vec![Compare::mod_revision(full.clone(), CompareOp::Equal, rev)]
            }
            Expect::Any => vec![],
        };
        let put_opts = lease.map(|id| PutOptions::new().with_lease(id));
        let txn = Txn::new()
            .when(compare)
            .and_then(vec![TxnOp::put(full.clone(), value, put_opts)])
            .or_else(vec![TxnOp::get(full, None)]);
        let resp = self
            .call("put", |mut c| {
                let txn = txn.clone();
                async move { c.txn(txn).await }
            })
            .await?;
        txn_outcome(&resp)
    }
}

/// The new revision of a succeeded single-put txn, or the conflict it met.
pub(crate) fn txn_outcome(resp: &TxnResponse) -> Result<i64, StoreError> {
    if resp.succeeded() {
        // The header revision of a write txn is the revision it created,
        // which is the written key's mod_revision.
        return resp
            .header()
            .map(|h| h.revision())
            .ok_or_else(|| StoreError::Other("txn answer without a header".into()));
    }
    let current = resp.op_responses().into_iter().find_map(|op| match op {
        TxnOpResponse::Get(get) => Some(get.kvs().first().map(|kv| kv.mod_revision())),
        _ => None,
    });
    Err(StoreError::Conflict {
        current: current.flatten(),
    })
}
