//! Rows -> Parquet, one row group at a time, the file's bytes drained as they are produced so a day of any
//! size is written in bounded memory. Pure: no I/O here.
//!
//! The schema is the Glue table's (contract): six strings, six bigints, every column required. The partition
//! keys `year`/`month`/`day` are not columns: they are the object's path.

use std::sync::Arc;

use metering_core::usage::UsageRecord;
use parquet::basic::{Compression, ZstdLevel};
use parquet::data_type::{ByteArray, ByteArrayType, Int64Type};
use parquet::file::properties::{WriterProperties, WriterVersion};
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::parser::parse_message_type;
use parquet::schema::types::{ColumnPath, Type};

use crate::error::ExportError;

/// The export columns, in file order (the Glue table's order).
pub const STRING_COLUMNS: [&str; 6] = ["timestamp", "tenant_id", "user_id", "model_id", "request_type", "request_id"];
pub const BIGINT_COLUMNS: [&str; 6] = [
    "input_tokens",
    "output_tokens",
    "total_tokens",
    "latency_ms",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
];

/// Rows per row group: about 40 MB of column buffers, a few MB of Parquet once encoded.
pub const DEFAULT_ROWS_PER_ROW_GROUP: usize = 100_000;

pub fn schema() -> Result<Arc<Type>, ExportError> {
    let strings: String =
        STRING_COLUMNS.iter().map(|name| format!("  REQUIRED BYTE_ARRAY {name} (STRING);\n")).collect();
    let bigints: String = BIGINT_COLUMNS.iter().map(|name| format!("  REQUIRED INT64 {name};\n")).collect();
    Ok(Arc::new(parse_message_type(&format!("message token_usage_logs {{\n{strings}{bigints}}}"))?))
}

/// ZSTD level 3: the request ids (random hex) are most of a row, and only an entropy coder shrinks them —
/// a day is 40% smaller than with Snappy, and Athena and DuckDB read ZSTD as fast. Dictionaries for the
/// repetitive columns (tenants, users, models, counts) but not for the unique ones (timestamps, request
/// ids), where a dictionary only costs time before it overflows.
pub fn writer_properties(rows_per_row_group: usize) -> Arc<WriterProperties> {
    let zstd = ZstdLevel::try_new(3).map(Compression::ZSTD).unwrap_or(Compression::SNAPPY);
    Arc::new(
        WriterProperties::builder()
            .set_writer_version(WriterVersion::PARQUET_1_0)
            .set_compression(zstd)
            .set_max_row_group_row_count(Some(rows_per_row_group.max(1)))
            .set_column_dictionary_enabled(ColumnPath::from("timestamp"), false)
            .set_column_dictionary_enabled(ColumnPath::from("request_id"), false)
            .set_created_by(format!("bedrock-metering log-processor {}", env!("CARGO_PKG_VERSION")))
            .build(),
    )
}

/// Rows waiting for the next row group, column by column.
#[derive(Debug, Default)]
pub struct RowBatch {
    strings: [Vec<ByteArray>; 6],
    bigints: [Vec<i64>; 6],
}

impl RowBatch {
    pub fn with_capacity(rows: usize) -> Self {
        Self {
            strings: std::array::from_fn(|_| Vec::with_capacity(rows)),
            bigints: std::array::from_fn(|_| Vec::with_capacity(rows)),
        }
    }

    /// Adds one row. Counts were checked to fit i64 when the line was read (`line::classify`).
    pub fn push(&mut self, record: UsageRecord) {
        let request_type = record.request_type.as_str();
        let strings = [
            record.timestamp,
            record.tenant_id,
            record.user_id,
            record.model_id,
            request_type.to_owned(),
            record.request_id,
        ];
        for (column, value) in self.strings.iter_mut().zip(strings) {
            column.push(ByteArray::from(value.into_bytes()));
        }
        let bigints = [
            record.input_tokens,
            record.output_tokens,
            record.total_tokens,
            record.latency_ms,
            record.cache_creation_input_tokens,
            record.cache_read_input_tokens,
        ];
        for (column, value) in self.bigints.iter_mut().zip(bigints) {
            column.push(i64::try_from(value).unwrap_or(i64::MAX));
        }
    }

