//! Binary token shards: writing them in bounded pieces and reading them through `memmap2`.
//!
//! A tokens file is a 16-byte header (`VSHTOKNS`, format version u32, bytes per token u32)
//! followed by little-endian token ids. An index file is a 16-byte header (`VSHINDEX`,
//! version, 0) followed by `documents + 1` little-endian u64 offsets into the shard's tokens:
//! document `i` is tokens `[offsets[i], offsets[i+1])`. An origin file (merged datasets only)
//! is a header (`VSHORIGN`, version, 0) and one u16 component id per document.
//! Documents never span shards.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use sha2::{Digest, Sha256};

use super::error::{DataError, Result};
use super::manifest::{ShardEntry, TokenDtype, FORMAT_VERSION};

const TOKENS_MAGIC: &[u8; 8] = b"VSHTOKNS";
const INDEX_MAGIC: &[u8; 8] = b"VSHINDEX";
const ORIGIN_MAGIC: &[u8; 8] = b"VSHORIGN";
/// Bytes before the data in every shard file.
pub const HEADER_BYTES: usize = 16;

fn header(magic: &[u8; 8], word: u32) -> [u8; HEADER_BYTES] {
    let mut h = [0u8; HEADER_BYTES];
    h[..8].copy_from_slice(magic);
    h[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h[12..16].copy_from_slice(&word.to_le_bytes());
    h
}

/// A file being written while its sha256 is computed.
struct HashedFile {
    path: PathBuf,
    writer: BufWriter<File>,
    hasher: Sha256,
}

impl HashedFile {
    fn create(path: PathBuf, header: &[u8]) -> Result<Self> {
        let file = File::create(&path).map_err(|e| DataError::io("creating", &path, e))?;
        let mut hashed = HashedFile {
            path,
            writer: BufWriter::with_capacity(1 << 20, file),
            hasher: Sha256::new(),
        };
        hashed.write(header)?;
        Ok(hashed)
    }

    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.hasher.update(bytes);
        self.writer
            .write_all(bytes)
            .map_err(|e| DataError::io("writing", &self.path, e))
    }

    fn finish(self) -> Result<String> {
        let file = self
            .writer
            .into_inner()
            .map_err(|e| DataError::io("writing", &self.path, e.into_error()))?;
        file.sync_all()
            .map_err(|e| DataError::io("syncing", &self.path, e))?;
        Ok(hex::encode(self.hasher.finalize()))
    }
}

/// The shard being filled.
struct OpenShard {
    tokens_name: String,
    index_name: String,
    origin_name: Option<String>,
    tokens: HashedFile,
    index: HashedFile,
    origin: Option<HashedFile>,
    token_count: u64,
    document_count: u64,
    document_open: bool,
}

/// Writes documents into shards of about `max_shard_tokens` tokens in a directory.
pub struct ShardWriter {
    dir: PathBuf,
    dtype: TokenDtype,
    max_shard_tokens: u64,
    with_origins: bool,
    current: Option<OpenShard>,
    finished: Vec<ShardEntry>,
    scratch: Vec<u8>,
}

impl ShardWriter {
    /// A writer into `dir`; a shard is closed at the first document end past `max_shard_tokens`.
    /// With `with_origins`, each document records the id of the dataset it came from.
    pub fn new(dir: &Path, dtype: TokenDtype, max_shard_tokens: u64, with_origins: bool) -> Self {
        ShardWriter {
            dir: dir.to_path_buf(),
            dtype,
            max_shard_tokens: max_shard_tokens.max(1),
            with_origins,
            current: None,
            finished: Vec::new(),
            scratch: Vec::new(),
        }
    }

