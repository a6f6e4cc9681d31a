//! Event payloads decoded from the trace's own metadata.
//!
//! A nettrace stream describes every event type once, in a metadata record: provider, event id,
//! name and the list of payload fields with their types, nested objects and arrays included.
//! [`EventMetadata::parse`] reads such a record (the V1 field list, or the V5 `V2Params` tag that
//! replaces it when a field is an array) and [`EventMetadata::decode`] reads an event's payload
//! with it into a [`Value`] tree. [`EventDecoder`] keeps the metadata of one stream and decodes
//! its events as a [`RecordObserver`](super::nettrace::RecordObserver) hands them over.
//!
//! Nothing here trusts the runtime: every length is bounded by the bytes that hold it, nesting
//! is limited, and a record that does not fit its description is an error, never a panic.

use std::collections::HashMap;

use super::nettrace::NettraceRecord;

/// How deeply objects and arrays may nest in a field description.
const MAX_DEPTH: u32 = 16;
/// How many event types one stream may describe before later ones are ignored.
const MAX_METADATA: usize = 100_000;
/// `TypeCode` values of EventPipe field descriptions (.NET's `TypeCode`, plus Guid and Array).
mod type_code {
    pub const EMPTY: u32 = 0;
    pub const OBJECT: u32 = 1;
    pub const DB_NULL: u32 = 2;
    pub const BOOLEAN: u32 = 3;
    pub const CHAR: u32 = 4;
    pub const SBYTE: u32 = 5;
    pub const BYTE: u32 = 6;
    pub const INT16: u32 = 7;
    pub const UINT16: u32 = 8;
    pub const INT32: u32 = 9;
    pub const UINT32: u32 = 10;
    pub const INT64: u32 = 11;
    pub const UINT64: u32 = 12;
    pub const SINGLE: u32 = 13;
    pub const DOUBLE: u32 = 14;
    pub const DECIMAL: u32 = 15;
    pub const DATE_TIME: u32 = 16;
    pub const GUID: u32 = 17;
    pub const STRING: u32 = 18;
    pub const ARRAY: u32 = 19;
}
/// The V5 metadata tag that carries a field list with arrays (`V2Params`).
const TAG_V2_PARAMS: u8 = 2;

/// Why a metadata record or a payload could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    /// The bytes end before what they describe.
    #[error("{0} runs past the end of the record")]
    Short(&'static str),
    /// A type code that EventPipe does not define.
    #[error("unknown field type code {0}")]
    UnknownType(u32),
    /// Objects or arrays nested deeper than any real event.
    #[error("fields nested more than {MAX_DEPTH} deep")]
    TooDeep,
    /// A string that is not UTF-16 or not terminated.
    #[error("{0} is not a terminated UTF-16 string")]
    BadString(&'static str),
    /// An event refers to metadata the stream never defined.
    #[error("no metadata record defines id {0}")]
    UnknownMetadata(u32),
    /// A payload with bytes left over after its last field.
    #[error("{0} bytes left after the last field")]
    Leftover(usize),
}

/// The type of one payload field.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldType {
    /// No bytes (`Empty`, `DBNull`).
    Empty,
    /// 4-byte boolean.
    Boolean,
    /// One UTF-16 code unit.
    Char,
    /// Signed integer of this many bytes (1, 2, 4, 8).
    Signed(u8),
    /// Unsigned integer of this many bytes (1, 2, 4, 8).
    Unsigned(u8),
    /// IEEE 754 single.
    Single,
    /// IEEE 754 double.
    Double,
    /// .NET decimal, 16 bytes (kept raw).
    Decimal,
    /// FILETIME ticks, 8 bytes.
    DateTime,
    /// 16 bytes.
    Guid,
    /// NUL-terminated UTF-16.
    String,
    /// Fields one after the other.
    Object(Vec<Field>),
    /// `u16` count, then that many elements.
    Array(Box<FieldType>),
}

/// A named payload field.
#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    /// The field's name (empty for the unnamed top-level object of a self-describing event).
    pub name: String,
    /// Its type.
    pub ty: FieldType,
}

