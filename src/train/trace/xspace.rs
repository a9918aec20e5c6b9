//! `tensorflow.profiler.XSpace`, the trace a PJRT profiler collects, decoded from and encoded
//! to its protobuf bytes (tsl/profiler/protobuf/xplane.proto):
//!
//! ```text
//! XSpace   { repeated XPlane planes = 1; repeated string errors = 2;
//!            repeated string warnings = 3; repeated string hostnames = 4; }
//! XPlane   { int64 id = 1; string name = 2; repeated XLine lines = 3;
//!            map<int64, XEventMetadata> event_metadata = 4;
//!            map<int64, XStatMetadata> stat_metadata = 5; repeated XStat stats = 6; }
//! XLine    { int64 id = 1; string name = 2; int64 timestamp_ns = 3; repeated XEvent events = 4;
//!            int64 duration_ps = 9; int64 display_id = 10; string display_name = 11; }
//! XEvent   { int64 metadata_id = 1; oneof data { int64 offset_ps = 2; int64 num_occurrences = 5; }
//!            int64 duration_ps = 3; repeated XStat stats = 4; }
//! XStat    { int64 metadata_id = 1; oneof value { double double_value = 2; uint64 uint64_value = 3;
//!            int64 int64_value = 4; string str_value = 5; bytes bytes_value = 6;
//!            uint64 ref_value = 7; } }
//! XEventMetadata { int64 id = 1; string name = 2; bytes metadata = 3; string display_name = 4; ... }
//! XStatMetadata  { int64 id = 1; string name = 2; string description = 3; }
//! ```
//!
//! Fields not listed (and plane-level stats) are skipped as protobuf prescribes for fields a
//! reader does not know, so that a newer profiler's traces still open; malformed bytes and a
//! known field of the wrong wire type are errors.

use super::protobuf::{DecodeError, FieldReader, WireValue};
use std::collections::BTreeMap;

/// A whole trace: one plane per traced device or host thread group.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct XSpace {
    /// The planes (`/host:CPU`, `/device:GPU:0`, ...).
    pub planes: Vec<XPlane>,
    /// Errors the profiler reported.
    pub errors: Vec<String>,
    /// Warnings the profiler reported.
    pub warnings: Vec<String>,
    /// Hosts the trace was taken on.
    pub hostnames: Vec<String>,
}

/// One device or host: timelines (lines) and the metadata their events refer to.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct XPlane {
    /// Plane id.
    pub id: i64,
    /// Plane name (`/device:GPU:0`).
    pub name: String,
    /// Timelines (threads, streams).
    pub lines: Vec<XLine>,
    /// Event names by metadata id.
    pub event_metadata: BTreeMap<i64, XEventMetadata>,
    /// Stat names by metadata id.
    pub stat_metadata: BTreeMap<i64, String>,
}

/// One timeline.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct XLine {
    /// Line id (a thread or stream id).
    pub id: i64,
    /// Line name.
    pub name: String,
    /// Name to show, where set.
    pub display_name: String,
    /// Start of the line; event offsets count from here.
    pub timestamp_ns: i64,
    /// The events, in the order recorded.
    pub events: Vec<XEvent>,
}

/// One event: a span on its line, or an aggregate (`num_occurrences`) with no place in time.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct XEvent {
    /// Key into the plane's `event_metadata`.
    pub metadata_id: i64,
    /// Start, in picoseconds after the line's `timestamp_ns`; `None` for an aggregate.
    pub offset_ps: Option<i64>,
    /// Length in picoseconds.
    pub duration_ps: i64,
    /// Annotations.
    pub stats: Vec<XStat>,
}

/// An event's name and display name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct XEventMetadata {
    /// Name (an HLO op, a kernel, a TraceMe).
    pub name: String,
    /// Name to show, where set.
    pub display_name: String,
}

/// One annotation of an event.
#[derive(Debug, Clone, PartialEq)]
pub struct XStat {
    /// Key into the plane's `stat_metadata` (the stat's name).
    pub metadata_id: i64,
    /// The value.
    pub value: XStatValue,
}

