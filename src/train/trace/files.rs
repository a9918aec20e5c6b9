//! Writing one captured window: the `XSpace` for TensorBoard's profile plugin and its Chrome
//! trace for Perfetto.

use super::chrome::chrome_trace;
use super::host_plane::{add_to_plane, append_host_plane, Span, HOST_PLANE};
use super::xspace::XSpace;
use super::StepRange;
use crate::train::TrainError;
use std::io::Write;
use std::path::{Path, PathBuf};

/// What [`write_trace`] wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceFiles {
    /// `RUN/plugins/profile/<stamp>/<host>.xplane.pb`.
    pub xplane: PathBuf,
    /// `RUN/profile/steps_N-M.trace.json.gz`.
    pub chrome: PathBuf,
    /// Planes in the trace.
    pub planes: usize,
    /// Timed events in the trace.
    pub events: usize,
    /// Timed events in the plugin's planes alone.
    pub plugin_events: usize,
    /// Why the plugin's bytes could not be read, if they could not (they are written as
    /// collected, and the Chrome trace holds vishwam's spans only).
    pub undecodable: Option<String>,
}

/// Decodes what a plugin collected. XLA's plugin tracer of some versions reports one byte more
/// than the serialized `XSpace` (a zero past its end); where the bytes do not decode and end
/// in a zero, they are decoded without it.
fn decode_collected(bytes: &[u8]) -> Result<(XSpace, usize), String> {
    match XSpace::decode(bytes) {
        Ok(space) => Ok((space, bytes.len())),
        Err(e) => match bytes.split_last() {
            Some((0, rest)) => XSpace::decode(rest)
                .map(|space| (space, rest.len()))
                .map_err(|_| e.to_string()),
            _ => Err(e.to_string()),
        },
    }
}

/// `YYYY_MM_DD_HH_MM_SS` (UTC) of `time`: the session names TensorBoard's profile plugin
/// lists.
pub fn session_stamp(time: std::time::SystemTime) -> String {
    let [y, mo, d, h, mi, s] = crate::train::resume::utc_fields(time);
    format!("{y:04}_{mo:02}_{d:02}_{h:02}_{mi:02}_{s:02}")
}

/// Writes the trace of `steps` under `run_dir`: the plugin's collected `XSpace` bytes (empty
/// without a profiler) with vishwam's `host_spans` added ([`super::host_plane`]).
pub fn write_trace(
    run_dir: &Path,
    steps: StepRange,
    collected: &[u8],
    host_spans: &[Span],
) -> Result<TraceFiles, TrainError> {
    let host = crate::train::tensorboard::host_name();
    let (plugin_space, mut bytes, undecodable) = match decode_collected(collected) {
        Ok((space, len)) => (space, collected[..len].to_vec(), None),
        Err(e) => (XSpace::default(), Vec::new(), Some(e)),
    };
    let hostname = (!plugin_space.hostnames.contains(&host)).then_some(host.as_str());
    match plugin_space
        .planes
        .iter()
        .position(|p| p.name == HOST_PLANE)
    {
        Some(i) => {
            bytes = add_to_plane(&bytes, i, &plugin_space.planes[i], host_spans, hostname)
                .map_err(|e| TrainError::Other(format!("adding vishwam's spans: {e}")))?;
        }
        None => {
            let plane_id = plugin_space.planes.iter().map(|p| p.id).max().unwrap_or(0) + 1;
            append_host_plane(&mut bytes, plane_id, host_spans, hostname);
        }
    }
    let space = XSpace::decode(&bytes).map_err(|e| {
        TrainError::Other(format!(
            "the trace of steps {steps} does not decode after adding vishwam's spans: {e}"
        ))
    })?;

    let sessions = run_dir.join("plugins").join("profile");
    let stamp = session_stamp(std::time::SystemTime::now());
    let mut session = sessions.join(&stamp);
    let mut n = 1;
    while session.exists() {
        n += 1;
        session = sessions.join(format!("{stamp}_{n}"));
    }
    create_dir(&session)?;
    let xplane = session.join(format!("{host}.xplane.pb"));
    // Undecodable plugin bytes are kept as collected, for other tools to read; vishwam's
    // spans then go only into the Chrome trace.
    let xplane_bytes = if undecodable.is_some() {
        collected
    } else {
        &bytes
    };
    std::fs::write(&xplane, xplane_bytes)
        .map_err(|e| TrainError::io(format!("writing {}", xplane.display()), e))?;

    let chrome_dir = run_dir.join("profile");
    create_dir(&chrome_dir)?;
    let chrome = chrome_dir.join(format!(
        "steps_{}-{}.trace.json.gz",
        steps.first, steps.last
    ));
    let json = serde_json::to_vec(&chrome_trace(&space))
        .map_err(|e| TrainError::Other(format!("serializing the Chrome trace: {e}")))?;
    let write_gz = || -> std::io::Result<()> {
        let file = std::fs::File::create(&chrome)?;
        let mut gz = flate2::write::GzEncoder::new(file, flate2::Compression::default());
        gz.write_all(&json)?;
        gz.finish()?.sync_all()
    };
    write_gz().map_err(|e| TrainError::io(format!("writing {}", chrome.display()), e))?;
    Ok(TraceFiles {
        xplane,
        chrome,
        planes: space.planes.len(),
        events: space.timed_event_count(),
        plugin_events: plugin_space.timed_event_count(),
        undecodable,
    })
}

