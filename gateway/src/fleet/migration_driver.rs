//! The migration driver: runs on every gateway; the one that holds the
//! leased `lock/migration` key advances the active migration one step per
//! tick. A step that cannot reach the store is retried on the next tick; a
//! step whose config change does not validate fails the migration.

use super::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Debug, Clone, Copy)]
enum Step {
    Freeze,
    Reassign,
    Unfreeze,
}

pub struct MigrationDriver(pub Arc<Migrations>);

#[async_trait]
impl BackgroundService for MigrationDriver {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut leader: Option<Leadership> = None;
        loop {
            tokio::select! {
                _ = shutdown.changed() => break,
                _ = tokio::time::sleep(TICK) => {}
            }
            if let Err(e) = self.0.tick(&mut leader).await {
                tracing::debug!("migration driver: {e}");
            }
        }
        if let Some(l) = leader.take() {
            let _ = l.release().await;
        }
    }
}

impl Migrations {
    async fn tick(&self, leader: &mut Option<Leadership>) -> Result<(), MigrationError> {
        let Some(id) = self.book.active().await? else {
            // The migration this gateway last saw running has ended (maybe
            // driven by another gateway): show its end state.
            let ended = self.last_seen.lock().ok().and_then(|mut l| l.take());
            if let Some(ended) = ended {
                if let Some((m, _)) = self.book.get(&ended).await? {
                    m.state.show();
                }
            }
            if let Some(l) = leader.take() {
                let _ = l.release().await;
            }
            return Ok(());
        };
        let Some((m, rev)) = self.book.get(&id).await? else {
            return Ok(());
        };
        if let Ok(mut last) = self.last_seen.lock() {
            *last = Some(id.clone());
        }
        m.state.show();
        let me = self.control.gateway_id();
        if let (Book::Etcd(store), Source::Etcd(src)) = (&self.book, &self.control.source) {
            if leader.as_ref().is_some_and(|l| !l.is_held()) {
                tracing::warn!("lost the migration lock");
                *leader = None;
            }
            if leader.is_none() {
                match store
                    .try_acquire(LOCK_KEY, src.lease_secs as i64, &me)
                    .await?
                {
                    Some(l) => {
                        tracing::info!(id = %m.id, "this gateway drives the migration now");
                        *leader = Some(l);
                    }
                    None => return Ok(()),
                }
            }
        }
        let mut next = m.clone();
        next.driver = Some(me);
        self.step(&mut next).await?;
        if next != m {
            next.updated_unix = unix_now();
            if next.state != m.state {
                tracing::info!(id = %next.id, from = m.state.as_str(), to = next.state.as_str(), epochs = ?next.epochs, "migration step");
            }
            self.book.save(&next, rev).await?;
            next.state.show();
        }
        Ok(())
    }

    async fn step(&self, m: &mut Migration) -> Result<(), MigrationError> {
        match m.state {
            State::Freezing => {
                if m.abort_requested && m.step_epoch.is_none() {
                    m.state = State::Aborted;
                    return Ok(());
                }
                self.write_or_wait(m, Step::Freeze, State::WaitingConfirm)
                    .await
            }
            State::WaitingConfirm => {
                if m.abort_requested {
                    m.aborting = true;
                    m.state = State::Unfreezing;
                    return Ok(());
                }
                let go = match &m.confirm {
                    Confirm::Mode(mode) if mode == "none" => true,
                    Confirm::Mode(_) => m.confirmed,
                    Confirm::Url { url } => poll_ok(url).await,
                };
                if go {
                    m.state = State::Reassigning;
                }
                Ok(())
            }
            State::Reassigning => {
                if m.abort_requested && m.step_epoch.is_none() {
                    m.aborting = true;
                    m.state = State::Unfreezing;
                    return Ok(());
                }
                self.write_or_wait(m, Step::Reassign, State::Unfreezing)
                    .await
            }
            State::Unfreezing => {
                let end = if m.aborting {
                    State::Aborted
                } else {
                    State::Done
                };
                self.write_or_wait(m, Step::Unfreeze, end).await
            }
            State::Done | State::Aborted | State::Failed => Ok(()),
        }
    }

    /// Writes the step's epoch, or waits at its barrier and then moves on.
    async fn write_or_wait(
        &self,
        m: &mut Migration,
        step: Step,
        next: State,
    ) -> Result<(), MigrationError> {
        match m.step_epoch {
            None => {
                let moving = SlotSet::parse(&m.slots, u32::MAX).unwrap_or_default();
                let to = m.to.clone();
                let applied = self
                    .control
                    .apply(None, |raw| edit(raw, step, &moving, &to))
                    .await;
                match applied {
                    Ok((raw, _)) => {
                        m.step_epoch = Some(raw.routing.epoch);
                        m.epochs.push(raw.routing.epoch);
                        m.waiting_for = self.lagging(raw.routing.epoch).await?;
                    }
                    Err(ChangeError::Unavailable(e)) => return Err(MigrationError::Unavailable(e)),
                    Err(e) => {
                        let why = match e {
                            ChangeError::Change(e) => e,
                            ChangeError::Invalid(errors) => errors.join("; "),
                            ChangeError::Precondition { .. } => "precondition failed".into(),
                            ChangeError::Persist(e) | ChangeError::Unavailable(e) => e,
                        };
                        tracing::error!(id = %m.id, ?step, "migration failed: {why}");
                        m.state = State::Failed;
                        m.error = Some(format!("{step:?} step: {why}"));
                    }
                }
            }
            Some(epoch) => {
                m.waiting_for = self.lagging(epoch).await?;
                if m.waiting_for.is_empty() {
                    m.state = next;
                    m.step_epoch = None;
                }
            }
        }
        Ok(())
    }

