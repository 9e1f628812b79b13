//! Global limits shared by every gateway using the same Redis.
//!
//! One token bucket per (limit, key) in a Redis hash, updated by one Lua
//! script in one round trip: atomic, so concurrent gateways cannot both spend
//! the last token (the multi-command race of APISIX #12592 and Kong #5790).
//! The script reads Redis's own clock (`TIME`), so the gateways' clocks do not
//! matter.
//!
//! A dead Redis must not slow requests (envoy ratelimit #462): every call has
//! a short timeout; the first failure marks Redis down, and from then on
//! requests do not call it at all (the caller applies `on_failure`) while a
//! background probe ([`GlobalLimits::probe`]) reconnects. Transitions are
//! logged once each, not per request.

use super::{ceil_secs, Shape, Verdict};
use arc_swap::ArcSwapOption;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use unitgate_config::{OnFailure, Redis as RedisConfig};

const UNKNOWN: u8 = 0;
const UP: u8 = 1;
const DOWN: u8 = 2;

/// KEYS[1] = bucket; ARGV = capacity, microseconds per token, tokens wanted.
/// Takes as many of the wanted tokens as the bucket holds (a gateway leases
/// a batch: [`super::lease`]).
/// Returns {tokens taken, tokens left (floor), µs until one token, µs until full}.
const SCRIPT: &str = r#"
local capacity = tonumber(ARGV[1])
local refill_us = tonumber(ARGV[2])
local want = tonumber(ARGV[3]) or 1
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1])
local ts = tonumber(state[2])
if tokens == nil or ts == nil then
  tokens = capacity
  ts = now
end
if now > ts then
  tokens = math.min(capacity, tokens + (now - ts) / refill_us)
  ts = now
end
local allowed = math.min(want, math.floor(tokens))
if allowed < 0 then
  allowed = 0
end
tokens = tokens - allowed
redis.call('HSET', KEYS[1], 'tokens', string.format('%.6f', tokens), 'ts', string.format('%.0f', ts))
redis.call('PEXPIRE', KEYS[1], math.ceil(capacity * refill_us / 1000) + 1000)
local wait_us = 0
if allowed == 0 then
  wait_us = math.ceil((1 - tokens) * refill_us)
end
return {allowed, math.floor(tokens), wait_us, math.ceil((capacity - tokens) * refill_us)}
"#;

/// What one call to the bucket got.
#[derive(Debug, Clone, Copy)]
pub struct Taken {
    pub tokens: u64,
    pub verdict: Verdict,
    /// When refused: until the bucket holds a whole token again.
    pub wait: Duration,
}

pub struct GlobalLimits {
    client: redis::Client,
    conn: ArcSwapOption<ConnectionManager>,
    timeout: Duration,
    pub on_failure: OnFailure,
    pub fleet_size: u32,
    state: AtomicU8,
    /// Wakes requests waiting for the first connection attempt.
    settled: Notify,
    script: redis::Script,
    config: RedisConfig,
}

impl GlobalLimits {
    pub fn new(cfg: &RedisConfig) -> Result<Arc<Self>, String> {
        let client =
            redis::Client::open(cfg.url.as_str()).map_err(|e| format!("redis.url: {e}"))?;
        Ok(Arc::new(GlobalLimits {
            client,
            conn: ArcSwapOption::empty(),
            timeout: cfg.timeout,
            on_failure: cfg.on_failure,
            fleet_size: cfg.fleet_size,
            state: AtomicU8::new(UNKNOWN),
            settled: Notify::new(),
            script: redis::Script::new(SCRIPT),
            config: cfg.clone(),
        }))
    }

    /// The config this client was built from (a reload keeps the client when equal).
    pub fn config(&self) -> &RedisConfig {
        &self.config
    }