/// The value of an [`XStat`].
#[derive(Debug, Clone, PartialEq)]
pub enum XStatValue {
    /// `double_value`.
    Double(f64),
    /// `uint64_value`.
    Uint(u64),
    /// `int64_value`.
    Int(i64),
    /// `str_value`.
    Str(String),
    /// `bytes_value` (its length is kept, not its bytes).
    Bytes(usize),
    /// `ref_value`: a string kept as the name of another stat metadata entry.
    Ref(u64),
}

fn double_of(v: WireValue<'_>, r: &FieldReader<'_>) -> Result<f64, DecodeError> {
    match v {
        WireValue::Fixed64(bits) => Ok(f64::from_bits(bits)),
        other => Err(r.error(format!("`double_value` must be fixed64, got {other:?}"))),
    }
}

impl XSpace {
    /// Decodes serialized `XSpace` bytes.
    pub fn decode(bytes: &[u8]) -> Result<XSpace, DecodeError> {
        let mut space = XSpace::default();
        let mut r = FieldReader::new(bytes, "XSpace");
        while let Some((field, v)) = r.next_field()? {
            match field {
                1 => space.planes.push(XPlane::decode(v.bytes(&r, "planes")?)?),
                2 => space.errors.push(v.string(&r, "errors")?),
                3 => space.warnings.push(v.string(&r, "warnings")?),
                4 => space.hostnames.push(v.string(&r, "hostnames")?),
                _ => {}
            }
        }
        Ok(space)
    }

    /// Events with a place in time, over all planes and lines.
    pub fn timed_event_count(&self) -> usize {
        self.planes
            .iter()
            .flat_map(|p| &p.lines)
            .flat_map(|l| &l.events)
            .filter(|e| e.offset_ps.is_some())
            .count()
    }
}

impl XPlane {
    fn decode(bytes: &[u8]) -> Result<XPlane, DecodeError> {
        let mut plane = XPlane::default();
        let mut r = FieldReader::new(bytes, "XPlane");
        while let Some((field, v)) = r.next_field()? {
            match field {
                1 => plane.id = v.int64(&r, "id")?,
                2 => plane.name = v.string(&r, "name")?,
                3 => plane.lines.push(XLine::decode(v.bytes(&r, "lines")?)?),
                4 => {
                    let (id, entry) = map_entry(v.bytes(&r, "event_metadata")?, "event_metadata")?;
                    plane
                        .event_metadata
                        .insert(id, XEventMetadata::decode(entry)?);
                }
                5 => {
                    let (id, entry) = map_entry(v.bytes(&r, "stat_metadata")?, "stat_metadata")?;
                    plane.stat_metadata.insert(id, stat_metadata_name(entry)?);
                }
                _ => {}
            }
        }
        Ok(plane)
    }

    /// The name of the stat metadata `id`, where the plane gives one.
    pub fn stat_name(&self, id: i64) -> Option<&str> {
        self.stat_metadata
            .get(&id)
            .map(String::as_str)
            .filter(|n| !n.is_empty())
    }

    /// The text of `event`'s stat called `name`: its string value, or the name its reference
    /// value points to (the CUDA plugin stores repeated texts, such as `hlo_op`, as
    /// references into the plane's stat metadata). `None` where the event has no such stat
    /// or its value is not text.
    pub fn stat_str<'a>(&'a self, event: &'a XEvent, name: &str) -> Option<&'a str> {
        let stat = event
            .stats
            .iter()
            .find(|s| self.stat_name(s.metadata_id) == Some(name))?;
        match &stat.value {
            XStatValue::Str(v) => Some(v.as_str()),
            XStatValue::Ref(id) => self.stat_name(*id as i64),
            _ => None,
        }
    }

    /// The display name (else the name) of the event metadata `id`, or `#id` where the plane
    /// has none.
    pub fn event_name(&self, id: i64) -> String {
        match self.event_metadata.get(&id) {
            Some(m) if !m.display_name.is_empty() => m.display_name.clone(),
            Some(m) if !m.name.is_empty() => m.name.clone(),
            _ => format!("#{id}"),
        }
    }
}

