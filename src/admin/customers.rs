//! `/customer/*` and `/end_user/*`: end users billed through `user` in request bodies.

use std::sync::Arc;

use http::StatusCode;
use serde_json::{Map, Value, json};

use super::budgets::with_budget;
use super::validation::{CUSTOMER_UNENFORCED, refuse, validate};
use super::{Answer, bad, db_error, list_of, object_block, render, string_of, write_update};
use crate::http_query::query_param;
use crate::management::Management;
use crate::management::objects::{apply_windows, new_object};
use crate::management::store::{Kind, StoreError};

pub(super) async fn customer_new(m: &Arc<Management>, b: Map<String, Value>) -> Answer {
    validate(&b)?;
    refuse(&b, CUSTOMER_UNENFORCED)?;
    let id = string_of(&b, "user_id").ok_or_else(|| bad("user_id is required"))?;
    let b = with_budget(m, b).await?;
    let mut data = b.clone();
    data.remove("spend");
    data.entry("blocked").or_insert(json!(false));
    let mut o = new_object(id.clone(), data);
    o.alias = string_of(&b, "alias");
    apply_windows(&mut o, &b);
    m.store
        .insert(Kind::EndUser, &o)
        .await
        .map_err(|e| match e {
            StoreError::Conflict(_) => bad(format!("Customer already exists, passed user_id={id}")),
            e => db_error(e),
        })?;
    Ok((StatusCode::OK, render(Kind::EndUser, &o)))
}

pub(super) async fn customer_info(m: &Arc<Management>, query: Option<&str>) -> Answer {
    let id = query_param(query, "end_user_id").ok_or_else(|| bad("pass ?end_user_id="))?;
    let o = m
        .store
        .get(Kind::EndUser, &id)
        .await
        .map_err(db_error)?
        .ok_or_else(|| bad(format!("End User Id={id} does not exist in db")))?;
    Ok((StatusCode::OK, render(Kind::EndUser, &o)))
}

pub(super) async fn customer_update(m: &Arc<Management>, b: Map<String, Value>) -> Answer {
    validate(&b)?;
    refuse(&b, CUSTOMER_UNENFORCED)?;
    let id = string_of(&b, "user_id").ok_or_else(|| bad("user_id is required"))?;
    let b = with_budget(m, b).await?;
    let mut o = m
        .store
        .get(Kind::EndUser, &id)
        .await
        .map_err(db_error)?
        .ok_or_else(|| bad(format!("End User Id={id} does not exist in db")))?;
    write_update(m, Kind::EndUser, &mut o, &b, &["user_id"], Some("alias")).await?;
    Ok((StatusCode::OK, render(Kind::EndUser, &o)))
}

pub(super) async fn customer_delete(m: &Arc<Management>, b: Map<String, Value>) -> Answer {
    let ids = list_of(&b, "user_ids");
    if ids.is_empty() {
        return Err(bad("user_ids is required"));
    }
    let deleted = m
        .store
        .delete(Kind::EndUser, &ids)
        .await
        .map_err(db_error)?;
    Ok((StatusCode::OK, json!({"deleted_customers": deleted})))
}

pub(super) async fn customer_block(
    m: &Arc<Management>,
    b: Map<String, Value>,
    blocked: bool,
) -> Answer {
    let ids = list_of(&b, "user_ids");
    if ids.is_empty() {
        return Err(bad("user_ids is required"));
    }
    let mut done = Vec::new();
    for id in ids {
        let mut body = Map::new();
        body.insert("user_id".into(), json!(id));
        if let Ok((_, v)) = object_block(m, Kind::EndUser, body, "user_id", blocked).await {
            done.push(v);
        }
    }
    Ok((StatusCode::OK, json!({"blocked_users": done})))
}
