//! An [`XSpace`] as a Chrome trace (the JSON "Trace Event Format" that Perfetto and
//! `chrome://tracing` open): one process per plane, one thread per line, one complete (`X`)
//! event per timed event, with times in microseconds from the trace's first event.

use super::xspace::{XPlane, XSpace, XStatValue};
use serde_json::{json, Map, Value};

/// The Chrome trace of `space`: `{"traceEvents": [...], "displayTimeUnit": "ns",
/// "otherData": {...}}`. Aggregate events (no place in time) are left out.
pub fn chrome_trace(space: &XSpace) -> Value {
    let origin_ps = space
        .planes
        .iter()
        .flat_map(|p| &p.lines)
        .flat_map(|l| l.events.iter().filter_map(move |e| l.start_ps(e)))
        .min()
        .unwrap_or(0);
    let mut events = Vec::new();
    for (p, plane) in space.planes.iter().enumerate() {
        let pid = p + 1;
        events.push(json!({"ph": "M", "name": "process_name", "pid": pid,
            "args": {"name": plane.name}}));
        events.push(json!({"ph": "M", "name": "process_sort_index", "pid": pid,
            "args": {"sort_index": pid}}));
        for (l, line) in plane.lines.iter().enumerate() {
            let tid = l + 1;
            let name = if line.display_name.is_empty() {
                &line.name
            } else {
                &line.display_name
            };
            events.push(
                json!({"ph": "M", "name": "thread_name", "pid": pid, "tid": tid,
                "args": {"name": name}}),
            );
            for event in &line.events {
                let Some(start_ps) = line.start_ps(event) else {
                    continue;
                };
                let start_ps = start_ps - origin_ps;
                let mut record = json!({
                    "ph": "X", "pid": pid, "tid": tid,
                    "name": plane.event_name(event.metadata_id),
                    "ts": start_ps as f64 / 1e6, "dur": event.duration_ps as f64 / 1e6,
                });
                let args = stat_args(plane, event);
                if !args.is_empty() {
                    record["args"] = Value::Object(args);
                }
                events.push(record);
            }
        }
    }
    json!({
        "traceEvents": events,
        "displayTimeUnit": "ns",
        "otherData": {
            "source": "vishwam (XSpace from the PJRT profiler and vishwam's host spans)",
            "origin_unix_ns": origin_ps / 1000,
            "hostnames": space.hostnames,
            "errors": space.errors,
            "warnings": space.warnings,
        },
    })
}

/// An event's stats as `args`, keyed by their metadata names.
fn stat_args(plane: &XPlane, event: &super::xspace::XEvent) -> Map<String, Value> {
    let name_of = |id: i64| {
        plane
            .stat_name(id)
            .map_or_else(|| format!("#{id}"), str::to_string)
    };
    event
        .stats
        .iter()
        .map(|s| {
            let value = match &s.value {
                XStatValue::Double(v) => json!(v),
                XStatValue::Uint(v) => json!(v),
                XStatValue::Int(v) => json!(v),
                XStatValue::Str(v) => json!(v),
                XStatValue::Bytes(n) => json!(format!("<{n} bytes>")),
                XStatValue::Ref(id) => json!(name_of(*id as i64)),
            };
            (name_of(s.metadata_id), value)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::xspace::{XEvent, XEventMetadata, XLine, XStat};
    use super::*;

    #[test]
    fn planes_become_processes_lines_threads_and_events_microseconds() {
        let mut plane = XPlane {
            id: 1,
            name: "/device:GPU:0".into(),
            ..XPlane::default()
        };
        plane.event_metadata.insert(
            5,
            XEventMetadata {
                name: "fusion.3".into(),
                display_name: String::new(),
            },
        );
        plane.stat_metadata.insert(2, "hlo_module".into());
        plane.stat_metadata.insert(3, "jit_step".into());
        plane.lines.push(XLine {
            id: 7,
            name: "Stream #7".into(),
            timestamp_ns: 2_000,
            events: vec![
                XEvent {
                    metadata_id: 5,
                    offset_ps: Some(1_500_000),
                    duration_ps: 2_500_000,
                    stats: vec![XStat {
                        metadata_id: 2,
                        value: XStatValue::Ref(3),
                    }],
                },
                XEvent {
                    metadata_id: 5,
                    offset_ps: None,
                    duration_ps: 1,
                    stats: vec![],
                },
            ],
            ..XLine::default()
        });
        let host = XPlane {
            name: "/host:CPU".into(),
            lines: vec![XLine {
                name: "steps".into(),
                timestamp_ns: 1_000,
                events: vec![XEvent {
                    metadata_id: 1,
                    offset_ps: Some(0),
                    duration_ps: 10_000_000,
                    stats: vec![],
                }],
                ..XLine::default()
            }],
            ..XPlane::default()
        };
        let space = XSpace {
            planes: vec![plane, host],
            hostnames: vec!["h".into()],
            ..XSpace::default()
        };
        let trace = chrome_trace(&space);
        let events = trace["traceEvents"].as_array().unwrap();
        let complete: Vec<&Value> = events.iter().filter(|e| e["ph"] == "X").collect();
        assert_eq!(complete.len(), 2, "the aggregate event is left out");
        // The host event starts first (1000 ns): it is the origin.
        let kernel = complete[0];
        assert_eq!(kernel["name"], "fusion.3");
        assert_eq!(
            (kernel["pid"].as_u64(), kernel["tid"].as_u64()),
            (Some(1), Some(1))
        );
        assert_eq!(kernel["ts"].as_f64(), Some(2.5)); // 2000 ns + 1.5 us - 1000 ns
        assert_eq!(kernel["dur"].as_f64(), Some(2.5));
        assert_eq!(kernel["args"]["hlo_module"], "jit_step");
        let step = complete[1];
        assert_eq!(
            (step["name"].as_str(), step["ts"].as_f64()),
            (Some("#1"), Some(0.0))
        );
        let names: Vec<(&str, &str)> = events
            .iter()
            .filter(|e| e["ph"] == "M" && e["name"] != "process_sort_index")
            .map(|e| {
                (
                    e["name"].as_str().unwrap(),
                    e["args"]["name"].as_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            names,
            [
                ("process_name", "/device:GPU:0"),
                ("thread_name", "Stream #7"),
                ("process_name", "/host:CPU"),
                ("thread_name", "steps"),
            ]
        );
        assert_eq!(trace["otherData"]["origin_unix_ns"], 1_000);
    }
}