    /// The live gateways that have not applied `epoch` yet.
    async fn lagging(&self, epoch: u64) -> Result<Vec<String>, MigrationError> {
        match &self.control.source {
            Source::File => {
                let ours = self.control.snapshot.load().config.routing.epoch;
                Ok(if ours >= epoch {
                    vec![]
                } else {
                    vec![self.control.gateway_id()]
                })
            }
            Source::Etcd(src) => {
                let mut ids: Vec<String> = list_gateways(&src.store)
                    .await?
                    .into_iter()
                    .filter(|g| g.epoch < epoch)
                    .map(|g| g.id)
                    .collect();
                ids.sort();
                Ok(ids)
            }
        }
    }
}

/// One step's change to the config, idempotent, with a new epoch.
fn edit(raw: &mut RawConfig, step: Step, moving: &SlotSet, to: &str) -> Result<(), String> {
    let slots = raw.routing.slots.min(u64::from(u32::MAX)) as u32;
    let parse = |list: &[String]| SlotSet::parse(list, slots);
    match step {
        Step::Freeze | Step::Unfreeze => {
            let frozen = parse(&raw.routing.forbidden_writes)?;
            let frozen = match step {
                Step::Freeze => frozen.union(moving),
                _ => frozen.minus(moving),
            };
            raw.routing.forbidden_writes = frozen.to_strings();
        }
        Step::Reassign => {
            if !raw.units.iter().any(|u| u.name == to) {
                return Err(format!("unit {to:?} no longer exists"));
            }
            for unit in &mut raw.units {
                let owned = parse(&unit.slots)?;
                let owned = if unit.name == to {
                    owned.union(moving)
                } else {
                    owned.minus(moving)
                };
                unit.slots = owned.to_strings();
            }
        }
    }
    raw.routing.epoch += 1;
    Ok(())
}

/// `GET url` answered 200 (within 2 s).
async fn poll_ok(url: &str) -> bool {
    let Some(rest) = url.strip_prefix("http://") else {
        return false;
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let attempt = async {
        let mut s = tokio::net::TcpStream::connect(authority).await.ok()?;
        let req = format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.ok()?;
        let mut head = [0u8; 64];
        let n = s.read(&mut head).await.ok()?;
        let line = String::from_utf8_lossy(&head[..n]);
        Some(line.split(' ').nth(1) == Some("200"))
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(2), attempt).await,
        Ok(Some(true))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw() -> RawConfig {
        let text = r#"
[gateway]
unit = "A"
[routing]
signing_keys = { k1 = "a-long-enough-secret-for-tests" }
active_key = "k1"
forbidden_writes = ["9990-9999"]
[[units]]
name = "A"
slots = ["0-4999"]
[[units]]
name = "B"
slots = ["5000-9999"]
"#;
        unitgate_config::parse_raw(text).expect("valid raw config")
    }

    #[test]
    fn the_three_steps_freeze_move_and_unfreeze() {
        let moving = SlotSet::parse(&["2000-2999".into()], 10_000).expect("range");
        let mut r = raw();
        let epoch = r.routing.epoch;
        edit(&mut r, Step::Freeze, &moving, "B").expect("freeze");
        assert_eq!(r.routing.forbidden_writes, ["2000-2999", "9990-9999"]);
        edit(&mut r, Step::Reassign, &moving, "B").expect("reassign");
        assert_eq!(r.units[0].slots, ["0-1999", "3000-4999"]);
        assert_eq!(r.units[1].slots, ["2000-2999", "5000-9999"]);
        edit(&mut r, Step::Unfreeze, &moving, "B").expect("unfreeze");
        assert_eq!(r.routing.forbidden_writes, ["9990-9999"]);
        assert_eq!(r.routing.epoch, epoch + 3, "each step is a new epoch");
        // Steps are idempotent: a new driver repeating one changes nothing but the epoch.
        let before = r.units.clone();
        edit(&mut r, Step::Reassign, &moving, "B").expect("again");
        assert_eq!(r.units, before);
    }

    #[test]
    fn confirm_parses_the_contract_forms() {
        let c: Confirm = serde_json::from_str(r#""manual""#).expect("mode");
        assert_eq!(c, Confirm::Mode("manual".into()));
        let c: Confirm = serde_json::from_str(r#"{"url":"http://x/ok"}"#).expect("url");
        assert_eq!(
            c,
            Confirm::Url {
                url: "http://x/ok".into()
            }
        );
    }
}