/// One event type, as a metadata record describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct EventMetadata {
    /// The id events refer to.
    pub id: u32,
    /// The provider (EventSource) name.
    pub provider: String,
    /// The event id within the provider.
    pub event_id: u32,
    /// The event name (empty for most runtime-native events on .NET Core 3.1).
    pub name: String,
    /// The payload's fields, in order.
    pub fields: Vec<Field>,
}

/// A decoded payload value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A field without bytes.
    Null,
    /// A boolean.
    Bool(bool),
    /// A signed integer (or a char's code unit).
    Int(i64),
    /// An unsigned integer.
    UInt(u64),
    /// A floating-point number.
    Float(f64),
    /// A string.
    String(String),
    /// Raw bytes of a Guid or decimal.
    Bytes([u8; 16]),
    /// FILETIME ticks.
    DateTime(i64),
    /// Named fields in order.
    Object(Vec<(String, Value)>),
    /// Elements in order.
    Array(Vec<Value>),
}

impl Value {
    /// The field `name` of an object, looking through unnamed wrapper objects.
    pub fn field(&self, name: &str) -> Option<&Value> {
        let Value::Object(fields) = self else {
            return None;
        };
        fields.iter().find_map(|(field, value)| {
            if field == name {
                Some(value)
            } else if field.is_empty() {
                value.field(name)
            } else {
                None
            }
        })
    }

    /// The value as a number, if it is one.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Int(v) => Some(*v as f64),
            Value::UInt(v) => Some(*v as f64),
            Value::Float(v) => Some(*v),
            _ => None,
        }
    }

    /// The value as a string, if it is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(text) => Some(text),
            _ => None,
        }
    }
}

/// An event decoded with its metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodedEvent<'m> {
    /// What describes it.
    pub metadata: &'m EventMetadata,
    /// Its payload: an object of the top-level fields.
    pub payload: Value,
}

impl EventMetadata {
    /// Reads a V3-V5 metadata record: `i32 id`, UTF-16z provider, `i32 eventId`, UTF-16z name,
    /// `i64 keywords`, `i32 version`, `i32 level`, the V1 field list, then optional V5 tags (a
    /// `V2Params` tag replaces the field list).
    pub fn parse(record: &[u8]) -> Result<Self, PayloadError> {
        let mut r = Reader::new(record);
        let id = r.u32("the metadata id")?;
        let provider = r.utf16z("the provider name")?;
        // A record may stop after the provider (an event without a description).
        if r.remaining() == 0 {
            return Ok(EventMetadata {
                id,
                provider,
                event_id: 0,
                name: String::new(),
                fields: Vec::new(),
            });
        }
        let event_id = r.u32("the event id")?;
        let name = r.utf16z("the event name")?;
        r.skip(16, "keywords, version and level")?;
        let count = r.u32("the field count")?;
        let mut fields = v1_fields(&mut r, count, 0)?;
        while r.remaining() > 0 {
            let length = r.u32("a metadata tag's length")? as usize;
            let kind = r.u8("a metadata tag's kind")?;
            let body = r.take(length, "a metadata tag")?;
            if kind == TAG_V2_PARAMS {
                let mut tag = Reader::new(body);
                let count = tag.u32("the V2 field count")?;
                fields = v2_fields(&mut tag, count, 0)?;
            }
        }
        Ok(EventMetadata {
            id,
            provider,
            event_id,
            name,
            fields,
        })
    }

    /// Decodes an event payload described by this metadata into an object of its fields.
    pub fn decode(&self, payload: &[u8]) -> Result<Value, PayloadError> {
        let mut r = Reader::new(payload);
        let value = read_object(&mut r, &self.fields)?;
        match r.remaining() {
            0 => Ok(value),
            left => Err(PayloadError::Leftover(left)),
        }
    }
}

