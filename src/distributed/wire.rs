//! The store's wire format: length-prefixed frames of length-prefixed fields.
//!
//! A frame is a little-endian `u32` byte count and that many bytes. A request frame starts
//! with one [`Op`] byte; a response frame with one [`Status`] byte. Fields are either a `u64`
//! (8 bytes, little-endian) or a byte string (a `u32` length, then the bytes: keys and values
//! are arbitrary bytes, NUL included).

use std::io::{self, Read, Write};

/// The largest frame either side accepts (a value of the plugins is kilobytes; this bounds
/// the memory a corrupt length can claim).
pub const MAX_FRAME: usize = 256 << 20;

/// A request's operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Op {
    /// `process_id, num_processes`: this connection is the process's membership connection
    /// (its heartbeats; dropping it without `Done` fails the job).
    Hello = 1,
    /// `key, value`.
    Put = 2,
    /// `key, timeout_ms`: waits until the key exists.
    Get = 3,
    /// `key`.
    TryGet = 4,
    /// `name, process_id, timeout_ms`: waits until every process reached barrier `name`.
    Barrier = 5,
    /// `process_id`.
    Heartbeat = 6,
    /// `process_id, message`: this process failed; the job fails.
    Fail = 7,
    /// `process_id`: this process finished cleanly.
    Done = 8,
}

impl Op {
    /// The op of a request byte.
    pub fn from_byte(b: u8) -> Option<Op> {
        Some(match b {
            1 => Op::Hello,
            2 => Op::Put,
            3 => Op::Get,
            4 => Op::TryGet,
            5 => Op::Barrier,
            6 => Op::Heartbeat,
            7 => Op::Fail,
            8 => Op::Done,
            _ => return None,
        })
    }
}

/// A response's status; the payload follows as one byte string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Status {
    /// Done; the payload is the value (get) or empty.
    Ok = 0,
    /// try-get of a missing key.
    NotFound = 1,
    /// A get or barrier ran out of time.
    Timeout = 2,
    /// The job failed; the payload says why.
    JobFailed = 3,
    /// The request was malformed or refused; the payload says why.
    Refused = 4,
}

impl Status {
    /// The status of a response byte.
    pub fn from_byte(b: u8) -> Option<Status> {
        Some(match b {
            0 => Status::Ok,
            1 => Status::NotFound,
            2 => Status::Timeout,
            3 => Status::JobFailed,
            4 => Status::Refused,
            _ => return None,
        })
    }
}

/// Builds one frame's body.
#[derive(Default)]
pub struct FrameWriter {
    body: Vec<u8>,
}

impl FrameWriter {
    /// A frame that starts with `tag` (an op or a status byte).
    pub fn new(tag: u8) -> FrameWriter {
        FrameWriter { body: vec![tag] }
    }

    /// Appends a `u64`.
    pub fn u64(mut self, v: u64) -> FrameWriter {
        self.body.extend_from_slice(&v.to_le_bytes());
        self
    }

    /// Appends a byte string.
    pub fn bytes(mut self, v: &[u8]) -> FrameWriter {
        self.body.extend_from_slice(&(v.len() as u32).to_le_bytes());
        self.body.extend_from_slice(v);
        self
    }

    /// Writes the frame (length, then body) and flushes.
    pub fn send(self, out: &mut impl Write) -> io::Result<()> {
        if self.body.len() > MAX_FRAME {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "a frame of {} bytes is over the store's limit of {MAX_FRAME}",
                    self.body.len()
                ),
            ));
        }
        let mut frame = Vec::with_capacity(4 + self.body.len());
        frame.extend_from_slice(&(self.body.len() as u32).to_le_bytes());
        frame.extend_from_slice(&self.body);
        out.write_all(&frame)?;
        out.flush()
    }
}

/// Reads the fields of one received frame in order.
pub struct FrameReader {
    body: Vec<u8>,
    at: usize,
}

fn malformed(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

impl FrameReader {
    /// Reads one frame; `Ok(None)` when the peer closed the connection between frames.
    pub fn receive(input: &mut impl Read) -> io::Result<Option<FrameReader>> {
        let mut len = [0u8; 4];
        match input.read_exact(&mut len) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e),
        }
        let len = u32::from_le_bytes(len) as usize;
        if len == 0 || len > MAX_FRAME {
            return Err(malformed(&format!(
                "frame length {len} is outside 1..={MAX_FRAME}"
            )));
        }
        let mut body = vec![0u8; len];
        input.read_exact(&mut body)?;
        Ok(Some(FrameReader { body, at: 1 }))
    }

    /// The frame's first byte (op or status).
    pub fn tag(&self) -> u8 {
        self.body[0]
    }

    /// The next `u64` field.
    pub fn u64(&mut self) -> io::Result<u64> {
        let end = self.at + 8;
        let field = self
            .body
            .get(self.at..end)
            .ok_or_else(|| malformed("frame ends inside a u64 field"))?;
        self.at = end;
        Ok(u64::from_le_bytes(field.try_into().expect("8 bytes")))
    }

    /// The next byte-string field.
    pub fn bytes(&mut self) -> io::Result<Vec<u8>> {
        let len = self.u32_field()? as usize;
        let end = self.at + len;
        let field = self
            .body
            .get(self.at..end)
            .ok_or_else(|| malformed("frame ends inside a byte-string field"))?;
        self.at = end;
        Ok(field.to_vec())
    }

    fn u32_field(&mut self) -> io::Result<u32> {
        let end = self.at + 4;
        let field = self
            .body
            .get(self.at..end)
            .ok_or_else(|| malformed("frame ends inside a length field"))?;
        self.at = end;
        Ok(u32::from_le_bytes(field.try_into().expect("4 bytes")))
    }

    /// Fails unless every byte of the frame was read (a longer frame is a newer protocol).
    pub fn finish(&self) -> io::Result<()> {
        match self.at == self.body.len() {
            true => Ok(()),
            false => Err(malformed(&format!(
                "{} unread bytes at the end of a frame",
                self.body.len() - self.at
            ))),
        }
    }
}

/// A key or value for messages: UTF-8 shown as is, other bytes escaped.
pub fn show_key(key: &[u8]) -> String {
    key.escape_ascii().to_string()
}
