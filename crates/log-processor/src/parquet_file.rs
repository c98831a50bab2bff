//! Rows -> Parquet, one row group at a time, the file's bytes drained as they are produced so a day of any
//! size is written in bounded memory. Pure: no I/O here.
//!
//! The schema is the Glue table's (contract, `infra/lib/analytics/glue-catalog.ts`): the usage line's six
//! strings and six bigints (required), then the columns the export adds: the row's price (`cost_usd`,
//! `price_version`), the model without profile or date (`base_model_id`), and the newer optional fields of the
//! line (`client_user_id`, `requested_model_id`, `usage_estimated`), and the request's `counter_outcome`
//! (`applied`, `failed`, `unknown`; null where nothing could know it, e.g. rows of the stream). The partition keys `year`/`month`/`day`
//! are not columns: they are the object's path.

use std::sync::Arc;

use bytes::Bytes;
use metering_core::usage::TokenCounts;
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::data_type::{BoolType, ByteArray, ByteArrayType, DoubleType, Int64Type};
use parquet::file::properties::{EnabledStatistics, WriterProperties, WriterVersion};
use parquet::file::writer::{SerializedFileWriter, SerializedRowGroupWriter};
use parquet::schema::parser::parse_message_type;
use parquet::schema::types::{ColumnPath, Type};

use crate::error::ExportError;
use crate::line::{CounterOutcome, UsageLine};
use crate::row_price::RowPricer;
use metering_core::usage::RequestType;

/// The export columns, in file order (the Glue table's order).
pub const STRING_COLUMNS: [&str; 6] = ["timestamp", "tenant_id", "user_id", "model_id", "request_type", "request_id"];
pub const BIGINT_COLUMNS: [&str; 6] =
    ["input_tokens", "output_tokens", "total_tokens", "latency_ms", "cache_creation_input_tokens", "cache_read_input_tokens"];
/// After the bigints: `cost_usd` (double, null when the table has no price), `price_version`, `base_model_id`
/// (strings), `client_user_id`, `requested_model_id` (strings, null when the line has none), `usage_estimated`,
/// `counter_outcome` (string).
pub const ADDED_COLUMNS: [&str; 7] =
    ["cost_usd", "price_version", "base_model_id", "client_user_id", "requested_model_id", "usage_estimated", "counter_outcome"];

/// Rows per row group: about 40 MB of column buffers, a few MB of Parquet once encoded.
pub const DEFAULT_ROWS_PER_ROW_GROUP: usize = 100_000;

pub fn schema() -> Result<Arc<Type>, ExportError> {
    let strings: String = STRING_COLUMNS.iter().flat_map(|name| ["  REQUIRED BYTE_ARRAY ", name, " (STRING);\n"]).collect();
    let bigints: String = BIGINT_COLUMNS.iter().flat_map(|name| ["  REQUIRED INT64 ", name, ";\n"]).collect();
    let added = "  OPTIONAL DOUBLE cost_usd;\n  REQUIRED BYTE_ARRAY price_version (STRING);\n  \
                 REQUIRED BYTE_ARRAY base_model_id (STRING);\n  OPTIONAL BYTE_ARRAY client_user_id (STRING);\n  \
                 OPTIONAL BYTE_ARRAY requested_model_id (STRING);\n  REQUIRED BOOLEAN usage_estimated;\n  \
                 OPTIONAL BYTE_ARRAY counter_outcome (STRING);\n";
    Ok(Arc::new(parse_message_type(&format!("message token_usage_logs {{\n{strings}{bigints}{added}}}"))?))
}