    /// How long a call may take.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    pub fn is_up(&self) -> bool {
        self.state.load(Ordering::Acquire) == UP
    }

    /// Takes one token of `key`'s bucket. `None`: Redis is unavailable and
    /// the caller applies `on_failure`. Never waits longer than the timeout,
    /// and not at all while Redis is known to be down.
    pub async fn check(&self, key: &str, shape: Shape) -> Option<Verdict> {
        self.take(key, shape, 1).await.map(|t| t.verdict)
    }

    /// Takes up to `want` tokens of `key`'s bucket at once: how many it got
    /// (0 = refused) and the verdict for the request that asked.
    pub async fn take(&self, key: &str, shape: Shape, want: u64) -> Option<Taken> {
        if self.state.load(Ordering::Acquire) == UNKNOWN {
            // Start-up: wait (bounded) for the probe's first answer.
            let _ = tokio::time::timeout(self.timeout, self.settled.notified()).await;
        }
        if self.state.load(Ordering::Acquire) != UP {
            return None;
        }
        let mut conn = (*self.conn.load_full()?).clone();
        let refill_us = (shape.refill_every.as_micros() as u64).max(1);
        let mut invocation = self.script.key(key);
        invocation
            .arg(shape.capacity)
            .arg(refill_us)
            .arg(want.max(1));
        let call = invocation.invoke_async::<(i64, i64, i64, i64)>(&mut conn);
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok((taken, tokens, wait_us, full_us))) => {
                let wait = Duration::from_micros(wait_us.max(0) as u64);
                let full = Duration::from_micros(full_us.max(0) as u64);
                let allowed = taken >= 1;
                let verdict = Verdict {
                    allowed,
                    limit: shape.limit,
                    remaining: tokens.max(0) as u64,
                    reset_secs: ceil_secs(if allowed { full } else { wait }),
                    retry_after_secs: if allowed { 0 } else { ceil_secs(wait).max(1) },
                };
                Some(Taken {
                    tokens: taken.max(0) as u64,
                    verdict,
                    wait,
                })
            }
            Ok(Err(e)) => {
                self.mark_down(&e.to_string());
                None
            }
            Err(_) => {
                self.mark_down(&format!("no answer within {:?}", self.timeout));
                None
            }
        }
    }

    fn mark_down(&self, why: &str) {
        let before = self.state.swap(DOWN, Ordering::AcqRel);
        if before != DOWN {
            tracing::warn!(
                reason = why,
                on_failure = ?self.on_failure,
                "redis unreachable: global limits fall back to on_failure until it answers again"
            );
        }
        self.settled.notify_waiters();
    }

    /// One probe: connects if needed and PINGs, within the timeout. Run it
    /// regularly from a background task; requests never wait on it.
    pub async fn probe(&self) -> bool {
        let result = self.try_probe().await;
        let ok = result.is_ok();
        let before = self.state.load(Ordering::Acquire);
        match (result, before) {
            (Ok(()), UP) => {}
            (Ok(()), _) => {
                self.state.store(UP, Ordering::Release);
                tracing::info!("redis reachable: global limits enforced through it");
            }
            (Err(e), UP) if self.conn.load().is_some() => {
                // A failed probe while requests still succeed is not enough
                // to declare it down; a failed request call is.
                tracing::debug!("redis probe failed: {e}");
            }
            (Err(e), _) => self.mark_down(&e),
        }
        self.settled.notify_waiters();
        ok
    }

    async fn try_probe(&self) -> Result<(), String> {
        let conn = match self.conn.load_full() {
            Some(c) => c,
            None => {
                let cfg = ConnectionManagerConfig::new()
                    .set_connection_timeout(self.timeout.max(Duration::from_millis(100)))
                    .set_response_timeout(self.timeout)
                    .set_number_of_retries(1);
                let made = tokio::time::timeout(
                    self.timeout.max(Duration::from_millis(200)),
                    ConnectionManager::new_with_config(self.client.clone(), cfg),
                )
                .await
                .map_err(|_| "connect timed out".to_owned())?
                .map_err(|e| e.to_string())?;
                let made = Arc::new(made);
                self.conn.store(Some(made.clone()));
                made
            }
        };
        let mut c = (*conn).clone();
        let ping_cmd = redis::cmd("PING");
        let ping = ping_cmd.query_async::<String>(&mut c);
        match tokio::time::timeout(self.timeout.max(Duration::from_millis(100)), ping).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("ping timed out".into()),
        }
    }
}
