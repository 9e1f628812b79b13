//! The endpoints of DESIGN.md's admin table, each an edit of the raw config
//! applied through [`GatewayHandle::apply`].

use crate::{ApiError, AppState, Change};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use unitgate_config::raw::{RawRoute, RawService, RawUnit};
use unitgate_config::RawConfig;

const REDACTED: &str = "<redacted>";

fn parse<T: DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
}

fn if_match(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::IF_MATCH).and_then(|v| v.to_str().ok())
}

/// `value` as JSON with the config's ETag.
fn tagged(status: StatusCode, value: impl Serialize, etag: &str) -> Response {
    let mut resp = (status, Json(value)).into_response();
    if let Ok(v) = HeaderValue::from_str(etag) {
        resp.headers_mut().insert(header::ETAG, v);
    }
    resp
}

async fn apply(
    s: &AppState,
    headers: &HeaderMap,
    change: Change<'_>,
) -> Result<(RawConfig, String), ApiError> {
    s.handle.apply(if_match(headers), change).await
}

pub async fn healthz() -> impl IntoResponse {
    Json(json!({"status": "ok"}))
}

pub async fn readyz(State(s): State<AppState>) -> Response {
    match s.handle.readiness() {
        Ok(()) => Json(json!({"status": "ready"})).into_response(),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "not_ready", "reason": why})),
        )
            .into_response(),
    }
}

pub async fn metrics(State(s): State<AppState>) -> Response {
    let mut resp = s.handle.metrics().into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    resp
}

pub async fn not_found() -> ApiError {
    ApiError::not_found("endpoint")
}

pub async fn health(State(s): State<AppState>) -> Json<Value> {
    Json(s.handle.health())
}

pub async fn status(State(s): State<AppState>) -> Response {
    let (_, etag) = s.handle.config();
    let mut status = s.handle.status();
    if let Some(obj) = status.as_object_mut() {
        obj.insert("config_hash".into(), etag.trim_matches('"').into());
    }
    tagged(StatusCode::OK, status, &etag)
}

/// The effective config with every secret replaced by `<redacted>`
/// (`*_env` names are not secrets and stay).
pub fn redacted(raw: &RawConfig) -> Value {
    let mut v = serde_json::to_value(raw).unwrap_or(Value::Null);
    let mut redact = |ptr: &str| {
        if let Some(x) = v.pointer_mut(ptr) {
            if !x.is_null() {
                *x = REDACTED.into();
            }
        }
    };
    redact("/admin/token");
    redact("/redis/url");
    if let Some(keys) = v
        .pointer_mut("/routing/signing_keys")
        .and_then(Value::as_object_mut)
    {
        for val in keys.values_mut() {
            *val = REDACTED.into();
        }
    }
    if let Some(jwts) = v.pointer_mut("/jwt").and_then(Value::as_object_mut) {
        for j in jwts.values_mut() {
            if let Some(secret) = j.get_mut("secret").filter(|x| !x.is_null()) {
                *secret = REDACTED.into();
            }
        }
    }
    v
}

pub async fn config(State(s): State<AppState>) -> Response {
    let (raw, etag) = s.handle.config();
    tagged(StatusCode::OK, redacted(&raw), &etag)
}

pub async fn reload(State(s): State<AppState>) -> Result<Response, ApiError> {
    let handle = s.handle.clone();
    let (changed, etag) = tokio::task::spawn_blocking(move || handle.reload())
        .await
        .map_err(|e| ApiError::internal(e.to_string()))??;
    Ok(tagged(
        StatusCode::OK,
        json!({"changed": changed, "etag": etag}),
        &etag,
    ))
}

// ---- routes and services: the same collection semantics for both ----

/// A named entry of a list in the raw config.
trait Named: Serialize + DeserializeOwned + Clone + Send + Sync + 'static {
    const WHAT: &'static str;
    fn name(&self) -> &str;
    fn set_name(&mut self, name: String);
    fn list(raw: &mut RawConfig) -> &mut Vec<Self>;
}

impl Named for RawRoute {
    const WHAT: &'static str = "route";
    fn name(&self) -> &str {
        &self.name
    }
    fn set_name(&mut self, name: String) {
        self.name = name;
    }
    fn list(raw: &mut RawConfig) -> &mut Vec<Self> {
        &mut raw.routes
    }
}

