//! The signed routing cookie: `1.<slot>.<epoch>.<expires_unix>.<kid>.<sig>`,
//! `sig` = base64url (no padding) of HMAC-SHA256(key[kid], everything before
//! the last dot). A hint for anonymous users, never an authority: a cookie that
//! fails any check is ignored, never an error.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use unitgate_config::Routing;

type HmacSha256 = Hmac<Sha256>;

/// A cookie whose signature, kid, syntax and expiry checked out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteCookie {
    pub slot: u32,
    pub epoch: u64,
    pub expires: u64,
}

/// Signs and verifies routing cookies; built once per config.
pub struct CookieJar {
    pub name: String,
    ttl_secs: u64,
    /// `; Path=/; HttpOnly; SameSite=Lax; Max-Age=N[; Secure]`
    attributes: String,
    /// (kid, keyed MAC state): cloning the state skips rehashing the key.
    keys: Vec<(String, HmacSha256)>,
    active: usize,
}

impl CookieJar {
    /// `None` when no signing key is configured (no cookie is stamped).
    pub fn new(routing: &Routing) -> Option<Self> {
        let keys: Vec<(String, HmacSha256)> = routing
            .signing_keys
            .iter()
            .filter_map(|(kid, secret)| {
                HmacSha256::new_from_slice(secret)
                    .ok()
                    .map(|mac| (kid.clone(), mac))
            })
            .collect();
        let active_kid = routing.active_key.as_deref()?;
        let active = keys.iter().position(|(kid, _)| kid == active_kid)?;
        let ttl_secs = routing.cookie_ttl.as_secs().max(1);
        let mut attributes = format!("; Path=/; HttpOnly; SameSite=Lax; Max-Age={ttl_secs}");
        if routing.cookie_secure {
            attributes.push_str("; Secure");
        }
        Some(CookieJar {
            name: routing.cookie.clone(),
            ttl_secs,
            attributes,
            keys,
            active,
        })
    }

    /// Checks a cookie value with every configured key (rotation).
    pub fn verify(&self, value: &str, now: u64, slots: u32) -> Option<RouteCookie> {
        let (payload, sig) = value.rsplit_once('.')?;
        let mut parts = payload.split('.');
        let (version, slot, epoch, expires, kid) = (
            parts.next()?,
            parts.next()?,
            parts.next()?,
            parts.next()?,
            parts.next()?,
        );
        if parts.next().is_some() || version != "1" {
            return None;
        }
        let slot: u32 = digits(slot)?;
        let epoch: u64 = digits(epoch)?;
        let expires: u64 = digits(expires)?;
        if slot >= slots || expires <= now {
            return None;
        }
        let (_, key) = self.keys.iter().find(|(k, _)| k == kid)?;
        let sig = URL_SAFE_NO_PAD.decode(sig).ok()?;
        let mut mac = key.clone();
        mac.update(payload.as_bytes());
        // verify_slice compares in constant time.
        mac.verify_slice(&sig).ok()?;
        Some(RouteCookie {
            slot,
            epoch,
            expires,
        })
    }

    /// The cookie value for `slot`, signed with the active key.
    pub fn value(&self, slot: u32, epoch: u64, now: u64) -> String {
        let (kid, key) = &self.keys[self.active];
        let payload = format!("1.{slot}.{epoch}.{}.{kid}", now + self.ttl_secs);
        let mut mac = key.clone();
        mac.update(payload.as_bytes());
        let sig = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        format!("{payload}.{sig}")
    }

    /// The whole `Set-Cookie` header value.
    pub fn set_cookie(&self, slot: u32, epoch: u64, now: u64) -> String {
        format!(
            "{}={}{}",
            self.name,
            self.value(slot, epoch, now),
            self.attributes
        )
    }

    /// DESIGN.md's stamping rule: no valid cookie, another slot, another
    /// epoch, or less than half its lifetime left.
    pub fn needs_stamp(
        &self,
        cookie: Option<&RouteCookie>,
        slot: u32,
        epoch: u64,
        now: u64,
    ) -> bool {
        match cookie {
            None => true,
            Some(c) => {
                c.slot != slot
                    || c.epoch != epoch
                    || c.expires.saturating_sub(now) < self.ttl_secs / 2
            }
        }
    }
}

/// Plain decimal digits only ("+1", " 1", "" are not numbers here).
fn digits<T: std::str::FromStr>(s: &str) -> Option<T> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

#[cfg(test)]
#[path = "cookie_tests.rs"]
mod tests;
