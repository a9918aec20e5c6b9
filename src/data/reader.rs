//! Reading resolved sources into documents, streamed on a background thread.
//!
//! Reading yields [`Piece`]s of documents ([`PieceStream`]). Documents are streamed, never
//! collected: only one piece of at most `max_piece_bytes` (plus one line) is held per file.
//! Every byte passes [`super::text_check::TextCheck`]: binary content (a NUL byte, a known
//! binary header such as a token shard's) is an error naming the file and offset, and so is
//! invalid UTF-8 unless `invalid_utf8` is `replace` (then replaced by U+FFFD, counted in
//! [`SourceStats`] and warned about). Empty files and blank documents are counted and skipped.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::sync::mpsc::{sync_channel, Receiver};
use std::thread::JoinHandle;

use serde::{Deserialize, Serialize};

use super::error::{DataError, Result};
use super::sources::{FileFormat, ResolvedSources, SourceFile, SourceSpec, TextDocuments};
use super::text_check::{read_error, TextCheck};

/// A piece of a document; a document ends with the piece whose `ends_document` is set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Piece {
    /// The text (with `invalid_utf8 = replace`, invalid sequences replaced by U+FFFD).
    pub text: String,
    /// Whether this is the document's last piece.
    pub ends_document: bool,
}

/// What reading the sources found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceStats {
    /// Files read.
    pub files: u64,
    /// Documents produced.
    pub documents: u64,
    /// Bytes of text produced.
    pub bytes: u64,
    /// Files with no content at all (skipped with a warning).
    pub empty_files: u64,
    /// Documents of only whitespace (skipped, counted, warned about).
    pub blank_documents: u64,
    /// Invalid UTF-8 sequences replaced by U+FFFD (warned about per file).
    pub invalid_utf8_sequences: u64,
}

/// Documents of resolved sources, read in order on a background thread.
pub struct PieceStream {
    receiver: Receiver<Result<Piece>>,
    reader: Option<JoinHandle<SourceStats>>,
}

impl PieceStream {
    /// Starts reading `sources`; at most `buffered` pieces wait in memory.
    pub fn start(sources: &ResolvedSources, buffered: usize) -> Self {
        let (sender, receiver) = sync_channel(buffered.max(1));
        let files = sources.files.clone();
        let spec = sources.spec.clone();
        let reader = std::thread::spawn(move || {
            let mut stats = SourceStats::default();
            for file in &files {
                let result = read_file(file, &spec, &mut stats, &mut |piece| {
                    sender.send(Ok(piece)).is_ok()
                });
                match result {
                    Ok(true) => {}
                    Ok(false) => break,
                    Err(e) => {
                        let _ = sender.send(Err(e));
                        break;
                    }
                }
            }
            stats
        });
        PieceStream {
            receiver,
            reader: Some(reader),
        }
    }

    /// Waits for the reader and returns what it counted; warns about what was skipped.
    pub fn finish(mut self) -> Result<SourceStats> {
        // Drain so the reader is never blocked on a full channel.
        for item in self.receiver.iter() {
            item?;
        }
        let stats = self
            .reader
            .take()
            .map(|h| h.join())
            .transpose()
            .map_err(|_| DataError::LoaderStopped {
                message: "the source reader thread panicked".into(),
            })?
            .unwrap_or_default();
        if stats.blank_documents > 0 {
            tracing::warn!(
                "skipped {} documents that contain only whitespace",
                stats.blank_documents
            );
        }
        if stats.invalid_utf8_sequences > 0 {
            tracing::warn!(
                "replaced {} invalid UTF-8 sequences with U+FFFD in total (see the per-file warnings)",
                stats.invalid_utf8_sequences
            );
        }
        Ok(stats)
    }
}

impl Iterator for PieceStream {
    type Item = Result<Piece>;

    fn next(&mut self) -> Option<Self::Item> {
        self.receiver.recv().ok()
    }
}

