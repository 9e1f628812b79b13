//! The lazy, self-healing connection every call goes through.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Client, ConnectOptions};
use tokio::sync::Mutex;
use tonic::Code;

use crate::{Options, StoreError};

/// A handle on the fleet's keys in etcd. Cheap to clone: clones share one
/// connection.
#[derive(Clone)]
pub struct EtcdStore {
    inner: Arc<Inner>,
}

struct Inner {
    endpoints: Vec<String>,
    /// Without a trailing `/`; keys are `<prefix>/<key>`.
    prefix: String,
    opts: Options,
    conn: Mutex<Conn>,
}

/// The current endpoint's client, if any, and a generation number so that a
/// call that failed on an old client does not throw away a newer one.
#[derive(Default)]
struct Conn {
    client: Option<Client>,
    /// Index into `endpoints` of the one in use.
    index: usize,
    generation: u64,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore")
            .field("endpoints", &self.inner.endpoints)
            .field("prefix", &self.inner.prefix)
            .finish_non_exhaustive()
    }
}

impl EtcdStore {
    /// No I/O here: a gateway must be able to start while etcd is down. The
    /// client is made on first use and remade after a transport error or a
    /// timeout, so the same store works again once etcd is back.
    pub fn new(endpoints: Vec<String>, prefix: &str, opts: Options) -> Self {
        EtcdStore {
            inner: Arc::new(Inner {
                endpoints,
                prefix: prefix.trim_end_matches('/').to_owned(),
                opts,
                conn: Mutex::new(Conn::default()),
            }),
        }
    }

    /// The key prefix, as given to [`EtcdStore::new`] without a trailing `/`.
    pub fn prefix(&self) -> &str {
        &self.inner.prefix
    }

    pub(crate) fn timeout(&self) -> Duration {
        self.inner.opts.timeout
    }

    /// The absolute etcd key of `key` (relative to the prefix).
    pub(crate) fn full_key(&self, key: &str) -> String {
        format!("{}/{}", self.inner.prefix, key.trim_start_matches('/'))
    }

    /// Runs one etcd operation on the current client, bounded by
    /// `opts.timeout` (connecting included). An `Unavailable` outcome moves
    /// the store to the next endpoint; when the request surely never reached
    /// etcd (connection refused, member without a leader) it is retried there
    /// at once, each endpoint at most once, within the same deadline.
    pub(crate) async fn call<T, F, Fut>(&self, what: &str, mut op: F) -> Result<T, StoreError>
    where
        F: FnMut(Client) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let timeout = self.inner.opts.timeout;
        let attempts = self.inner.endpoints.len().max(1);
        let outcome = tokio::time::timeout(timeout, async {
            let mut last = None;
            for _ in 0..attempts {
                let (client, generation) = self.client().await?;
                match op(client).await {
                    Ok(v) => return Ok(v),
                    Err(e) => {
                        let retry = never_reached_etcd(&e);
                        let err = map_error(what, e);
                        if matches!(err, StoreError::Unavailable(_)) {
                            self.fail_over(generation).await;
                        }
                        if !retry {
                            return Err(err);
                        }
                        last = Some(err);
                    }
                }
            }
            Err(last.unwrap_or_else(|| StoreError::Unavailable(format!("{what}: no endpoint"))))
        })
        .await;
        match outcome {
            Ok(result) => result,
            Err(_elapsed) => {
                self.fail_over_current().await;
                Err(StoreError::Unavailable(format!(
                    "{what}: no answer from etcd within {timeout:?}"
                )))
            }
        }
    }

    /// The client of the current endpoint, made if there is none.
    /// `Client::connect` only sets up a channel (no auth configured, so no
    /// round trip); the connection itself is made by the first request.
    ///
    /// One endpoint at a time rather than etcd-client's balanced channel:
    /// that one keeps sending a share of the requests to a dead member.
    async fn client(&self) -> Result<(Client, u64), StoreError> {
        let mut conn = self.inner.conn.lock().await;
        if let Some(client) = &conn.client {
            return Ok((client.clone(), conn.generation));
        }
        let Some(endpoint) = self.inner.endpoints.get(conn.index) else {
            return Err(StoreError::Other("no etcd endpoints configured".into()));
        };
        let opts = ConnectOptions::new()
            .with_connect_timeout(self.inner.opts.connect_timeout)
            // Detect a dead connection under a long-lived watch or keepalive
            // stream; a killed etcd closes the socket, a partition does not.
            .with_keep_alive(self.inner.opts.timeout, self.inner.opts.timeout)
            .with_keep_alive_while_idle(true)
            // A member cut off from the majority refuses instead of serving
            // stale data or hanging (and cancels our watches).
            .with_require_leader(true);
        let client = Client::connect([endpoint], Some(opts))
            .await
            .map_err(|e| map_error("connect", e))?;
        conn.generation += 1;
        conn.client = Some(client.clone());
        Ok((client, conn.generation))
    }

    /// Drops the client that failed (if it is still the current one) and
    /// moves on to the next endpoint.
    async fn fail_over(&self, generation: u64) {
        let mut conn = self.inner.conn.lock().await;
        if conn.generation == generation && conn.client.is_some() {
            conn.client = None;
            conn.index = (conn.index + 1) % self.inner.endpoints.len().max(1);
            tracing::debug!(
                prefix = %self.inner.prefix,
                next = ?self.inner.endpoints.get(conn.index),
                "etcd endpoint failed; moving on"
            );
        }
    }

    /// After a timeout we do not know which client hung; leave the current
    /// one (a fresh channel is cheap, a stuck one is not).
    async fn fail_over_current(&self) {
        let generation = self.inner.conn.lock().await.generation;
        self.fail_over(generation).await;
    }
}

