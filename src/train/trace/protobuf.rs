//! The protobuf wire format, as far as profile traces need it: a strict reader of tagged
//! fields and a writer of the same. Wire types: 0 varint, 1 fixed 64-bit, 2 length-delimited,
//! 5 fixed 32-bit (the deprecated group types 3 and 4 are errors).

/// Bytes that are not a well-formed protobuf message of the expected type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed protobuf in {message} at byte {offset}: {detail}")]
pub struct DecodeError {
    /// The message being decoded (`XSpace`, `XPlane`, ...).
    pub message: &'static str,
    /// Offset of the problem inside that message's bytes.
    pub offset: usize,
    /// What was wrong.
    pub detail: String,
}

/// One field's value as it appears on the wire.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum WireValue<'a> {
    /// Wire type 0.
    Varint(u64),
    /// Wire type 1 (`fixed64`, `sfixed64`, `double`).
    Fixed64(u64),
    /// Wire type 2 (strings, bytes, sub-messages, packed repeated fields).
    Bytes(&'a [u8]),
    /// Wire type 5 (`fixed32`, `sfixed32`, `float`).
    Fixed32(u32),
}

/// Walks the fields of one message in order.
pub struct FieldReader<'a> {
    bytes: &'a [u8],
    at: usize,
    message: &'static str,
}

impl<'a> FieldReader<'a> {
    /// A reader over the serialized `message` (its name is used in errors).
    pub fn new(bytes: &'a [u8], message: &'static str) -> Self {
        FieldReader {
            bytes,
            at: 0,
            message,
        }
    }

    /// An error at the current position.
    pub fn error(&self, detail: impl Into<String>) -> DecodeError {
        DecodeError {
            message: self.message,
            offset: self.at,
            detail: detail.into(),
        }
    }

    fn varint(&mut self) -> Result<u64, DecodeError> {
        let mut value = 0u64;
        for shift in (0..70).step_by(7) {
            let Some(&byte) = self.bytes.get(self.at) else {
                return Err(self.error("the message ends inside a varint"));
            };
            self.at += 1;
            if shift == 63 && byte > 1 {
                return Err(self.error("a varint longer than 64 bits"));
            }
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(self.error("a varint longer than 10 bytes"))
    }

    fn take(&mut self, len: usize) -> Result<&'a [u8], DecodeError> {
        let end = self
            .at
            .checked_add(len)
            .filter(|&end| end <= self.bytes.len())
            .ok_or_else(|| {
                self.error(format!(
                    "a field of {len} bytes runs past the end ({} bytes left)",
                    self.bytes.len() - self.at
                ))
            })?;
        let slice = &self.bytes[self.at..end];
        self.at = end;
        Ok(slice)
    }

    /// The next `(field number, value)`, or `None` at the end of the message.
    pub fn next_field(&mut self) -> Result<Option<(u32, WireValue<'a>)>, DecodeError> {
        if self.at == self.bytes.len() {
            return Ok(None);
        }
        let start = self.at;
        let key = self.varint()?;
        let field = key >> 3;
        if field == 0 || field > u64::from(u32::MAX >> 3) {
            self.at = start;
            return Err(self.error(format!("field number {field} (key {key:#x}) is invalid")));
        }
        let value = match key & 7 {
            0 => WireValue::Varint(self.varint()?),
            1 => WireValue::Fixed64(u64::from_le_bytes(
                self.take(8)?.try_into().unwrap_or([0; 8]),
            )),
            2 => {
                let len = self.varint()?;
                let len = usize::try_from(len)
                    .map_err(|_| self.error(format!("length {len} does not fit in memory")))?;
                WireValue::Bytes(self.take(len)?)
            }
            5 => WireValue::Fixed32(u32::from_le_bytes(
                self.take(4)?.try_into().unwrap_or([0; 4]),
            )),
            other => {
                self.at = start;
                return Err(self.error(format!(
                    "field {field} has wire type {other}, which is not 0, 1, 2 or 5"
                )));
            }
        };
        Ok(Some((field as u32, value)))
    }
}

impl<'a> WireValue<'a> {
    /// The value of an `int64`/`uint64`/`bool`/enum field (wire type 0).
    pub fn varint(self, reader: &FieldReader<'_>, field: &str) -> Result<u64, DecodeError> {
        match self {
            WireValue::Varint(v) => Ok(v),
            other => Err(reader.error(format!("`{field}` must be a varint, got {other:?}"))),
        }
    }

    /// The value of an `int64` field (two's complement in a varint).
    pub fn int64(self, reader: &FieldReader<'_>, field: &str) -> Result<i64, DecodeError> {
        self.varint(reader, field).map(|v| v as i64)
    }

    /// The bytes of a string, bytes or sub-message field (wire type 2).
    pub fn bytes(self, reader: &FieldReader<'_>, field: &str) -> Result<&'a [u8], DecodeError> {
        match self {
            WireValue::Bytes(b) => Ok(b),
            other => {
                Err(reader.error(format!("`{field}` must be length-delimited, got {other:?}")))
            }
        }
    }

    /// The value of a `string` field (UTF-8).
    pub fn string(self, reader: &FieldReader<'_>, field: &str) -> Result<String, DecodeError> {
        let bytes = self.bytes(reader, field)?;
        String::from_utf8(bytes.to_vec())
            .map_err(|e| reader.error(format!("`{field}` is not UTF-8: {e}")))
    }
}

/// Appends protobuf fields to a byte vector.
#[derive(Debug, Default, Clone)]
pub struct FieldWriter {
    /// The message so far.
    pub bytes: Vec<u8>,
}

impl FieldWriter {
    fn raw_varint(&mut self, mut value: u64) {
        while value >= 0x80 {
            self.bytes.push((value as u8 & 0x7f) | 0x80);
            value >>= 7;
        }
        self.bytes.push(value as u8);
    }

