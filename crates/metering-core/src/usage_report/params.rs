//! Query parameters of the usage routes, checked strictly: an unknown, repeated or malformed parameter is a
//! 400, never silently ignored (so `?tenant_id=other` cannot look as if it had been honoured). Shared by
//! every server of a usage report: the usage function (Cognito) and the Claude proxy (gateway keys).

use chrono::NaiveDate;

use super::{RankingCursor, ReportPeriod, RequestTypeFilter, DEFAULT_DAYS, MAX_DAYS};
use crate::error::ApiError;

pub const DEFAULT_LIMIT: usize = 50;
pub const MAX_LIMIT: usize = 1000;

/// What one tenant's report needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportQuery {
    pub period: ReportPeriod,
    pub filter: RequestTypeFilter,
}

/// What a page of the all-tenants list needs: the cursor (period, request type, offset) and the page size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListQuery {
    pub cursor: RankingCursor,
    pub limit: usize,
}

struct Params(Vec<(String, String)>);

impl Params {
    fn parse(query: Option<&str>, allowed: &[&str]) -> Result<Self, ApiError> {
        let pairs: Vec<(String, String)> = form_urlencoded::parse(query.unwrap_or_default().as_bytes()).into_owned().collect();
        for (index, (name, _)) in pairs.iter().enumerate() {
            if !allowed.contains(&name.as_str()) {
                return Err(ApiError::InvalidRequest(format!(
                    "unknown query parameter {name:?}; this route accepts {}",
                    allowed.join(", ")
                )));
            }
            if pairs[..index].iter().any(|(earlier, _)| earlier == name) {
                return Err(ApiError::InvalidRequest(format!("query parameter {name} is given more than once")));
            }
        }
        Ok(Self(pairs))
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(key, _)| key == name).map(|(_, value)| value.as_str())
    }
}

/// A whole number in `range`, digits only (no sign, no spaces, no decimals).
fn bounded_number(name: &str, value: &str, max: u32) -> Result<u32, ApiError> {
    let invalid = || ApiError::InvalidRequest(format!("{name} must be a whole number from 1 to {max}, not {value:?}"));
    if value.is_empty() || value.len() > 7 || !value.bytes().all(|byte| byte.is_ascii_digit()) {
        return Err(invalid());
    }
    value.parse::<u32>().ok().filter(|number| (1..=max).contains(number)).ok_or_else(invalid)
}

fn days(params: &Params) -> Result<Option<u32>, ApiError> {
    params.get("days").map(|value| bounded_number("days", value, MAX_DAYS)).transpose()
}

fn request_type(params: &Params) -> Result<Option<RequestTypeFilter>, ApiError> {
    params
        .get("request_type")
        .map(|value| {
            RequestTypeFilter::parse(Some(value))
                .ok_or_else(|| ApiError::InvalidRequest(format!("request_type must be bedrock, anthropic or all, not {value:?}")))
        })
        .transpose()
}

impl ReportQuery {
    pub fn parse(query: Option<&str>, today: NaiveDate) -> Result<Self, ApiError> {
        let params = Params::parse(query, &["days", "request_type"])?;
        let days = days(&params)?.unwrap_or(DEFAULT_DAYS);
        let period = ReportPeriod::last_days(today, days).map_err(|error| ApiError::InvalidRequest(error.to_string()))?;
        Ok(Self { period, filter: request_type(&params)?.unwrap_or_default() })
    }
}

impl ListQuery {
    pub fn parse(query: Option<&str>, today: NaiveDate) -> Result<Self, ApiError> {
        let params = Params::parse(query, &["days", "request_type", "limit", "cursor"])?;
        let days = days(&params)?;
        let filter = request_type(&params)?;
        let limit = params.get("limit").map(|value| bounded_number("limit", value, MAX_LIMIT as u32)).transpose()?;
        let limit = limit.map_or(DEFAULT_LIMIT, |limit| limit as usize);
        let Some(cursor_text) = params.get("cursor") else {
            let days = days.unwrap_or(DEFAULT_DAYS);
            let period = ReportPeriod::last_days(today, days).map_err(|error| ApiError::InvalidRequest(error.to_string()))?;
            return Ok(Self { cursor: RankingCursor { period, filter: filter.unwrap_or_default(), offset: 0 }, limit });
        };
        let cursor = RankingCursor::decode(cursor_text).map_err(|error| ApiError::InvalidRequest(error.to_string()))?;
        // The cursor carries the period and request type; parameters that disagree mean a mixed-up client.
        if days.is_some_and(|days| days != cursor.period.days()) || filter.is_some_and(|filter| filter != cursor.filter) {
            return Err(ApiError::InvalidRequest(
                "the cursor belongs to a list with other days or request_type; start again without a cursor".into(),
            ));
        }
        Ok(Self { cursor, limit })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::usage::RequestType;

    fn today() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 11, 23).unwrap()
    }

    #[test]
    fn defaults_are_seven_days_of_every_request_type() {
        let query = ReportQuery::parse(None, today()).unwrap();
        assert_eq!(query.period.days(), 7);
        assert_eq!(query.filter, RequestTypeFilter(None));
        let list = ListQuery::parse(Some(""), today()).unwrap();
        assert_eq!((list.limit, list.cursor.offset, list.cursor.period.days()), (DEFAULT_LIMIT, 0, 7));
    }

    #[test]
    fn days_and_request_type_are_read() {
        let query = ReportQuery::parse(Some("days=366&request_type=anthropic"), today()).unwrap();
        assert_eq!(query.period.days(), 366);
        assert_eq!(query.filter, RequestTypeFilter(Some(RequestType::Anthropic)));
    }

    #[test]
    fn anything_else_is_a_400() {
        for bad in [
            "days=0",
            "days=367",
            "days=-1",
            "days=abc",
            "days=7.5",
            "days=",
            "days=+7",
            "days=%207",
            "days=99999999999",
            "days=7&days=8",
            "request_type=BEDROCK",
            "request_type=",
            "request_type=openai",
            "tenant_id=other",
            "DAYS=7",
            "limit=5",
        ] {
            let error = ReportQuery::parse(Some(bad), today()).unwrap_err();
            assert!(matches!(error, ApiError::InvalidRequest(_)), "{bad}: {error:?}");
        }
        for bad in ["limit=0", "limit=1001", "limit=x", "cursor=", "cursor=garbage", "cursor=eyJ2IjoxfQ"] {
            assert!(ListQuery::parse(Some(bad), today()).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_cursor_pins_the_period_and_must_agree_with_the_parameters() {
        let period = ReportPeriod::last_days(today(), 30).unwrap();
        let cursor = RankingCursor { period, filter: RequestTypeFilter(None), offset: 50 }.encode();
        // A day later, the cursor still continues the same list.
        let tomorrow = today().succ_opt().unwrap();
        let list = ListQuery::parse(Some(&format!("cursor={cursor}&days=30&limit=10")), tomorrow).unwrap();
        assert_eq!((list.cursor.period, list.cursor.offset, list.limit), (period, 50, 10));
        assert!(ListQuery::parse(Some(&format!("cursor={cursor}&days=7")), today()).is_err());
        assert!(ListQuery::parse(Some(&format!("cursor={cursor}&request_type=bedrock")), today()).is_err());
    }
}
