//! Slot migrations across the fleet (DESIGN.md "Migration steps").
//!
//! `freezing` -> `waiting_confirm` -> `reassigning` -> `unfreezing` -> `done`.
//! Each of freezing, reassigning and unfreezing writes one new epoch (the
//! slots join `forbidden_writes`; the slots move to `to`; the freeze is
//! lifted), then waits at a **barrier** until every live gateway reports that
//! epoch. Because the reassignment is only written once the whole fleet has
//! the freeze, and the freeze is only lifted once the whole fleet has the
//! reassignment, no write of a moving slot can be served by the old unit
//! after one was served by the new unit.
//!
//! The record lives in the store (`migrations/<id>`, and `migration/active`
//! names the running one), so any gateway can carry it on; the one holding
//! the leased `lock/migration` key drives it. Every step is idempotent: a
//! driver that dies after writing a step's config but before recording it
//! makes the next driver write the same content again under a new epoch.

use super::list_gateways;
use super::ranges::SlotSet;
use crate::control::{ChangeError, ControlPlane, Source};
use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use unitgate_config::RawConfig;
use unitgate_store::{Expect, Leadership, StoreError};

const TICK: Duration = Duration::from_millis(250);
const ACTIVE_KEY: &str = "migration/active";
const LOCK_KEY: &str = "lock/migration";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Freezing,
    WaitingConfirm,
    Reassigning,
    Unfreezing,
    Done,
    Aborted,
    Failed,
}

impl State {
    pub const ALL: [State; 7] = [
        State::Freezing,
        State::WaitingConfirm,
        State::Reassigning,
        State::Unfreezing,
        State::Done,
        State::Aborted,
        State::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            State::Freezing => "freezing",
            State::WaitingConfirm => "waiting_confirm",
            State::Reassigning => "reassigning",
            State::Unfreezing => "unfreezing",
            State::Done => "done",
            State::Aborted => "aborted",
            State::Failed => "failed",
        }
    }

    /// Shows this state in `unitgate_migration_state`.
    pub fn show(self) {
        let index = State::ALL.iter().position(|s| *s == self);
        CURRENT_STATE.store(index.unwrap_or(usize::MAX), Ordering::Relaxed);
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, State::Done | State::Aborted | State::Failed)
    }
}

/// How the fleet learns that replication of the moving slots caught up.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Confirm {
    /// `"manual"` (wait for `/confirm`) or `"none"` (go straight on).
    Mode(String),
    /// Poll this URL until it answers 200.
    Url { url: String },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Migration {
    pub id: String,
    pub slots: Vec<String>,
    /// The units that owned the moving slots, with their part of them.
    pub from: BTreeMap<String, Vec<String>>,
    pub to: String,
    pub confirm: Confirm,
    pub state: State,
    /// The epoch each step wrote, in order.
    pub epochs: Vec<u64>,
    /// Live gateways that have not applied the current step's epoch yet.
    pub waiting_for: Vec<String>,
    pub error: Option<String>,
    #[serde(default)]
    pub confirmed: bool,
    #[serde(default)]
    pub abort_requested: bool,
    /// Unfreezing on the way to `aborted` rather than `done`.
    #[serde(default)]
    pub aborting: bool,
    /// The epoch the current step wrote, once written; its barrier is next.
    #[serde(default)]
    pub step_epoch: Option<u64>,
    #[serde(default)]
    pub driver: Option<String>,
    pub created_unix: u64,
    pub updated_unix: u64,
}

/// A start request's body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Start {
    pub slots: Vec<String>,
    pub to: String,
    #[serde(default)]
    pub confirm: Option<Confirm>,
}

#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    #[error("{0}")]
    Invalid(String),
    #[error("migration {0:?} is running; wait for it to end or abort it")]
    InProgress(String),
    #[error("no migration {0:?}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("the config store is unreachable: {0}")]
    Unavailable(String),
}

impl From<StoreError> for MigrationError {
    fn from(e: StoreError) -> Self {
        MigrationError::Unavailable(e.to_string())
    }
}

/// Index into [`State::ALL`] of the current migration, `usize::MAX` for none.
pub static CURRENT_STATE: AtomicUsize = AtomicUsize::new(usize::MAX);

/// Where migration records live: the store, or memory for a fleet of one.
pub enum Book {
    Memory(Mutex<MemoryBook>),
    Etcd(unitgate_store::EtcdStore),
}

#[derive(Default)]
pub struct MemoryBook {
    active: Option<String>,
    records: BTreeMap<String, (Migration, i64)>,
}

