//! The price of each exported row, from the usage API's own table (`metering_core::pricing`, the same
//! `pricing.json`, or the same `PRICING_JSON`/`PRICING_FILE` override): one price truth for SQL and API.

use std::collections::HashMap;

use metering_core::pricing::{base_model_id, ModelPrice, PricingTable};
use metering_core::usage::TokenCounts;
use parquet::data_type::ByteArray;

/// What a row gets from the price table.
pub struct PricedRow<'a> {
    /// `None` when the table has no price for the model (or for its cache tokens): no cost, never a wrong one.
    pub cost_usd: Option<f64>,
    pub version: &'a ByteArray,
    pub base_model_id: &'a ByteArray,
}

/// What one model id resolves to, looked up once per export rather than once per row.
#[derive(Clone)]
struct ResolvedModel {
    price: Option<ModelPrice>,
    base_model_id: ByteArray,
}

fn resolve(table: &PricingTable, model_id: &str) -> ResolvedModel {
    ResolvedModel {
        price: table.price_of(model_id),
        base_model_id: ByteArray::from(base_model_id(model_id).as_bytes().to_vec()),
    }
}

pub struct RowPricer {
    table: PricingTable,
    version: ByteArray,
    models: HashMap<String, ResolvedModel>,
    /// The model of the previous row (at first the empty id): consecutive rows often share one, and a string
    /// compare is cheaper than hashing the id again.
    last: (String, ResolvedModel),
}

impl RowPricer {
    pub fn new(table: PricingTable) -> Self {
        let version = ByteArray::from(table.version().into_bytes());
        Self {
            version,
            models: HashMap::new(),
            last: (String::new(), resolve(&table, "")),
            table,
        }
    }

    /// `price_version` of every row: which table priced it.
    pub fn version(&self) -> String {
        String::from_utf8_lossy(self.version.data()).into_owned()
    }

    pub fn price(&mut self, model_id: &str, tokens: &TokenCounts) -> PricedRow<'_> {
        if self.last.0 != model_id {
            let model = match self.models.get(model_id) {
                Some(model) => model.clone(),
                None => {
                    let model = resolve(&self.table, model_id);
                    self.models.insert(model_id.to_owned(), model.clone());
                    model
                }
            };
            // The buffer is reused: no allocation per row.
            self.last.0.clear();
            self.last.0.push_str(model_id);
            self.last.1 = model;
        }
        let model = &self.last.1;
        let cost_usd = model
            .price
            .and_then(|price| price.cost_usd(model_id, tokens).ok());
        PricedRow {
            cost_usd,
            version: &self.version,
            base_model_id: &model.base_model_id,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summarys_price_version_is_the_one_on_every_row() {
        let table = PricingTable::builtin();
        let expected = table.version();
        let mut pricer = RowPricer::new(table);
        assert_eq!(pricer.version(), expected);
        let row = pricer.price("anthropic.claude-3-haiku-20240307-v1:0", &TokenCounts::default());
        assert_eq!(row.version.data(), expected.as_bytes());
    }
}