/// Whole documents (pieces joined) of `sources`, for tokenizer training.
pub fn documents(sources: &ResolvedSources) -> impl Iterator<Item = Result<String>> + Send {
    let mut stream = PieceStream::start(sources, 64);
    let mut current = String::new();
    std::iter::from_fn(move || loop {
        match stream.next()? {
            Err(e) => return Some(Err(e)),
            Ok(piece) => {
                current.push_str(&piece.text);
                if piece.ends_document {
                    return Some(Ok(std::mem::take(&mut current)));
                }
            }
        }
    })
}

/// Reads one file, calling `emit` per piece; returns Ok(false) when `emit` asked to stop.
fn read_file(
    file: &SourceFile,
    spec: &SourceSpec,
    stats: &mut SourceStats,
    emit: &mut dyn FnMut(Piece) -> bool,
) -> Result<bool> {
    let path = &file.path;
    let handle = std::fs::File::open(path).map_err(|e| DataError::io("opening", path, e))?;
    let size = handle.metadata().map(|m| m.len()).unwrap_or(0);
    stats.files += 1;
    if size == 0 {
        stats.empty_files += 1;
        tracing::warn!("{}: empty file, no document taken from it", path.display());
        return Ok(true);
    }
    let checked = TextCheck::new(handle, path, spec.invalid_utf8);
    let mut reader = BufReader::with_capacity(1 << 20, checked);
    let mut invalid = 0u64;
    let documents_before = stats.documents;
    let keep_going = match file.format {
        FileFormat::Jsonl => read_jsonl(&mut reader, path, spec, stats, &mut invalid, emit)?,
        FileFormat::Text => read_text(&mut reader, path, spec, stats, &mut invalid, emit)?,
        FileFormat::Csv => {
            super::csv_source::read_csv(reader, path, spec, stats, &mut invalid, emit)?
        }
    };
    if invalid > 0 {
        stats.invalid_utf8_sequences += invalid;
        tracing::warn!(
            "{}: {invalid} invalid UTF-8 sequences replaced with U+FFFD",
            path.display()
        );
    }
    if stats.documents == documents_before && keep_going {
        tracing::warn!("{}: no document with text in this file", path.display());
    }
    Ok(keep_going)
}

/// Decodes `bytes` as UTF-8, replacing invalid sequences and counting them.
pub(super) fn decode_lossy(bytes: &[u8], invalid: &mut u64) -> String {
    match std::str::from_utf8(bytes) {
        Ok(s) => s.to_string(),
        Err(_) => {
            let mut out = String::with_capacity(bytes.len());
            for chunk in bytes.utf8_chunks() {
                out.push_str(chunk.valid());
                if !chunk.invalid().is_empty() {
                    *invalid += 1;
                    out.push(char::REPLACEMENT_CHARACTER);
                }
            }
            out
        }
    }
}

fn read_line(reader: &mut impl BufRead, path: &Path, line: &mut Vec<u8>) -> Result<usize> {
    line.clear();
    reader
        .read_until(b'\n', line)
        .map_err(|e| read_error(path, e))
}

fn is_blank(bytes: &[u8]) -> bool {
    bytes.iter().all(|b| b.is_ascii_whitespace())
}

fn read_jsonl(
    reader: &mut impl BufRead,
    path: &Path,
    spec: &SourceSpec,
    stats: &mut SourceStats,
    invalid: &mut u64,
    emit: &mut dyn FnMut(Piece) -> bool,
) -> Result<bool> {
    let mut line = Vec::new();
    let mut number = 0u64;
    while read_line(reader, path, &mut line)? > 0 {
        number += 1;
        if is_blank(&line) {
            continue;
        }
        let text = decode_lossy(&line, invalid);
        let jsonl_error = |message: String| DataError::Jsonl {
            path: path.to_path_buf(),
            line: number,
            message,
        };
        let record: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| jsonl_error(format!("not a JSON object: {e}")))?;
        let field = record.get(&spec.text_field).ok_or_else(|| {
            jsonl_error(format!(
                "record has no field {:?} (data.text_field); its fields are {:?}",
                spec.text_field,
                record
                    .as_object()
                    .map(|o| o.keys().cloned().collect::<Vec<_>>())
                    .unwrap_or_default()
            ))
        })?;
        let document = field.as_str().ok_or_else(|| {
            jsonl_error(format!(
                "field {:?} is not a string but {field}",
                spec.text_field
            ))
        })?;
        if !emit_document(document.to_string(), stats, emit) {
            return Ok(false);
        }
    }
    Ok(true)
}

