//! What `GET /v1/limits/me` (and the admin's `GET /v1/limits/{tenant_id}`) answer: each limit with its use,
//! what remains and when its period resets. Read fresh from the store (never the hot path's cache): one read
//! of the limits, one `BatchGetItem` of the counters.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Map, Value};

use super::store::{CounterUse, LimitsStore, LimitsStoreError, UseCounter};
use super::{amount_json, LimitKind, Limits, Scope};

/// The report of `tenant_id`'s limits (and, with `key_id`, of that key's narrowing) at `now`.
pub async fn limits_report(
    store: &dyn LimitsStore,
    tenant_id: &str,
    key_id: Option<&str>,
    now: DateTime<Utc>,
) -> Result<Value, LimitsStoreError> {
    let (tenant, key) = store.load(tenant_id, key_id).await?;
    let tenant_scope = Scope::Tenant(tenant_id.to_owned());
    let mut scopes = vec![(tenant_scope, tenant.unwrap_or_default())];
    if let Some(key_id) = key_id {
        scopes.push((Scope::Key { tenant_id: tenant_id.to_owned(), key_id: key_id.to_owned() }, key.unwrap_or_default()));
    }
    let counters: Vec<UseCounter> = scopes
        .iter()
        .flat_map(|(scope, stored)| {
            stored.limits.set_kinds().map(|(kind, _)| UseCounter::new(scope.clone(), kind, now)).collect::<Vec<_>>()
        })
        .collect();
    let uses = store.read_use(&counters, false).await?;
    let mut uses = counters.into_iter().zip(uses);
    let mut sections = scopes.into_iter().map(|(_, stored)| {
        let limits = section(&stored.limits, &mut uses, now);
        (stored, limits)
    });
    let (tenant_stored, tenant_limits) = sections.next().unwrap_or_default();
    let mut report = json!({
        "tenant_id": tenant_id,
        "limits": tenant_limits,
        "updated_at": tenant_stored.updated_at,
        "updated_by": tenant_stored.updated_by,
    });
    if let (Some(key_id), Some((key_stored, key_limits))) = (key_id, sections.next()) {
        report["key"] = json!({"key_id": key_id, "limits": key_limits, "updated_at": key_stored.updated_at, "updated_by": key_stored.updated_by});
    }
    Ok(report)
}

fn section(limits: &Limits, uses: &mut impl Iterator<Item = (UseCounter, CounterUse)>, now: DateTime<Utc>) -> Value {
    let mut object = Map::new();
    for kind in LimitKind::ALL {
        let Some(limit) = limits.get(kind) else {
            object.insert(kind.as_str().to_owned(), Value::Null);
            continue;
        };
        let (counter, used) =
            uses.next().unwrap_or_else(|| (UseCounter::new(Scope::Tenant(String::new()), kind, now), CounterUse::default()));
        // Requests per minute count on admission; budgets count metered use, plus what requests in flight hold.
        let (used_amount, in_flight) =
            if kind.is_budget() { (used.settled, used.admitted.saturating_sub(used.settled)) } else { (used.admitted, 0) };
        object.insert(
            kind.as_str().to_owned(),
            json!({
                "limit": amount_json(kind, limit),
                "used": amount_json(kind, used_amount),
                "in_flight": amount_json(kind, in_flight),
                "remaining": amount_json(kind, limit.saturating_sub(used.admitted)),
                "period": counter.period.label,
                "resets_at": counter.period.resets_at.to_rfc3339_opts(SecondsFormat::Secs, true),
            }),
        );
    }
    Value::Object(object)
}