/// The V1 field list: per field `i32 typeCode`, for an object `i32 count` and its fields, then
/// the UTF-16z name.
fn v1_fields(r: &mut Reader<'_>, count: u32, depth: u32) -> Result<Vec<Field>, PayloadError> {
    if depth > MAX_DEPTH {
        return Err(PayloadError::TooDeep);
    }
    // Each field takes at least 6 bytes, which bounds the allocation by the record's size.
    let mut fields = Vec::with_capacity((count as usize).min(r.remaining() / 6));
    for _ in 0..count {
        let code = r.u32("a field's type code")?;
        let ty = if code == type_code::OBJECT {
            let nested = r.u32("an object's field count")?;
            FieldType::Object(v1_fields(r, nested, depth + 1)?)
        } else {
            scalar_type(code)?
        };
        let name = r.utf16z("a field name")?;
        fields.push(Field { name, ty });
    }
    Ok(fields)
}

/// The V2 field list: per field `u32 size`, UTF-16z name, then its type.
fn v2_fields(r: &mut Reader<'_>, count: u32, depth: u32) -> Result<Vec<Field>, PayloadError> {
    if depth > MAX_DEPTH {
        return Err(PayloadError::TooDeep);
    }
    let mut fields = Vec::with_capacity((count as usize).min(r.remaining() / 8));
    for _ in 0..count {
        r.u32("a field's size")?;
        let name = r.utf16z("a field name")?;
        let ty = v2_type(r, depth)?;
        fields.push(Field { name, ty });
    }
    Ok(fields)
}

/// A V2 type: `u32 typeCode`, then for an object `u32 count` and its fields, for an array the
/// element type.
fn v2_type(r: &mut Reader<'_>, depth: u32) -> Result<FieldType, PayloadError> {
    if depth > MAX_DEPTH {
        return Err(PayloadError::TooDeep);
    }
    match r.u32("a field's type code")? {
        type_code::OBJECT => {
            let count = r.u32("an object's field count")?;
            Ok(FieldType::Object(v2_fields(r, count, depth + 1)?))
        }
        type_code::ARRAY => Ok(FieldType::Array(Box::new(v2_type(r, depth + 1)?))),
        code => scalar_type(code),
    }
}

fn scalar_type(code: u32) -> Result<FieldType, PayloadError> {
    use type_code::*;
    Ok(match code {
        EMPTY | DB_NULL => FieldType::Empty,
        BOOLEAN => FieldType::Boolean,
        CHAR => FieldType::Char,
        SBYTE => FieldType::Signed(1),
        BYTE => FieldType::Unsigned(1),
        INT16 => FieldType::Signed(2),
        UINT16 => FieldType::Unsigned(2),
        INT32 => FieldType::Signed(4),
        UINT32 => FieldType::Unsigned(4),
        INT64 => FieldType::Signed(8),
        UINT64 => FieldType::Unsigned(8),
        SINGLE => FieldType::Single,
        DOUBLE => FieldType::Double,
        DECIMAL => FieldType::Decimal,
        DATE_TIME => FieldType::DateTime,
        GUID => FieldType::Guid,
        STRING => FieldType::String,
        other => return Err(PayloadError::UnknownType(other)),
    })
}

fn read_object(r: &mut Reader<'_>, fields: &[Field]) -> Result<Value, PayloadError> {
    let mut values = Vec::with_capacity(fields.len());
    for field in fields {
        values.push((field.name.clone(), read_value(r, &field.ty)?));
    }
    Ok(Value::Object(values))
}