impl Named for RawService {
    const WHAT: &'static str = "service";
    fn name(&self) -> &str {
        &self.name
    }
    fn set_name(&mut self, name: String) {
        self.name = name;
    }
    fn list(raw: &mut RawConfig) -> &mut Vec<Self> {
        &mut raw.services
    }
}

fn list_of<T: Named>(s: &AppState) -> Response {
    let (mut raw, etag) = s.handle.config();
    tagged(StatusCode::OK, T::list(&mut raw).clone(), &etag)
}

fn get_one<T: Named>(s: &AppState, name: &str) -> Result<Response, ApiError> {
    let (mut raw, etag) = s.handle.config();
    let item = T::list(&mut raw)
        .iter()
        .find(|x| x.name() == name)
        .cloned()
        .ok_or_else(|| ApiError::not_found(format!("{} {name:?}", T::WHAT)))?;
    Ok(tagged(StatusCode::OK, item, &etag))
}

async fn create<T: Named>(
    s: &AppState,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Response, ApiError> {
    let item: T = parse(body)?;
    let name = item.name().to_owned();
    let created = item.clone();
    let (_, etag) = apply(
        s,
        headers,
        Box::new(move |raw| {
            let list = T::list(raw);
            if list.iter().any(|x| x.name() == name) {
                return Err(ApiError::conflict(format!("{} {name:?} exists", T::WHAT)));
            }
            list.push(item.clone());
            Ok(())
        }),
    )
    .await?;
    Ok(tagged(StatusCode::CREATED, created, &etag))
}

async fn replace<T: Named>(
    s: &AppState,
    headers: &HeaderMap,
    name: String,
    body: &Bytes,
) -> Result<Response, ApiError> {
    let mut item: T = parse(body)?;
    if item.name().is_empty() {
        item.set_name(name.clone());
    } else if item.name() != name {
        return Err(ApiError::bad_request(format!(
            "the body names {} {:?} but the path names {name:?}; renaming is delete + create",
            T::WHAT,
            item.name()
        )));
    }
    let replaced = item.clone();
    let (_, etag) = apply(
        s,
        headers,
        Box::new(move |raw| {
            let slot = T::list(raw)
                .iter_mut()
                .find(|x| x.name() == name)
                .ok_or_else(|| ApiError::not_found(format!("{} {name:?}", T::WHAT)))?;
            *slot = item.clone();
            Ok(())
        }),
    )
    .await?;
    Ok(tagged(StatusCode::OK, replaced, &etag))
}

async fn delete<T: Named>(
    s: &AppState,
    headers: &HeaderMap,
    name: String,
) -> Result<Response, ApiError> {
    let (_, etag) = apply(
        s,
        headers,
        Box::new(move |raw| {
            let list = T::list(raw);
            let at = list
                .iter()
                .position(|x| x.name() == name)
                .ok_or_else(|| ApiError::not_found(format!("{} {name:?}", T::WHAT)))?;
            list.remove(at);
            Ok(())
        }),
    )
    .await?;
    let mut resp = StatusCode::NO_CONTENT.into_response();
    if let Ok(v) = HeaderValue::from_str(&etag) {
        resp.headers_mut().insert(header::ETAG, v);
    }
    Ok(resp)
}

pub async fn list_routes(State(s): State<AppState>) -> Response {
    list_of::<RawRoute>(&s)
}
pub async fn get_route(
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    get_one::<RawRoute>(&s, &name)
}
pub async fn create_route(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    create::<RawRoute>(&s, &headers, &body).await
}
pub async fn put_route(
    State(s): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    replace::<RawRoute>(&s, &headers, name, &body).await
}
pub async fn delete_route(
    State(s): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    delete::<RawRoute>(&s, &headers, name).await
}

pub async fn list_services(State(s): State<AppState>) -> Response {
    list_of::<RawService>(&s)
}
pub async fn get_service(
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    get_one::<RawService>(&s, &name)
}
pub async fn create_service(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    create::<RawService>(&s, &headers, &body).await
}
pub async fn put_service(
    State(s): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    replace::<RawService>(&s, &headers, name, &body).await
}
pub async fn delete_service(
    State(s): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    delete::<RawService>(&s, &headers, name).await
}

// ---- units ----

pub async fn list_units(State(s): State<AppState>) -> Response {
    let (raw, etag) = s.handle.config();
    tagged(StatusCode::OK, raw.units, &etag)
}

pub async fn get_unit(
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let (raw, etag) = s.handle.config();
    let unit: RawUnit = raw
        .units
        .into_iter()
        .find(|u| u.name == name)
        .ok_or_else(|| ApiError::not_found(format!("unit {name:?}")))?;
    Ok(tagged(StatusCode::OK, unit, &etag))
}

/// `PUT /admin/v1/units/{name}`: what may change about a unit at run time.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UnitChange {
    state: Option<String>,
    failover: Option<Vec<String>>,
}

