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
    /// The model's slot in the pricer: rows of one model share one.
    pub slot: usize,
}

/// What one model id resolves to, looked up once per export rather than once per row.
struct ResolvedModel {
    price: Option<ModelPrice>,
    base_model_id: ByteArray,
}

fn resolve(table: &PricingTable, model_id: &str) -> ResolvedModel {
    ResolvedModel { price: table.price_of(model_id), base_model_id: ByteArray::from(base_model_id(model_id).as_bytes().to_vec()) }
}

pub struct RowPricer {
    table: PricingTable,
    version: ByteArray,
    /// Every model id met so far, by first appearance; `slots` finds one by id. A day holds a handful of model
    /// ids, and the rows mix them: ahash rather than std's SipHash, which cost more than the pricing itself.
    models: Vec<ResolvedModel>,
    slots: HashMap<String, usize, ahash::RandomState>,
    /// The model id of the previous row and its slot (at first none): consecutive rows often share one, and a
    /// string compare is cheaper than hashing the id again.
    last: Option<(String, usize)>,
}

impl RowPricer {
    pub fn new(table: PricingTable) -> Self {
        let version = ByteArray::from(table.version().into_bytes());
        Self { version, models: Vec::new(), slots: HashMap::default(), last: None, table }
    }

    /// `price_version` of every row: which table priced it.
    pub fn version(&self) -> String {
        String::from_utf8_lossy(self.version.data()).into_owned()
    }

    /// The slot of `model_id` in this pricer (resolved on its first row): the same id always has the same slot.
    pub fn slot(&mut self, model_id: &str) -> usize {
        if let Some((last_id, slot)) = &self.last {
            if last_id == model_id {
                return *slot;
            }
        }
        let slot = if let Some(&slot) = self.slots.get(model_id) {
            slot
        } else {
            self.models.push(resolve(&self.table, model_id));
            self.slots.insert(model_id.to_owned(), self.models.len() - 1);
            self.models.len() - 1
        };
        match &mut self.last {
            // The buffer is reused: no allocation per row.
            Some((last_id, last_slot)) => {
                last_id.clear();
                last_id.push_str(model_id);
                *last_slot = slot;
            }
            None => self.last = Some((model_id.to_owned(), slot)),
        }
        slot
    }

    /// `base_model_id` of the model in `slot` (see [`RowPricer::slot`]).
    pub fn base_model_id(&self, slot: usize) -> Option<&ByteArray> {
        self.models.get(slot).map(|model| &model.base_model_id)
    }

    pub fn price(&mut self, model_id: &str, tokens: &TokenCounts) -> PricedRow<'_> {
        let slot = self.slot(model_id);
        let model = &self.models[slot];
        let cost_usd = model.price.and_then(|price| price.cost_usd(model_id, tokens).ok());
        PricedRow { cost_usd, version: &self.version, base_model_id: &model.base_model_id, slot }
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