/// ZSTD: level 3 on `timestamp` and `cost_usd`, level 1 on the rest (see below). The request ids (random hex)
/// are most of a row, and only an entropy coder shrinks them
/// (level 1 on every column is ~10% faster and 0.8 B/row larger; 6 and 9 save 0.3-0.5 B/row at half the speed).
/// Dictionaries for the repetitive columns (tenants, users, models, counts) but not for the unique ones
/// (timestamps, request ids, costs), where a dictionary only costs time before it overflows. Timestamps are
/// nearly in order, so each shares most of its text with the one before: DELTA_BYTE_ARRAY stores only the
/// new suffix (2.5 B/row; 3.7 plain or DELTA_LENGTH_BYTE_ARRAY). Request ids go DELTA_LENGTH_BYTE_ARRAY:
/// their lengths apart, so ZSTD sees the hex text alone (20.2 -> 18.8 B/row on the benchmark day). Costs stay
/// PLAIN: BYTE_STREAM_SPLIT made them larger (6.7 vs 4.7 B/row). Athena/Trino and DuckDB read all of these.
///
/// Statistics (min/max) only where a query can prune row groups by them: `timestamp` and `tenant_id`, per row
/// group. Everywhere else they cost a comparison per value for nothing (queries select days by the partition
/// path, and nothing filters on a count or an id's range).
pub fn writer_properties(rows_per_row_group: usize) -> Arc<WriterProperties> {
    let zstd = ZstdLevel::try_new(3).map_or(Compression::SNAPPY, Compression::ZSTD);
    // Level 1 everywhere but `timestamp` and `cost_usd`, the two columns whose text a higher level still
    // shrinks: random hex (request ids) has no matches for it to find, and the dictionary-coded columns are
    // run-length indices already (level 1 on them: no larger on the benchmark day, measured).
    let fast_zstd = ZstdLevel::try_new(1).map_or(Compression::SNAPPY, Compression::ZSTD);
    let mut builder = WriterProperties::builder()
        .set_writer_version(WriterVersion::PARQUET_1_0)
        .set_compression(fast_zstd)
        .set_write_batch_size(WRITE_BATCH_ROWS)
        .set_column_compression(ColumnPath::from("timestamp"), zstd)
        .set_column_compression(ColumnPath::from("cost_usd"), zstd)
        .set_max_row_group_row_count(Some(rows_per_row_group.max(1)))
        .set_column_dictionary_enabled(ColumnPath::from("timestamp"), false)
        .set_column_encoding(ColumnPath::from("timestamp"), Encoding::DELTA_BYTE_ARRAY)
        .set_column_dictionary_enabled(ColumnPath::from("request_id"), false)
        .set_column_encoding(ColumnPath::from("request_id"), Encoding::DELTA_LENGTH_BYTE_ARRAY)
        .set_column_dictionary_enabled(ColumnPath::from("cost_usd"), false)
        .set_statistics_enabled(EnabledStatistics::None)
        .set_created_by(format!("bedrock-metering log-processor {}", env!("CARGO_PKG_VERSION")));
    for column in PRUNING_COLUMNS {
        builder = builder.set_column_statistics_enabled(ColumnPath::from(column), EnabledStatistics::Chunk);
    }
    Arc::new(builder.build())
}

/// Values handed to a column's encoder at a time (the crate's default is 1,024): fewer rounds of the writer's
/// per-batch bookkeeping (page-size checks, level buffers). Pages still close at the default size limit.
pub const WRITE_BATCH_ROWS: usize = 8_192;

/// The columns whose row groups carry min/max statistics (see [`writer_properties`]).
pub const PRUNING_COLUMNS: [&str; 2] = ["timestamp", "tenant_id"];

/// The values of one string column, appended to one buffer: a row costs no allocation of its own. When the
/// row group is written the buffer becomes one `Bytes`, and each value a slice of it (a reference count).
#[derive(Debug, Default)]
struct StringColumn {
    data: Vec<u8>,
    /// The end of each value in `data`.
    ends: Vec<usize>,
}

impl StringColumn {
    fn with_capacity(rows: usize, bytes_per_value: usize) -> Self {
        Self { data: Vec::with_capacity(rows * bytes_per_value), ends: Vec::with_capacity(rows) }
    }

    fn push(&mut self, value: &[u8]) {
        self.data.extend_from_slice(value);
        self.ends.push(self.data.len());
    }

    /// The values as `ByteArray`s; the column is left empty (its buffer handed over, its index kept).
    fn take_values(&mut self) -> Vec<ByteArray> {
        let capacity = self.data.capacity();
        let data = Bytes::from(std::mem::replace(&mut self.data, Vec::with_capacity(capacity)));
        let mut start = 0;
        let values = self
            .ends
            .iter()
            .map(|&end| {
                let value = ByteArray::from(data.slice(start..end));
                start = end;
                value
            })
            .collect();
        self.ends.clear();
        values
    }

