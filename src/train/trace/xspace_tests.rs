use super::*;

/// A length-delimited field: key byte (field << 3 | 2, field < 16), the length as a varint of
/// one or two bytes, the bytes.
fn ld(field: u8, bytes: &[u8]) -> Vec<u8> {
    assert!(bytes.len() < 1 << 14 && field < 16);
    let mut out = vec![(field << 3) | 2];
    let n = bytes.len();
    if n < 128 {
        out.push(n as u8);
    } else {
        out.extend([(n & 0x7f) as u8 | 0x80, (n >> 7) as u8]);
    }
    out.extend_from_slice(bytes);
    out
}

/// A varint field with a value below 128.
fn small(field: u8, value: u8) -> Vec<u8> {
    assert!(value < 128 && field < 16);
    vec![field << 3, value]
}

/// An XSpace built byte by byte from the schema, independent of the encoder.
fn hand_built_space() -> Vec<u8> {
    // XEvent: metadata_id 1, offset_ps 0x64 (100), duration_ps 0x2a (42),
    // stats { metadata_id 7, str_value "fusion" }.
    let stat = [small(1, 7), ld(5, b"fusion")].concat();
    let event1 = [small(1, 1), small(2, 100), small(3, 42), ld(4, &stat)].concat();
    // XEvent: metadata_id 2, no offset (0 left out), duration_ps 5.
    let event2 = [small(1, 2), small(3, 5)].concat();
    // An aggregate: metadata_id 1, num_occurrences 3.
    let aggregate = [small(1, 1), small(5, 3)].concat();
    // XLine: id 4, name "Stream #4", timestamp_ns 0xe807 = 1000 (varint 0xe8 0x07),
    // events, display_name "stream 4", and an unknown field 15 (varint) that is skipped.
    let line = [
        small(1, 4),
        ld(2, b"Stream #4"),
        vec![3 << 3, 0xe8, 0x07],
        ld(4, &event1),
        ld(4, &event2),
        ld(4, &aggregate),
        ld(11, b"stream 4"),
        small(15, 9),
    ]
    .concat();
    // event_metadata map entries {1: {id 1, name "dot.1"}}, {2: {name "copy", display "Copy"}}.
    let meta1 = [small(1, 1), ld(2, b"dot.1")].concat();
    let meta2 = [small(1, 2), ld(2, b"copy"), ld(4, b"Copy")].concat();
    let stat_meta = [small(1, 7), ld(2, b"hlo_op")].concat();
    let plane = [
        small(1, 3),
        ld(2, b"/device:GPU:0"),
        ld(3, &line),
        ld(4, &[small(1, 1), ld(2, &meta1)].concat()),
        ld(4, &[small(1, 2), ld(2, &meta2)].concat()),
        ld(5, &[small(1, 7), ld(2, &stat_meta)].concat()),
    ]
    .concat();
    [ld(1, &plane), ld(3, b"a warning"), ld(4, b"host-a")].concat()
}

#[test]
fn decodes_a_hand_built_space() {
    let space = XSpace::decode(&hand_built_space()).unwrap();
    assert_eq!(space.hostnames, ["host-a"]);
    assert_eq!(space.warnings, ["a warning"]);
    assert!(space.errors.is_empty());
    let plane = &space.planes[0];
    assert_eq!((plane.id, plane.name.as_str()), (3, "/device:GPU:0"));
    assert_eq!(plane.event_name(1), "dot.1");
    assert_eq!(plane.event_name(2), "Copy");
    assert_eq!(plane.event_name(9), "#9");
    assert_eq!(plane.stat_metadata[&7], "hlo_op");
    let line = &plane.lines[0];
    assert_eq!(
        (
            line.id,
            line.name.as_str(),
            line.display_name.as_str(),
            line.timestamp_ns
        ),
        (4, "Stream #4", "stream 4", 1000)
    );
    let e = &line.events;
    assert_eq!(
        (e[0].metadata_id, e[0].offset_ps, e[0].duration_ps),
        (1, Some(100), 42)
    );
    assert_eq!(
        e[0].stats,
        [XStat {
            metadata_id: 7,
            value: XStatValue::Str("fusion".into())
        }]
    );
    assert_eq!((e[1].offset_ps, e[1].duration_ps), (Some(0), 5));
    assert_eq!(e[2].offset_ps, None);
    assert_eq!(space.timed_event_count(), 2);
}

#[test]
fn truncated_or_mistyped_bytes_are_errors() {
    let bytes = hand_built_space();
    let err = XSpace::decode(&bytes[..bytes.len() - 3]).unwrap_err();
    assert!(err.to_string().contains("runs past the end"), "{err}");
    // planes (field 1) as a varint instead of a message.
    let err = XSpace::decode(&[0x08, 0x01]).unwrap_err();
    assert!(
        err.to_string()
            .contains("`planes` must be length-delimited"),
        "{err}"
    );
}
