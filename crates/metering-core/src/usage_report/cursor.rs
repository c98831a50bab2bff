//! The opaque `next` cursor of the all-tenants list. It pins the period (so a page fetched after midnight
//! continues the same list) and the request type, and carries the offset of the next page. It is not a
//! secret: only admins may list tenants, and they may read every tenant anyway.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::aggregate::RequestTypeFilter;
use super::period::ReportPeriod;
use crate::counters::day_label;

const VERSION: u8 = 1;
/// Far beyond any tenant count; bounds what a forged cursor can ask for.
const MAX_OFFSET: usize = 10_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RankingCursor {
    pub period: ReportPeriod,
    pub filter: RequestTypeFilter,
    pub offset: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("the cursor is not valid: pass back the `next` value of a previous answer unchanged")]
pub struct InvalidCursor;

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire {
    v: u8,
    from: String,
    to: String,
    request_type: String,
    offset: usize,
}

impl RankingCursor {
    pub fn encode(&self) -> String {
        let wire = Wire {
            v: VERSION,
            from: day_label(self.period.from),
            to: day_label(self.period.to),
            request_type: self.filter.label().to_owned(),
            offset: self.offset,
        };
        // Serializing a struct of strings and integers cannot fail.
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&wire).unwrap_or_default())
    }

    pub fn decode(text: &str) -> Result<Self, InvalidCursor> {
        let bytes = URL_SAFE_NO_PAD.decode(text.trim()).map_err(|_| InvalidCursor)?;
        let wire: Wire = serde_json::from_slice(&bytes).map_err(|_| InvalidCursor)?;
        if wire.v != VERSION || wire.offset > MAX_OFFSET {
            return Err(InvalidCursor);
        }
        let date = |text: &str| NaiveDate::parse_from_str(text, "%Y-%m-%d").map_err(|_| InvalidCursor);
        let period = ReportPeriod::between(date(&wire.from)?, date(&wire.to)?).map_err(|_| InvalidCursor)?;
        let filter = RequestTypeFilter::parse(Some(&wire.request_type)).ok_or(InvalidCursor)?;
        Ok(Self { period, filter, offset: wire.offset })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::usage::RequestType;

    fn cursor() -> RankingCursor {
        RankingCursor {
            period: ReportPeriod::last_days(NaiveDate::from_ymd_opt(2026, 11, 23).unwrap(), 30).unwrap(),
            filter: RequestTypeFilter(Some(RequestType::Bedrock)),
            offset: 50,
        }
    }

    #[test]
    fn a_cursor_survives_the_round_trip_and_is_url_safe() {
        let text = cursor().encode();
        assert!(text.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'), "{text}");
        assert_eq!(RankingCursor::decode(&text), Ok(cursor()));
    }

    #[test]
    fn garbage_and_tampered_cursors_are_refused() {
        let forge = |json: &str| URL_SAFE_NO_PAD.encode(json);
        for bad in [
            String::new(),
            "not a cursor!".to_owned(),
            forge("{}"),
            forge(r#"{"v":2,"from":"2026-11-17","to":"2026-11-23","request_type":"all","offset":0}"#),
            forge(r#"{"v":1,"from":"2026-11-24","to":"2026-11-23","request_type":"all","offset":0}"#),
            forge(r#"{"v":1,"from":"2024-11-17","to":"2026-11-23","request_type":"all","offset":0}"#),
            forge(r#"{"v":1,"from":"2026-11-17","to":"2026-11-23","request_type":"gpt","offset":0}"#),
            forge(r#"{"v":1,"from":"2026-11-17","to":"2026-11-23","request_type":"all","offset":-1}"#),
            forge(r#"{"v":1,"from":"2026-11-17","to":"2026-11-23","request_type":"all","offset":99999999999}"#),
            // Dates at chrono's edges: refused before any date arithmetic.
            forge(r#"{"v":1,"from":"-262143-01-01","to":"-262143-01-02","request_type":"all","offset":0}"#),
            forge(r#"{"v":1,"from":"+262142-12-30","to":"+262142-12-31","request_type":"all","offset":0}"#),
            forge(r#"{"v":1,"from":"1970-01-01","to":"1970-01-02","request_type":"all","offset":0}"#),
        ] {
            assert_eq!(RankingCursor::decode(&bad), Err(InvalidCursor), "{bad}");
        }
    }
}