    fn clear(&mut self) {
        self.data.clear();
        self.ends.clear();
    }
}

/// A column of few distinct values (the model, the request type, the price version, a counter outcome): a row
/// keeps the slot of its value, and the `ByteArray`s handed to the writer are kept from one row group to the
/// next, rewritten only where a row's slot differs from the last group's: a row costs no copy and no reference
/// count of its own.
#[derive(Debug, Default)]
struct SlottedColumn {
    /// The value of each slot, set on its first row.
    texts: Vec<Option<ByteArray>>,
    /// The slot of each present value of the row group being filled.
    slots: Vec<u32>,
    /// The values last handed to the writer, and their slots.
    values: Vec<ByteArray>,
    value_slots: Vec<u32>,
}

impl SlottedColumn {
    fn with_capacity(rows: usize) -> Self {
        Self { slots: Vec::with_capacity(rows), ..Self::default() }
    }

    /// Adds a value of `slot`; `text` makes the slot's value the first time it is met.
    fn push(&mut self, slot: usize, text: impl FnOnce() -> ByteArray) {
        if self.texts.len() <= slot {
            self.texts.resize(slot + 1, None);
        }
        if self.texts[slot].is_none() {
            self.texts[slot] = Some(text());
        }
        self.slots.push(slot as u32);
    }

    fn values(&mut self) -> &[ByteArray] {
        let rows = self.slots.len();
        if self.values.len() < rows {
            self.values.resize(rows, ByteArray::new());
            self.value_slots.resize(rows, u32::MAX);
        }
        for ((value, value_slot), &slot) in self.values.iter_mut().zip(self.value_slots.iter_mut()).zip(&self.slots) {
            if *value_slot != slot {
                *value = self.texts.get(slot as usize).cloned().flatten().unwrap_or_default();
                *value_slot = slot;
            }
        }
        &self.values[..rows]
    }

    fn clear(&mut self) {
        self.slots.clear();
    }
}

/// Rows waiting for the next row group, column by column.
#[derive(Debug, Default)]
pub struct RowBatch {
    timestamp: StringColumn,
    tenant_id: StringColumn,
    user_id: StringColumn,
    /// Slot: the pricer's slot of the model id.
    model_id: SlottedColumn,
    /// Slot: [`RequestType::index`]-like position in [`REQUEST_TYPES`].
    request_type: SlottedColumn,
    request_id: StringColumn,
    bigints: [Vec<i64>; 6],
    /// Present values only, with one definition level per row (1 = present).
    cost_usd: Vec<f64>,
    cost_levels: Vec<i16>,
    /// One slot: every row of an export has the same price table.
    price_version: SlottedColumn,
    /// Slot: the pricer's slot of the model id.
    base_model_id: SlottedColumn,
    optional_strings: [(StringColumn, Vec<i16>); 2],
    usage_estimated: Vec<bool>,
    /// Slot: [`CounterOutcome::index`]; levels as for `cost_usd`.
    counter_outcome: (SlottedColumn, Vec<i16>),
}

/// The request types, in slot order.
const REQUEST_TYPES: [RequestType; 2] = [RequestType::Bedrock, RequestType::Anthropic];

impl RowBatch {
    pub fn with_capacity(rows: usize) -> Self {
        Self {
            // A timestamp or request id is 24 to 36 bytes; tenant and user ids about as long.
            timestamp: StringColumn::with_capacity(rows, 24),
            tenant_id: StringColumn::with_capacity(rows, 40),
            user_id: StringColumn::with_capacity(rows, 40),
            model_id: SlottedColumn::with_capacity(rows),
            request_type: SlottedColumn::with_capacity(rows),
            request_id: StringColumn::with_capacity(rows, 36),
            bigints: std::array::from_fn(|_| Vec::with_capacity(rows)),
            cost_usd: Vec::with_capacity(rows),
            cost_levels: Vec::with_capacity(rows),
            price_version: SlottedColumn::with_capacity(rows),
            base_model_id: SlottedColumn::with_capacity(rows),
            optional_strings: std::array::from_fn(|_| (StringColumn::default(), Vec::with_capacity(rows))),
            usage_estimated: Vec::with_capacity(rows),
            counter_outcome: (SlottedColumn::with_capacity(rows), Vec::with_capacity(rows)),
        }
    }