/// A map entry `{ int64 key = 1; V value = 2; }`: the key and the value's bytes.
fn map_entry<'a>(bytes: &'a [u8], map: &'static str) -> Result<(i64, &'a [u8]), DecodeError> {
    let mut r = FieldReader::new(bytes, map);
    let (mut key, mut value) = (0, &[][..]);
    while let Some((field, v)) = r.next_field()? {
        match field {
            1 => key = v.int64(&r, "key")?,
            2 => value = v.bytes(&r, "value")?,
            _ => {}
        }
    }
    Ok((key, value))
}

fn stat_metadata_name(bytes: &[u8]) -> Result<String, DecodeError> {
    let mut r = FieldReader::new(bytes, "XStatMetadata");
    let mut name = String::new();
    while let Some((field, v)) = r.next_field()? {
        if field == 2 {
            name = v.string(&r, "name")?;
        }
    }
    Ok(name)
}

impl XEventMetadata {
    fn decode(bytes: &[u8]) -> Result<XEventMetadata, DecodeError> {
        let mut m = XEventMetadata::default();
        let mut r = FieldReader::new(bytes, "XEventMetadata");
        while let Some((field, v)) = r.next_field()? {
            match field {
                2 => m.name = v.string(&r, "name")?,
                4 => m.display_name = v.string(&r, "display_name")?,
                _ => {}
            }
        }
        Ok(m)
    }
}

impl XLine {
    /// Where `event` (one of this line's) starts, picoseconds since the Unix epoch; `None`
    /// for an aggregate event, which has no place in time.
    pub fn start_ps(&self, event: &XEvent) -> Option<i64> {
        Some(self.timestamp_ns * 1000 + event.offset_ps?)
    }

    fn decode(bytes: &[u8]) -> Result<XLine, DecodeError> {
        let mut line = XLine::default();
        let mut r = FieldReader::new(bytes, "XLine");
        while let Some((field, v)) = r.next_field()? {
            match field {
                1 => line.id = v.int64(&r, "id")?,
                2 => line.name = v.string(&r, "name")?,
                3 => line.timestamp_ns = v.int64(&r, "timestamp_ns")?,
                4 => line.events.push(XEvent::decode(v.bytes(&r, "events")?)?),
                11 => line.display_name = v.string(&r, "display_name")?,
                _ => {}
            }
        }
        Ok(line)
    }
}

impl XEvent {
    fn decode(bytes: &[u8]) -> Result<XEvent, DecodeError> {
        // proto3 leaves a zero offset out: an event with neither oneof member starts at 0.
        let mut event = XEvent {
            offset_ps: Some(0),
            ..XEvent::default()
        };
        let mut r = FieldReader::new(bytes, "XEvent");
        while let Some((field, v)) = r.next_field()? {
            match field {
                1 => event.metadata_id = v.int64(&r, "metadata_id")?,
                2 => event.offset_ps = Some(v.int64(&r, "offset_ps")?),
                3 => event.duration_ps = v.int64(&r, "duration_ps")?,
                4 => event.stats.push(XStat::decode(v.bytes(&r, "stats")?)?),
                5 => {
                    v.int64(&r, "num_occurrences")?;
                    event.offset_ps = None;
                }
                _ => {}
            }
        }
        Ok(event)
    }
}

impl XStat {
    fn decode(bytes: &[u8]) -> Result<XStat, DecodeError> {
        let mut r = FieldReader::new(bytes, "XStat");
        let mut stat = XStat {
            metadata_id: 0,
            value: XStatValue::Int(0),
        };
        while let Some((field, v)) = r.next_field()? {
            stat.value = match field {
                1 => {
                    stat.metadata_id = v.int64(&r, "metadata_id")?;
                    continue;
                }
                2 => XStatValue::Double(double_of(v, &r)?),
                3 => XStatValue::Uint(v.varint(&r, "uint64_value")?),
                4 => XStatValue::Int(v.int64(&r, "int64_value")?),
                5 => XStatValue::Str(v.string(&r, "str_value")?),
                6 => XStatValue::Bytes(v.bytes(&r, "bytes_value")?.len()),
                7 => XStatValue::Ref(v.varint(&r, "ref_value")?),
                _ => continue,
            };
        }
        Ok(stat)
    }
}

#[cfg(test)]
#[path = "xspace_tests.rs"]
mod tests;
