//! The SQL shape of the `events` table (fixed by the contract) and conversion of decoded
//! segment columns into Arrow arrays.

use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Array, Int64Array, MapArray, StringArray, StructArray, TimestampNanosecondArray};
use arrow::buffer::{Buffer, NullBuffer, OffsetBuffer, ScalarBuffer};
use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};
use arrow::error::ArrowError;
use segments::{ColumnData, ColumnId, StrColumn};

fn map_entries() -> Field {
    Field::new(
        "entries",
        DataType::Struct(Fields::from(vec![
            Field::new("keys", DataType::Utf8, false),
            Field::new("values", DataType::Utf8, true),
        ])),
        false,
    )
}

/// Arrow type and nullability of a stored column.
pub fn field_of(id: ColumnId) -> Field {
    use ColumnId::*;
    let nullable = !matches!(id, Tenant | TraceId | SpanId | AgentId | Timestamp | Kind | Status);
    let dt = match id {
        Timestamp => DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
        Confidence | DurationMs | CostUsd => DataType::Float64,
        InputTokens | OutputTokens => DataType::Int64,
        Attributes => DataType::Map(Arc::new(map_entries()), false),
        _ => DataType::Utf8,
    };
    Field::new(id.name(), dt, nullable)
}

/// Schema of the `events` table: the contract's columns in order (no `timestamp_ns`).
pub fn events_schema() -> SchemaRef {
    Arc::new(Schema::new(ColumnId::ALL.iter().map(|c| field_of(*c)).collect::<Vec<_>>()))
}

fn nulls(validity: &Option<Vec<bool>>) -> Option<NullBuffer> {
    validity.as_deref().map(NullBuffer::from)
}

fn strings(s: StrColumn) -> Result<StringArray, ArrowError> {
    let nulls = nulls(&s.validity);
    StringArray::try_new(OffsetBuffer::new(ScalarBuffer::from(s.offsets)), Buffer::from_vec(s.data), nulls)
}

fn hex_strings(width: usize, bytes: &[u8], validity: &Option<Vec<bool>>) -> Result<StringArray, ArrowError> {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let n = bytes.len() / width.max(1);
    let mut data = Vec::with_capacity(bytes.len() * 2);
    let mut offsets = Vec::with_capacity(n + 1);
    offsets.push(0i32);
    for (i, id) in bytes.chunks_exact(width).enumerate() {
        if validity.as_ref().is_none_or(|v| v[i]) {
            for b in id {
                data.push(DIGITS[(b >> 4) as usize]);
                data.push(DIGITS[(b & 15) as usize]);
            }
        }
        offsets.push(data.len() as i32);
    }
    StringArray::try_new(OffsetBuffer::new(ScalarBuffer::from(offsets)), Buffer::from_vec(data), nulls(validity))
}

/// Convert one decoded column into its Arrow array.
pub fn to_arrow(id: ColumnId, data: ColumnData) -> Result<ArrayRef, ArrowError> {
    Ok(match data {
        ColumnData::Dict(d) => Arc::new(strings(d.to_strings())?),
        ColumnData::Str(s) => Arc::new(strings(s)?),
        ColumnData::Fixed { width, bytes, validity } => Arc::new(hex_strings(width, &bytes, &validity)?),
        ColumnData::Int { values, validity } if id == ColumnId::Timestamp => {
            Arc::new(TimestampNanosecondArray::new(ScalarBuffer::from(values), nulls(&validity)).with_timezone("UTC"))
        }
        ColumnData::Int { values, validity } => Arc::new(Int64Array::new(ScalarBuffer::from(values), nulls(&validity))),
        ColumnData::Float { values, validity } => {
            Arc::new(Float64Array::new(ScalarBuffer::from(values), nulls(&validity)))
        }
        ColumnData::Map { offsets, keys, values } => {
            let DataType::Struct(fields) = map_entries().data_type().clone() else {
                return Err(ArrowError::SchemaError("map entries must be a struct".into()));
            };
            let entries =
                StructArray::try_new(fields, vec![Arc::new(strings(keys)?), Arc::new(strings(values)?)], None)?;
            Arc::new(MapArray::try_new(
                Arc::new(map_entries()),
                OffsetBuffer::new(ScalarBuffer::from(offsets)),
                entries,
                None,
                false,
            )?)
        }
    })
}