pub(super) fn emit_document(
    text: String,
    stats: &mut SourceStats,
    emit: &mut dyn FnMut(Piece) -> bool,
) -> bool {
    if text.trim().is_empty() {
        stats.blank_documents += 1;
        return true;
    }
    stats.documents += 1;
    stats.bytes += text.len() as u64;
    emit(Piece {
        text,
        ends_document: true,
    })
}

fn read_text(
    reader: &mut impl BufRead,
    path: &Path,
    spec: &SourceSpec,
    stats: &mut SourceStats,
    invalid: &mut u64,
    emit: &mut dyn FnMut(Piece) -> bool,
) -> Result<bool> {
    let mut line = Vec::new();
    match spec.text_documents {
        TextDocuments::Line => {
            while read_line(reader, path, &mut line)? > 0 {
                let trimmed = line
                    .strip_suffix(b"\n")
                    .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
                    .unwrap_or(&line);
                if is_blank(trimmed) {
                    continue;
                }
                if !emit_document(decode_lossy(trimmed, invalid), stats, emit) {
                    return Ok(false);
                }
            }
            Ok(true)
        }
        TextDocuments::Paragraph => {
            let mut paragraph: Vec<u8> = Vec::new();
            loop {
                let n = read_line(reader, path, &mut line)?;
                if n == 0 || is_blank(&line) {
                    if !paragraph.is_empty() {
                        let end = paragraph.len() - usize::from(paragraph.ends_with(b"\n"));
                        let text = decode_lossy(&paragraph[..end], invalid);
                        paragraph.clear();
                        if !emit_document(text, stats, emit) {
                            return Ok(false);
                        }
                    }
                    if n == 0 {
                        return Ok(true);
                    }
                } else {
                    paragraph.extend_from_slice(&line);
                }
            }
        }
        TextDocuments::File => read_whole_file(reader, path, spec, stats, invalid, emit),
    }
}

