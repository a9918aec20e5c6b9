//! TensorBoard event files: TFRecord framing (masked CRC-32C) around hand-encoded protobuf
//! `tensorflow.Event` messages, as TensorBoard's `EventAccumulator` reads them.
//!
//! The messages and field numbers (tensorflow/core/util/event.proto and
//! tensorflow/core/framework/summary.proto):
//! `Event { double wall_time = 1; int64 step = 2; oneof what { string file_version = 3;
//! Summary summary = 5; SessionLog session_log = 7; } }`,
//! `Summary { repeated Value value = 1; }`, `Summary.Value { string tag = 1; float simple_value = 2; }`,
//! `SessionLog { SessionStatus status = 1; }` with `START = 1`.

use crate::train::TrainError;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// The version string of the first record of every event file.
pub const FILE_VERSION: &str = "brain.Event:2";

/// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78) of `data`.
pub fn crc32c(data: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut table = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut crc = i as u32;
            let mut bit = 0;
            while bit < 8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0x82F6_3B78
                } else {
                    crc >> 1
                };
                bit += 1;
            }
            table[i] = crc;
            i += 1;
        }
        table
    };
    let mut crc = !0u32;
    for &byte in data {
        crc = TABLE[((crc ^ byte as u32) & 0xFF) as usize] ^ (crc >> 8);
    }
    !crc
}

/// The masked CRC-32C that TFRecord stores: `((crc >> 15) | (crc << 17)) + 0xa282ead8`.
pub fn masked_crc32c(data: &[u8]) -> u32 {
    crc32c(data).rotate_right(15).wrapping_add(0xA282_EAD8)
}

/// One TFRecord: length (u64 LE), masked CRC of the length, the data, masked CRC of the data.
pub fn tfrecord(data: &[u8]) -> Vec<u8> {
    let length = (data.len() as u64).to_le_bytes();
    let mut out = Vec::with_capacity(data.len() + 16);
    out.extend_from_slice(&length);
    out.extend_from_slice(&masked_crc32c(&length).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&masked_crc32c(data).to_le_bytes());
    out
}

fn varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8 & 0x7F) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn key(out: &mut Vec<u8>, field: u32, wire_type: u8) {
    varint(out, (u64::from(field) << 3) | u64::from(wire_type));
}

fn length_delimited(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    key(out, field, 2);
    varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// What an event carries besides its time and step.
#[derive(Debug, Clone, PartialEq)]
pub enum EventBody<'a> {
    /// `file_version`: the first record of a file.
    FileVersion(&'a str),
    /// `summary`: scalars as (tag, value).
    Scalars(&'a [(String, f32)]),
    /// `session_log { status: START }`: TensorBoard drops the events of this directory at
    /// this step and later that were written before it (a run restarted from a checkpoint).
    SessionStart,
}

/// The protobuf bytes of `Event { wall_time, step, body }`.
pub fn encode_event(wall_time: f64, step: i64, body: &EventBody<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    key(&mut out, 1, 1);
    out.extend_from_slice(&wall_time.to_le_bytes());
    if step != 0 {
        key(&mut out, 2, 0);
        varint(&mut out, step as u64);
    }
    match body {
        EventBody::FileVersion(version) => length_delimited(&mut out, 3, version.as_bytes()),
        EventBody::Scalars(values) => {
            let mut summary = Vec::new();
            for (tag, value) in values.iter() {
                let mut v = Vec::new();
                length_delimited(&mut v, 1, tag.as_bytes());
                key(&mut v, 2, 5);
                v.extend_from_slice(&value.to_le_bytes());
                length_delimited(&mut summary, 1, &v);
            }
            length_delimited(&mut out, 5, &summary);
        }
        EventBody::SessionStart => length_delimited(&mut out, 7, &[0x08, 0x01]),
    }
    out
}

/// One event file, `events.out.tfevents.<unix seconds>.<host>.<pid>`, new for every process.
pub struct EventWriter {
    file: BufWriter<File>,
    path: PathBuf,
}

impl EventWriter {
    /// Creates a new event file in `dir` (created if missing) and writes its version record.
    pub fn create(dir: &Path) -> Result<Self, TrainError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| TrainError::io(format!("creating {}", dir.display()), e))?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let host = host_name();
        let pid = std::process::id();
        let mut n = 0;
        let (path, file) = loop {
            let suffix = if n == 0 {
                String::new()
            } else {
                format!(".{n}")
            };
            let path = dir.join(format!("events.out.tfevents.{now}.{host}.{pid}{suffix}"));
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(file) => break (path, file),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && n < 100 => n += 1,
                Err(e) => return Err(TrainError::io(format!("creating {}", path.display()), e)),
            }
        };
        let mut writer = EventWriter {
            file: BufWriter::new(file),
            path,
        };
        writer.write(0, &EventBody::FileVersion(FILE_VERSION))?;
        Ok(writer)
    }

    /// The file written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one event at `step`, stamped with the current time, and flushes it to the file.
    pub fn write(&mut self, step: u64, body: &EventBody<'_>) -> Result<(), TrainError> {
        let wall_time = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        let record = tfrecord(&encode_event(wall_time, step as i64, body));
        self.file
            .write_all(&record)
            .and_then(|()| self.file.flush())
            .map_err(|e| TrainError::io(format!("writing {}", self.path.display()), e))
    }
}