    fn open(&mut self) -> Result<&mut OpenShard> {
        if self.current.is_none() {
            let n = self.finished.len();
            let tokens_name = format!("shard-{n:05}.tokens");
            let index_name = format!("shard-{n:05}.index");
            let origin_name = self.with_origins.then(|| format!("shard-{n:05}.origin"));
            let tokens = HashedFile::create(
                self.dir.join(&tokens_name),
                &header(TOKENS_MAGIC, self.dtype.bytes() as u32),
            )?;
            let mut index =
                HashedFile::create(self.dir.join(&index_name), &header(INDEX_MAGIC, 0))?;
            index.write(&0u64.to_le_bytes())?;
            let origin = match &origin_name {
                Some(name) => Some(HashedFile::create(
                    self.dir.join(name),
                    &header(ORIGIN_MAGIC, 0),
                )?),
                None => None,
            };
            self.current = Some(OpenShard {
                tokens_name,
                index_name,
                origin_name,
                tokens,
                index,
                origin,
                token_count: 0,
                document_count: 0,
                document_open: false,
            });
        }
        Ok(self.current.as_mut().expect("shard opened above"))
    }

    /// Appends tokens to the current document (opening one if needed).
    pub fn extend(&mut self, tokens: &[u32]) -> Result<()> {
        let dtype = self.dtype;
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.clear();
        match dtype {
            TokenDtype::U16 => {
                for &t in tokens {
                    let narrow = u16::try_from(t).map_err(|_| DataError::InvalidOption {
                        name: "token id",
                        value: t.to_string(),
                        expected: "below 65536 for a u16 shard (the tokenizer and dtype disagree)"
                            .into(),
                    })?;
                    scratch.extend_from_slice(&narrow.to_le_bytes());
                }
            }
            TokenDtype::U32 => {
                for &t in tokens {
                    scratch.extend_from_slice(&t.to_le_bytes());
                }
            }
        }
        let shard = self.open()?;
        shard.tokens.write(&scratch)?;
        shard.token_count += tokens.len() as u64;
        shard.document_open = true;
        self.scratch = scratch;
        Ok(())
    }

    /// Ends the current document; `origin` is its dataset id when writing origins.
    pub fn end_document(&mut self, origin: u16) -> Result<()> {
        let max = self.max_shard_tokens;
        let shard = self.open()?;
        shard.document_open = false;
        shard.document_count += 1;
        let end = shard.token_count;
        shard.index.write(&end.to_le_bytes())?;
        if let Some(origin_file) = shard.origin.as_mut() {
            origin_file.write(&origin.to_le_bytes())?;
        }
        if end >= max {
            self.close_current()?;
        }
        Ok(())
    }

    /// Writes a whole document.
    pub fn push_document(&mut self, tokens: &[u32], origin: u16) -> Result<()> {
        self.extend(tokens)?;
        self.end_document(origin)
    }

    fn close_current(&mut self) -> Result<()> {
        if let Some(shard) = self.current.take() {
            let tokens_sha256 = shard.tokens.finish()?;
            let index_sha256 = shard.index.finish()?;
            let origin_sha256 = shard.origin.map(HashedFile::finish).transpose()?;
            self.finished.push(ShardEntry {
                tokens_file: shard.tokens_name,
                index_file: shard.index_name,
                origin_file: shard.origin_name,
                documents: shard.document_count,
                tokens: shard.token_count,
                tokens_sha256,
                index_sha256,
                origin_sha256,
            });
        }
        Ok(())
    }

    /// Closes the last shard and returns all shard entries. A document left open is an error.
    pub fn finish(mut self) -> Result<Vec<ShardEntry>> {
        if let Some(shard) = &self.current {
            if shard.document_open {
                return Err(DataError::CorruptShard {
                    path: self.dir.join(&shard.tokens_name),
                    message: "a document was left unfinished by the writer".into(),
                });
            }
            if shard.document_count == 0 {
                self.current = None;
            }
        }
        self.close_current()?;
        Ok(self.finished)
    }
}

/// A memory-mapped file with a checked header.
fn map_file(path: &Path, magic: &[u8; 8]) -> Result<(Mmap, u32)> {
    let file = File::open(path).map_err(|e| DataError::io("opening", path, e))?;
    // SAFETY: dataset files are written once (temp dir + rename) and never modified in place;
    // a file changed behind our back is caught by the size checks and `verify`'s checksums.
    let mmap = unsafe { Mmap::map(&file) }.map_err(|e| DataError::io("memory-mapping", path, e))?;
    if mmap.len() < HEADER_BYTES || &mmap[..8] != magic {
        return Err(DataError::CorruptShard {
            path: path.into(),
            message: format!("missing the {:?} header", String::from_utf8_lossy(magic)),
        });
    }
    let version = u32::from_le_bytes(mmap[8..12].try_into().expect("4 bytes"));
    if version != FORMAT_VERSION {
        return Err(DataError::CorruptShard {
            path: path.into(),
            message: format!("format version {version}, expected {FORMAT_VERSION}"),
        });
    }
    let word = u32::from_le_bytes(mmap[12..16].try_into().expect("4 bytes"));
    Ok((mmap, word))
}