/// A poisoned lock still holds whole records: each change replaces one.
fn lock(m: &Mutex<MemoryBook>) -> std::sync::MutexGuard<'_, MemoryBook> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Book {
    pub fn for_control(control: &ControlPlane) -> Book {
        match &control.source {
            Source::File => Book::Memory(Mutex::new(MemoryBook::default())),
            Source::Etcd(src) => Book::Etcd(src.store.clone()),
        }
    }

    async fn active(&self) -> Result<Option<String>, MigrationError> {
        match self {
            Book::Memory(m) => Ok(lock(m).active.clone()),
            Book::Etcd(s) => Ok(s
                .get(ACTIVE_KEY)
                .await?
                .map(|(v, _)| String::from_utf8_lossy(&v).into_owned())),
        }
    }

    async fn get(&self, id: &str) -> Result<Option<(Migration, i64)>, MigrationError> {
        match self {
            Book::Memory(m) => Ok(lock(m).records.get(id).cloned()),
            Book::Etcd(s) => match s.get(&format!("migrations/{id}")).await? {
                None => Ok(None),
                Some((v, rev)) => serde_json::from_slice(&v)
                    .map(|m| Some((m, rev)))
                    .map_err(|e| MigrationError::Invalid(format!("migration record {id}: {e}"))),
            },
        }
    }

    async fn list(&self) -> Result<Vec<Migration>, MigrationError> {
        match self {
            Book::Memory(m) => Ok(lock(m).records.values().map(|(m, _)| m.clone()).collect()),
            Book::Etcd(s) => Ok(s
                .list("migrations/")
                .await?
                .into_iter()
                .filter_map(|(_, v, _)| serde_json::from_slice(&v).ok())
                .collect()),
        }
    }

    /// Records a new migration and marks it active, unless one is active.
    async fn create(&self, m: &Migration) -> Result<(), MigrationError> {
        match self {
            Book::Memory(mem) => {
                let mut book = lock(mem);
                if let Some(active) = &book.active {
                    return Err(MigrationError::InProgress(active.clone()));
                }
                book.active = Some(m.id.clone());
                book.records.insert(m.id.clone(), (m.clone(), 1));
                Ok(())
            }
            Book::Etcd(s) => {
                let body = serde_json::to_vec(m).unwrap_or_default();
                s.put(&format!("migrations/{}", m.id), &body, Expect::Absent)
                    .await?;
                match s.put(ACTIVE_KEY, m.id.as_bytes(), Expect::Absent).await {
                    Ok(_) => Ok(()),
                    Err(StoreError::Conflict { .. }) => {
                        let _ = s.delete(&format!("migrations/{}", m.id)).await;
                        let active = self.active().await?.unwrap_or_default();
                        Err(MigrationError::InProgress(active))
                    }
                    Err(e) => Err(e.into()),
                }
            }
        }
    }

    /// Saves `m` if its record is still at `revision`; the new revision.
    async fn save(&self, m: &Migration, revision: i64) -> Result<i64, MigrationError> {
        let conflict = || MigrationError::Conflict("the migration changed meanwhile".into());
        match self {
            Book::Memory(mem) => {
                let mut book = lock(mem);
                let entry = book.records.get_mut(&m.id).ok_or_else(conflict)?;
                if entry.1 != revision {
                    return Err(conflict());
                }
                *entry = (m.clone(), revision + 1);
                if m.state.is_terminal() && book.active.as_deref() == Some(&m.id) {
                    book.active = None;
                }
                Ok(revision + 1)
            }
            Book::Etcd(s) => {
                let body = serde_json::to_vec(m).unwrap_or_default();
                let key = format!("migrations/{}", m.id);
                let rev = match s.put(&key, &body, Expect::Revision(revision)).await {
                    Ok(r) => r,
                    Err(StoreError::Conflict { .. }) => return Err(conflict()),
                    Err(e) => return Err(e.into()),
                };
                if m.state.is_terminal() {
                    if let Ok(Some((v, _))) = s.get(ACTIVE_KEY).await {
                        if v == m.id.as_bytes() {
                            s.delete(ACTIVE_KEY).await?;
                        }
                    }
                }
                Ok(rev)
            }
        }
    }
}

/// The migrations API and driver of one gateway.
pub struct Migrations {
    pub control: Arc<ControlPlane>,
    pub book: Book,
    /// The id of the running migration as of this gateway's last tick.
    last_seen: Mutex<Option<String>>,
}

fn unix_now() -> u64 {
    crate::control::unix_now()
}

impl Migrations {
    pub fn new(control: Arc<ControlPlane>) -> Self {
        let book = Book::for_control(&control);
        Migrations {
            control,
            book,
            last_seen: Mutex::new(None),
        }
    }

    pub async fn list(&self) -> Result<Vec<Migration>, MigrationError> {
        let mut all = self.book.list().await?;
        all.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(all)
    }

    pub async fn get(&self, id: &str) -> Result<Migration, MigrationError> {
        self.book
            .get(id)
            .await?
            .map(|(m, _)| m)
            .ok_or_else(|| MigrationError::NotFound(id.to_owned()))
    }

