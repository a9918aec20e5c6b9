//! vishwam's host spans as an `XLine` of serialized `XSpace` bytes: a new `/host:CPU` plane
//! where the plugin's trace has none (the CPU plugin, without a profiler), else one more line of
//! the plugin's own `/host:CPU` plane, the only host plane TensorBoard's trace viewer shows.
//!
//! Both edit bytes, never re-encode what the plugin wrote: protobuf appends the repeated fields
//! and map entries of concatenated messages, so a plane's bytes followed by a `lines` field and
//! `event_metadata` entries are that plane with the line added.

use super::protobuf::{DecodeError, FieldReader, FieldWriter};
use super::xspace::XPlane;

/// Where TensorBoard's trace viewer looks for host threads.
pub const HOST_PLANE: &str = "/host:CPU";
/// Name of vishwam's line.
pub const LINE_NAME: &str = "vishwam train loop";

/// A span of vishwam's: a name, a start and a length.
#[derive(Debug, Clone, PartialEq)]
pub struct Span {
    /// Event name.
    pub name: String,
    /// Start, nanoseconds since the Unix epoch (the profiler's clock).
    pub start_ns: i64,
    /// Length in nanoseconds.
    pub duration_ns: i64,
}

/// `XPlane` fields (`lines` = 3, `event_metadata` entries = 4) that add a line `line_id` with
/// `spans` to a plane, their event metadata numbered from `first_metadata_id`.
fn line_fields(line_id: i64, first_metadata_id: i64, spans: &[Span]) -> Vec<u8> {
    let mut names: Vec<&str> = Vec::new();
    for span in spans {
        if !names.contains(&span.name.as_str()) {
            names.push(&span.name);
        }
    }
    let id_of =
        |name: &str| first_metadata_id + names.iter().position(|n| *n == name).unwrap_or(0) as i64;
    let line_start = spans.iter().map(|s| s.start_ns).min().unwrap_or(0);
    let mut line = FieldWriter::default();
    line.int64(1, line_id);
    line.bytes(2, LINE_NAME.as_bytes());
    line.int64(3, line_start);
    for span in spans {
        let mut event = FieldWriter::default();
        event.int64(1, id_of(&span.name));
        event.int64(2, (span.start_ns - line_start) * 1000);
        event.int64(3, span.duration_ns * 1000);
        line.bytes(4, &event.bytes);
    }
    line.bytes(11, LINE_NAME.as_bytes());
    let mut fields = FieldWriter::default();
    fields.bytes(3, &line.bytes);
    for name in &names {
        let id = id_of(name);
        let mut meta = FieldWriter::default();
        meta.int64(1, id);
        meta.bytes(2, name.as_bytes());
        let mut entry = FieldWriter::default();
        entry.int64(1, id);
        entry.bytes(2, &meta.bytes);
        fields.bytes(4, &entry.bytes);
    }
    fields.bytes
}

/// Appends a `/host:CPU` plane `plane_id` holding `spans` (and `hostname`, if given) to
/// serialized `XSpace` bytes.
pub fn append_host_plane(
    space: &mut Vec<u8>,
    plane_id: i64,
    spans: &[Span],
    hostname: Option<&str>,
) {
    let mut plane = FieldWriter::default();
    plane.int64(1, plane_id);
    plane.bytes(2, HOST_PLANE.as_bytes());
    plane.bytes.extend(line_fields(1, 1, spans));
    let mut w = FieldWriter::default();
    w.bytes(1, &plane.bytes);
    if let Some(host) = hostname {
        w.bytes(4, host.as_bytes());
    }
    space.extend_from_slice(&w.bytes);
}