/// A shard opened for reading: tokens, document offsets and (if merged) origins, all mapped.
pub struct ShardReader {
    tokens_path: PathBuf,
    tokens: Mmap,
    dtype: TokenDtype,
    index: Mmap,
    origin: Option<Mmap>,
    token_count: u64,
    document_count: u64,
}

impl ShardReader {
    /// Maps the files of `entry` in `dir`, checking headers and sizes against the entry.
    pub fn open(dir: &Path, entry: &ShardEntry, dtype: TokenDtype) -> Result<Self> {
        let tokens_path = dir.join(&entry.tokens_file);
        let (tokens, width) = map_file(&tokens_path, TOKENS_MAGIC)?;
        let corrupt = |path: &Path, message: String| DataError::CorruptShard {
            path: path.into(),
            message,
        };
        if width as usize != dtype.bytes() {
            return Err(corrupt(
                &tokens_path,
                format!("{width} bytes per token, manifest says {}", dtype.bytes()),
            ));
        }
        let expected = HEADER_BYTES as u64 + entry.tokens * dtype.bytes() as u64;
        if tokens.len() as u64 != expected {
            return Err(corrupt(
                &tokens_path,
                format!(
                    "{} bytes, expected {expected} for {} tokens",
                    tokens.len(),
                    entry.tokens
                ),
            ));
        }
        let index_path = dir.join(&entry.index_file);
        let (index, _) = map_file(&index_path, INDEX_MAGIC)?;
        let expected = HEADER_BYTES as u64 + (entry.documents + 1) * 8;
        if index.len() as u64 != expected {
            return Err(corrupt(
                &index_path,
                format!(
                    "{} bytes, expected {expected} for {} documents",
                    index.len(),
                    entry.documents
                ),
            ));
        }
        let origin = match &entry.origin_file {
            Some(name) => {
                let path = dir.join(name);
                let (origin, _) = map_file(&path, ORIGIN_MAGIC)?;
                let expected = HEADER_BYTES as u64 + entry.documents * 2;
                if origin.len() as u64 != expected {
                    return Err(corrupt(
                        &path,
                        format!("{} bytes, expected {expected}", origin.len()),
                    ));
                }
                Some(origin)
            }
            None => None,
        };
        let reader = ShardReader {
            tokens_path,
            tokens,
            dtype,
            index,
            origin,
            token_count: entry.tokens,
            document_count: entry.documents,
        };
        let last = reader.offset(entry.documents);
        if reader.offset(0) != 0 || last != entry.tokens {
            return Err(corrupt(
                &index_path,
                format!(
                    "offsets run from {} to {last}, expected 0 to {}",
                    reader.offset(0),
                    entry.tokens
                ),
            ));
        }
        Ok(reader)
    }

    /// Tokens in the shard.
    pub fn num_tokens(&self) -> u64 {
        self.token_count
    }

    /// Documents in the shard.
    pub fn num_documents(&self) -> u64 {
        self.document_count
    }

    /// The path of the tokens file.
    pub fn tokens_path(&self) -> &Path {
        &self.tokens_path
    }

    /// The `i`-th index offset (`i <= num_documents`).
    pub fn offset(&self, i: u64) -> u64 {
        let at = HEADER_BYTES + i as usize * 8;
        u64::from_le_bytes(self.index[at..at + 8].try_into().expect("8 bytes"))
    }

    /// Token range `[start, end)` of document `i` within the shard.
    pub fn document_range(&self, i: u64) -> (u64, u64) {
        (self.offset(i), self.offset(i + 1))
    }

    /// The dataset id document `i` came from (0 for datasets that were not merged).
    pub fn origin(&self, i: u64) -> u16 {
        match &self.origin {
            Some(origin) => {
                let at = HEADER_BYTES + i as usize * 2;
                u16::from_le_bytes(origin[at..at + 2].try_into().expect("2 bytes"))
            }
            None => 0,
        }
    }

