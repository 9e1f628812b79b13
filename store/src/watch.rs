//! Watching the fleet document.

use std::collections::VecDeque;

use etcd_client::{EventType, WatchOptions, WatchResponse, WatchStream};

use crate::kv::CONFIG_KEY;
use crate::{Doc, EtcdStore, StoreError};

/// What happened to `<prefix>/config`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    /// A new version of the document.
    Put(Doc),
    /// The document was deleted at this revision.
    Deleted { mod_revision: i64 },
    /// The revision the watch started from is compacted away: events were
    /// lost. Terminal: re-read the document and watch from its revision.
    Compacted { compact_revision: i64 },
    /// etcd cancelled the watch or a value could not be read. Terminal.
    Error(String),
}

/// A watch on `<prefix>/config`, from [`EtcdStore::watch_config`].
pub struct ConfigWatch {
    stream: WatchStream,
    pending: VecDeque<WatchEvent>,
    key: String,
    done: bool,
}

impl EtcdStore {
    /// Watches `<prefix>/config` from `from_revision` (inclusive). Returns
    /// once etcd has created the watch (bounded by `opts.timeout`); a start
    /// revision already compacted shows up as [`WatchEvent::Compacted`].
    pub async fn watch_config(&self, from_revision: i64) -> Result<ConfigWatch, StoreError> {
        let key = self.full_key(CONFIG_KEY);
        let key = key.as_str();
        let timeout = self.timeout();
        self.call("watch config", |mut c| async move {
            let opts = WatchOptions::new().with_start_revision(from_revision);
            let stream = c.watch(key, Some(opts)).await?;
            let mut watch = ConfigWatch {
                stream,
                pending: VecDeque::new(),
                key: key.to_owned(),
                done: false,
            };
            // Wait for the "created" answer so that Ok means etcd took the
            // watch; anything that comes with or before it is kept.
            loop {
                match watch.stream.message().await? {
                    Some(resp) => {
                        let created = resp.created();
                        watch.absorb(resp);
                        if created || watch.done {
                            return Ok(watch);
                        }
                    }
                    None => {
                        return Err(etcd_client::Error::WatchError(format!(
                            "watch stream closed before it was created (within {timeout:?})"
                        )))
                    }
                }
            }
        })
        .await
    }
}

impl std::fmt::Debug for ConfigWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigWatch")
            .field("key", &self.key)
            .field("pending", &self.pending.len())
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl ConfigWatch {
    /// The next event, or `None` when the watch is over: the stream ended
    /// (etcd went away) or a terminal event was returned. Then re-read the
    /// document and watch again.
    pub async fn next(&mut self) -> Option<WatchEvent> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some(event);
            }
            if self.done {
                return None;
            }
            match self.stream.message().await {
                Ok(Some(resp)) => self.absorb(resp),
                Ok(None) => {
                    self.done = true;
                    return None;
                }
                Err(e) => {
                    self.done = true;
                    tracing::debug!(key = %self.key, error = %e, "config watch stream broke");
                    return None;
                }
            }
        }
    }

    /// Turns one watch answer into events; a terminal one ends the watch.
    fn absorb(&mut self, resp: WatchResponse) {
        if self.done {
            return;
        }
        if resp.compact_revision() > 0 {
            self.pending.push_back(WatchEvent::Compacted {
                compact_revision: resp.compact_revision(),
            });
            self.done = true;
            return;
        }
        for event in resp.events() {
            let Some(kv) = event.kv() else { continue };
            let item = match event.event_type() {
                EventType::Delete => WatchEvent::Deleted {
                    mod_revision: kv.mod_revision(),
                },
                EventType::Put => match String::from_utf8(kv.value().to_vec()) {
                    Ok(text) => WatchEvent::Put(Doc {
                        text,
                        mod_revision: kv.mod_revision(),
                    }),
                    Err(_) => {
                        self.pending.push_back(WatchEvent::Error(format!(
                            "{} at revision {} is not UTF-8 text",
                            self.key,
                            kv.mod_revision()
                        )));
                        self.done = true;
                        return;
                    }
                },
            };
            self.pending.push_back(item);
        }
        if resp.canceled() {
            let reason = resp.cancel_reason();
            self.pending
                .push_back(WatchEvent::Error(if reason.is_empty() {
                    "watch cancelled by etcd".to_owned()
                } else {
                    format!("watch cancelled by etcd: {reason}")
                }));
            self.done = true;
        }
    }
}