/// One document per file, emitted in pieces of about `max_piece_bytes` cut at a line end
/// between two non-whitespace characters, where byte-level pre-tokenizers split anyway.
fn read_whole_file(
    reader: &mut impl BufRead,
    path: &Path,
    spec: &SourceSpec,
    stats: &mut SourceStats,
    invalid: &mut u64,
    emit: &mut dyn FnMut(Piece) -> bool,
) -> Result<bool> {
    let mut line = Vec::new();
    let mut buffer: Vec<u8> = Vec::new();
    let mut pieces: u64 = 0;
    let mut bytes = 0u64;
    loop {
        let n = read_line(reader, path, &mut line)?;
        let at_end = n == 0;
        let safe_cut = buffer.len() >= spec.max_piece_bytes
            && !at_end
            && !line[0].is_ascii_whitespace()
            && buffer.len() >= 2
            && !buffer[buffer.len() - 2].is_ascii_whitespace();
        let forced_cut = buffer.len() >= 4 * spec.max_piece_bytes && !at_end;
        if safe_cut || forced_cut || at_end {
            if forced_cut && !safe_cut {
                tracing::warn!(
                    "{}: no line end between two words in {} bytes; cut a piece at a line end next \
                     to whitespace, where a tokenizer may split slightly differently",
                    path.display(),
                    buffer.len()
                );
            }
            // Only a file that is blank as a whole is skipped; once a piece went out, the
            // document is finished whatever its last piece holds.
            if at_end && pieces == 0 && is_blank(&buffer) {
                stats.blank_documents += 1;
                return Ok(true);
            }
            if !buffer.is_empty() || at_end {
                let text = decode_lossy(&buffer, invalid);
                bytes += text.len() as u64;
                buffer.clear();
                pieces += 1;
                if at_end {
                    stats.documents += 1;
                    stats.bytes += bytes;
                }
                if !emit(Piece {
                    text,
                    ends_document: at_end,
                }) {
                    return Ok(false);
                }
            }
            if at_end {
                if pieces > 1 {
                    tracing::info!(
                        "{}: read as one document in {pieces} pieces",
                        path.display()
                    );
                }
                return Ok(true);
            }
        }
        buffer.extend_from_slice(&line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::brown::BrownFetcher;

    use crate::data::test_support::collect_source as collect;

    #[test]
    fn line_documents_and_large_files_in_pieces() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lines.txt");
        let mut text = String::new();
        for i in 0..400 {
            text.push_str(&format!("line{i} has words\n"));
            if i % 7 == 0 {
                text.push_str("   \n");
            }
        }
        std::fs::write(&path, &text).unwrap();
        let mut spec = SourceSpec::from_paths([path.to_string_lossy()]);
        spec.text_documents = TextDocuments::Line;
        let (docs, _) = collect(&spec);
        assert_eq!(docs.len(), 400);
        assert_eq!(docs[3], "line3 has words");

        spec.text_documents = TextDocuments::File;
        spec.max_piece_bytes = 1024;
        let resolved = spec
            .resolve(&BrownFetcher::unavailable_for_tests())
            .unwrap();
        let pieces: Vec<Piece> = PieceStream::start(&resolved, 2)
            .map(|p| p.unwrap())
            .collect();
        assert!(pieces.len() > 3, "{} pieces", pieces.len());
        assert!(pieces[..pieces.len() - 1].iter().all(|p| !p.ends_document));
        assert!(pieces.last().unwrap().ends_document);
        for p in &pieces[..pieces.len() - 1] {
            assert!(
                p.text.ends_with("words\n"),
                "cut between words: {:?}",
                &p.text[p.text.len() - 8..]
            );
        }
        let joined: String = pieces.iter().map(|p| p.text.as_str()).collect();
        assert_eq!(joined, text);
    }

    #[test]
    fn bad_inputs_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::write(root.join("empty.txt"), "").unwrap();
        std::fs::write(root.join("blank.txt"), " \n\t\n").unwrap();
        std::fs::write(root.join("latin1.txt"), b"caf\xe9 and na\xefve\n").unwrap();
        let mut spec = SourceSpec::from_paths([root.to_string_lossy()]);
        let fetcher = BrownFetcher::unavailable_for_tests();
        let err = documents(&spec.resolve(&fetcher).unwrap())
            .find_map(Result::err)
            .expect("invalid UTF-8 is an error by default");
        assert!(
            matches!(&err, DataError::InvalidUtf8 { path, offset: 3 } if path.ends_with("latin1.txt")),
            "{err}"
        );
        spec.invalid_utf8 = crate::data::sources::InvalidUtf8::Replace;
        let (docs, stats) = collect(&spec);
        assert_eq!(docs, vec!["caf\u{fffd} and na\u{fffd}ve\n"]);
        assert_eq!(stats.empty_files, 1);
        assert_eq!(stats.blank_documents, 1);
        assert_eq!(stats.invalid_utf8_sequences, 2);

        let missing = SourceSpec::from_paths([root.join("nope").to_string_lossy()]);
        assert!(matches!(
            missing.resolve(&fetcher),
            Err(DataError::MissingPath { .. })
        ));
        let no_match = SourceSpec::from_paths([format!("{}/*.parquet", root.display())]);
        assert!(matches!(
            no_match.resolve(&fetcher),
            Err(DataError::GlobNoMatch { .. })
        ));

        std::fs::write(
            root.join("bad.jsonl"),
            "{\"text\": \"ok\"}\n{\"txt\": \"x\"}\n",
        )
        .unwrap();
        let jsonl = SourceSpec::from_paths([root.join("bad.jsonl").to_string_lossy()]);
        let resolved = jsonl.resolve(&fetcher).unwrap();
        let results: Vec<Result<String>> = documents(&resolved).collect();
        assert_eq!(results[0].as_ref().unwrap(), "ok");
        let err = results[1].as_ref().unwrap_err().to_string();
        assert!(
            err.contains("bad.jsonl:2") && err.contains("\"txt\""),
            "{err}"
        );
    }
}