    /// Adds one row, priced by `pricer`, with the request's counter outcome when it is known. Counts were
    /// checked to fit i64 when the line was read (`line::classify`).
    pub fn push(&mut self, line: &UsageLine<'_>, pricer: &mut RowPricer, counter_outcome: Option<CounterOutcome>) {
        self.timestamp.push(line.timestamp.as_bytes());
        self.tenant_id.push(line.tenant_id.as_bytes());
        self.user_id.push(line.user_id.as_bytes());
        self.request_id.push(line.request_id.as_bytes());
        let request_type = REQUEST_TYPES.iter().position(|known| *known == line.request_type).unwrap_or(0);
        self.request_type.push(request_type, || ByteArray::from(line.request_type.as_str()));
        let bigints = [
            line.input_tokens,
            line.output_tokens,
            line.total_tokens,
            line.latency_ms,
            line.cache_creation_input_tokens,
            line.cache_read_input_tokens,
        ];
        for (column, value) in self.bigints.iter_mut().zip(bigints) {
            column.push(i64::try_from(value).unwrap_or(i64::MAX));
        }
        let tokens = TokenCounts {
            input_tokens: line.input_tokens,
            output_tokens: line.output_tokens,
            cache_creation_input_tokens: line.cache_creation_input_tokens,
            cache_read_input_tokens: line.cache_read_input_tokens,
        };
        let priced = pricer.price(&line.model_id, &tokens);
        match priced.cost_usd {
            Some(cost) => {
                self.cost_usd.push(cost);
                self.cost_levels.push(1);
            }
            None => self.cost_levels.push(0),
        }
        self.model_id.push(priced.slot, || ByteArray::from(line.model_id.as_bytes().to_vec()));
        self.price_version.push(0, || priced.version.clone());
        self.base_model_id.push(priced.slot, || priced.base_model_id.clone());
        for ((values, levels), value) in self.optional_strings.iter_mut().zip([&line.client_user_id, &line.requested_model_id]) {
            match value {
                Some(text) => {
                    values.push(text.as_bytes());
                    levels.push(1);
                }
                None => levels.push(0),
            }
        }
        self.usage_estimated.push(line.usage_estimated.unwrap_or(false));
        let (values, levels) = &mut self.counter_outcome;
        match counter_outcome {
            Some(outcome) => {
                values.push(outcome.index(), || ByteArray::from(outcome.as_str()));
                levels.push(1);
            }
            None => levels.push(0),
        }
    }

    pub fn len(&self) -> usize {
        self.bigints[0].len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn clear(&mut self) {
        for column in [&mut self.timestamp, &mut self.tenant_id, &mut self.user_id, &mut self.request_id] {
            column.clear();
        }
        for column in [&mut self.model_id, &mut self.request_type, &mut self.price_version, &mut self.base_model_id] {
            column.clear();
        }
        self.bigints.iter_mut().for_each(Vec::clear);
        self.cost_usd.clear();
        self.cost_levels.clear();
        for (values, levels) in &mut self.optional_strings {
            values.clear();
            levels.clear();
        }
        self.usage_estimated.clear();
        self.counter_outcome.0.clear();
        self.counter_outcome.1.clear();
    }
}

/// One Parquet file being written into memory, drained by the caller part by part.
pub struct ParquetFileWriter {
    writer: SerializedFileWriter<Vec<u8>>,
    rows: u64,
}

/// Writes one column of `row_group`: `values`, and the definition levels of an optional column.
fn write_column<T: parquet::data_type::DataType>(
    row_group: &mut SerializedRowGroupWriter<'_, Vec<u8>>,
    values: &[T::T],
    levels: Option<&[i16]>,
) -> Result<(), ExportError> {
    let mut column = row_group.next_column()?.ok_or_else(schema_mismatch)?;
    column.typed::<T>().write_batch(values, levels, None)?;
    column.close()?;
    Ok(())
}

impl ParquetFileWriter {
    pub fn new(properties: Arc<WriterProperties>) -> Result<Self, ExportError> {
        Ok(Self { writer: SerializedFileWriter::new(Vec::new(), schema()?, properties)?, rows: 0 })
    }