/// This machine's host name (characters other than ASCII letters, digits, `-` and `_`
/// become `_`), or `localhost` where it cannot be read.
pub(crate) fn host_name() -> String {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    if name.is_empty() {
        return "localhost".to_string();
    }
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_matches_the_standard_check_values() {
        // The CRC catalogue's check value of CRC-32C, and RFC 3720's 32 zero bytes.
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(&[0u8; 32]), 0x8A91_36AA);
        assert_eq!(crc32c(&[0xFFu8; 32]), 0x62A8_AB43);
    }

    #[test]
    fn masking_rotates_and_adds_the_delta() {
        // ((0xE3069283 >> 15) | (0xE3069283 << 17)) + 0xa282ead8, modulo 2^32.
        assert_eq!(masked_crc32c(b"123456789"), 0xC78A_B0E5);
    }

    #[test]
    fn tfrecord_frames_length_data_and_checksums() {
        let record = tfrecord(b"abc");
        assert_eq!(record.len(), 8 + 4 + 3 + 4);
        assert_eq!(&record[..8], &[3, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(
            &record[8..12],
            &masked_crc32c(&[3, 0, 0, 0, 0, 0, 0, 0]).to_le_bytes()
        );
        assert_eq!(&record[12..15], b"abc");
        assert_eq!(&record[15..], &masked_crc32c(b"abc").to_le_bytes());
    }

    #[test]
    fn events_encode_to_the_protobuf_bytes() {
        let version = encode_event(1.5, 0, &EventBody::FileVersion("brain.Event:2"));
        let mut expected = vec![0x09];
        expected.extend_from_slice(&1.5f64.to_le_bytes());
        expected.extend_from_slice(&[0x1A, 13]);
        expected.extend_from_slice(b"brain.Event:2");
        assert_eq!(version, expected);

        let values = [("train/loss".to_string(), 2.5f32)];
        let scalar = encode_event(0.0, 300, &EventBody::Scalars(&values));
        let mut expected = vec![0x09, 0, 0, 0, 0, 0, 0, 0, 0];
        // step 300 = varint AC 02
        expected.extend_from_slice(&[0x10, 0xAC, 0x02]);
        // summary (5, len 19) { value (1, len 17) { tag (1, len 10), simple_value (2, fixed32) } }
        expected.extend_from_slice(&[0x2A, 19, 0x0A, 17, 0x0A, 10]);
        expected.extend_from_slice(b"train/loss");
        expected.push(0x15);
        expected.extend_from_slice(&2.5f32.to_le_bytes());
        assert_eq!(scalar, expected);

        let start = encode_event(0.0, 7, &EventBody::SessionStart);
        assert_eq!(&start[9..], &[0x10, 7, 0x3A, 2, 0x08, 0x01]);
    }

    #[test]
    fn a_writer_makes_a_new_file_per_call() {
        let dir = tempfile::tempdir().unwrap();
        let a = EventWriter::create(dir.path()).unwrap();
        let b = EventWriter::create(dir.path()).unwrap();
        assert_ne!(a.path(), b.path());
        let bytes = std::fs::read(a.path()).unwrap();
        let length = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        assert_eq!(bytes.len(), 16 + length);
        let data = &bytes[12..12 + length];
        assert!(data.ends_with(FILE_VERSION.as_bytes()));
        assert_eq!(&bytes[12 + length..], &masked_crc32c(data).to_le_bytes());
    }
}