fn read_value(r: &mut Reader<'_>, ty: &FieldType) -> Result<Value, PayloadError> {
    Ok(match ty {
        FieldType::Empty => Value::Null,
        FieldType::Boolean => Value::Bool(r.u32("a boolean")? != 0),
        FieldType::Char => Value::Int(i64::from(r.u16("a char")?)),
        FieldType::Signed(size) => {
            let bytes = r.take(usize::from(*size), "an integer")?;
            let mut wide = [0u8; 8];
            wide[..bytes.len()].copy_from_slice(bytes);
            // Sign-extend from the field's width.
            let shift = 64 - 8 * u32::from(*size);
            Value::Int((i64::from_le_bytes(wide) << shift) >> shift)
        }
        FieldType::Unsigned(size) => {
            let bytes = r.take(usize::from(*size), "an integer")?;
            let mut wide = [0u8; 8];
            wide[..bytes.len()].copy_from_slice(bytes);
            Value::UInt(u64::from_le_bytes(wide))
        }
        FieldType::Single => Value::Float(f64::from(f32::from_bits(r.u32("a single")?))),
        FieldType::Double => Value::Float(f64::from_bits(r.u64("a double")?)),
        FieldType::Decimal | FieldType::Guid => Value::Bytes(r.array("a guid or decimal")?),
        FieldType::DateTime => Value::DateTime(r.u64("a date")?.cast_signed()),
        FieldType::String => Value::String(r.utf16z("a string field")?),
        FieldType::Object(fields) => read_object(r, fields)?,
        FieldType::Array(element) => {
            let count = r.u16("an array's length")?;
            let mut items = Vec::with_capacity(usize::from(count).min(r.remaining()));
            for _ in 0..count {
                items.push(read_value(r, element)?);
            }
            Value::Array(items)
        }
    })
}

/// The metadata of one stream, and its events decoded with it.
#[derive(Debug, Default)]
pub struct EventDecoder {
    metadata: HashMap<u32, EventMetadata>,
}

impl EventDecoder {
    /// A decoder that has seen no metadata yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes one record: a metadata record is remembered (`Ok(None)`); an event is decoded.
    pub fn on_record<'d>(
        &'d mut self,
        record: NettraceRecord<'_>,
    ) -> Result<Option<DecodedEvent<'d>>, PayloadError> {
        match record {
            NettraceRecord::Metadata(bytes) => {
                let metadata = EventMetadata::parse(bytes)?;
                if self.metadata.len() < MAX_METADATA || self.metadata.contains_key(&metadata.id) {
                    self.metadata.insert(metadata.id, metadata);
                }
                Ok(None)
            }
            NettraceRecord::Event {
                metadata_id,
                payload,
            } => {
                let metadata = self
                    .metadata
                    .get(&metadata_id)
                    .ok_or(PayloadError::UnknownMetadata(metadata_id))?;
                Ok(Some(DecodedEvent {
                    metadata,
                    payload: metadata.decode(payload)?,
                }))
            }
        }
    }
}