    /// Writes `batch` as one row group and empties it.
    pub fn write_row_group(&mut self, batch: &mut RowBatch) -> Result<(), ExportError> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut row_group = self.writer.next_row_group()?;
        let group = &mut row_group;
        write_column::<ByteArrayType>(group, &batch.timestamp.take_values(), None)?;
        write_column::<ByteArrayType>(group, &batch.tenant_id.take_values(), None)?;
        write_column::<ByteArrayType>(group, &batch.user_id.take_values(), None)?;
        write_column::<ByteArrayType>(group, batch.model_id.values(), None)?;
        write_column::<ByteArrayType>(group, batch.request_type.values(), None)?;
        write_column::<ByteArrayType>(group, &batch.request_id.take_values(), None)?;
        for values in &batch.bigints {
            write_column::<Int64Type>(group, values, None)?;
        }
        write_column::<DoubleType>(group, &batch.cost_usd, Some(&batch.cost_levels))?;
        write_column::<ByteArrayType>(group, batch.price_version.values(), None)?;
        write_column::<ByteArrayType>(group, batch.base_model_id.values(), None)?;
        for (values, levels) in &mut batch.optional_strings {
            write_column::<ByteArrayType>(group, &values.take_values(), Some(levels))?;
        }
        write_column::<BoolType>(group, &batch.usage_estimated, None)?;
        let (values, levels) = &mut batch.counter_outcome;
        write_column::<ByteArrayType>(group, values.values(), Some(levels))?;
        row_group.close()?;
        self.rows += batch.len() as u64;
        batch.clear();
        Ok(())
    }

    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Bytes written so far and not yet taken.
    pub fn buffered_bytes(&mut self) -> Result<usize, ExportError> {
        self.writer.flush().map_err(parquet::errors::ParquetError::from)?;
        Ok(self.writer.inner().len())
    }

    /// Takes the bytes produced so far (a prefix of the file), leaving the writer ready for more.
    pub fn take_bytes(&mut self) -> Result<Vec<u8>, ExportError> {
        self.writer.flush().map_err(parquet::errors::ParquetError::from)?;
        Ok(std::mem::take(self.writer.inner_mut()))
    }

    /// Writes the footer and returns the last bytes of the file.
    pub fn finish(self) -> Result<Vec<u8>, ExportError> {
        Ok(self.writer.into_inner()?)
    }
}