    /// A varint field (`int64`, `uint64`, `bool`, enums); proto3 leaves zeros out.
    pub fn varint(&mut self, field: u32, value: u64) {
        if value != 0 {
            self.raw_varint(u64::from(field) << 3);
            self.raw_varint(value);
        }
    }

    /// An `int64` field.
    pub fn int64(&mut self, field: u32, value: i64) {
        self.varint(field, value as u64);
    }

    /// A length-delimited field (string, bytes, sub-message), written even when empty.
    pub fn bytes(&mut self, field: u32, value: &[u8]) {
        self.raw_varint((u64::from(field) << 3) | 2);
        self.raw_varint(value.len() as u64);
        self.bytes.extend_from_slice(value);
    }

    /// A field as read by [`FieldReader`], re-encoded as it was (a zero varint included).
    pub fn value(&mut self, field: u32, value: WireValue<'_>) {
        match value {
            WireValue::Varint(v) => {
                self.raw_varint(u64::from(field) << 3);
                self.raw_varint(v);
            }
            WireValue::Fixed64(v) => {
                self.raw_varint((u64::from(field) << 3) | 1);
                self.bytes.extend_from_slice(&v.to_le_bytes());
            }
            WireValue::Bytes(b) => self.bytes(field, b),
            WireValue::Fixed32(v) => {
                self.raw_varint((u64::from(field) << 3) | 5);
                self.bytes.extend_from_slice(&v.to_le_bytes());
            }
        }
    }

    /// A `double` field (wire type 1).
    pub fn double(&mut self, field: u32, value: f64) {
        self.raw_varint((u64::from(field) << 3) | 1);
        self.bytes.extend_from_slice(&value.to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_hand_built_fields_of_every_wire_type() {
        // field 1 varint 150 (the protobuf guide's example), field 2 string "hi",
        // field 3 fixed64 1, field 4 fixed32 2, field 5 varint -1 as int64.
        let mut bytes = vec![0x08, 0x96, 0x01, 0x12, 0x02, b'h', b'i', 0x19];
        bytes.extend_from_slice(&1u64.to_le_bytes());
        bytes.push(0x25);
        bytes.extend_from_slice(&2u32.to_le_bytes());
        bytes.extend_from_slice(&[
            0x28, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
        ]);
        let mut r = FieldReader::new(&bytes, "Test");
        assert_eq!(r.next_field().unwrap(), Some((1, WireValue::Varint(150))));
        let (f, v) = r.next_field().unwrap().unwrap();
        assert_eq!((f, v.string(&r, "s").unwrap()), (2, "hi".to_string()));
        assert_eq!(r.next_field().unwrap(), Some((3, WireValue::Fixed64(1))));
        assert_eq!(r.next_field().unwrap(), Some((4, WireValue::Fixed32(2))));
        let (f, v) = r.next_field().unwrap().unwrap();
        assert_eq!((f, v.int64(&r, "i").unwrap()), (5, -1));
        assert_eq!(r.next_field().unwrap(), None);
    }

    #[test]
    fn malformed_bytes_are_errors_that_say_where() {
        let cases: [(&[u8], &str); 5] = [
            (&[0x08], "ends inside a varint"),
            (&[0x12, 0x05, b'a'], "runs past the end"),
            (&[0x00], "field number 0"),
            (&[0x0b], "wire type 3"),
            (
                &[
                    0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02,
                ],
                "64 bits",
            ),
        ];
        for (bytes, expected) in cases {
            let err = FieldReader::new(bytes, "Test").next_field().unwrap_err();
            assert!(err.to_string().contains(expected), "{bytes:?}: {err}");
            assert!(err.to_string().contains("Test"), "{err}");
        }
        let r = FieldReader::new(&[], "Test");
        let err = WireValue::Varint(1).string(&r, "name").unwrap_err();
        assert!(
            err.to_string().contains("`name` must be length-delimited"),
            "{err}"
        );
    }

    #[test]
    fn the_writer_round_trips_through_the_reader() {
        let mut w = FieldWriter::default();
        w.int64(1, -5);
        w.varint(2, 0); // left out
        w.bytes(3, b"plane");
        w.double(4, 1.5);
        w.value(5, WireValue::Varint(0));
        w.value(6, WireValue::Fixed32(7));
        let mut r = FieldReader::new(&w.bytes, "Test");
        let (f, v) = r.next_field().unwrap().unwrap();
        assert_eq!((f, v.int64(&r, "a").unwrap()), (1, -5));
        assert_eq!(
            r.next_field().unwrap(),
            Some((3, WireValue::Bytes(b"plane")))
        );
        assert_eq!(
            r.next_field().unwrap(),
            Some((4, WireValue::Fixed64(1.5f64.to_bits())))
        );
        assert_eq!(r.next_field().unwrap(), Some((5, WireValue::Varint(0))));
        assert_eq!(r.next_field().unwrap(), Some((6, WireValue::Fixed32(7))));
        assert_eq!(r.next_field().unwrap(), None);
    }
}