    pub fn len(&self) -> usize {
        self.bigints[0].len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn clear(&mut self) {
        self.strings.iter_mut().for_each(Vec::clear);
        self.bigints.iter_mut().for_each(Vec::clear);
    }
}

/// One Parquet file being written into memory, drained by the caller part by part.
pub struct ParquetFileWriter {
    writer: SerializedFileWriter<Vec<u8>>,
    rows: u64,
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
        for values in &batch.strings {
            let mut column = row_group.next_column()?.ok_or_else(schema_mismatch)?;
            column.typed::<ByteArrayType>().write_batch(values, None, None)?;
            column.close()?;
        }
        for values in &batch.bigints {
            let mut column = row_group.next_column()?.ok_or_else(schema_mismatch)?;
            column.typed::<Int64Type>().write_batch(values, None, None)?;
            column.close()?;
        }
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
    use crate::synthetic::SyntheticDay;
    use bytes::Bytes;
    use parquet::file::reader::{FileReader, SerializedFileReader};
    use parquet::record::Field;

    fn write(records: &[UsageRecord], rows_per_group: usize, drain_every_group: bool) -> Vec<u8> {
        let mut writer = ParquetFileWriter::new(writer_properties(rows_per_group)).unwrap();
        let mut batch = RowBatch::default();
        let mut file = Vec::new();
        for record in records {
            batch.push(record.clone());
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
        let rows = reader
            .get_row_iter(None)
            .unwrap()
            .map(|row| row.unwrap().into_columns())
            .collect();
        (groups, rows)
    }

    #[test]
    fn rows_come_back_field_by_field_even_when_drained_between_row_groups() {
        // GIVEN 25 usage records, written 10 rows per row group, the bytes taken after each group
        let records: Vec<UsageRecord> = SyntheticDay::new("2026-11-23", 25, 7).records().collect();
        let file = write(&records, 10, true);
        // WHEN the file is read back
        let (groups, rows) = read_back(file);
        // THEN every row is there, typed: strings as strings, counts as bigints
        assert_eq!(groups, 3);
        assert_eq!(rows.len(), 25);
        let first = &rows[0];
        let names: Vec<&str> = first.iter().map(|(name, _)| name.as_str()).collect();
        let expected: Vec<&str> = STRING_COLUMNS.iter().chain(BIGINT_COLUMNS.iter()).copied().collect();
        assert_eq!(names, expected);
        for (row, record) in rows.iter().zip(&records) {
            assert_eq!(row[0].1, Field::Str(record.timestamp.clone()));
            assert_eq!(row[1].1, Field::Str(record.tenant_id.clone()));
            assert_eq!(row[4].1, Field::Str(record.request_type.as_str().to_owned()));
            assert_eq!(row[5].1, Field::Str(record.request_id.clone()));
            assert_eq!(row[6].1, Field::Long(record.input_tokens as i64));
            assert_eq!(row[8].1, Field::Long(record.total_tokens as i64));
            assert_eq!(row[11].1, Field::Long(record.cache_read_input_tokens as i64));
        }
    }

    #[test]
    fn draining_does_not_change_the_file() {
        let records: Vec<UsageRecord> = SyntheticDay::new("2026-11-23", 50, 1).records().collect();
        assert_eq!(write(&records, 10, true), write(&records, 10, false));
    }

    #[test]
    fn the_schema_is_the_glue_tables() {
        let schema = schema().unwrap();
        let text = format!("{schema:?}");
        assert_eq!(schema.get_fields().len(), 12);
        assert!(text.contains("cache_read_input_tokens"));
    }
}