fn schema_mismatch() -> ExportError {
    ExportError::Parquet(parquet::errors::ParquetError::General("fewer columns than the schema".to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::line::{classify, LineOutcome};
    use crate::synthetic::SyntheticDay;
    use bytes::Bytes;
    use metering_core::pricing::PricingTable;
    use parquet::file::reader::{FileReader, SerializedFileReader};
    use parquet::record::Field;

    fn write(lines: &[String], rows_per_group: usize, drain_every_group: bool) -> Vec<u8> {
        let mut pricer = RowPricer::new(PricingTable::builtin());
        let mut writer = ParquetFileWriter::new(writer_properties(rows_per_group)).unwrap();
        let mut batch = RowBatch::default();
        let mut file = Vec::new();
        for text in lines {
            let LineOutcome::Usage { line, .. } = classify(text) else { panic!("{text}") };
            batch.push(&line, &mut pricer, Some(CounterOutcome::Applied));
            if batch.len() == rows_per_group {
                writer.write_row_group(&mut batch).unwrap();
                if drain_every_group {
                    file.extend(writer.take_bytes().unwrap());
                }
            }
        }
        writer.write_row_group(&mut batch).unwrap();
        file.extend(writer.finish().unwrap());
        file
    }

    fn read_back(file: Vec<u8>) -> (usize, Vec<Vec<(String, Field)>>) {
        let reader = SerializedFileReader::new(Bytes::from(file)).unwrap();
        let groups = reader.metadata().num_row_groups();
        let rows = reader.get_row_iter(None).unwrap().map(|row| row.unwrap().into_columns()).collect();
        (groups, rows)
    }

    #[test]
    fn rows_come_back_field_by_field_even_when_drained_between_row_groups() {
        // GIVEN 25 usage lines, written 10 rows per row group, the bytes taken after each group
        let day = SyntheticDay::new("2026-11-23", 25, 7);
        let records: Vec<_> = day.records().collect();
        let file = write(&day.lines().collect::<Vec<_>>(), 10, true);
        // WHEN the file is read back
        let (groups, rows) = read_back(file);
        // THEN every row is there, typed: strings as strings, counts as bigints, then the added columns
        assert_eq!(groups, 3);
        assert_eq!(rows.len(), 25);
        let names: Vec<&str> = rows[0].iter().map(|(name, _)| name.as_str()).collect();
        let expected: Vec<&str> =
            STRING_COLUMNS.iter().chain(BIGINT_COLUMNS.iter()).chain(ADDED_COLUMNS.iter()).copied().collect();
        assert_eq!(names, expected);
        let table = PricingTable::builtin();
        for (row, record) in rows.iter().zip(&records) {
            assert_eq!(row[0].1, Field::Str(record.timestamp.clone()));
            assert_eq!(row[1].1, Field::Str(record.tenant_id.clone()));
            assert_eq!(row[4].1, Field::Str(record.request_type.as_str().to_owned()));
            assert_eq!(row[5].1, Field::Str(record.request_id.clone()));
            assert_eq!(row[6].1, Field::Long(record.input_tokens as i64));
            assert_eq!(row[8].1, Field::Long(record.total_tokens as i64));
            assert_eq!(row[11].1, Field::Long(record.cache_read_input_tokens as i64));
            let tokens = TokenCounts {
                input_tokens: record.input_tokens,
                output_tokens: record.output_tokens,
                cache_creation_input_tokens: record.cache_creation_input_tokens,
                cache_read_input_tokens: record.cache_read_input_tokens,
            };
            let cost = table.cost_usd(&record.model_id, &tokens).unwrap();
            assert_eq!(row[12].1, Field::Double(cost), "the usage API's own formula");
            assert_eq!(row[13].1, Field::Str(table.version()));
            let base = metering_core::pricing::base_model_id(&record.model_id).to_owned();
            assert_eq!(row[14].1, Field::Str(base));
            assert_eq!((&row[15].1, &row[16].1, &row[17].1), (&Field::Null, &Field::Null, &Field::Bool(false)));
            assert_eq!(row[18].1, Field::Str("applied".into()));
        }
    }

    #[test]
    fn optional_fields_and_unpriced_models_are_nulls_next_to_values() {
        let base = r#"{"event":"token_usage","timestamp":"2026-11-23T10:00:00.123Z","request_id":"r","tenant_id":"t","user_id":"u","request_type":"anthropic","input_tokens":1,"output_tokens":2,"total_tokens":3,"latency_ms":4,"#;
        let lines = vec![
            format!(r#"{base}"model_id":"acme.unknown"}}"#),
            format!(
                r#"{base}"model_id":"claude-3-haiku-20240307","client_user_id":"end user","requested_model_id":"claude-3-haiku","usage_estimated":true}}"#
            ),
        ];
        let (_, rows) = read_back(write(&lines, 10, false));
        assert_eq!(rows[0][12].1, Field::Null, "no price: no cost rather than a wrong one");
        assert_eq!(rows[0][14].1, Field::Str("acme.unknown".into()));
        let tokens = TokenCounts { input_tokens: 1, output_tokens: 2, ..TokenCounts::default() };
        let cost = PricingTable::builtin().cost_usd("claude-3-haiku-20240307", &tokens).unwrap();
        assert_eq!(rows[1][12].1, Field::Double(cost));
        assert_eq!(rows[1][15].1, Field::Str("end user".into()));
        assert_eq!(rows[1][16].1, Field::Str("claude-3-haiku".into()));
        assert_eq!(rows[1][17].1, Field::Bool(true));
    }

    #[test]
    fn few_valued_columns_are_right_when_their_values_change_from_one_row_group_to_the_next() {
        // GIVEN rows whose model, request type and counter outcome change from row to row, in row groups of 7
        // (so the values kept from one group differ from the next group's at most places)
        let models = ["anthropic.claude-3-haiku-20240307-v1:0", "amazon.nova-lite-v1:0", "acme.unknown"];
        let outcomes = [Some(CounterOutcome::Failed), None, Some(CounterOutcome::Applied), Some(CounterOutcome::Unknown)];
        let mut expected = Vec::new();
        let mut pricer = RowPricer::new(PricingTable::builtin());
        let mut writer = ParquetFileWriter::new(writer_properties(7)).unwrap();
        let mut batch = RowBatch::default();
        for index in 0..40_usize {
            let model = models[(index * index + index / 3) % models.len()];
            let request_type = if index % 5 == 2 { "anthropic" } else { "bedrock" };
            let outcome = outcomes[(index / 2 + index % 3) % outcomes.len()];
            let text = format!(
                r#"{{"event":"token_usage","timestamp":"2026-11-23T10:00:00.123Z","request_id":"r-{index}","tenant_id":"t","user_id":"u","model_id":"{model}","request_type":"{request_type}","input_tokens":1,"output_tokens":2,"total_tokens":3,"latency_ms":4}}"#
            );
            let LineOutcome::Usage { line, .. } = classify(&text) else { panic!("{text}") };
            batch.push(&line, &mut pricer, outcome);
            if batch.len() == 7 {
                writer.write_row_group(&mut batch).unwrap();
            }
            expected.push((model, request_type, outcome));
        }
        writer.write_row_group(&mut batch).unwrap();
        // WHEN the file is read back
        let (groups, rows) = read_back(writer.finish().unwrap());
        // THEN every row has its own values, not those of the row at its place in an earlier group
        assert_eq!((groups, rows.len()), (6, 40));
        let version = PricingTable::builtin().version();
        for (index, (row, (model, request_type, outcome))) in rows.iter().zip(&expected).enumerate() {
            assert_eq!(row[5].1, Field::Str(format!("r-{index}")));
            assert_eq!(row[3].1, Field::Str((*model).to_owned()), "row {index}");
            assert_eq!(row[4].1, Field::Str((*request_type).to_owned()), "row {index}");
            assert_eq!(row[13].1, Field::Str(version.clone()), "row {index}");
            let base = metering_core::pricing::base_model_id(model).to_owned();
            assert_eq!(row[14].1, Field::Str(base), "row {index}");
            let outcome = outcome.map_or(Field::Null, |outcome| Field::Str(outcome.as_str().to_owned()));
            assert_eq!(row[18].1, outcome, "row {index}");
        }
    }

    #[test]
    fn only_the_pruning_columns_carry_statistics() {
        let lines: Vec<String> = SyntheticDay::new("2026-11-23", 30, 1).lines().collect();
        let reader = SerializedFileReader::new(Bytes::from(write(&lines, 10, false))).unwrap();
        for group in reader.metadata().row_groups() {
            for column in group.columns() {
                let name = column.column_path().string();
                let has_min_max = column.statistics().is_some_and(|statistics| statistics.min_bytes_opt().is_some());
                assert_eq!(has_min_max, PRUNING_COLUMNS.contains(&name.as_str()), "{name}");
            }
        }
    }

    #[test]
    fn draining_does_not_change_the_file() {
        let lines: Vec<String> = SyntheticDay::new("2026-11-23", 50, 1).lines().collect();
        assert_eq!(write(&lines, 10, true), write(&lines, 10, false));
    }

    #[test]
    fn the_schema_is_the_glue_tables() {
        let schema = schema().unwrap();
        assert_eq!(schema.get_fields().len(), 19);
        let names: Vec<&str> = schema.get_fields().iter().map(|field| field.name()).collect();
        assert_eq!(names[12..], ADDED_COLUMNS);
    }
}