/// Serialized `XSpace` bytes with `spans` added as a new line of plane number `index`
/// (`plane` is that plane decoded: the new line and metadata ids follow its largest ones) and
/// `hostname`, if given; every other field is copied as it was.
pub fn add_to_plane(
    space: &[u8],
    index: usize,
    plane: &XPlane,
    spans: &[Span],
    hostname: Option<&str>,
) -> Result<Vec<u8>, DecodeError> {
    let line_id = plane.lines.iter().map(|l| l.id).max().unwrap_or(0) + 1;
    let metadata_id = plane.event_metadata.keys().max().copied().unwrap_or(0) + 1;
    let mut out = FieldWriter::default();
    let mut r = FieldReader::new(space, "XSpace");
    let mut planes = 0;
    while let Some((field, value)) = r.next_field()? {
        if field == 1 {
            if planes == index {
                let mut bytes = value.bytes(&r, "planes")?.to_vec();
                bytes.extend(line_fields(line_id, metadata_id, spans));
                out.bytes(1, &bytes);
                planes += 1;
                continue;
            }
            planes += 1;
        }
        out.value(field, value);
    }
    if planes <= index {
        return Err(r.error(format!("no plane {index} (it has {planes})")));
    }
    if let Some(host) = hostname {
        out.bytes(4, host.as_bytes());
    }
    Ok(out.bytes)
}

#[cfg(test)]
mod tests {
    use super::super::xspace::XSpace;
    use super::*;

    fn spans() -> Vec<Span> {
        let span = |name: &str, start_ns, duration_ns| Span {
            name: name.into(),
            start_ns,
            duration_ns,
        };
        vec![
            span("step 2", 5_000, 900),
            span("compute", 5_100, 700),
            span("step 3", 6_000, 10),
        ]
    }

    fn events(space: &XSpace, plane: usize, line: usize) -> Vec<(String, i64, i64)> {
        let p = &space.planes[plane];
        p.lines[line]
            .events
            .iter()
            .map(|e| {
                (
                    p.event_name(e.metadata_id),
                    e.offset_ps.unwrap(),
                    e.duration_ps,
                )
            })
            .collect()
    }

    #[test]
    fn a_new_plane_holds_the_spans_in_picoseconds_from_the_line_start() {
        let mut bytes = Vec::new();
        append_host_plane(&mut bytes, 7, &spans(), Some("host-a"));
        let space = XSpace::decode(&bytes).unwrap();
        assert_eq!(space.hostnames, ["host-a"]);
        let plane = &space.planes[0];
        assert_eq!((plane.id, plane.name.as_str()), (7, HOST_PLANE));
        assert_eq!(
            (plane.lines[0].name.as_str(), plane.lines[0].timestamp_ns),
            (LINE_NAME, 5_000)
        );
        assert_eq!(
            events(&space, 0, 0),
            [
                ("step 2".to_string(), 0, 900_000),
                ("compute".to_string(), 100_000, 700_000),
                ("step 3".to_string(), 1_000_000, 10_000),
            ]
        );
    }

    #[test]
    fn spans_join_an_existing_plane_without_touching_its_lines_or_names() {
        // A plugin's space: a device plane, then a host plane whose line 4 uses metadata 1..=2.
        let mut device = FieldWriter::default();
        device.bytes(2, b"/device:GPU:0");
        let mut framed = FieldWriter::default();
        framed.bytes(1, &device.bytes);
        framed.bytes(3, b"a warning");
        let mut space_bytes = framed.bytes.clone();
        append_host_plane(&mut space_bytes, 2, &spans()[1..], None);
        let before = XSpace::decode(&space_bytes).unwrap();
        let host = &before.planes[1];
        let merged = add_to_plane(&space_bytes, 1, host, &spans(), Some("h")).unwrap();
        let after = XSpace::decode(&merged).unwrap();
        assert_eq!(after.planes.len(), 2);
        assert_eq!(after.planes[0], before.planes[0]);
        assert_eq!(
            (after.warnings.as_slice(), after.hostnames.as_slice()),
            (
                ["a warning".to_string()].as_slice(),
                ["h".to_string()].as_slice()
            )
        );
        let plane = &after.planes[1];
        assert_eq!(plane.lines.len(), 2);
        assert_eq!(
            plane.lines[0], host.lines[0],
            "the plugin's line is unchanged"
        );
        assert_eq!(events(&after, 1, 0), events(&before, 1, 0));
        assert_eq!(plane.lines[1].id, host.lines[0].id + 1);
        assert_eq!(events(&after, 1, 1)[0].0, "step 2");
        assert_eq!(events(&after, 1, 1).len(), 3);
        let err = add_to_plane(&space_bytes, 2, host, &spans(), None).unwrap_err();
        assert!(err.to_string().contains("no plane 2 (it has 2)"), "{err}");
    }
}