/// A bounds-checked little-endian reader.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Reader { bytes }
    }

    fn remaining(&self) -> usize {
        self.bytes.len()
    }

    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], PayloadError> {
        if n > self.bytes.len() {
            return Err(PayloadError::Short(what));
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Ok(head)
    }

    fn skip(&mut self, n: usize, what: &'static str) -> Result<(), PayloadError> {
        self.take(n, what).map(|_| ())
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], PayloadError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, PayloadError> {
        Ok(self.array::<1>(what)?[0])
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, PayloadError> {
        Ok(u16::from_le_bytes(self.array(what)?))
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, PayloadError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &'static str) -> Result<u64, PayloadError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    fn utf16z(&mut self, what: &'static str) -> Result<String, PayloadError> {
        let units = self.bytes.chunks_exact(2);
        let Some(end) = units
            .clone()
            .position(|unit| unit == [0, 0])
            .map(|index| index * 2)
        else {
            return Err(PayloadError::BadString(what));
        };
        let text = char::decode_utf16(
            self.bytes[..end]
                .chunks_exact(2)
                .map(|unit| u16::from_le_bytes([unit[0], unit[1]])),
        )
        .collect::<Result<String, _>>()
        .map_err(|_| PayloadError::BadString(what))?;
        self.bytes = &self.bytes[end + 2..];
        Ok(text)
    }
}

/// Encoders of metadata records and payloads, as a runtime writes them, for tests here and in
/// the metrics module.
#[cfg(test)]
pub(crate) mod encode {
    /// UTF-16LE with a NUL terminator.
    pub fn utf16z(text: &str) -> Vec<u8> {
        let mut out: Vec<u8> = text.encode_utf16().flat_map(u16::to_le_bytes).collect();
        out.extend([0, 0]);
        out
    }

    /// A V1 metadata record with an already encoded field list of `count` fields.
    pub fn metadata(
        id: u32,
        provider: &str,
        event_id: u32,
        name: &str,
        count: u32,
        fields: &[u8],
    ) -> Vec<u8> {
        let mut out = id.to_le_bytes().to_vec();
        out.extend(utf16z(provider));
        out.extend(event_id.to_le_bytes());
        out.extend(utf16z(name));
        out.extend(0u64.to_le_bytes());
        out.extend(0u32.to_le_bytes());
        out.extend(4u32.to_le_bytes());
        out.extend(count.to_le_bytes());
        out.extend(fields);
        out
    }

    /// A V1 scalar field description.
    pub fn scalar(code: u32, name: &str) -> Vec<u8> {
        let mut out = code.to_le_bytes().to_vec();
        out.extend(utf16z(name));
        out
    }

    /// A V1 object field description of `count` already encoded fields.
    pub fn object(count: u32, fields: &[u8], name: &str) -> Vec<u8> {
        let mut out = 1u32.to_le_bytes().to_vec();
        out.extend(count.to_le_bytes());
        out.extend(fields);
        out.extend(utf16z(name));
        out
    }

    /// The metadata of .NET's `EventCounters` event with a mean-counter payload.
    pub fn event_counters_metadata(id: u32, provider: &str) -> Vec<u8> {
        let mut payload = Vec::new();
        for (code, name) in [
            (18, "Name"),
            (18, "DisplayName"),
            (14, "Mean"),
            (14, "StandardDeviation"),
            (9, "Count"),
            (14, "Min"),
            (14, "Max"),
            (13, "IntervalSec"),
            (18, "Series"),
            (18, "CounterType"),
            (18, "Metadata"),
            (18, "DisplayUnits"),
        ] {
            payload.extend(scalar(code, name));
        }
        let wrapper = object(1, &object(12, &payload, "Payload"), "");
        metadata(id, provider, 2, "EventCounters", 1, &wrapper)
    }

    /// An `EventCounters` payload for a mean counter.
    pub fn mean_counter(name: &str, mean: f64, units: &str) -> Vec<u8> {
        let mut out = utf16z(name);
        out.extend(utf16z(name));
        out.extend(mean.to_le_bytes());
        out.extend(0f64.to_le_bytes());
        out.extend(1i32.to_le_bytes());
        out.extend(mean.to_le_bytes());
        out.extend(mean.to_le_bytes());
        out.extend(1f32.to_le_bytes());
        out.extend(utf16z("Interval=1000"));
        out.extend(utf16z("Mean"));
        out.extend(utf16z(""));
        out.extend(utf16z(units));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::encode::*;
    use super::*;

    #[test]
    fn nested_event_counters_payload_decodes_by_its_metadata() {
        let mut decoder = EventDecoder::new();
        let metadata = event_counters_metadata(3, "System.Runtime");
        assert!(
            decoder
                .on_record(NettraceRecord::Metadata(&metadata))
                .unwrap()
                .is_none()
        );
        let payload = mean_counter("cpu-usage", 12.5, "%");
        let event = decoder
            .on_record(NettraceRecord::Event {
                metadata_id: 3,
                payload: &payload,
            })
            .unwrap()
            .unwrap();
        assert_eq!(event.metadata.provider, "System.Runtime");
        assert_eq!(event.metadata.name, "EventCounters");
        let counter = event.payload.field("Payload").unwrap();
        assert_eq!(counter.field("Name").unwrap().as_str(), Some("cpu-usage"));
        assert_eq!(counter.field("Mean").unwrap().as_f64(), Some(12.5));
        assert_eq!(counter.field("Count").unwrap().as_f64(), Some(1.0));
        assert_eq!(counter.field("IntervalSec").unwrap().as_f64(), Some(1.0));
        assert_eq!(counter.field("DisplayUnits").unwrap().as_str(), Some("%"));
    }

    #[test]
    fn v2_params_describe_arrays() {
        // V1 list empty; a V2Params tag: one field "Values", an array of i32.
        let mut v2 = 1u32.to_le_bytes().to_vec();
        let mut field = utf16z("Values");
        field.extend(19u32.to_le_bytes());
        field.extend(9u32.to_le_bytes());
        v2.extend((4 + field.len() as u32).to_le_bytes());
        v2.extend(field);
        let mut record = metadata(5, "P", 1, "E", 0, &[]);
        record.extend((v2.len() as u32).to_le_bytes());
        record.push(TAG_V2_PARAMS);
        record.extend(&v2);
        let metadata = EventMetadata::parse(&record).unwrap();
        assert_eq!(
            metadata.fields,
            vec![Field {
                name: "Values".into(),
                ty: FieldType::Array(Box::new(FieldType::Signed(4)))
            }]
        );
        let mut payload = 3u16.to_le_bytes().to_vec();
        for v in [-1i32, 2, 3] {
            payload.extend(v.to_le_bytes());
        }
        assert_eq!(
            metadata.decode(&payload).unwrap().field("Values"),
            Some(&Value::Array(vec![
                Value::Int(-1),
                Value::Int(2),
                Value::Int(3)
            ]))
        );
    }

    #[test]
    fn scalar_types_decode_with_their_widths() {
        let mut fields = Vec::new();
        for (code, name) in [
            (3, "b"),
            (5, "sb"),
            (8, "u16"),
            (11, "i64"),
            (13, "f"),
            (17, "g"),
        ] {
            fields.extend(scalar(code, name));
        }
        let metadata = EventMetadata::parse(&metadata(1, "P", 1, "E", 6, &fields)).unwrap();
        let mut payload = 1u32.to_le_bytes().to_vec();
        payload.push(0xFF);
        payload.extend(65535u16.to_le_bytes());
        payload.extend((-5i64).to_le_bytes());
        payload.extend(2.5f32.to_le_bytes());
        payload.extend([7u8; 16]);
        let value = metadata.decode(&payload).unwrap();
        assert_eq!(value.field("b"), Some(&Value::Bool(true)));
        assert_eq!(value.field("sb"), Some(&Value::Int(-1)));
        assert_eq!(value.field("u16"), Some(&Value::UInt(65535)));
        assert_eq!(value.field("i64"), Some(&Value::Int(-5)));
        assert_eq!(value.field("f"), Some(&Value::Float(2.5)));
        assert_eq!(value.field("g"), Some(&Value::Bytes([7; 16])));
    }

    #[test]
    fn malformed_records_are_errors_not_panics() {
        let metadata = event_counters_metadata(3, "System.Runtime");
        // Every truncation of the metadata record fails cleanly (or parses a prefix).
        for cut in 0..metadata.len() {
            let _ = EventMetadata::parse(&metadata[..cut]);
        }
        let parsed = EventMetadata::parse(&metadata).unwrap();
        let payload = mean_counter("x", 1.0, "");
        for cut in 0..payload.len() {
            assert!(parsed.decode(&payload[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = payload.clone();
        longer.push(0);
        assert_eq!(parsed.decode(&longer), Err(PayloadError::Leftover(1)));
        assert_eq!(
            EventMetadata::parse(&self::encode::metadata(1, "P", 1, "E", 1, &scalar(99, "x"))),
            Err(PayloadError::UnknownType(99))
        );
        // Objects nested past the limit.
        let mut nested = scalar(9, "leaf");
        for _ in 0..20 {
            nested = object(1, &nested, "o");
        }
        assert_eq!(
            EventMetadata::parse(&self::encode::metadata(1, "P", 1, "E", 1, &nested)),
            Err(PayloadError::TooDeep)
        );
        let mut decoder = EventDecoder::new();
        assert_eq!(
            decoder
                .on_record(NettraceRecord::Event {
                    metadata_id: 9,
                    payload: &[]
                })
                .unwrap_err(),
            PayloadError::UnknownMetadata(9)
        );
    }
}