    /// Token `i` of the shard.
    pub fn token(&self, i: u64) -> u32 {
        let at = HEADER_BYTES + i as usize * self.dtype.bytes();
        match self.dtype {
            TokenDtype::U16 => u32::from(u16::from_le_bytes(
                self.tokens[at..at + 2].try_into().expect("2 bytes"),
            )),
            TokenDtype::U32 => {
                u32::from_le_bytes(self.tokens[at..at + 4].try_into().expect("4 bytes"))
            }
        }
    }

    /// Copies tokens `[start, start + out.len())` into `out` as i32.
    pub fn copy_tokens(&self, start: u64, out: &mut [i32]) {
        let width = self.dtype.bytes();
        let from = HEADER_BYTES + start as usize * width;
        let bytes = &self.tokens[from..from + out.len() * width];
        match self.dtype {
            TokenDtype::U16 => {
                for (o, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                    *o = i32::from(u16::from_le_bytes([b[0], b[1]]));
                }
            }
            TokenDtype::U32 => {
                for (o, b) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                    *o = u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as i32;
                }
            }
        }
    }

    /// The raw token bytes (after the header), for checks over the whole shard.
    pub fn token_bytes(&self) -> &[u8] {
        &self.tokens[HEADER_BYTES..]
    }
}

/// Hex sha256 of a whole file, streamed.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut file = File::open(path).map_err(|e| DataError::io("opening", path, e))?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher).map_err(|e| DataError::io("reading", path, e))?;
    Ok(hex::encode(hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    #[test]
    fn write_then_read_back_in_bounded_shards() {
        let dir = tempfile::tempdir().unwrap();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let docs: Vec<Vec<u32>> = (0..50)
            .map(|_| {
                (0..rng.gen_range(1..40))
                    .map(|_| rng.gen_range(0..70_000))
                    .collect()
            })
            .collect();
        let mut writer = ShardWriter::new(dir.path(), TokenDtype::U32, 100, true);
        for (i, doc) in docs.iter().enumerate() {
            let half = doc.len() / 2;
            writer.extend(&doc[..half]).unwrap();
            writer.extend(&doc[half..]).unwrap();
            writer.end_document(i as u16 % 3).unwrap();
        }
        let entries = writer.finish().unwrap();
        assert!(entries.len() > 3);
        assert!(entries.iter().all(|e| e.tokens < 100 + 40));
        let mut doc_id = 0;
        for entry in &entries {
            assert_eq!(
                sha256_file(&dir.path().join(&entry.tokens_file)).unwrap(),
                entry.tokens_sha256
            );
            let shard = ShardReader::open(dir.path(), entry, TokenDtype::U32).unwrap();
            for d in 0..shard.num_documents() {
                let (start, end) = shard.document_range(d);
                let mut out = vec![0i32; (end - start) as usize];
                shard.copy_tokens(start, &mut out);
                let expected: Vec<i32> = docs[doc_id].iter().map(|&t| t as i32).collect();
                assert_eq!(out, expected);
                assert_eq!(shard.origin(d), doc_id as u16 % 3);
                doc_id += 1;
            }
        }
        assert_eq!(doc_id, docs.len());
    }

    #[test]
    fn u16_rejects_wide_ids_and_truncated_files_are_caught() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = ShardWriter::new(dir.path(), TokenDtype::U16, 1000, false);
        assert!(writer.extend(&[70_000]).is_err());
        let mut writer = ShardWriter::new(dir.path(), TokenDtype::U16, 1000, false);
        writer.push_document(&[1, 2, 65_535], 0).unwrap();
        let entries = writer.finish().unwrap();
        let shard = ShardReader::open(dir.path(), &entries[0], TokenDtype::U16).unwrap();
        assert_eq!(shard.token(2), 65_535);
        let path = dir.path().join(&entries[0].tokens_file);
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 2]).unwrap();
        let err = ShardReader::open(dir.path(), &entries[0], TokenDtype::U16)
            .err()
            .unwrap();
        assert!(matches!(err, DataError::CorruptShard { .. }), "{err}");
    }
}