pub async fn put_unit(
    State(s): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let change: UnitChange = parse(&body)?;
    if change.state.is_none() && change.failover.is_none() {
        return Err(ApiError::bad_request("give `state` and/or `failover`"));
    }
    let (raw, etag) = apply(
        &s,
        &headers,
        Box::new(move |raw| {
            let unit = raw
                .units
                .iter_mut()
                .find(|u| u.name == name)
                .ok_or_else(|| ApiError::not_found(format!("unit {name:?}")))?;
            if let Some(state) = &change.state {
                unit.state = state.clone();
            }
            if let Some(failover) = &change.failover {
                unit.failover = failover.clone();
            }
            Ok(())
        }),
    )
    .await?;
    Ok(tagged(StatusCode::OK, raw.units, &etag))
}

// ---- shard map ----

/// The shard map: which unit owns which slots, at which epoch.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ShardMap {
    epoch: u64,
    units: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    forbidden_writes: Vec<String>,
    #[serde(default)]
    overrides: BTreeMap<String, String>,
}

fn shardmap_of(raw: &RawConfig) -> ShardMap {
    ShardMap {
        epoch: raw.routing.epoch,
        units: raw
            .units
            .iter()
            .map(|u| (u.name.clone(), u.slots.clone()))
            .collect(),
        forbidden_writes: raw.routing.forbidden_writes.clone(),
        overrides: raw.routing.overrides.clone(),
    }
}

pub async fn get_shardmap(State(s): State<AppState>) -> Response {
    let (raw, etag) = s.handle.config();
    tagged(StatusCode::OK, shardmap_of(&raw), &etag)
}

/// Replaces the shard map whole. The epoch must grow; units it does not
/// name own no slots; the result must cover every slot exactly once.
pub async fn put_shardmap(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let map: ShardMap = parse(&body)?;
    let (raw, etag) = apply(
        &s,
        &headers,
        Box::new(move |raw| {
            if map.epoch <= raw.routing.epoch {
                return Err(ApiError::conflict(format!(
                    "epoch {} does not grow (current {})",
                    map.epoch, raw.routing.epoch
                )));
            }
            if let Some(unknown) = map
                .units
                .keys()
                .find(|n| !raw.units.iter().any(|u| &u.name == *n))
            {
                return Err(ApiError::invalid(vec![format!(
                    "units.{unknown}: unknown unit {unknown:?}"
                )]));
            }
            for u in &mut raw.units {
                u.slots = map.units.get(&u.name).cloned().unwrap_or_default();
            }
            raw.routing.epoch = map.epoch;
            raw.routing.forbidden_writes = map.forbidden_writes.clone();
            raw.routing.overrides = map.overrides.clone();
            Ok(())
        }),
    )
    .await?;
    Ok(tagged(StatusCode::OK, shardmap_of(&raw), &etag))
}

// ---- fleet and migrations ----

pub async fn fleet(State(s): State<AppState>) -> Json<Value> {
    Json(s.handle.fleet().await)
}

pub async fn list_migrations(State(s): State<AppState>) -> Result<Json<Value>, ApiError> {
    Ok(Json(s.handle.migrations().await?))
}

pub async fn get_migration(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(s.handle.migration(&id).await?))
}

/// `202 Accepted` with the migration and its `Location`: the fleet's driver
/// carries it through its steps from here.
pub async fn start_migration(State(s): State<AppState>, body: Bytes) -> Result<Response, ApiError> {
    let body: Value = parse(&body)?;
    let m = s.handle.start_migration(body).await?;
    let id = m["id"].as_str().unwrap_or_default().to_owned();
    let mut resp = (StatusCode::ACCEPTED, Json(m)).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("/admin/v1/migrations/{id}")) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    Ok(resp)
}

pub async fn confirm_migration(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(s.handle.confirm_migration(&id).await?))
}

pub async fn abort_migration(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(s.handle.abort_migration(&id).await?))
}
