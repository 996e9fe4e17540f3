//! `file://` discovery: one address (or range) per line, `#` comments.

use std::path::Path;

use crate::entry::{extend_bounded, parse_pattern, Entry};
use crate::error::DiscoveryError;

/// Parses the content of a discovery file.
pub fn parse_file_content(content: &str) -> Result<Vec<Entry>, DiscoveryError> {
    let mut entries = Vec::new();
    for line in content.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        extend_bounded(&mut entries, parse_pattern(line)?)?;
    }
    Ok(entries)
}

/// Reads and parses the discovery file at `path`.
pub async fn read(path: &Path) -> Result<Vec<Entry>, DiscoveryError> {
    let content = tokio::fs::read_to_string(path)
        .await
        .map_err(|e| DiscoveryError::File { path: path.display().to_string(), reason: e.to_string() })?;
    parse_file_content(&content)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skips_comments_and_blank_lines() {
        let entries = parse_file_content("# engines\n\n10.0.0.1:2375\n 10.0.0.[2:3]:2375 # two\n").unwrap();
        let shown: Vec<String> = entries.iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["10.0.0.1:2375", "10.0.0.2:2375", "10.0.0.3:2375"]);
    }

    #[test]
    fn reports_the_bad_line() {
        let err = parse_file_content("10.0.0.1:2375\nnot-an-address\n").unwrap_err();
        assert!(err.to_string().contains("not-an-address"), "{err}");
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Any file content gives a bounded list or an error.
        #[test]
        fn any_content_never_panics(content in "[a-z0-9.:#\\[\\]\n ]{0,80}", any_content in any::<String>()) {
            for text in [&content, &any_content] {
                if let Ok(entries) = parse_file_content(text) {
                    prop_assert!(entries.len() <= crate::entry::MAX_ENTRIES);
                }
            }
        }
    }
}
