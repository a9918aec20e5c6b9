//! The check every source byte passes before it can become text: no binary content, and valid
//! UTF-8 unless replacing is asked for.

use std::io::Read;
use std::path::{Path, PathBuf};

use super::error::DataError;
use super::sources::InvalidUtf8;

/// File headers of binary formats, named in the error: vishwam's own shard files first, as a
/// prepared dataset read as text is the likeliest mistake. Only headers no text file starts
/// with; other binary files are caught by their NUL bytes or invalid UTF-8.
const BINARY_HEADERS: &[(&[u8], &str)] = &[
    (b"VSHTOKNS", "the header of a vishwam token shard"),
    (b"VSHINDEX", "the header of a vishwam shard index"),
    (b"VSHORIGN", "the header of a vishwam shard origin file"),
    (b"\x7fELF", "the header of an ELF executable"),
    (b"\x89PNG", "the header of a PNG image"),
    (b"\xff\xd8\xff", "the header of a JPEG image"),
    (b"\x1f\x8b", "the header of gzip data"),
    (b"PK\x03\x04", "the header of a zip archive"),
];

/// Bytes of the longest entry of [`BINARY_HEADERS`].
const HEADER_BYTES: usize = 8;

/// A reader that passes bytes through unchanged and fails (with a [`DataError`] inside the
/// `io::Error`, see [`read_error`]) at the first binary byte or, with
/// [`InvalidUtf8::Error`], the first byte that is not valid UTF-8.
pub struct TextCheck<R> {
    inner: R,
    path: PathBuf,
    mode: InvalidUtf8,
    /// Bytes read so far.
    offset: u64,
    /// The start of a UTF-8 sequence cut by the end of the last read.
    carry: Vec<u8>,
    /// The file's first bytes, up to the longest binary header.
    head: Vec<u8>,
}

impl<R: Read> TextCheck<R> {
    /// Checks the bytes of `inner`, the contents of the file at `path`.
    pub fn new(inner: R, path: &Path, mode: InvalidUtf8) -> Self {
        TextCheck {
            inner,
            path: path.to_path_buf(),
            mode,
            offset: 0,
            carry: Vec::new(),
            head: Vec::new(),
        }
    }

    fn binary(&self, offset: u64, found: &str) -> std::io::Error {
        std::io::Error::other(DataError::BinaryFile {
            path: self.path.clone(),
            offset,
            found: found.to_string(),
        })
    }

    fn invalid_utf8(&self, offset: u64) -> std::io::Error {
        std::io::Error::other(DataError::InvalidUtf8 {
            path: self.path.clone(),
            offset,
        })
    }

    /// Validates `chunk` (read at `self.offset`) as the continuation of the text so far.
    fn check_utf8(&mut self, chunk: &[u8]) -> std::io::Result<()> {
        let at_end = chunk.is_empty();
        let joined;
        let (bytes, start) = if self.carry.is_empty() {
            (chunk, self.offset)
        } else {
            let start = self.offset - self.carry.len() as u64;
            joined = [std::mem::take(&mut self.carry).as_slice(), chunk].concat();
            (joined.as_slice(), start)
        };
        if let Err(e) = std::str::from_utf8(bytes) {
            let bad = start + e.valid_up_to() as u64;
            match e.error_len() {
                Some(_) => return Err(self.invalid_utf8(bad)),
                // A sequence cut at the end of the file is invalid; one cut by the end of this
                // read is completed by the next.
                None if at_end => return Err(self.invalid_utf8(bad)),
                None => self.carry = bytes[e.valid_up_to()..].to_vec(),
            }
        }
        Ok(())
    }
}

impl<R: Read> Read for TextCheck<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        let chunk = &buf[..n];
        if self.head.len() < HEADER_BYTES {
            let take = n.min(HEADER_BYTES - self.head.len());
            self.head.extend_from_slice(&chunk[..take]);
            let head = &self.head;
            if let Some((_, what)) = BINARY_HEADERS.iter().find(|(h, _)| head.starts_with(h)) {
                return Err(self.binary(0, what));
            }
        }
        if let Some(i) = chunk.iter().position(|&b| b == 0) {
            return Err(self.binary(self.offset + i as u64, "a NUL byte"));
        }
        if self.mode == InvalidUtf8::Error {
            self.check_utf8(chunk)?;
        }
        self.offset += n as u64;
        Ok(n)
    }
}

/// The [`DataError`] of a failed read of `path`: the one [`TextCheck`] raised, or an I/O error.
pub fn read_error(path: &Path, error: std::io::Error) -> DataError {
    if error.get_ref().is_some_and(|inner| inner.is::<DataError>()) {
        if let Some(Ok(data_error)) = error
            .into_inner()
            .map(|inner| inner.downcast::<DataError>())
        {
            return *data_error;
        }
        unreachable!("checked to hold a DataError just above");
    }
    DataError::io("reading", path, error)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads `bytes` through the check in reads of at most `step` bytes.
    fn read_all(bytes: &[u8], step: usize, mode: InvalidUtf8) -> Result<Vec<u8>, DataError> {
        struct Trickle<'a>(&'a [u8], usize);
        impl Read for Trickle<'_> {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                let n = self.0.len().min(self.1).min(buf.len());
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let mut out = Vec::new();
        TextCheck::new(Trickle(bytes, step), Path::new("f.txt"), mode)
            .read_to_end(&mut out)
            .map_err(|e| read_error(Path::new("f.txt"), e))?;
        Ok(out)
    }

    #[test]
    fn valid_text_passes_whatever_the_read_boundaries() {
        let text = "naïve café — 日本語 🙂 end\n".repeat(5);
        for step in [1, 2, 3, 5, 7, 64] {
            assert_eq!(
                read_all(text.as_bytes(), step, InvalidUtf8::Error).unwrap(),
                text.as_bytes()
            );
        }
    }

    #[test]
    fn invalid_utf8_names_the_offset() {
        let mut bytes = "ok ünï ".as_bytes().to_vec();
        let bad = bytes.len() as u64;
        bytes.extend_from_slice(b"caf\xe9 more");
        for step in [1, 3, 4, 100] {
            match read_all(&bytes, step, InvalidUtf8::Error) {
                Err(DataError::InvalidUtf8 { offset, .. }) => assert_eq!(offset, bad + 3),
                other => panic!("{other:?}"),
            }
        }
        // A sequence cut by the end of the file.
        match read_all(
            "ab\u{e9}".as_bytes().split_last().unwrap().1,
            1,
            InvalidUtf8::Error,
        ) {
            Err(DataError::InvalidUtf8 { offset: 2, .. }) => {}
            other => panic!("{other:?}"),
        }
        assert_eq!(read_all(&bytes, 3, InvalidUtf8::Replace).unwrap(), bytes);
    }

    #[test]
    fn binary_content_is_refused_in_every_mode() {
        for mode in [InvalidUtf8::Error, InvalidUtf8::Replace] {
            for step in [3, 64] {
                let err = read_all(b"VSHORIGN\x01\x00\x00\x00", step, mode).unwrap_err();
                assert!(err.to_string().contains("vishwam shard origin"), "{err}");
            }
            let err = read_all(b"text then \x00 a NUL", 4, mode).unwrap_err();
            assert!(
                matches!(err, DataError::BinaryFile { offset: 10, .. }),
                "{err}"
            );
        }
    }
}