fn create_dir(dir: &Path) -> Result<(), TrainError> {
    std::fs::create_dir_all(dir)
        .map_err(|e| TrainError::io(format!("creating {}", dir.display()), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spans() -> Vec<Span> {
        vec![Span {
            name: "step 2".into(),
            start_ns: 1_000,
            duration_ns: 50,
        }]
    }

    #[test]
    fn a_window_without_a_profiler_writes_the_host_plane_in_both_formats() {
        let dir = tempfile::tempdir().unwrap();
        let steps = StepRange { first: 2, last: 3 };
        let files = write_trace(dir.path(), steps, &[], &spans()).unwrap();
        assert!(files.chrome.ends_with("profile/steps_2-3.trace.json.gz"));
        let session = files.xplane.parent().unwrap();
        assert_eq!(
            session.parent().unwrap(),
            dir.path().join("plugins/profile")
        );
        let stamp = session.file_name().unwrap().to_str().unwrap();
        assert_eq!(stamp.len(), 19, "{stamp}");
        assert!(files.xplane.to_str().unwrap().ends_with(".xplane.pb"));
        let space = XSpace::decode(&std::fs::read(&files.xplane).unwrap()).unwrap();
        assert_eq!(space.planes[0].name, HOST_PLANE);
        assert_eq!((files.planes, files.events, files.plugin_events), (1, 1, 0));
        // A second window in the same second gets its own session directory.
        let again = write_trace(dir.path(), steps, &[], &spans()).unwrap();
        assert_ne!(again.xplane.parent(), files.xplane.parent());
    }

    #[test]
    fn spans_join_a_plugin_host_plane_and_a_trailing_zero_is_tolerated() {
        let dir = tempfile::tempdir().unwrap();
        let mut collected = Vec::new();
        append_host_plane(&mut collected, 4, &spans(), Some("h"));
        collected.push(0);
        let steps = StepRange { first: 1, last: 1 };
        let files = write_trace(dir.path(), steps, &collected, &spans()).unwrap();
        assert_eq!(files.undecodable, None);
        let space = XSpace::decode(&std::fs::read(&files.xplane).unwrap()).unwrap();
        assert_eq!(space.planes.len(), 1);
        assert_eq!((space.planes[0].id, space.planes[0].lines.len()), (4, 2));
        assert_eq!((files.plugin_events, files.events), (1, 2));
    }

    #[test]
    fn undecodable_plugin_bytes_are_kept_and_reported() {
        let dir = tempfile::tempdir().unwrap();
        let steps = StepRange { first: 1, last: 2 };
        let files = write_trace(dir.path(), steps, &[0x0a, 0x09], &spans()).unwrap();
        assert!(files
            .undecodable
            .as_deref()
            .unwrap()
            .contains("runs past the end"));
        assert_eq!(std::fs::read(&files.xplane).unwrap(), [0x0a, 0x09]);
        assert_eq!(
            files.events, 1,
            "the Chrome trace still has vishwam's spans"
        );
    }

    #[test]
    fn a_real_cuda_plugin_trace_decodes_and_vishwams_spans_join_its_host_plane() {
        // tests/fixtures/README.md says how it was captured.
        let collected = include_bytes!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/xspace/h100_cuda_plugin_0.11.2.xspace.pb"
        ));
        assert!(XSpace::decode(collected).is_err(), "the trailing zero byte");
        let (space, len) = decode_collected(collected).unwrap();
        assert_eq!(len, collected.len() - 1);
        let gpu = space
            .planes
            .iter()
            .find(|p| p.name == "/device:GPU:0")
            .unwrap();
        let names: Vec<&str> = gpu.lines.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, ["Stream #14(Compute)", "Stream #15(MemcpyH2D)"]);
        assert!(gpu.lines[0]
            .events
            .iter()
            .all(|e| e.offset_ps.is_some() && e.duration_ps > 0));

        let dir = tempfile::tempdir().unwrap();
        let steps = StepRange { first: 1, last: 1 };
        let files = write_trace(dir.path(), steps, collected, &spans()).unwrap();
        assert_eq!(files.plugin_events, space.timed_event_count());
        assert_eq!(files.events, files.plugin_events + 1);
        let written = XSpace::decode(&std::fs::read(&files.xplane).unwrap()).unwrap();
        assert_eq!(written.planes.len(), space.planes.len());
        let host = written
            .planes
            .iter()
            .find(|p| p.name == HOST_PLANE)
            .unwrap();
        let before = space.planes.iter().find(|p| p.name == HOST_PLANE).unwrap();
        assert_eq!(host.lines.len(), before.lines.len() + 1);
        assert_eq!(
            host.lines.last().unwrap().name,
            super::super::host_plane::LINE_NAME
        );
    }

    #[test]
    fn session_stamps_are_tensorboards_format() {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_796_553_000);
        assert_eq!(session_stamp(t), "2026_12_06_10_30_00");
    }
}