/// Whether a failed request certainly never reached etcd's state machine,
/// so that sending it again (even a write) cannot apply it twice.
fn never_reached_etcd(e: &etcd_client::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = match e {
        etcd_client::Error::GRpcStatus(status) => {
            // Refused by a member without a leader, before any proposal.
            if status.code() == Code::Unavailable && status.message().contains("no leader") {
                return true;
            }
            std::error::Error::source(status)
        }
        etcd_client::Error::TransportError(t) => Some(t),
        _ => None,
    };
    while let Some(err) = source {
        if err.downcast_ref::<tonic::ConnectError>().is_some() {
            return true;
        }
        source = err.source();
    }
    false
}

/// Sorts an etcd-client error into the store's three kinds.
pub(crate) fn map_error(what: &str, e: etcd_client::Error) -> StoreError {
    use etcd_client::Error as E;
    let unavailable = match &e {
        E::TransportError(_) | E::IoError(_) | E::WatchError(_) | E::LeaseKeepAliveError(_) => true,
        // etcd answers "no leader", "request timed out" and "leader changed"
        // with UNAVAILABLE; tonic reports a broken or refused connection as
        // UNAVAILABLE, UNKNOWN or CANCELLED depending on where it broke.
        E::GRpcStatus(status) => matches!(
            status.code(),
            Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Unknown
        ),
        _ => false,
    };
    if unavailable {
        StoreError::Unavailable(format!("{what}: {e}"))
    } else {
        StoreError::Other(format!("{what}: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_joined_under_the_prefix_with_one_slash() {
        let store = EtcdStore::new(vec![], "/unitgate/prod/", Options::default());
        assert_eq!(store.prefix(), "/unitgate/prod");
        assert_eq!(store.full_key("config"), "/unitgate/prod/config");
        assert_eq!(
            store.full_key("/gateways/gw-a1"),
            "/unitgate/prod/gateways/gw-a1"
        );
    }

    #[test]
    fn transport_and_unavailable_status_are_unavailable_the_rest_other() {
        let e = etcd_client::Error::GRpcStatus(tonic::Status::unavailable("etcdserver: no leader"));
        assert!(
            matches!(map_error("get", e), StoreError::Unavailable(m) if m.contains("no leader"))
        );
        let e = etcd_client::Error::GRpcStatus(tonic::Status::invalid_argument("bad"));
        assert!(matches!(map_error("get", e), StoreError::Other(_)));
        let e = etcd_client::Error::InvalidArgs("empty endpoints".into());
        assert!(matches!(map_error("connect", e), StoreError::Other(_)));
    }
}