    /// Validates and records a new migration; the driver takes it from there.
    pub async fn start(&self, req: Start) -> Result<Migration, MigrationError> {
        let (raw, _) = self.control.current();
        let slots = raw.routing.slots.min(u64::from(u32::MAX)) as u32;
        if req.slots.is_empty() {
            return Err(MigrationError::Invalid(
                "slots: give at least one range".into(),
            ));
        }
        let moving = SlotSet::parse(&req.slots, slots)
            .map_err(|e| MigrationError::Invalid(format!("slots: {e}")))?;
        let Some(target) = raw.units.iter().find(|u| u.name == req.to) else {
            return Err(MigrationError::Invalid(format!(
                "to: unknown unit {:?}",
                req.to
            )));
        };
        let owned = SlotSet::parse(&target.slots, slots).unwrap_or_default();
        let already = owned.intersect(&moving);
        if !already.is_empty() {
            return Err(MigrationError::Invalid(format!(
                "slots {} already belong to unit {:?}",
                already.to_strings().join(", "),
                req.to
            )));
        }
        let confirm = req.confirm.unwrap_or(Confirm::Mode("manual".into()));
        match &confirm {
            Confirm::Mode(m) if m == "manual" || m == "none" => {}
            Confirm::Mode(m) => {
                return Err(MigrationError::Invalid(format!(
                    "confirm: {m:?} is not \"manual\", \"none\" or {{\"url\": \"http://...\"}}"
                )))
            }
            Confirm::Url { url } if !url.starts_with("http://") => {
                return Err(MigrationError::Invalid(format!(
                    "confirm.url: {url:?} is not an http:// URL"
                )))
            }
            Confirm::Url { .. } => {}
        }
        let from = raw
            .units
            .iter()
            .filter(|u| u.name != req.to)
            .filter_map(|u| {
                let part = SlotSet::parse(&u.slots, slots).ok()?.intersect(&moving);
                (!part.is_empty()).then(|| (u.name.clone(), part.to_strings()))
            })
            .collect();
        let now = unix_now();
        let id = format!("m-{}-{:04x}", now_millis(), fastrand::u16(..));
        let m = Migration {
            id,
            slots: moving.to_strings(),
            from,
            to: req.to,
            confirm,
            state: State::Freezing,
            epochs: vec![],
            waiting_for: vec![],
            error: None,
            confirmed: false,
            abort_requested: false,
            aborting: false,
            step_epoch: None,
            driver: None,
            created_unix: now,
            updated_unix: now,
        };
        self.book.create(&m).await?;
        tracing::info!(id = %m.id, slots = ?m.slots, to = %m.to, "migration started");
        Ok(m)
    }

    /// `/confirm`: replication caught up (only in `waiting_confirm`).
    pub async fn confirm(&self, id: &str) -> Result<Migration, MigrationError> {
        self.update(id, |m| {
            if m.state != State::WaitingConfirm {
                return Err(MigrationError::Conflict(format!(
                    "migration {id} is {}, not waiting_confirm",
                    m.state.as_str()
                )));
            }
            m.confirmed = true;
            Ok(())
        })
        .await
    }

    /// `/abort`: lift the freeze and keep ownership, while the reassignment
    /// has not been written; waits (bounded) until the driver has done it.
    pub async fn abort(&self, id: &str) -> Result<Migration, MigrationError> {
        self.update(id, |m| {
            let allowed = matches!(m.state, State::Freezing | State::WaitingConfirm)
                || (m.state == State::Reassigning && m.step_epoch.is_none());
            if !allowed {
                return Err(MigrationError::Conflict(format!(
                    "migration {id} is {}: too late to abort (the slots were reassigned)",
                    m.state.as_str()
                )));
            }
            m.abort_requested = true;
            Ok(())
        })
        .await?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let m = self.get(id).await?;
            if m.state.is_terminal() || tokio::time::Instant::now() > deadline {
                return Ok(m);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn update(
        &self,
        id: &str,
        edit: impl Fn(&mut Migration) -> Result<(), MigrationError>,
    ) -> Result<Migration, MigrationError> {
        for _ in 0..8 {
            let (mut m, rev) = self
                .book
                .get(id)
                .await?
                .ok_or_else(|| MigrationError::NotFound(id.to_owned()))?;
            edit(&mut m)?;
            m.updated_unix = unix_now();
            match self.book.save(&m, rev).await {
                Ok(_) => return Ok(m),
                Err(MigrationError::Conflict(_)) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(MigrationError::Conflict(
            "the migration keeps changing; retry".into(),
        ))
    }
}

fn now_millis() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

#[path = "migration_driver.rs"]
mod driver;
pub use driver::MigrationDriver;
