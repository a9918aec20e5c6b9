//! CSV sources: one document per row, the text in the column named by `text_field`, as
//! Blues-01 reads `--dataset x.csv`. Parsed by the `csv` crate, so quoted fields may hold
//! commas, doubled quotes and line breaks.

use std::io::Read;
use std::path::Path;

use super::error::{DataError, Result};
use super::reader::{decode_lossy, emit_document, Piece, SourceStats};
use super::sources::SourceSpec;
use super::text_check::read_error;

/// One document per row of a CSV file with a header: the column named `spec.text_field`.
/// Quoted fields may hold commas, quotes and line breaks.
pub(super) fn read_csv(
    reader: impl Read,
    path: &Path,
    spec: &SourceSpec,
    stats: &mut SourceStats,
    invalid: &mut u64,
    emit: &mut dyn FnMut(Piece) -> bool,
) -> Result<bool> {
    let csv_error = |e: csv::Error| {
        let message = e.to_string();
        match e.into_kind() {
            csv::ErrorKind::Io(io) => read_error(path, io),
            _ => DataError::Csv {
                path: path.to_path_buf(),
                message,
            },
        }
    };
    let mut csv = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_reader(reader);
    let headers = csv.byte_headers().map_err(csv_error)?.clone();
    let names: Vec<String> = headers
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let h = if i == 0 {
                h.strip_prefix(b"\xef\xbb\xbf").unwrap_or(h)
            } else {
                h
            };
            decode_lossy(h, invalid)
        })
        .collect();
    let Some(column) = names.iter().position(|n| *n == spec.text_field) else {
        return Err(DataError::CsvColumn {
            path: path.to_path_buf(),
            column: spec.text_field.clone(),
            found: names,
        });
    };
    let mut record = csv::ByteRecord::new();
    while csv.read_byte_record(&mut record).map_err(csv_error)? {
        let field = record.get(column).unwrap_or_default();
        if !emit_document(decode_lossy(field, invalid), stats, emit) {
            return Ok(false);
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::brown::BrownFetcher;
    use crate::data::reader::documents;
    use crate::data::test_support::collect_source as collect;

    #[test]
    fn csv_rows_are_documents_of_the_text_column() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data.csv");
        std::fs::write(
            &path,
            "\u{feff}id,text,label\n1,plain row,a\n2,\"quoted, with comma\nand \"\"newline\"\"\",b\n3,,c\n",
        )
        .unwrap();
        let mut spec = SourceSpec::from_paths([path.to_string_lossy()]);
        let (docs, stats) = collect(&spec);
        assert_eq!(
            docs,
            vec!["plain row", "quoted, with comma\nand \"newline\""]
        );
        assert_eq!(stats.blank_documents, 1);
        spec.text_field = "label".into();
        assert_eq!(collect(&spec).0, vec!["a", "b", "c"]);
        spec.text_field = "body".into();
        let resolved = spec
            .resolve(&BrownFetcher::unavailable_for_tests())
            .unwrap();
        let err = documents(&resolved).find_map(Result::err).unwrap();
        assert!(
            err.to_string()
                .contains(r#"no CSV column "body" (data.text_field / --text-field names the text column); the columns are ["id", "text", "label"]"#),
            "{err}"
        );
    }
}
